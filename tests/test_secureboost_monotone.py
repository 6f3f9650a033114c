"""Monotone constraints in SecureBoost: the reference's trees are monotone along a constrained feature
(missing bin last), the federated bank grows the same trees for its own and a host's features, and
bad direction vectors are refused naming the party and feature index."""

import numpy as np
import pandas as pd
import pytest

from fedcredit.common.errors import FedCreditError, ProtocolError
from fedcredit.data.binning import FeaturePrep
from fedcredit.models import gbdt_reference as ref
from fedcredit.models.gbdt_reference import GbdtConfig, GbdtReference, PartyBins
from fedcredit.protocols.loop import drive
from fedcredit.protocols.secureboost import SbConfig, SbCoordinator, TreePartyData, sb_party

VALUES = 10  # value bins per synthetic feature; bin 10 is "missing" (the last bin, always sent right)
N_BINS = VALUES + 1
CONFIG = dict(n_trees=6, max_depth=3, learning_rate=0.3)


def synthetic(rows=4000, seed=7):
    """Bank features (u, lin, noise) and host features (tax: cap, noise): ``u`` is U-shaped in the default
    log-odds, ``cap`` an inverted U, so neither is monotone; 5 % of each feature is missing."""
    rng = np.random.default_rng(seed)
    bank = rng.integers(0, VALUES, size=(rows, 3))
    host = rng.integers(0, VALUES, size=(rows, 2))
    for block in (bank, host):
        block[rng.random(block.shape) < 0.05] = VALUES
    centred = lambda b: np.where(b == VALUES, 0.0, (b - 4.5) / 4.5)  # noqa: E731 — missing: the middle risk
    logit = -1.0 + 2.5 * centred(bank[:, 0]) ** 2 + 0.8 * centred(bank[:, 1]) - 2.5 * centred(host[:, 0]) ** 2
    y = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return bank, host, y


def blocks(bank, host, mono=None):
    mono = mono or {}
    return [PartyBins("bank", bank, [N_BINS] * bank.shape[1], mono.get("bank")),
            PartyBins("tax", host, [N_BINS] * host.shape[1], mono.get("tax"))]


def scores_along(trees, base, lr, bank, host, party, feature, rows=300):
    """Raw scores of ``rows`` rows (others fixed) with ``feature`` of ``party`` set to every bin: rows × bins."""
    out = []
    for v in range(N_BINS):
        b, h = bank[:rows].copy(), host[:rows].copy()
        (b if party == "bank" else h)[:, feature] = v
        by_name = {p.name: p for p in blocks(b, h)}
        out.append(base + lr * sum(ref.route(t, by_name, rows) for t in trees))
    return np.stack(out, axis=1)


def along(model, bank, host, party, feature):
    return scores_along(model.trees, model.base, model.cfg.learning_rate, bank, host, party, feature)


def test_a_constrained_feature_gives_monotone_scores_and_unconstrained_it_does_not():
    bank, host, y = synthetic()
    free = GbdtReference(GbdtConfig(**CONFIG)).fit(blocks(bank, host), y)
    up = GbdtReference(GbdtConfig(**CONFIG)).fit(blocks(bank, host, {"bank": [1, 0, 0]}), y)
    down = GbdtReference(GbdtConfig(**CONFIG)).fit(blocks(bank, host, {"bank": [-1, 0, 0]}), y)
    steps = np.diff(along(free, bank, host, "bank", 0), axis=1)
    assert (steps < -0.05).any() and (steps > 0.05).any()  # the U shape: down, then up
    assert (np.diff(along(up, bank, host, "bank", 0), axis=1) >= 0).all()  # missing (last bin) included
    assert (np.diff(along(down, bank, host, "bank", 0), axis=1) <= 0).all()
    assert any(n.party == "bank" and n.feature == 0 for t in up.trees for n in t.nodes)  # the feature is still used
    # other features stay free: the host's inverted U is still learnt by the constrained model
    host_steps = np.diff(along(up, bank, host, "tax", 0), axis=1)
    assert (host_steps > 0.05).any() and (host_steps < -0.05).any()


def test_all_zero_directions_give_exactly_the_unconstrained_trees():
    bank, host, y = synthetic(2000)
    free = GbdtReference(GbdtConfig(**CONFIG)).fit(blocks(bank, host), y)
    zero = GbdtReference(GbdtConfig(**CONFIG)).fit(blocks(bank, host, {"bank": [0, 0, 0], "tax": [0, 0]}), y)
    assert [t.signature() for t in zero.trees] == [t.signature() for t in free.trees]


def test_leaf_weights_are_clipped_to_their_bounds_and_inadmissible_splits_refused():
    cfg = GbdtConfig(scale_bits=None, l2=1.0, min_child_weight=0.0)
    assert ref.leaf_weight(-4.0, 1.0, cfg) == 2.0
    assert ref.leaf_weight(-4.0, 1.0, cfg, (-1.0, 0.5)) == 0.5
    # one feature, 3 bins: bin 0 has negative g (raises the weight), so "bin 0 left" puts the higher weight left
    hg, hh = np.array([[-3.0, 3.0, 0.0]]), np.array([[1.0, 1.0, 0.0]])
    assert ref.best_split(hg, hh, [3], 0.0, 2.0, cfg) is not None
    assert ref.best_split(hg, hh, [3], 0.0, 2.0, cfg, [1]) is None  # +1: left must not weigh more than right
    assert ref.best_split(hg, hh, [3], 0.0, 2.0, cfg, [-1]) is not None
    left, right = ref.child_bounds(hg, hh, 0, 0, 0.0, 2.0, cfg, -1, ref.UNBOUNDED)
    assert left == (0.0, np.inf) and right == (-np.inf, 0.0)  # mid-point of the weights 1.5 and −1.5


