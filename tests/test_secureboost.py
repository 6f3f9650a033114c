"""Vertical SecureBoost: federated trees = plaintext reference, encrypted = mock, thresholds stay at hosts."""

import json
import struct

import numpy as np
import pytest

from fedcredit.crypto import Identity, WorkerPool
from fedcredit.data import synth
from fedcredit.data.binning import FeaturePrep
from fedcredit.data.reference import feature_names, join_nodes
from fedcredit.models.gbdt_reference import GbdtReference, PartyBins
from fedcredit.protocols import secureboost as sb
from fedcredit.protocols.secureboost import wire
from fedcredit.common.errors import ProtocolError
from fedcredit.protocols.job import split_assignment
from fedcredit.protocols.loop import drive
from fedcredit.common.wire import Message, bundle
from fedcredit.protocols.relay import SealedRelay
from fedcredit.protocols.secureboost import SbConfig, SbCoordinator, TreePartyData, sb_party

ROLES = ("bank", "tax", "utilities")
CONFIG = dict(n_trees=3, max_depth=3, learning_rate=0.3, key_bits=1024)


def make_parties(rows=600, roles=ROLES, pool=None, seed=0, valid=False, goss_seed=None):
    joined = join_nodes(synth.generate(rows, seed))
    y = joined["default_12m"].to_numpy()
    split = split_assignment(joined["uscc"].tolist(), seed, 0.6, 0.2)
    train, valid_rows = np.flatnonzero(split == 0), np.flatnonzero(split == 1) if valid else None
    parties = {}
    for role in roles:
        frame = joined[feature_names(role)]
        prep = FeaturePrep.fit(frame.iloc[train])
        bank = role == "bank"
        data = TreePartyData.from_prep(prep, frame, train, y if bank else None, valid_rows if bank else None)
        parties[role] = sb_party(role, data, pool=pool, goss_seed=goss_seed if bank else None)
    return parties, y, train


def run(backend, roles=ROLES, sealed=False, rows=600, goss_seed=None, **cfg):
    taps = []
    with WorkerPool(1) as pool:
        parties, y, train = make_parties(rows, roles=roles, pool=pool, valid=cfg.get("patience") is not None,
                                         goss_seed=goss_seed)
        relays = None
        if sealed:
            ids = {r: Identity.generate(r) for r in roles}
            relays = {r: SealedRelay(ids[r], [ids[o].public for o in roles if o != r]) for r in roles}
        coord = SbCoordinator("sb-test", list(roles), SbConfig(backend=backend, **{**CONFIG, **cfg}))
        rounds = drive(coord, parties, relays=relays, tap=taps.append)
    return {"coord": coord, "parties": parties, "y": y, "train": train, "taps": taps, "rounds": rounds}


@pytest.fixture(scope="module")
def encrypted():
    return run("paillier")


@pytest.fixture(scope="module")
def mock_sealed():
    return run("mock", sealed=True)


def reference(result, roles=ROLES):
    parties = result["parties"]
    bank = parties["bank"]
    blocks = [PartyBins(r, parties[r].data.train_bins, parties[r].data.n_bins) for r in roles]
    valid = None
    if bank.data.valid_rows is not None:
        rows = bank.data.valid_rows
        valid = ([PartyBins(r, parties[r].data.bins[rows], parties[r].data.n_bins) for r in roles], result["y"][rows])
    model = GbdtReference(bank.gbdt_config()).fit(blocks, result["y"][result["train"]], valid)
    every = [PartyBins(r, parties[r].data.bins, parties[r].data.n_bins) for r in roles]
    return model, model.decision_function(every)


def test_federated_trees_equal_the_plaintext_reference(encrypted):
    model, scores = reference(encrypted)
    bank = encrypted["parties"]["bank"]
    assert len(bank.trees) == 3
    for fed, central in zip(bank.trees, model.trees):
        assert fed.signature() == central.signature()  # same splits (party, feature, bin), same leaf weights
    assert any(n.party == "tax" for t in bank.trees for n in t.nodes)  # hosts' features are really used
    assert any(n.party == "utilities" for t in bank.trees for n in t.nodes)
    assert bank.base == model.base
    np.testing.assert_allclose(bank.raw_scores, scores, rtol=0, atol=1e-12)
    assert [h["loss"] for h in bank.history] == [h["loss"] for h in model.history]


@pytest.mark.parametrize("settings", [
    dict(rows=2000, max_depth=4, n_trees=3, l2=0.5, gamma=0.05, min_child_weight=2.0, learning_rate=0.1),
    dict(rows=1200, max_depth=2, n_trees=4, scale_bits=12, roles=("bank", "utilities")),
])
def test_other_settings_give_the_same_trees_as_the_reference(settings):
    roles = settings.pop("roles", ROLES)
    result = run("mock", roles=roles, **settings)
    model, scores = reference(result, roles=roles)
    bank = result["parties"]["bank"]
    assert [t.signature() for t in bank.trees] == [t.signature() for t in model.trees]
    np.testing.assert_allclose(bank.raw_scores, scores, rtol=0, atol=1e-12)


