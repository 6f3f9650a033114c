"""SecureBoost as a model the job keeps: parties pickle between messages, saved parts score, reasons add up."""

import pickle

import numpy as np
import pytest

from fedcredit.crypto import WorkerPool
from fedcredit.data import synth
from fedcredit.data.binning import FeaturePrep
from fedcredit.data.reference import feature_names, join_nodes
from fedcredit.protocols import secureboost as sb
from fedcredit.common.errors import ProtocolError
from fedcredit.protocols.job import split_assignment
from fedcredit.protocols.loop import drive
from fedcredit.protocols.secureboost import SbConfig, SbCoordinator, SbHost, TreePartyData, sb_party
from fedcredit.protocols.secureboost.reasons import _expected_values as expected_values

ROLES = ("bank", "tax", "utilities")
CONFIG = dict(n_trees=3, max_depth=3, learning_rate=0.3, key_bits=1024, backend="mock")


def party_data(rows=600, seed=0, valid=False):
    joined = join_nodes(synth.generate(rows, seed))
    y = joined["default_12m"].to_numpy()
    split = split_assignment(joined["uscc"].tolist(), seed, 0.6, 0.2)
    train, valid_rows = np.flatnonzero(split == 0), (np.flatnonzero(split == 1) if valid else None)
    out = {}
    for role in ROLES:
        frame = joined[feature_names(role)]
        prep = FeaturePrep.fit(frame.iloc[train])
        bank = role == "bank"
        out[role] = TreePartyData.from_prep(prep, frame, train, y if bank else None, valid_rows if bank else None)
    return out


def freeze(obj, seen=None) -> None:
    """Make every numpy array in a party's state read-only, as a node's checkpoint leaves the arrays it stored."""
    seen = set() if seen is None else seen
    if id(obj) in seen or isinstance(obj, (str, bytes, int, float, type)) or obj is None:
        return
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        obj.flags.writeable = False
    elif isinstance(obj, dict):
        for v in obj.values():
            freeze(v, seen)
    elif isinstance(obj, (list, tuple, set)):
        for v in obj:
            freeze(v, seen)
    elif hasattr(obj, "__dict__"):
        freeze(vars(obj), seen)


class Pickled:
    """A party that lives only as bytes between messages, as on a transport that checkpoints nodes (whose stored
    arrays come back read-only: a party must change copies)."""

    def __init__(self, party):
        self.blob = pickle.dumps(party)

    @property
    def party(self):
        return pickle.loads(self.blob)

    def handle(self, msg):
        party = pickle.loads(self.blob)
        freeze(party)
        replies = party.handle(msg)
        self.blob = pickle.dumps(party)
        return replies


def train(data, wrap=lambda p: p, goss_seed=7, **cfg):
    parties = {r: wrap(sb_party(r, d, goss_seed=goss_seed if r == "bank" else None)) for r, d in data.items()}
    coord = SbCoordinator("sbm", list(ROLES), SbConfig(**{**CONFIG, **cfg}))
    drive(coord, parties)
    return coord, {r: (p.party if isinstance(p, Pickled) else p) for r, p in parties.items()}


@pytest.fixture(scope="module")
def data():
    return party_data(valid=True)


@pytest.fixture(scope="module")
def trained(data):
    return train(data, patience=2, n_trees=6)


def test_parties_pickled_between_every_message_grow_the_same_model(data, trained):
    _, live = trained
    _, pickled = train(data, wrap=Pickled, patience=2, n_trees=6)
    assert [t.signature() for t in pickled["bank"].trees] == [t.signature() for t in live["bank"].trees]
    assert np.array_equal(pickled["bank"].scores, live["bank"].scores)
    for host in ROLES[1:]:
        assert pickled[host].lookup == live[host].lookup


def test_coordinator_learns_loss_validation_auc_and_the_bank_key(trained):
    coord, parties = trained
    assert coord.key_fingerprint == parties["bank"].key.fingerprint
    assert [h["tree"] for h in coord.history] == list(range(1, len(coord.history) + 1))
    assert all(0 < h["loss"] < 1 and 0 <= h["val_auc"] <= 1 for h in coord.history)
    assert coord.trees == len(parties["bank"].trees) <= len(coord.history)


def test_saved_parts_score_like_the_trained_model(data, trained):
    _, parties = trained
    parts = {r: p.model_part() for r, p in parties.items()}
    loaded = {r: sb_party(r, data[r], model=pickle.loads(pickle.dumps(parts[r]))) for r in ROLES}
    coord = SbCoordinator("sbm-score", list(ROLES), SbConfig(**CONFIG), train=False)
    drive(coord, loaded)
    assert coord.trees == len(parties["bank"].trees) and not coord.history
    assert np.array_equal(loaded["bank"].scores, parties["bank"].scores)
    assert loaded["bank"].keypair is None  # scoring needs no Paillier key


