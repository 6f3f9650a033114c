"""Federated WoE/IV binning: equal to the pooled computation, small bins merged first, monotone bins, selection."""

import json

import numpy as np
import pandas as pd
import pytest

from fedcredit.common.errors import FedCreditError, ProtocolError
from fedcredit.common.wire import Message, bundle, unbundle
from fedcredit.crypto import Identity
from fedcredit.data import synth
from fedcredit.data.binning import FeaturePrep, FeatureSpec, merge_small_bins
from fedcredit.data.reference import feature_names, join_nodes
from fedcredit.protocols.job import split_assignment
from fedcredit.protocols.loop import drive
from fedcredit.protocols.relay import SealedRelay
from fedcredit.protocols.woe import WoeConfig, WoeCoordinator, woe_party
from fedcredit.scoring.woe import bin_stats, monotone_map, select_features
from fedcredit.scoring.woe_binning import NodeBinning, WoeSettings

ROLES = ("bank", "tax", "utilities")


def test_woe_and_iv_by_hand():
    stats = bin_stats([10, 30, 0], [100, 100, 50])
    goods, bads = np.array([90, 70, 50]), np.array([10, 30, 0])
    g, b = goods / 210, np.maximum(bads, 0.5) / 40
    assert np.allclose(stats.woe, np.log(g / b))
    assert stats.iv == pytest.approx(float(((goods / 210 - bads / 40) * np.log(g / b)).sum()))
    assert bin_stats([0, 3], [0, 10]).woe[0] == 0.0  # an empty bin is neutral
    with pytest.raises(FedCreditError, match="events"):
        bin_stats([11], [10])


def test_small_bins_merge_without_labels():
    spec = FeatureSpec("x", "numeric", edges=[1, 2, 3, 4])
    mapping = merge_small_bins(spec, np.array([50, 2, 40, 3, 30, 1]), 10)
    assert mapping == [0, 1, 1, 2, 2, 2]  # smallest joins its smaller neighbour; small missing joins the top bin
    spec.bin_map = mapping
    assert spec.bin_labels() == ["[-inf, 1)", "[1, 3)", "[3, inf) or missing"]
    assert merge_small_bins(spec, np.array([50, 20, 40, 30, 30, 0]), 10)[-1] == 5  # an empty missing bin stays alone
    cats = FeatureSpec("c", "category", categories=["a", "b", "c", "d"])
    assert merge_small_bins(cats, np.array([50, 6, 40, 5, 0]), 10) == [0, 1, 2, 1, 3]


def test_monotone_map_makes_event_rates_monotone():
    events, counts = np.array([5, 20, 8, 30, 40, 3]), np.array([100, 100, 100, 100, 100, 50])
    mapping, trend = monotone_map(events, counts, 5, "auto")
    assert trend == "descending" and mapping[-1] == max(mapping)  # the missing bin (last) is never merged
    merged_e = np.bincount(mapping, weights=events)[:-1]
    merged_n = np.bincount(mapping, weights=counts)[:-1]
    assert np.all(np.diff(merged_e / merged_n) > 0)
    up, _ = monotone_map(events, counts, 5, "ascending")
    rates = np.bincount(up, weights=events)[:-1] / np.bincount(up, weights=counts)[:-1]
    assert np.all(np.diff(rates) < 0)


def test_selection_reasons():
    corr = np.array([[1, 0.95, 0], [0.95, 1, 0], [0, 0, 1.0]])
    sel = select_features([0.3, 0.2, 0.01], [5, 5, 5], 0.02, correlation=corr, max_correlation=0.9, names=["a", "b", "c"])
    assert sel.kept == [True, False, False]
    assert "correlation +0.95 with a" in sel.reasons[1] and "below min_iv" in sel.reasons[2]
    assert select_features([0.3, 0.2, 0.1], [5, 1, 5], 0.0, top_k=1).kept == [True, False, False]


def _parties(rows=900, settings=WoeSettings(binning="monotone"), publish=("tax",), noise=0):
    joined = join_nodes(synth.generate(rows, 3))
    y = joined["default_12m"].to_numpy()
    train = np.flatnonzero(split_assignment(joined["uscc"].tolist(), 3, 0.6, 0.2) == 0)
    frames = {r: joined[feature_names(r)].iloc[train].reset_index(drop=True) for r in ROLES}
    rng = np.random.default_rng(0)
    for k in range(noise):
        frames["utilities"][f"noise_{k}"] = rng.normal(size=len(train))
    parties = {r: woe_party(r, FeaturePrep.fit(frames[r]), frames[r], y[train] if r == "bank" else None,
                            publish_names=r in publish) for r in ROLES}
    return parties, frames, y[train]