def test_a_first_tree_from_bank_features_only_reaches_no_host():
    result = run("mock", n_trees=3, bank_first_tree=True)
    model, scores = reference(result)
    bank = result["parties"]["bank"]
    assert [t.signature() for t in bank.trees] == [t.signature() for t in model.trees]
    assert {n.party for n in bank.trees[0].nodes} <= {"bank", None}
    assert any(n.party not in ("bank", None) for t in bank.trees[1:] for n in t.nodes)
    sent = {(m.receiver, m.step) for m in map(Message.from_bytes, result["taps"]) if m.kind == sb.GRADIENTS}
    assert len(sent) == 2 * 2  # trees 2 and 3, to each host (the tap sees each relayed message twice)
    np.testing.assert_allclose(bank.raw_scores, scores, rtol=0, atol=1e-12)


def test_encrypted_and_mock_give_identical_trees_and_sealing_changes_nothing(encrypted, mock_sealed):
    enc, mock = encrypted["parties"]["bank"], mock_sealed["parties"]["bank"]
    assert [t.signature() for t in enc.trees] == [t.signature() for t in mock.trees]
    assert np.array_equal(enc.scores, mock.scores)
    for role in ("tax", "utilities"):
        assert encrypted["parties"][role].lookup == mock_sealed["parties"][role].lookup
    assert encrypted["rounds"] == mock_sealed["rounds"]
    relayed = [Message.from_bytes(b) for b in mock_sealed["taps"]]
    relayed = [m for m in relayed if m.relayed]
    assert relayed and all(m.sealed and m.meta == {} for m in relayed)


def test_only_the_bank_learns_scores_and_hosts_keep_their_lookup_tables(encrypted):
    parties = encrypted["parties"]
    bank = parties["bank"]
    assert bank.scores is not None and bank.scores.shape == (parties["bank"].data.bins.shape[0],)
    for role in ("tax", "utilities"):
        host = parties[role]
        assert host.scores is None and host.keypair is None
        records = [n.record for t in bank.trees for n in t.nodes if n.party == role]
        assert sorted(records) == list(range(len(host.lookup)))  # every host split is in its table, once
        for t in bank.trees:
            for n in t.nodes:
                if n.party == role:
                    assert host.lookup[n.record] == (n.feature, n.bin)
        part = host.model_part()
        assert [row["record"] for row in part["lookup"]] == list(range(len(host.lookup)))
        assert all(row["rule"].startswith(row["name"]) for row in part["lookup"])
    # prediction asks hosts only along the rows' paths: at most one round trip per level
    routes = {m.step for m in map(Message.from_bytes, encrypted["taps"]) if m.kind == sb.ROUTE}
    assert 1 <= len(routes) <= bank.cfg.max_depth


def _threshold_forms(value: float) -> tuple[list[str], list[bytes]]:
    texts = {t for t in (repr(value), str(value), f"{value:.6g}", f"{value:.4f}", json.dumps(value)) if "." in t or "e" in t}
    binary = [struct.pack(">d", value), struct.pack("<d", value)]
    return sorted(texts), binary


def test_host_thresholds_never_appear_in_any_message(encrypted):
    parties = encrypted["parties"]
    values = set()
    for role in ("tax", "utilities"):
        specs = parties[role].data.prep.specs
        for j, b in parties[role].lookup:  # thresholds of the splits actually used ...
            if specs[j].kind == "numeric" and b < len(specs[j].edges):
                values.add(specs[j].edges[b])
        values |= {e for s in specs for e in s.edges if abs(e) >= 10}  # ... and every other edge that is not a tiny number
    assert len(values) > 20
    # positive control: the host's own model part does show its thresholds
    text = json.dumps([parties[r].model_part() for r in ("tax", "utilities")])
    assert any(any(t in text for t in _threshold_forms(v)[0]) for v in values)
    messages = [Message.from_bytes(b) for b in encrypted["taps"]]
    assert {m.kind for m in messages} >= set(sb.KINDS) - {sb.PRUNE, sb.PRUNED}  # pruning: early stopping only
    for m in messages:
        # the coordinator's own messages carry public settings only (e.g. l2 = 1.0, which may equal an edge)
        header = json.dumps(m.header(), sort_keys=True) if m.sender != "coordinator" else ""
        for v in values:
            texts, binary = _threshold_forms(v)
            assert not any(t in header for t in texts), (m.describe(), v)
            assert not any(b in m.payload for b in binary), (m.describe(), v)
            assert not any(t.encode() in m.payload for t in texts if len(t) >= 8), (m.describe(), v)


def test_histograms_are_compressed_before_sending(encrypted):
    key_bytes = 2 * 1024 // 8
    for m in (Message.from_bytes(b) for b in encrypted["taps"]):
        if m.kind == sb.HISTOGRAMS:
            bins = sum(m.meta["n_bins"]) * len(m.meta["nodes"])
            assert len(m.payload) // key_bytes * 10 < bins  # > 10 bins per ciphertext at 1024 bits


