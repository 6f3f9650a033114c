"""Vertical LR: encrypted = mock = centralized, bank-only runs, strict messages."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from fedcredit.crypto import WorkerPool
from fedcredit.common.errors import ProtocolError
from fedcredit.protocols.lbfgs import two_loop
from fedcredit.protocols.loop import drive
from fedcredit.common.wire import Message, unbundle
from fedcredit.crypto import pairwise
from fedcredit.protocols.parts import vector_part
from fedcredit.protocols.vertical_lr import shares
from fedcredit.protocols.vertical_lr.party import _permutation
from fedcredit.protocols.vertical_lr import LrConfig, LrCoordinator
from fedcredit.scoring import metrics
from lr_helpers import aligned_parties, one_hot


def _train(backend: str, rows=1500, key_bits=1024, roles=("bank", "tax", "utilities"), **cfg):
    with WorkerPool(1) as pool:
        parties, designs, y, split = aligned_parties(rows, roles=roles, pool=pool)
        coord = LrCoordinator("t", list(roles), LrConfig(backend=backend, key_bits=key_bits, **cfg), pool=pool)
        rounds = drive(coord, parties)
    return coord, parties, designs, y, split, rounds


def _expected_rounds(coord) -> int:
    """Setup; 3 rounds per accepted point, 1 per step the line search rejects; finish with scoring, unmask."""
    accepted = sum(h["accepted"] for h in coord.history)
    return 1 + 3 * accepted + (coord.evaluations - accepted) + 2


TIGHT = {"rows": 2000, "ftol": 1e-10, "gtol": 1e-6, "max_iter": 100, "l2": 1e-2}  # converge fully: compare optima


@pytest.fixture(scope="module")
def encrypted():
    return _train("paillier", **TIGHT)


@pytest.fixture(scope="module")
def mock():
    return _train("mock", **TIGHT)


def test_encrypted_and_mock_give_the_same_model(encrypted, mock):
    ce, pe = encrypted[0], encrypted[1]
    cm, pm = mock[0], mock[1]
    assert ce.evaluations == cm.evaluations
    for role in pe:
        np.testing.assert_allclose(pe[role].weights, pm[role].weights, atol=1e-3)
    np.testing.assert_allclose(pe["bank"].scores, pm["bank"].scores, atol=1e-4)
    assert [h["accepted"] for h in ce.history] == [h["accepted"] for h in cm.history]


def test_matches_centralized_logistic_regression(encrypted):
    coord, parties, designs, y, split, rounds = encrypted
    x = np.hstack([one_hot(designs[r]) for r in ("bank", "tax", "utilities")])
    train, test = split == 0, split == 2
    central = LogisticRegression(C=1.0 / (coord.cfg.l2 * train.sum()), max_iter=5000).fit(x[train], y[train])
    fed_auc = metrics.auc(y[test], parties["bank"].scores[test])
    central_auc = metrics.auc(y[test], central.decision_function(x[test]))
    assert abs(fed_auc - central_auc) < 0.005
    # the same objective reaches the same optimum: compare the regularized training loss
    z = central.decision_function(x[train])
    w = central.coef_.ravel()
    central_loss = np.mean(np.logaddexp(0, z) - y[train] * z) + 0.5 * coord.cfg.l2 * (w @ w)
    assert coord.history[-1]["loss"] == pytest.approx(central_loss, rel=1e-3)
    assert rounds == _expected_rounds(coord)


def test_only_the_bank_gets_scores_and_each_party_its_own_weights(encrypted):
    _, parties, designs, *_ = encrypted
    assert parties["bank"].scores is not None and parties["tax"].scores is None
    for role, party in parties.items():
        assert len(party.weights) == designs[role].n_params


def test_bank_alone_runs_the_same_protocol():
    coord, parties, designs, y, split, rounds = _train("mock", roles=("bank",))
    test = split == 2
    assert 0.55 < metrics.auc(y[test], parties["bank"].scores[test]) < 0.85
    assert rounds == _expected_rounds(coord)  # the same rounds as with hosts


def test_a_hosts_share_is_masked_and_the_shares_add_up():
    """The coordinator gets a host's partial scores only under pair masks: its share differs from the host's
    true partial almost everywhere and spreads over 64 bits, the parties' shares add up to the true sum, and
    a host's part of yᵀz decrypts to a masked word far above any score sum."""
    parties, *_ = aligned_parties(800)
    coord = LrCoordinator("t", ["bank", "tax", "utilities"], LrConfig(backend="mock", key_bits=1024, max_iter=3))
    seen: dict[int, dict] = {}

    def tap(data: bytes) -> None:
        m = Message.from_bytes(data)
        if m.kind != "lr.share":
            return
        party, n = parties[m.sender], len(parties[m.sender].data.train_rows)
        u = party.data.every.forward(party._w(party._trial_v))[party.data.train_rows]
        truth = shares.fixed(u[_permutation(party._seed, party._evaluation, n)], coord.cfg.scale_bits)
        parts = unbundle(m, ["z", "yz"])
        seen.setdefault(m.step, {})[m.sender] = (shares.words_of(parts["z"], m)[:n], truth, parts["yz"], m)

    drive(coord, parties, tap=tap)
    step = max(seen)  # a late evaluation: the hosts' weights are no longer zero
    share, truth, yz, msg = seen[step]["tax"]
    assert np.count_nonzero(truth) > 0.9 * len(truth)
    assert np.mean(share.astype(np.int64) == truth) < 0.01
    assert np.abs(share.astype(np.int64).astype(float)).max() > 2.0**60
    total = pairwise.unmask_sum([seen[step][p][0] for p in ("bank", "tax", "utilities")])
    np.testing.assert_array_equal(total, sum(seen[step][p][1] for p in ("bank", "tax", "utilities")))
    vec = vector_part(coord.keypair.public_key, yz, 1, msg)
    assert abs(coord.keypair.decrypt_ints(vec)[0]) > 2**100