def _run(parties, settings, sealed=True, backend="paillier"):
    ids = {r: Identity.generate(r) for r in ROLES}
    relays = {r: SealedRelay(ids[r], [ids[o].public for o in ROLES if o != r]) for r in ROLES} if sealed else None
    coord = WoeCoordinator("job/woe", list(ROLES), WoeConfig(settings, key_bits=1024, backend=backend))
    taps = []
    rounds = drive(coord, parties, relays=relays, tap=taps.append)
    return coord, rounds, taps


@pytest.fixture(scope="module")
def federated():
    settings = WoeSettings(binning="monotone", max_correlation=0.9)
    parties, frames, y = _parties(settings=settings)
    coord, rounds, taps = _run(parties, settings)
    return parties, frames, y, settings, rounds, taps


def test_federated_iv_equals_centralized_on_the_same_bins(federated):
    parties, frames, y, settings, rounds, _ = federated
    assert rounds == 5
    bank = parties["bank"]
    for role in ("tax", "utilities"):
        central = NodeBinning(FeaturePrep.fit(frames[role]), frames[role], settings)
        decisions = central.decide_own(y)
        assert [d.iv for d in bank.host_decisions[role]] == [d.iv for d in decisions]  # exactly
        assert [d.woe for d in bank.host_decisions[role]] == [d.woe for d in decisions]
        host = parties[role]
        assert host.binning.selection_table().iv.tolist() == [d.iv for d in decisions]
        assert host.prep.names == [n for n, k in zip(central.names, host.binning.selection.kept) if k]
    assert bank.decided and all(p.decided for p in parties.values())


def test_hosts_choose_whether_the_bank_sees_names(federated):
    parties = federated[0]
    tax, util = parties["bank"].host_tables["tax"], parties["bank"].host_tables["utilities"]
    assert set(tax.feature) == set(feature_names("tax"))
    assert all(f.startswith("feature ") for f in util.feature)
    assert not any(name in " ".join(util.reason) for name in feature_names("utilities"))


def test_every_bin_holds_the_minimum_share_and_hosts_see_no_labels(federated):
    parties, frames, y, settings, _, taps = federated
    for role in ROLES:
        b = parties[role].binning
        for counts in b.counts():
            counts = np.asarray(counts)
            assert np.all((counts == 0) | (counts >= settings.min_bin_share * b.rows))
    assert parties["bank"].keypair is None  # dropped once every host is answered
    assert all(not hasattr(parties[r], "labels") for r in ("tax", "utilities"))


def test_noise_columns_are_dropped_by_iv():
    settings = WoeSettings(binning="monotone", min_iv=0.02)
    parties, _, _ = _parties(rows=12000, settings=settings, noise=12)
    _run(parties, settings, sealed=False, backend="mock")
    table = parties["utilities"].binning.selection_table()
    noise, real = table[table.feature.str.startswith("noise_")], table[~table.feature.str.startswith("noise_")]
    assert (~noise.kept).sum() >= 9  # pure noise still shows IV ≈ bins × (1/goods + 1/bads) by chance
    assert real.kept.sum() >= 2 and real.iv.max() > 5 * noise.iv.median()


def test_bank_refuses_small_bins_and_inconsistent_sums():
    settings = WoeSettings()
    parties, _, _ = _parties(rows=600, settings=settings)
    coord = WoeCoordinator("job/woe", list(ROLES), WoeConfig(settings, key_bits=1024))
    out = coord.start()
    labels = [m for p in ROLES for m in parties[p].handle(next(o for o in out if o.receiver == p))]
    sums = parties["tax"].handle(next(m for m in labels if m.receiver == "tax"))[0]
    parts = unbundle(sums, ["events", "bins"])
    doc = json.loads(parts["bins"][0])
    counts = doc["counts"]
    counts[0][0], counts[0][1] = counts[0][0] + counts[0][1] - 1, 1
    payload, meta = bundle({"events": parts["events"], "bins": (json.dumps(doc).encode(), {})})
    forged = Message(sums.kind, sums.sender, sums.receiver, sums.run_id, sums.step, meta, payload)
    with pytest.raises(ProtocolError, match="at least 5%"):
        parties["bank"].handle(forged)


def test_settings_are_checked():
    with pytest.raises(FedCreditError, match="binning must be one of"):
        WoeSettings(binning="optimal")
    with pytest.raises(FedCreditError, match="min_bin_share"):
        WoeSettings(min_bin_share=0.6)
    frame = pd.DataFrame({"x": np.arange(100.0)})
    with pytest.raises(ProtocolError, match="only the bank holds labels"):
        woe_party("tax", FeaturePrep.fit(frame), frame, labels=np.zeros(100))