def test_the_bank_alone_grows_the_same_trees_without_messages():
    result = run("mock", roles=("bank",), n_trees=2)
    model, scores = reference(result, roles=("bank",))
    bank = result["parties"]["bank"]
    assert [t.signature() for t in bank.trees] == [t.signature() for t in model.trees]
    np.testing.assert_allclose(bank.raw_scores, scores, rtol=0, atol=1e-12)
    assert result["rounds"] == 1 + 1  # setup; then every tree and the prediction in one round (sb.tree + sb.predict)


def test_gh_packing_round_trips_through_sums():
    rng = np.random.default_rng(3)
    g, h = rng.integers(-2**16, 2**16, 500), rng.integers(0, 2**14, 500)
    slot = wire.gh_slot_bits(16, 500)
    packed = wire.pack_gh(g, h, slot)
    sums = [sum(packed[:250]), sum(packed[250:]), sum(packed)]
    big_g, big_h = wire.unpack_gh(sums, slot)
    assert big_g.tolist() == [g[:250].sum(), g[250:].sum(), g.sum()]
    assert big_h.tolist() == [h[:250].sum(), h[250:].sum(), h.sum()]


# --- GOSS, early stopping, feature importance ------------------------------------------------

GOSS_ES = dict(rows=1000, n_trees=10, goss_top=0.2, goss_other=0.3, patience=2, goss_seed=5)


@pytest.fixture(scope="module")
def goss_es_encrypted():
    return run("paillier", **GOSS_ES)


@pytest.fixture(scope="module")
def goss_es_mock():
    return run("mock", sealed=True, **GOSS_ES)


def test_goss_and_early_stopping_give_the_reference_trees_encrypted_and_mock(goss_es_encrypted, goss_es_mock):
    model, scores = reference(goss_es_encrypted)
    enc, mock = goss_es_encrypted["parties"]["bank"], goss_es_mock["parties"]["bank"]
    assert [t.signature() for t in enc.trees] == [t.signature() for t in model.trees]
    assert [t.signature() for t in mock.trees] == [t.signature() for t in model.trees]
    assert [n.gain for t in enc.trees for n in t.nodes] == [n.gain for t in model.trees for n in t.nodes]
    assert enc.history == mock.history == model.history  # training loss and validation AUC after every grown tree
    np.testing.assert_allclose(enc.raw_scores, scores, rtol=0, atol=1e-12)
    assert np.array_equal(enc.scores, mock.scores)
    for role in ("tax", "utilities"):
        assert goss_es_encrypted["parties"][role].lookup == goss_es_mock["parties"][role].lookup
    assert goss_es_encrypted["rounds"] == goss_es_mock["rounds"]


def test_goss_sends_hosts_the_sampled_rows_only(goss_es_encrypted):
    result = goss_es_encrypted
    bank = result["parties"]["bank"]
    n = len(result["train"])
    sampled = [m for m in map(Message.from_bytes, result["taps"]) if m.kind == sb.GRADIENTS]
    assert len(sampled) == 2 * 2 * len(bank.history)  # each tree, each host; the tap sees a relayed message twice
    expected = int(0.2 * n) + int(0.3 * n)
    for m in sampled:
        assert m.meta["sampled"] is True
        root = np.frombuffer(dict(zip([p["name"] for p in m.meta["parts"]], _split_parts(m)))["root"], dtype=">u4")
        assert len(root) == expected and np.all(np.diff(root.astype(np.int64)) > 0)
        gh = next(p for p in m.meta["parts"] if p["name"] == "gh")
        assert gh["size"] == expected * 2 * 1024 // 8  # ciphertexts of the sampled rows only
    assert "goss_seed" not in json.dumps(next(m for m in map(Message.from_bytes, result["taps"]) if m.kind == sb.SETUP).meta)


def _split_parts(m):
    out, at = [], 0
    for p in m.meta["parts"]:
        out.append(m.payload[at:at + p["size"]])
        at += p["size"]
    return out


def test_early_stopping_stops_at_the_same_tree_and_keeps_the_best(goss_es_encrypted):
    result = goss_es_encrypted
    model, _ = reference(result)
    bank, coord = result["parties"]["bank"], result["coord"]
    aucs = [h["valid_auc"] for h in bank.history]
    grown, best = len(aucs), int(np.argmax(aucs)) + 1  # first maximum: later ties are no improvement
    assert grown < 10 and grown - best == 2  # stopped after `patience` trees without improvement
    assert len(coord.history) == grown and coord.history[-1]["stop"] and not any(h["stop"] for h in coord.history[:-1])
    assert len(bank.trees) == len(model.trees) == model.best_trees == best
    for role in ("tax", "utilities"):  # hosts dropped the records of the dropped trees
        host = result["parties"][role]
        assert sorted(n.record for t in bank.trees for n in t.nodes if n.party == role) == list(range(len(host.lookup)))
    prunes = [m for m in map(Message.from_bytes, result["taps"]) if m.kind == sb.PRUNE]
    assert {m.receiver for m in prunes} == {"tax", "utilities"} and all(not m.payload for m in prunes)
    # validation rows are routed through each new tree only: one route phase per tree (≤ depth rounds each)
    routes = {m.step for m in map(Message.from_bytes, result["taps"]) if m.kind == sb.ROUTE}
    assert len(routes) <= (grown + 1) * bank.cfg.max_depth