def test_a_saved_model_is_not_trained_further(data, trained):
    _, parties = trained
    loaded = {r: sb_party(r, data[r], model=parties[r].model_part()) for r in ROLES}
    coord = SbCoordinator("sbm-more", list(ROLES), SbConfig(**CONFIG))
    with pytest.raises(ProtocolError, match="not trained further"):
        drive(coord, loaded)


@pytest.mark.parametrize("edit, match", [
    (lambda d: d["trees"][0].__setitem__(0, {**d["trees"][0][0], "left": 0}), "outside the tree"),
    (lambda d: d["trees"][0][-1].__setitem__("weight", None), "no finite weight"),
    (lambda d: d.__setitem__("role", "tax"), "belongs to 'tax'"),
    (lambda d: d.pop("base"), "base"),
])
def test_malformed_bank_parts_are_refused(data, trained, edit, match):
    doc = pickle.loads(pickle.dumps(trained[1]["bank"].model_part()))
    edit(doc)
    with pytest.raises(ProtocolError, match=match):
        sb_party("bank", data["bank"], model=doc)


def test_host_part_with_a_foreign_bin_is_refused(data, trained):
    doc = trained[1]["tax"].model_part()
    doc["lookup"] = doc["lookup"] + [{"record": 99, "feature": 0, "bin": 10_000}]
    with pytest.raises(ProtocolError, match="feature or bin"):
        sb_party("tax", data["tax"], model=doc)


def test_reason_moves_add_up_to_the_score(trained):
    """Path attribution is exact: base + each tree's expected value + the moves = the raw score."""
    _, parties = trained
    bank = parties["bank"]
    bank_codes, host_codes = bank.reasons(top=100)
    rows = bank.leaves.shape[1]
    assert len(bank_codes) == rows and all(len(v) == rows for v in host_codes.values())
    # recompute the per-row sum of moves along each path and check the telescoping identity
    total = np.full(rows, bank.base)
    for t, tree in enumerate(bank.trees):
        value = expected_values(tree)
        total += bank.learning_rate * value[0]
        parent = {c: n.id for n in tree.nodes if not n.is_leaf for c in (n.left, n.right)}
        for i, leaf in enumerate(bank.leaves[t]):
            child = int(leaf)
            while child in parent:
                total[i] += bank.learning_rate * (value[child] - value[parent[child]])
                child = parent[child]
    assert np.allclose(total, bank.raw_scores)
    # the ranking: each row's per-(party, feature or record) sums of moves, computed here independently
    expected_bank, expected_hosts = [], {h: [] for h in host_codes}
    for i in range(rows):
        sums: dict = {}
        for t, tree in enumerate(bank.trees):
            value = expected_values(tree)
            parent = {c: n for n in tree.nodes if not n.is_leaf for c in (n.left, n.right)}
            child = int(bank.leaves[t, i])
            while child in parent:
                up = parent[child]
                key = ("bank", up.feature) if up.party == "bank" else (up.party, up.record)
                sums[key] = sums.get(key, 0.0) + bank.learning_rate * (value[child] - value[up.id])
                child = up.id
        for party in ["bank", *host_codes]:
            mine = sorted(((-v, k[1]) for k, v in sums.items() if k[0] == party and v > 1e-9))
            picked = [k for _, k in mine][: 2 if party == "bank" else 6]
            if party == "bank":
                expected_bank.append([bank._names()[j] for j in picked])
            else:
                expected_hosts[party].append(picked)
    top_bank, top_hosts = bank.reasons(top=2)
    assert [set(r) for r in top_bank] == [set(r) for r in expected_bank]
    assert {h: [set(r) for r in v] for h, v in top_hosts.items()} == {h: [set(r) for r in v] for h, v in expected_hosts.items()}
    assert [r[:1] for r in top_bank] == [r[:1] for r in expected_bank]  # the most adverse first
    for host, codes in host_codes.items():
        n_records = len(parties[host].lookup)
        assert all(0 <= r < n_records for row in codes for r in row)
    assert any(codes for codes in bank_codes) and any(any(c) for c in host_codes.values())


def test_reasons_name_what_raises_the_score(trained):
    """The riskiest rows all get a reason from some party; the safest get fewer."""
    _, parties = trained
    bank = parties["bank"]
    codes, hosts = bank.reasons(top=2)
    count = [len(codes[i]) + sum(len(h[i]) for h in hosts.values()) for i in range(len(codes))]
    risky, safest = np.argsort(-bank.raw_scores)[:20], np.argsort(bank.raw_scores)[:20]
    assert all(count[i] for i in risky)
    assert sum(count[i] for i in safest) < sum(count[i] for i in risky)


def test_host_record_names_are_its_feature_names(trained):
    _, parties = trained
    tax = parties["tax"]
    assert tax.record_names() == [tax.data.prep.specs[j].name for j, _ in tax.lookup]


