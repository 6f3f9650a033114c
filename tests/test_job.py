"""Whole jobs: in-process pipeline, the canary over every payload and output, job files, node errors."""

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fedcredit.data import synth
from fedcredit.data.io import write_table
from fedcredit.common.errors import FedCreditError
from fedcredit.jobs.jobfile import load_job
from fedcredit.jobs.in_process import run_job
from fedcredit.protocols.job import ModelSettings, NodeConfig
from fedcredit.protocols.job.outputs import publication_for
from fedcredit.scoring.policy import LimitPolicy

FAST = ModelSettings(key_bits=1024, max_iter=15)
FAST_TREES = ModelSettings(key_bits=1024, model="secureboost", trees=4, max_depth=3, learning_rate=0.3, patience=2)
PART = {"scorecard_lr": "weights.json", "secureboost": "secureboost.json"}
POLICY = {"capacity": {"node": "tax", "column": "declared_revenue_cny", "multiple": 0.3}}
CANARY_NUMBERS = {"bank": ("loan_balance_cny", 7777123.4567), "tax": ("declared_revenue_cny", 8888234.5678),
                  "utilities": ("water_m3_12m", 9999345.6789)}


def _plant(tables: dict) -> dict:
    """Unique feature values in rows that will be aligned (and published), and the IDs of
    enterprises outside the intersection, which no other party may ever learn."""
    sets = [set(t.column("uscc").to_pylist()) for t in tables.values()]
    common = set.intersection(*sets)
    chosen = sorted(common)[:5]
    outside = sorted(set.union(*sets) - common)[:20]
    out = {}
    for role, table in tables.items():
        col, value = CANARY_NUMBERS[role]
        ids = table.column("uscc").to_pylist()
        values = table.column(col).to_pylist()
        for i, ident in enumerate(ids):
            if ident in chosen:
                values[i] = value
        out[role] = table.set_column(table.column_names.index(col), table.schema.field(col), pa.array(values, pa.float64()))
    return out, outside


def _forms(value) -> list[bytes]:
    if isinstance(value, str):
        raw = value.encode()
        return [raw, raw.lower(), raw.hex().encode(), raw[:12]]
    # (4-byte float32 forms are left out: megabytes of ciphertext contain any given 4 bytes by chance)
    forms = [repr(value).encode(), f"{value:.2f}".encode(), np.float64(value).tobytes(), np.float64(value).byteswap().tobytes()]
    for scale in (0, 8, 16):
        as_int = int(round(value * (1 << scale)))
        forms += [str(as_int).encode(), format(as_int, "x").encode(), as_int.to_bytes(16, "big"), as_int.to_bytes(16, "little")]
    return forms


@pytest.fixture(scope="module", params=["scorecard_lr", "secureboost"])
def job_run(tmp_path_factory, request):
    """The same planted data through each model (the canary, audit and publication tests run for both)."""
    settings = FAST if request.param == "scorecard_lr" else FAST_TREES
    root = tmp_path_factory.mktemp("job")
    tables, canary_ids = _plant(synth.generate(3000, 5))
    paths = synth.write_nodes(tables, root / "data")
    nodes = [NodeConfig(r, str(paths[r]), out_dir=str(root / "out")) for r in ("bank", "tax", "utilities")]
    wire: list[bytes] = []
    events = []
    from fedcredit.crypto import Identity

    coordinator = Identity.generate("coordinator")
    result = run_job(nodes, settings, tap=wire.append, on_event=lambda k, i: events.append(k),
                     publication=publication_for(LimitPolicy.from_dict(POLICY, "test")),
                     audit=(root / "out" / "audit", coordinator))
    result["coordinator"] = coordinator
    return result, root, wire, canary_ids, events


def test_in_process_job_end_to_end(job_run):
    result, root, _, _, events = job_run
    assert result["intersection"] > 1500
    assert 0.7 < result["metrics"]["auc"] <= 1 and result["bank_only"]["auc"] < result["metrics"]["auc"]
    assert events[0] == "validated" and events[1] == "aligned" and "iteration" in events and events[-1] == "finished"
    scores = pq.read_table(root / "out" / "scores.parquet").to_pandas()
    assert list(scores.columns) == ["id", "split", "score"] and len(scores) == result["intersection"]
    assert set(scores["split"]) == {"train", "validation", "test"} and scores["score"].between(0, 1).all()
    for role in ("bank", "tax", "utilities"):
        assert (root / "out" / "model" / role / PART[result["model"]]).exists()