def test_early_stopping_without_goss_matches_the_reference():
    result = run("mock", rows=1000, n_trees=10, patience=2)
    model, scores = reference(result)
    bank = result["parties"]["bank"]
    assert [t.signature() for t in bank.trees] == [t.signature() for t in model.trees]
    assert bank.history == model.history and len(bank.history) > len(bank.trees)
    np.testing.assert_allclose(bank.raw_scores, scores, rtol=0, atol=1e-12)
    messages = [Message.from_bytes(b) for b in result["taps"]]
    predict = next(m.step for m in messages if m.kind == sb.PREDICT)
    valid, train = set(bank.data.valid_rows.tolist()), set(bank.data.train_rows.tolist())
    assert not [m for m in messages if m.kind == sb.ROUTE and m.step < predict]  # no routing rounds while training
    asked = [rows for m in messages if m.kind in (sb.NODES, sb.SPLIT)
             for p, rows in zip(m.meta["parts"], _split_parts(m)) if p["name"].startswith("ask")]
    assert any(asked)
    for data in asked:  # validation rows travel with the tree's levels (no GOSS: every training row is in the root)
        rows = set(np.frombuffer(data, dtype=">u4").tolist())
        assert rows <= valid and not rows & train


def test_each_party_sees_the_importance_of_its_own_features_only(goss_es_encrypted, encrypted):
    for result in (goss_es_encrypted, encrypted):
        model, _ = reference(result)
        parties = result["parties"]
        central = model.importance()
        bank = parties["bank"].importance()
        assert {j: (v["splits"], v["gain"]) for j, v in bank["features"].items()} == {
            j: (v["splits"], v["gain"]) for (p, j), v in central.items() if p == "bank"}
        for role in ("tax", "utilities"):
            host = parties[role]
            mine = host.importance()["features"]
            assert {j: v["splits"] for j, v in mine.items()} == {j: v["splits"] for (p, j), v in central.items() if p == role}
            assert all("gain" not in v and v["name"] == host.data.prep.specs[j].name for j, v in mine.items())
            # the bank's gains by opaque record, joined with the host's private table, give the central gains
            joined = {}
            for record, gain in bank["host_records"][role].items():
                joined[host.lookup[record][0]] = joined.get(host.lookup[record][0], 0.0) + gain
            assert joined == pytest.approx({j: v["gain"] for (p, j), v in central.items() if p == role}, rel=1e-12)
        assert any(p != "bank" for p, _ in central)
        # no gain (nor any importance) travels: split gains appear in no message as text or IEEE double
        gains = {n.gain for t in parties["bank"].trees for n in t.nodes if n.gain is not None}
        for m in map(Message.from_bytes, result["taps"]):
            header = json.dumps(m.header())
            assert "gain" not in header and "importance" not in header
            for v in gains:
                texts, binary = _threshold_forms(v)
                assert not any(t in header for t in texts) and not any(b in m.payload for b in binary)


def test_goss_and_early_stopping_settings_are_checked():
    with pytest.raises(ProtocolError, match="goss"):
        SbConfig(goss_top=0.2)
    with pytest.raises(ProtocolError, match="patience"):
        SbConfig(patience=0)
    parties, *_ = make_parties(roles=ROLES)
    coord = SbCoordinator("t", list(ROLES), SbConfig(backend="mock", patience=2, **CONFIG))
    to_bank = next(m for m in coord.start() if m.receiver == "bank")
    with pytest.raises(ProtocolError, match="validation rows"):
        parties["bank"].handle(to_bank)
    with pytest.raises(ProtocolError, match="the bank's"):
        sb_party("tax", TreePartyData(np.zeros((3, 1), dtype=int), [2], np.arange(3)), goss_seed=1)


# --- strict messages ----------------------------------------------------------------------

@pytest.fixture()
def set_up():
    parties, *_ = make_parties(roles=ROLES)
    coord = SbCoordinator("t", list(ROLES), SbConfig(backend="mock", **CONFIG))
    replies = [r for m in coord.start() for r in parties[m.receiver].handle(m)]
    return coord, parties, replies