def test_paillier_parties_pickle_mid_tree():
    """With real ciphertexts (encrypted g/h and histograms inside the pickles) the pickled run equals a live one."""
    data = party_data(rows=300)
    with WorkerPool(1) as pool:
        live = {r: sb_party(r, d, pool=pool, goss_seed=1 if r == "bank" else None) for r, d in data.items()}
        coord = SbCoordinator("sbp", list(ROLES), SbConfig(**{**CONFIG, "backend": "paillier", "n_trees": 2}))
        drive(coord, live)
    _, pickled = train(data, wrap=Pickled, goss_seed=1, backend="paillier", n_trees=2)
    assert [t.signature() for t in pickled["bank"].trees] == [t.signature() for t in live["bank"].trees]


def test_scoring_without_a_host_the_model_splits_on_is_refused(data, trained):
    _, parties = trained
    loaded = {r: sb_party(r, data[r], model=parties[r].model_part()) for r in ("bank", "tax")}
    coord = SbCoordinator("sbm-missing", ["bank", "tax"], SbConfig(**CONFIG), train=False)
    with pytest.raises(ProtocolError, match="splits on features of utilities, which is not in this job"):
        drive(coord, loaded)


@pytest.mark.parametrize("bank_doc, host_doc, match", [
    ({"host_records": {"tax": [[0]]}}, {"record_names": ["x;bank:y"]}, "without ';'"),
    ({"host_records": [[0]]}, {"record_names": ["revenue"]}, "no reason codes for tax"),
    ({"host_records": {"tax": [[3]]}}, {"record_names": ["revenue"]}, "does not have"),
    ({}, {"record_names": ["revenue"]}, "no reason codes for tax"),
    ({"host_records": {"tax": [[0]]}}, {"reasons": [["anything"]], "record_names": ["revenue"]}, "its own reason codes"),
])
def test_malformed_tree_reason_codes_are_refused(bank_doc, host_doc, match):
    from fedcredit.protocols.job.publication import host_reasons

    with pytest.raises(ProtocolError, match=match):
        host_reasons(bank_doc, "tax", host_doc, 2, trees=True)


def test_tree_reason_codes_merge_records_of_one_feature():
    from fedcredit.protocols.job.publication import host_reasons

    names = ["revenue", "filing", "revenue", "rating"]
    assert host_reasons({"host_records": {"tax": [[2, 0, 1, 3], []]}}, "tax", {"record_names": names}, 2, trees=True) == \
        [["revenue", "filing"], []]


def test_scoring_with_parts_from_different_trainings_is_refused(data, trained):
    _, parties = trained
    parts = {r: parties[r].model_part() for r in ROLES}
    parts["tax"]["model_id"] = "another-run"
    loaded = {r: sb_party(r, data[r], model=parts[r]) for r in ROLES}
    coord = SbCoordinator("sbm-mixed", list(ROLES), SbConfig(**CONFIG), train=False)
    with pytest.raises(ProtocolError, match="different training runs.*tax 'another-run'"):
        drive(coord, loaded)


def test_bank_part_keeps_host_splits_as_record_numbers_only(trained):
    doc = trained[1]["bank"].model_part()
    host_nodes = [n for t in doc["trees"] for n in t if n["party"] not in (None, "bank")]
    assert host_nodes and all(n["feature"] is None and n["bin"] is None and n["record"] >= 0 for n in host_nodes)


@pytest.mark.parametrize("edit, match", [
    (lambda t: t[0].__setitem__("depth", 1), "root must have depth 0"),
    (lambda t: t[t[0]["left"]].__setitem__("depth", 0), "below a node at depth"),
    (lambda t: t[0].__setitem__("right", t[0]["left"]), "outside the tree"),
    (lambda t: t[0].update(party=None, feature=None), "without a host name"),
    (lambda t: t[0].__setitem__("cover", -3), "cover"),
])
def test_malformed_trees_are_refused(data, trained, edit, match):
    doc = pickle.loads(pickle.dumps(trained[1]["bank"].model_part()))
    edit(doc["trees"][0])
    with pytest.raises(ProtocolError, match=match):
        sb_party("bank", data["bank"], model=doc)


def test_a_host_changing_its_bins_mid_run_is_refused(data):
    """Siblings are parent − child at the bank: a host's bins per feature must not change between messages."""
    from fedcredit.common.wire import Message

    class Shifty(SbHost):
        def handle(self, msg):
            replies = super().handle(msg)
            if msg.kind != sb.GRADIENTS:  # a level's histograms, not the root's
                replies = [Message(r.kind, r.sender, r.receiver, r.run_id, r.step,
                                   {**r.meta, "n_bins": [r.meta["n_bins"][0] + 1, *r.meta["n_bins"][1:]]}, r.payload)
                           if r.kind == sb.HISTOGRAMS else r for r in replies]
            return replies

    parties = {r: (Shifty if r == "tax" else sb_party)(r, d, goss_seed=1 if r == "bank" else None) for r, d in data.items()}
    coord = SbCoordinator("sbm-shift", list(ROLES), SbConfig(**CONFIG, patience=2))
    with pytest.raises(ProtocolError, match="changed its bins per feature"):
        drive(coord, parties)