def test_the_bank_only_baseline_never_leaves_the_bank(job_run):
    """The baseline is trained inside the bank: no message of its run crosses a node boundary, and its metrics
    still come back in the bank's report."""
    from fedcredit.common.wire import Message

    result, _, wire, _, _ = job_run
    runs = {Message.from_bytes(data).run_id for data in wire}
    assert not any(r.endswith("-bank") for r in runs), sorted(runs)
    assert len(runs) >= 3  # the job's own messages and those of its alignment and joint model runs did cross
    assert 0.5 <= result["bank_only"]["auc"] < result["metrics"]["auc"]


def test_canary_never_crosses_a_node_boundary(job_run):
    """Feature values never leave their node; IDs outside the intersection never leave theirs.
    (IDs of aligned enterprises reach the coordinator only as the published list.)"""
    result, root, wire, canary_ids, _ = job_run
    blob = b"".join(wire)
    assert canary_ids
    assert len(wire) > 100
    for ident in canary_ids:
        for form in _forms(ident):
            assert form not in blob, f"ID {ident} leaked"
    for col, value in CANARY_NUMBERS.values():
        for form in _forms(value):
            assert form not in blob, f"{col} canary {value} leaked as {form!r}"
    # ... nor in any audit log line
    logs = b"".join(p.read_bytes() for p in (root / "out" / "audit").glob("*.jsonl"))
    assert logs.count(b"\n") > 500
    for ident in canary_ids:
        for form in _forms(ident):
            assert form not in logs
    for col, value in CANARY_NUMBERS.values():
        for form in _forms(value):
            # logs are full of hex digests: a short hex form counts only as a token of its own
            pattern = rb"(?<![0-9a-f])" + re.escape(form) + rb"(?![0-9a-f])" if re.fullmatch(rb"[0-9a-f]+", form) else None
            assert (re.search(pattern, logs) is None) if pattern else form not in logs, f"{col} canary in an audit log"


def test_audit_logs_of_the_job_verify_at_both_ends(job_run):
    from fedcredit.audit.verify import verify_audit

    result, root, *_ = job_run
    verdict = verify_audit(root / "out", result["coordinator"].public, min_key_bits=1024)
    assert verdict.ok and verdict.messages > 150 and verdict.matched == verdict.messages
    assert verdict.checkpoints >= 3


def test_each_model_part_holds_only_its_own_columns(job_run):
    import json

    from fedcredit.data.reference import feature_names

    result, root, *_ = job_run
    for role, (col, _) in CANARY_NUMBERS.items():
        folder = root / "out" / "model" / role
        prep = json.loads((folder / "prep.json").read_text())
        assert col in json.dumps(prep)
        text = (folder / PART[result["model"]]).read_text()
        if result["model"] == "scorecard_lr":
            assert col in " ".join(p["column"] for p in json.loads(text)["parameters"])
        others = {c for r in CANARY_NUMBERS if r != role for c in feature_names(r)} - set(feature_names(role))
        assert not any(f'"{o}' in text or f'"{o}' in json.dumps(prep) for o in others)


def test_invalid_node_data_stops_the_job_naming_the_file(tmp_path):
    paths = synth.write_nodes(synth.generate(500, 1), tmp_path)
    bad = pq.read_table(paths["tax"]).drop_columns(["declared_revenue_cny"])
    write_table(bad, paths["tax"])
    nodes = [NodeConfig(r, str(paths[r])) for r in ("bank", "tax", "utilities")]
    with pytest.raises(FedCreditError, match="tax.parquet.*declared_revenue_cny"):
        run_job(nodes, FAST)


def test_job_file(tmp_path):
    paths = synth.write_nodes(synth.generate(200, 1), tmp_path / "data")
    job = tmp_path / "job.toml"
    job.write_text('''
[job]
seed = 7
[model]
type = "scorecard_lr"
features = "binned"
n_bins = 8
l2 = 0.01
[nodes.bank]
data = "data/bank.parquet"
label = "default_12m"
[nodes.tax]
data = "data/tax.parquet"
[nodes.utilities]
data = "data/utilities.parquet"
extra = []
''')
    nodes, settings = load_job(job)
    assert [n.role for n in nodes] == ["bank", "tax", "utilities"]
    assert Path(nodes[1].data) == paths["tax"] and settings.seed == 7 and settings.n_bins == 8 and settings.l2 == 0.01