def test_messages_before_setup_and_malformed_setups_are_rejected():
    parties, *_ = make_parties(roles=ROLES)
    coord = SbCoordinator("t", list(ROLES), SbConfig(backend="mock", **CONFIG))
    to_tax = next(m for m in coord.start() if m.receiver == "tax")
    tax = parties["tax"]
    with pytest.raises(ProtocolError, match="not been set up"):
        tax.handle(Message(sb.NODES, "bank", "tax", "t", 1, {}))
    with pytest.raises(ProtocolError, match="malformed setup"):
        tax.handle(Message(**{**to_tax.__dict__, "meta": {"config": {"n_trees": "x"}, "parties": list(ROLES)}}))
    with pytest.raises(ProtocolError, match="max_depth"):
        tax.handle(Message(**{**to_tax.__dict__, "meta": {"config": {"max_depth": 0}, "parties": list(ROLES)}}))
    with pytest.raises(ProtocolError, match="start with the bank"):
        tax.handle(Message(**{**to_tax.__dict__, "meta": {**to_tax.meta, "parties": ["tax", "bank"]}}))
    tax.handle(to_tax)
    with pytest.raises(ProtocolError, match="already set up"):
        tax.handle(to_tax)
    with pytest.raises(ProtocolError, match="only the bank holds labels"):
        sb_party("tax", TreePartyData(np.zeros((3, 1), dtype=int), [2], np.arange(3), np.zeros(3)))


def test_unexpected_messages_are_rejected(set_up):
    coord, parties, _ = set_up
    bank, tax = parties["bank"], parties["tax"]
    with pytest.raises(ProtocolError, match="unexpected sb.tree"):
        tax.handle(Message(sb.TREE, "coordinator", "tax", "t", 1, {"tree": 0}))
    with pytest.raises(ProtocolError, match="unexpected sb.histograms"):
        bank.handle(Message(sb.HISTOGRAMS, "tax", "bank", "t", 1, {}))
    with pytest.raises(ProtocolError, match="expected 'bank'"):
        tax.handle(Message(sb.SPLIT, "utilities", "tax", "t", 1, {}))
    with pytest.raises(ProtocolError, match="run_id"):
        tax.handle(Message(sb.SPLIT, "bank", "tax", "other-run", 1, {}))
    with pytest.raises(ProtocolError, match="no gradients"):
        tax.handle(Message(sb.NODES, "bank", "tax", "t", 1, {"nodes": []}))
    with pytest.raises(ProtocolError, match="tree 1 requested"):
        bank.handle(Message(sb.TREE, "coordinator", "bank", "t", 1, {"tree": 1}))
    predict = Message(sb.PREDICT, "coordinator", "bank", "t", 1, {})
    assert bank.handle(predict) == []  # before training ends, a prediction waits for it (it comes with sb.tree)
    with pytest.raises(ProtocolError, match="already waiting"):
        bank.handle(predict)


def test_malformed_host_requests_are_rejected(set_up):
    coord, parties, _ = set_up
    bank, tax = parties["bank"], parties["tax"]
    out = bank.handle(Message(sb.TREE, "coordinator", "bank", "t", 1, {"tree": 0}))
    to_tax = next(m for m in out if m.receiver == "tax")
    assert to_tax.kind == sb.GRADIENTS
    bad_key = Message(**{**to_tax.__dict__, "meta": {**to_tax.meta, "key_n": "zz"}})
    with pytest.raises(ProtocolError, match="malformed key"):
        tax.handle(bad_key)
    with pytest.raises(ProtocolError, match="slot width"):
        tax.handle(Message(**{**to_tax.__dict__, "meta": {**to_tax.meta, "slot_bits": 3}}))
    with pytest.raises(ProtocolError, match="does not fit"):
        tax.handle(Message(**{**to_tax.__dict__, "payload": to_tax.payload[:-128]}))
    tax.handle(to_tax)
    n = len(tax.data.train_rows)

    def split(feature=0, b=0, node=0):
        return Message(sb.SPLIT, "bank", "tax", "t", 3, {"splits": [{"node": node, "feature": feature, "bin": b}]})

    with pytest.raises(ProtocolError, match="no split feature"):
        tax.handle(split(b=tax.data.n_bins[0] - 1))
    with pytest.raises(ProtocolError, match="no split feature"):
        tax.handle(split(feature=len(tax.data.n_bins)))
    with pytest.raises(ProtocolError, match="not distinct nodes of the level"):
        tax.handle(split(node=7))

    def nodes(share: bytes, parent=0, splits=(), ask=b""):
        payload, meta = bundle({f"share{parent}": (share, {}), **{f"ask{s['node']}": (ask, {}) for s in splits}})
        return Message(sb.NODES, "bank", "tax", "t", 3, {**meta, "nodes": [{"parent": parent, "left": 1, "right": 2}],
                                                         "splits": list(splits)}, payload)

    share = wire.mask_to_bytes(np.zeros(n, dtype=bool))
    with pytest.raises(ProtocolError, match="not distinct nodes of the current level"):
        tax.handle(nodes(share, parent=9))
    with pytest.raises(ProtocolError, match="bytes for a mask"):
        tax.handle(nodes(share[:-1], splits=[{"node": 0, "feature": 0, "bin": 0}]))
    for bad, match in ((wire.rows_to_bytes(np.array([3, 2])), "strictly increasing"), (b"\x00" * 5, "4-byte")):
        with pytest.raises(ProtocolError, match=match):  # rows the bank asks about at the split
            tax.handle(nodes(share, splits=[{"node": 0, "feature": 0, "bin": 0}], ask=bad))
    with pytest.raises(ProtocolError, match="must be new and distinct"):
        tax.handle(Message(**{**nodes(share).__dict__, "meta": {**nodes(share).meta,
                                                                 "nodes": [{"parent": 0, "left": 1, "right": 1}]}}))
    with pytest.raises(ProtocolError, match="parent/left/right"):
        tax.handle(Message(**{**nodes(share).__dict__, "meta": {**nodes(share).meta, "nodes": [{"parent": 0}]}}))
    with pytest.raises(ProtocolError, match="no share expected"):
        tax.handle(Message(sb.SHARE, "utilities", "tax", "t", 3, {"nodes": [0]}))
    with pytest.raises(ProtocolError, match="no pair seed shared with bank"):  # its sb.seed never arrived
        tax.handle(nodes(share, splits=[{"node": 0, "feature": 0, "bin": 0}]))
    with pytest.raises(ProtocolError, match="one pair seed from each party before it"):
        tax.handle(Message(sb.SEED, "utilities", "tax", "t", 1, {}, b"\0" * 32))
    assert tax.lookup == []  # nothing was recorded from rejected requests
    rows = wire.rows_to_bytes(np.arange(n))
    payload, meta = bundle({"q0": (rows, {})})
    with pytest.raises(ProtocolError, match="no split record"):
        tax.handle(Message(sb.ROUTE, "bank", "tax", "t", 3, {**meta, "queries": [{"record": 0, "part": "q0"}]}, payload))