def federated(bank, host, y, mono):
    """Bank + one host in-process (mock encryption); the bank alone holds the directions."""
    rows = np.arange(len(y))
    train = rows[: int(0.8 * len(y))]
    parties = {"bank": sb_party("bank", TreePartyData(bank, [N_BINS] * 3, train, y, monotone=mono)),
               "tax": sb_party("tax", TreePartyData(host, [N_BINS] * 2, train))}
    taps = []
    coord = SbCoordinator("sb-mono", ["bank", "tax"], SbConfig(backend="mock", key_bits=1024, **CONFIG))
    drive(coord, parties, tap=taps.append)
    return parties["bank"], train, taps


def test_federated_trees_equal_the_reference_with_constraints_on_a_bank_and_a_host_feature():
    bank, host, y = synthetic(3000)
    mono = {"bank": [1, 0, 0], "tax": [-1, 0]}
    sb_bank, train, taps = federated(bank, host, y, mono)
    model = GbdtReference(sb_bank.gbdt_config()).fit(blocks(bank[train], host[train], mono), y[train])
    assert [t.signature() for t in sb_bank.trees] == [t.signature() for t in model.trees]
    free = GbdtReference(sb_bank.gbdt_config()).fit(blocks(bank[train], host[train]), y[train])
    assert [t.signature() for t in free.trees] != [t.signature() for t in model.trees]  # the constraints bite
    assert any(n.party == "tax" and n.feature == 0 for t in sb_bank.trees for n in t.nodes)
    assert any(n.party == "bank" and n.feature == 0 for t in sb_bank.trees for n in t.nodes)
    fed = lambda party, j: scores_along(sb_bank.trees, sb_bank.base, sb_bank.learning_rate,  # noqa: E731
                                        bank, host, party, j)
    assert (np.diff(fed("tax", 0), axis=1) <= 0).all()
    assert (np.diff(fed("bank", 0), axis=1) >= 0).all()
    np.testing.assert_allclose(sb_bank.raw_scores, model.decision_function(blocks(bank, host)), rtol=0, atol=1e-12)
    assert not any(b"monotone" in raw for raw in taps)  # no message carries the directions


@pytest.mark.parametrize("mono, text", [
    ({"bank": [1, 0]}, "monotone constraints of bank: 2 directions for 3 features"),
    ({"bank": [1, 2, 0]}, "monotone constraints of bank: feature 1 has direction 2, expected -1, 0 or 1"),
    ({"tax": [0, True]}, "monotone constraints of tax: feature 1 has direction True"),
    ({"tax": "+-"}, "monotone constraints of tax: expected a list of directions"),
    (["bank"], "monotone constraints must map party roles"),
])
def test_bad_direction_vectors_are_refused_by_the_bank(mono, text):
    bank, _, y = synthetic(50)
    with pytest.raises(ProtocolError, match=text):
        TreePartyData(bank, [N_BINS] * 3, np.arange(50), y, monotone=mono)


def test_a_host_direction_vector_of_the_wrong_length_or_role_stops_the_run():
    bank, host, y = synthetic(300)
    with pytest.raises(ProtocolError, match=r"monotone constraints of tax: 3 directions for 2 features \(the bank's"):
        federated(bank, host, y, {"tax": [1, 0, 0]})
    with pytest.raises(ProtocolError, match="monotone constraints for utilities, which is not in this job"):
        federated(bank, host, y, {"utilities": [1]})


def test_a_host_never_holds_directions_and_categories_take_none():
    _, host, _ = synthetic(50)
    with pytest.raises(ProtocolError, match="tax: monotone constraints are the bank's"):
        sb_party("tax", TreePartyData(host, [N_BINS] * 2, np.arange(50), monotone={"tax": [1, 0]}))
    frame = pd.DataFrame({"age": np.arange(40.0), "sector": ["a", "b"] * 20})
    prep = FeaturePrep.fit(frame, categorical=["sector"])
    with pytest.raises(ProtocolError, match=r"feature 1 \(sector\) is a category, whose direction must be 0"):
        TreePartyData.from_prep(prep, frame, np.arange(40), np.zeros(40), monotone={"bank": [1, 1]})
    assert TreePartyData.from_prep(prep, frame, np.arange(40), np.zeros(40), monotone={"bank": [1, 0]}).monotone


def test_the_reference_refuses_bad_directions_naming_the_party():
    bank, host, y = synthetic(50)
    with pytest.raises(FedCreditError, match="monotone constraints of tax: feature 0 has direction -2"):
        GbdtReference(GbdtConfig(**CONFIG)).fit(blocks(bank, host, {"tax": [-2, 0]}), y)