@pytest.mark.parametrize("text,expect", [
    ("[nodes.tax]\ndata='x'\n", "needs a \\[nodes.bank\\]"),
    ("[nodes.bank]\ndata='a'\n[nodes.tax]\ndata='b'\nlabel='y'\n", "only the bank holds the label"),
    ("[nodes.bank]\ndata='a'\n[nodes.tax]\ncolumns=1\n", "unknown key"),
    ("[model]\ntype='gbdt'\n[nodes.bank]\ndata='a'\n[nodes.tax]\ndata='b'\n", "type must be one of"),
    ("[model]\ntrain=1.5\n[nodes.bank]\ndata='a'\n[nodes.tax]\ndata='b'\n", "split fractions"),
    ("[nodes.bank\n", "not valid TOML"),
])
def test_bad_job_files(tmp_path, text, expect):
    job = tmp_path / "job.toml"
    job.write_text(text)
    with pytest.raises(FedCreditError, match=expect):
        load_job(job)
    with pytest.raises(FedCreditError, match="not found"):
        load_job(tmp_path / "nope.toml")


def test_split_is_seeded_per_id_and_independent_of_row_order():
    from fedcredit.protocols.job import split_assignment

    ids = [f"id-{i}" for i in range(20_000)]
    a = split_assignment(ids, 42, 0.6, 0.2)
    b = split_assignment(ids[::-1], 42, 0.6, 0.2)[::-1]
    assert (a == b).all()
    assert abs((a == 0).mean() - 0.6) < 0.02 and abs((a == 1).mean() - 0.2) < 0.02
    assert (split_assignment(ids, 43, 0.6, 0.2) != a).mean() > 0.3


def test_publication_respects_policy_and_capacity(job_run):
    result, root, *_ = job_run
    pub = result["publication"]
    policy = LimitPolicy.from_dict(POLICY, "test")
    points, grades = policy.grade(np.array(pub["pd"]))
    assert list(grades) == pub["grade"]
    caps = policy.cap_for(grades)
    limits = np.array(pub["limit"])
    assert (limits <= caps).all() and (limits[np.array(pub["grade"]) == "D"] == 0).all()
    # the capacity term binds somewhere: 0.3 × declared revenue is below 5 M CNY for small firms
    assert (limits < caps).any()
    tax = pq.read_table(root / "data" / "tax.parquet").to_pandas().set_index("uscc")["declared_revenue_cny"]
    expected = np.minimum(caps, np.floor(0.3 * tax.loc[pub["uscc"]].to_numpy()))
    assert (limits == expected).all()


def test_reason_codes_name_only_each_nodes_own_features(job_run):
    from fedcredit.data.reference import feature_names

    result, *_ = job_run
    codes = [c for row in result["publication"]["reason_codes"] for c in row.split(";") if c]
    assert codes
    for code in codes:
        role, name = code.split(":")
        assert name in feature_names(role)


JOB_ROUNDS = 14  # hello; peers + psi.start; 3 psi.blind; psi.hosts; psi.final + split + woe.start; woe.labels;
#                  woe.sums; woe.bins + setups; finish + score; score unmask + quality; publish; report


def test_demo_like_job_keeps_within_its_round_budget(tmp_path):
    """The demo's shape (3 nodes, bank-only baseline, quality gate, publication) at a small size: 3 rounds per
    accepted point, 1 per rejected step, a fixed 11 around them; the demo's 14 accepted points fit in 60 rounds."""
    paths = synth.write_nodes(synth.generate(3000, 7), tmp_path / "data")
    nodes = [NodeConfig(r, str(paths[r])) for r in ("bank", "tax", "utilities")]
    result = run_job(nodes, ModelSettings(key_bits=1024, backend="mock", max_iter=13),
                     publication=publication_for(LimitPolicy()))
    accepted = sum(h["accepted"] for h in result["history"])
    assert accepted == 13 and "quality" in result  # the demo's number of accepted points (IV-selected features), with the gate
    assert result["rounds"] == JOB_ROUNDS + 3 * accepted + (result["evaluations"] - accepted)
    assert result["rounds"] <= 60