def _root_answers(parties):
    out = parties["bank"].handle(Message(sb.TREE, "coordinator", "bank", "t", 1, {"tree": 0}))
    return {m.receiver: parties[m.receiver].handle(m)[0] for m in out}


def _rotated(meta: dict) -> dict:
    n_bins = meta["n_bins"][1:] + meta["n_bins"][:1]
    assert n_bins != meta["n_bins"]
    return {**meta, "n_bins": n_bins}


@pytest.mark.parametrize("tamper, match", [
    (lambda m: {**m.__dict__, "meta": {**m.meta, "nodes": [1]}}, "expected \\[0\\]"),
    (lambda m: {**m.__dict__, "meta": {**m.meta, "n_bins": [11]}}, "expected 11 under the bank"),
    (lambda m: {**m.__dict__, "meta": _rotated(m.meta)}, "does not add up"),
    (lambda m: {**m.__dict__, "payload": m.payload[:-8]}, "does not fit|malformed"),
])
def test_the_bank_rejects_bad_histograms(set_up, tamper, match):
    _, parties, _ = set_up
    answers = _root_answers(parties)
    assert parties["bank"].handle(answers["tax"]) == []  # the bank waits for every host
    with pytest.raises(ProtocolError, match=match):
        parties["bank"].handle(Message(**tamper(answers["utilities"])))


def test_the_bank_rejects_unexpected_and_duplicate_answers(set_up):
    _, parties, _ = set_up
    bank = parties["bank"]
    tax = _root_answers(parties)["tax"]
    with pytest.raises(ProtocolError, match="unexpected sb.left"):
        bank.handle(Message(**{**tax.__dict__, "kind": sb.LEFT}))
    bank.handle(tax)
    with pytest.raises(ProtocolError, match="duplicate"):
        bank.handle(tax)


def test_the_coordinator_relays_only_protocol_routes(set_up):
    coord, parties, replies = set_up
    first = coord.advance(replies)
    # training starts with the pair seeds drawn in setup: the bank's to each host, tax's to utilities
    assert sorted((m.kind, m.sender, m.receiver) for m in first) == [
        ("sb.predict", "coordinator", "bank"), ("sb.seed", "bank", "tax"), ("sb.seed", "bank", "utilities"),
        ("sb.seed", "tax", "utilities"), ("sb.tree", "coordinator", "bank")]
    first = [m for m in first if m.kind == sb.TREE]
    out = parties["bank"].handle(first[0])
    for forged in (Message(sb.GRADIENTS, "tax", "utilities", "t", 2, {}), Message(sb.SHARE, "bank", "tax", "t", 2, {}),
                   Message(sb.SHARE, "tax", "tax", "t", 2, {})):
        with pytest.raises(ProtocolError, match="cannot relay"):
            coord.advance(out + [forged])
    coord2 = SbCoordinator("t", list(ROLES), SbConfig(backend="mock", **CONFIG))
    coord2.start()
    with pytest.raises(ProtocolError, match="expected sb.ready"):
        coord2.advance(replies[:1])
    with pytest.raises(ProtocolError, match="bank first"):
        SbCoordinator("t", ["tax", "bank"])