def test_pair_seeds_come_once_from_the_party_named_first():
    parties, *_ = aligned_parties(600)
    coord = LrCoordinator("t", ["bank", "tax", "utilities"], LrConfig(backend="mock", key_bits=1024))
    for m in coord.start():
        parties[m.receiver].handle(m)
    tax = parties["tax"]
    with pytest.raises(ProtocolError, match="once from each party named before tax"):
        tax.handle(Message("lr.pair", "utilities", "tax", "t", 1, {}, bytes(32)))
    with pytest.raises(ProtocolError, match="32 bytes"):
        tax.handle(Message("lr.pair", "bank", "tax", "t", 1, {}, bytes(5)))
    tax.handle(Message("lr.pair", "bank", "tax", "t", 1, {}, bytes(32)))
    with pytest.raises(ProtocolError, match="once from each"):
        tax.handle(Message("lr.pair", "bank", "tax", "t", 1, {}, bytes(32)))
    with pytest.raises(ProtocolError, match="no pair seed with"):
        parties["utilities"].handle(Message("lr.score", "coordinator", "utilities", "t", 1, {}))


def test_two_loop_reduces_to_gradient_scaling_without_history():
    gram = np.array([[4.0]])
    assert two_loop(gram, 0).tolist() == [-1.0]


def test_config_is_checked():
    with pytest.raises(ProtocolError, match="l2"):
        LrConfig(l2=0)
    with pytest.raises(ProtocolError, match="scale_bits"):
        LrConfig(scale_bits=40)


def test_unexpected_and_malformed_messages_are_rejected():
    parties, *_ = aligned_parties(600)
    coord = LrCoordinator("t", ["bank", "tax", "utilities"], LrConfig(backend="mock", key_bits=1024))
    setup = coord.start()
    tax = parties["tax"]
    with pytest.raises(ProtocolError, match="not been set up"):
        tax.handle(Message("lr.eval", "coordinator", "tax", "t", 1, {"evaluation": 0}))
    to_tax = next(m for m in setup if m.receiver == "tax")
    with pytest.raises(ProtocolError, match="malformed setup"):
        tax.handle(Message(**{**to_tax.__dict__, "meta": {"config": {"l2": "x"}}}))
    tax.handle(to_tax)
    with pytest.raises(ProtocolError, match="already set up"):
        tax.handle(to_tax)
    with pytest.raises(ProtocolError, match="expected 'bank'"):
        tax.handle(Message("lr.labels", "utilities", "tax", "t", 1, {}))
    with pytest.raises(ProtocolError, match="payload index"):
        tax.handle(Message("lr.labels", "bank", "tax", "t", 1, {}))
    with pytest.raises(ProtocolError, match="expected one lr.ready"):
        coord.advance([])


def test_a_baseline_trained_alone_equals_the_encrypted_run():
    """The bank's baseline on the plaintext arithmetic inside the bank is the model the encrypted protocol
    trains with the bank as its only party: the protocol's decrypted values are exact integers."""
    from fedcredit.protocols.job import ModelSettings
    from fedcredit.protocols.job.baseline import train_alone
    from fedcredit.protocols.loop import drive
    from fedcredit.protocols.vertical_lr import LrCoordinator
    from lr_helpers import aligned_parties

    settings = ModelSettings(key_bits=1024, max_iter=6)
    alone = aligned_parties(1500, seed=3, roles=("bank",))[0]["bank"]
    encrypted = aligned_parties(1500, seed=3, roles=("bank",))[0]["bank"]
    train_alone("r/lr-bank", alone, settings)
    coordinator = LrCoordinator("r/lr-bank", ["bank"], settings.lr_config())
    drive(coordinator, {"bank": encrypted})
    assert coordinator.keypair.public_key.backend == "paillier" and alone.key.backend == "mock"
    np.testing.assert_array_equal(alone.weights, encrypted.weights)
    np.testing.assert_array_equal(alone.scores, encrypted.scores)