def test_malformed_goss_and_prune_requests_are_rejected():
    parties, *_ = make_parties(roles=ROLES, goss_seed=1)
    coord = SbCoordinator("t", list(ROLES), SbConfig(backend="mock", goss_top=0.2, goss_other=0.2, **CONFIG))
    for m in coord.start():
        parties[m.receiver].handle(m)
    bank, tax = parties["bank"], parties["tax"]
    to_tax = next(m for m in bank.handle(Message(sb.TREE, "coordinator", "bank", "t", 1, {"tree": 0})) if m.receiver == "tax")
    assert to_tax.meta["sampled"] is True
    with pytest.raises(ProtocolError, match="'sampled' must be a bool"):
        tax.handle(Message(**{**to_tax.__dict__, "meta": {**to_tax.meta, "sampled": 1}}))
    with pytest.raises(ProtocolError, match="payload parts"):  # a sampled root without its row list
        tax.handle(Message(**{**to_tax.__dict__, "meta": {**to_tax.meta, "sampled": False}}))
    tax.handle(to_tax)
    with pytest.raises(ProtocolError, match="records to keep"):
        tax.handle(Message(sb.PRUNE, "bank", "tax", "t", 3, {"records": 1}))
    with pytest.raises(ProtocolError, match="records"):
        tax.handle(Message(sb.PRUNE, "bank", "tax", "t", 3, {"records": -1}))
    with pytest.raises(ProtocolError, match="unexpected sb.prune"):
        bank.handle(Message(sb.PRUNE, "coordinator", "bank", "t", 3, {"records": 0}))


@pytest.mark.parametrize("roles, extra", [(ROLES, dict(bank_first_tree=True)), (("bank",), {})])
def test_goss_and_early_stopping_combine_with_a_bank_only_first_tree_and_a_lone_bank(roles, extra):
    result = run("mock", roles=roles, **{**GOSS_ES, "patience": 1, **extra})
    model, scores = reference(result, roles=roles)
    bank = result["parties"]["bank"]
    assert [t.signature() for t in bank.trees] == [t.signature() for t in model.trees]
    assert bank.history == model.history and len(bank.history) > len(bank.trees)
    np.testing.assert_allclose(bank.raw_scores, scores, rtol=0, atol=1e-12)
    messages = [Message.from_bytes(b) for b in result["taps"]]
    first = min((m.step for m in messages if m.kind == sb.TREE_DONE and m.meta["tree"] == 0), default=None)
    relayed = [m for m in messages if m.relayed and m.kind != sb.SEED]
    # apart from the pair seeds of setup, nothing reaches a host before the second tree (the bank-only first tree's routing needs no host); the bank
    # sends the second tree's gradients in the reply that reports the first tree
    assert all(m.step >= first for m in relayed)
    assert not relayed or (relayed[0].kind == sb.GRADIENTS and relayed[0].meta["tree"] == 1 and relayed[0].step == first)


# --- rounds per tree, and what the level's messages tell a host ---------------------------------

class Rounds:
    """A coordinator seen through its rounds: the kinds of the messages it sends in each."""

    def __init__(self, coord):
        self.coord, self.kinds = coord, []

    def start(self):
        return self._seen(self.coord.start())

    def advance(self, replies):
        return self._seen(self.coord.advance(replies))

    def _seen(self, out):
        self.kinds.append({m.kind for m in out})
        return out


def rounds_per_tree(roles, **cfg) -> list[int]:
    """Rounds from each tree's sb.gradients to the next tree's (the trees grown with hosts), the last to sb.predict."""
    parties, *_ = make_parties(roles=roles, valid=cfg.get("patience") is not None, goss_seed=cfg.pop("goss_seed", None))
    coord = Rounds(SbCoordinator("sb-rounds", list(roles), SbConfig(backend="mock", **{**CONFIG, **cfg})))
    drive(coord, parties)
    starts = [k for k, kinds in enumerate(coord.kinds) if sb.GRADIENTS in kinds]
    # the prediction's first sb.route leaves with the last tree's report; GOSS, early stopping: no routing before
    predict = next(k for k, kinds in enumerate(coord.kinds) if sb.ROUTE in kinds)
    assert predict > starts[-1]
    assert coord.kinds[1] == {sb.TREE, sb.PREDICT} | ({sb.SEED} if len(roles) > 2 else set())  # once per run
    assert sum(sb.TREE in kinds or sb.PREDICT in kinds for kinds in coord.kinds) == 1
    return [b - a for a, b in zip(starts, starts[1:] + [predict])]


@pytest.mark.parametrize("roles, per_level, extra", [
    (ROLES, 3, {}), (("bank", "utilities"), 2, {}),
    (ROLES, 3, dict(goss_top=0.2, goss_other=0.3, goss_seed=5, patience=5)),
])
def test_a_tree_takes_at_most_three_rounds_per_level_two_with_one_host(roles, per_level, extra):
    """Per tree: gradients → root histograms (2 rounds), each level below the root ``per_level`` rounds (sb.nodes,
    with two hosts or more sb.share, sb.histograms) and the last level's sb.split → sb.left (2); the next tree's
    gradients leave with the last tree's sb.tree_done, rows outside the sample and validation rows travel with the
    levels. Was 4 per level plus an sb.tree round per tree, and up to 2 × depth routing rounds with GOSS or patience."""
    depth = 4
    spans = rounds_per_tree(roles, n_trees=3, max_depth=depth, **extra)
    bound = 2 + per_level * (depth - 1) + 2
    assert len(spans) == 3
    assert max(spans[:-1]) <= bound and spans[-1] <= bound + 2 * bool(extra), spans  # + sb.prune → sb.pruned, once
    if not extra:
        assert max(spans) == bound  # full-depth trees here: the bound is met, not beaten


def _node_rows(parties, tree) -> dict[int, np.ndarray]:
    """Training rows of every node of a finished tree, routed on every party's bins (only a test sees them all)."""
    at = {0: np.arange(len(parties["bank"].data.train_rows))}
    for node in tree.nodes:  # children have higher ids than their parent
        if not node.is_leaf:
            rows = at[node.id]
            go = parties[node.party].data.train_bins[rows, node.feature] <= node.bin
            at[node.left], at[node.right] = rows[go], rows[~go]
    return at


def test_a_host_gets_the_same_messages_whoever_split_and_shares_alone_are_noise(encrypted):
    """Every level below the root, a host gets sb.nodes from the bank, then sb.share from each other host, whichever
    party split a node; XOR-ed they give the partition, while no single share is it (nor all zeros)."""
    parties, me = encrypted["parties"], "utilities"
    bank = parties["bank"]
    messages = [Message.from_bytes(b) for b in dict.fromkeys(encrypted["taps"])]  # the tap sees relayed ones twice
    tree, levels, owners = -1, {}, set()
    for m in messages:
        if m.kind == sb.GRADIENTS and m.receiver == me:
            tree = m.meta["tree"]
        if m.receiver == me and m.kind in (sb.NODES, sb.SHARE):  # a share answers sb.nodes one step later
            levels.setdefault((tree, m.step - (m.kind == sb.SHARE)), []).append(m)
    assert len(levels) == 3 * (CONFIG["max_depth"] - 1)  # every level below the root that has children to build
    for (t, _), msgs in levels.items():
        assert [(m.kind, m.sender) for m in msgs] == [(sb.NODES, "bank"), (sb.SHARE, "tax")]
        rows = _node_rows(parties, bank.trees[t])
        got = [dict(zip([p["name"] for p in m.meta["parts"]], _split_parts(m))) for m in msgs]
        for e in msgs[0].meta["nodes"]:
            p = e["parent"]
            n = len(rows[p])
            a, b = (np.unpackbits(np.frombuffer(g[f"share{p}"], dtype=np.uint8))[:n].astype(bool) for g in got)
            left = np.isin(rows[p], rows[e["left"]])
            owner = bank.trees[t].nodes[p].party
            owners.add(owner)
            assert np.array_equal(a ^ b, left if owner != me else np.zeros(n, dtype=bool))
            for share in (a, b):
                assert share.any() and not np.array_equal(share, left)
    assert owners == {"bank", "tax", me}  # nodes of every party were among them


def test_the_coordinator_takes_the_prediction_only_with_the_last_tree():
    """sb.predict goes out with sb.tree; the bank's sb.scored may come with the last sb.tree_done, never earlier."""
    def started():
        coord = SbCoordinator("t", ["bank", "tax"], SbConfig(backend="mock", **{**CONFIG, "n_trees": 2}))
        coord.start()
        first = coord.advance([Message(sb.READY, p, "coordinator", "t", 1, {}) for p in ("bank", "tax")])
        assert sorted(m.kind for m in first) == [sb.PREDICT, sb.TREE]
        return coord

    def done(tree):
        return Message(sb.TREE_DONE, "bank", "coordinator", "t", 2, {"tree": tree, "stop": False, "trees": tree + 1})

    scored = Message(sb.SCORED, "bank", "coordinator", "t", 2, {"rows": 10})
    with pytest.raises(ProtocolError, match="sb.scored before the last tree"):
        started().advance([done(0), scored, Message(sb.GRADIENTS, "bank", "tax", "t", 2, {})])
    with pytest.raises(ProtocolError, match="sent sb.scored before sb.tree_done"):
        started().advance([scored])
    coord = started()
    assert [m.kind for m in coord.advance([done(0), Message(sb.GRADIENTS, "bank", "tax", "t", 2, {})])] == [sb.GRADIENTS]
    assert coord.advance([done(1), scored]) == [] and coord.done and coord.trees == 2
