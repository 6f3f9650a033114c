"""City scale (issue #20): the benchmark's phase and memory plumbing, the bundle meter, and the wire and
audit log that copy large payloads once (same bytes, same records as before)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedcredit.audit.log import AuditWriter
from fedcredit.common.wire import COORDINATOR, BundleMeter, Message, bundle, encoded_size, join_messages, split_messages
from fedcredit.crypto import Identity

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _phases import PhaseMeter  # noqa: E402
from bench_scale import ORDER  # noqa: E402

PHASES = set(ORDER)


def _messages() -> list[Message]:
    big = os.urandom(300_000)
    return [Message("lr.sigmoid", COORDINATOR, "bank", "r1", 3, {"parts": [{"name": "s", "size": 7, "meta": {}}]}, big),
            Message("lr.gradient", COORDINATOR, "bank", "r2", 4, {"n": (1, 2)}, bytearray(b"abc")),
            Message("psi.blind", "tax", "bank", "r3", 1, {}, memoryview(b"xyz" * 1000)),
            Message("job.info", COORDINATOR, "tax", "r1", 3, {})]


def _old_to_bytes(m: Message) -> bytes:
    """The encoding before payloads were joined piece by piece (kept here as the reference)."""
    import struct

    head = json.dumps(m.header(), sort_keys=True, separators=(",", ":")).encode("utf-8")
    return b"FCM1" + struct.pack(">I", len(head)) + head + bytes(m.payload)


def test_wire_bytes_and_bundles_are_unchanged():
    msgs = _messages()
    for m in msgs:
        assert m.to_bytes() == _old_to_bytes(m)
        assert encoded_size(m) == len(_old_to_bytes(m))
        back = Message.from_bytes(memoryview(_old_to_bytes(m)))
        assert back.header() == json.loads(json.dumps(m.header())) and back.payload == bytes(m.payload)
        assert type(back.payload) is bytes
    data, sizes = join_messages(msgs)
    assert data == b"".join(_old_to_bytes(m) for m in msgs) and sizes == [len(_old_to_bytes(m)) for m in msgs]
    again = split_messages(data, sizes)
    assert [m.to_bytes() for m in again] == [_old_to_bytes(m) for m in msgs]
    assert all(type(m.payload) is bytes for m in again)
    payload, meta = bundle({"a": (b"12", {"x": 1}), "b": (bytearray(b"345"), {}), "c": (memoryview(b"6"), {})})
    assert payload == b"123456" and [p["size"] for p in meta["parts"]] == [2, 3, 1]


def test_bundle_meter_measures_each_nodes_bundle_per_round():
    msgs = _messages()
    meter = BundleMeter()
    reply = Message("lr.reply", "bank", COORDINATOR, "r1", 5, {}, b"r" * 10)
    meter.round(msgs, [reply])
    to_bank = [m for m in msgs if m.receiver == "bank"]
    assert meter.largest == len(join_messages(to_bank)[0])
    assert meter.where.startswith("round 1, to bank")
    assert meter.total == len(join_messages(msgs)[0]) + len(reply.to_bytes())


def test_audit_records_a_message_as_its_wire_bytes(tmp_path):
    """Recording the Message (digest streamed over its pieces) writes the same facts as recording its bytes."""
    identity = Identity.generate(COORDINATOR)
    by_message = AuditWriter(tmp_path / "a.jsonl", identity, "r1", party=COORDINATOR, fsync=False)
    by_bytes = AuditWriter(tmp_path / "b.jsonl", identity, "r1", party=COORDINATOR, fsync=False)
    for m in _messages():
        if m.sender != COORDINATOR and not m.relayed:
            continue
        direction = "sent"
        one, two = by_message.record(m, direction=direction), by_bytes.record(_old_to_bytes(m), direction=direction)
        assert one["digest"] == two["digest"] == hashlib.sha256(_old_to_bytes(m)).hexdigest()
        facts = ("size", "payload_size", "ciphertexts", "protection", "kind", "relayed", "sealed", "step")
        assert {k: one[k] for k in facts} == {k: two[k] for k in facts}


def test_phase_meter_resets_the_peak_at_each_phase():
    meter = PhaseMeter(interval=0.05)
    meter.enter("big")
    block = bytearray(120 * 1024 * 1024)  # touched: resident
    block[:: 4096] = b"x" * len(block[:: 4096])
    del block
    meter.enter("small")
    meter.enter("small")  # a second segment of the same phase
    meter.relabel_last("after")
    meter.stop()
    phases = meter.phases()
    assert list(phases) == ["big", "small", "after"]
    if meter.kernel_peaks:  # Linux: the kernel's own peak, reset at each phase
        assert phases["big"]["own_peak_mb"] > phases["small"]["own_peak_mb"] + 80
    assert all(p["seconds"] >= 0 and p["core_seconds"] >= 0 for p in phases.values())


def test_bench_scale_reports_every_phase(tmp_path):
    """The benchmark end to end at a tiny size (mock cipher, 3 iterations): every phase, the issue's keys."""
    out = tmp_path / "scale.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_scale.py"), "--rows", "3000", "--key-bits", "1024",
                    "--backend", "mock", "--max-iter", "3", "--json", str(out)], check=True, env=env, cwd=tmp_path,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=300)
    doc = json.loads(out.read_text())
    assert set(doc["phases"]) == PHASES
    assert {"rows", "total_s", "peak_rss_mb", "phases", "core_seconds", "largest_message_bytes"} <= set(doc)
    assert doc["rows"] == 3000 and 0 < doc["aligned"] < 3000 and 0.5 < doc["test_auc"] <= 1.0
    phases = doc["phases"].values()
    assert all(set(p) >= {"seconds", "peak_rss_mb", "per_row_us"} for p in phases)
    assert sum(p["seconds"] for p in phases) == pytest.approx(doc["total_s"], rel=0.05, abs=0.3)
    assert doc["peak_rss_mb"] == max(p["peak_rss_mb"] for p in phases) > 100
    assert 0 < doc["largest_message_bytes"] < doc["message_bytes_total"]
    assert doc["core_seconds"] > 0 and doc["processes"][0]["peak_rss_mb"] > 0


def test_prepare_ids_keeps_a_nodes_normalized_strings():
    """Validated IDs enter the PSI without a second copy of every string; the report is the same either way."""
    from fedcredit.data.ids import prepare_ids
    from fedcredit.data.synth import generate

    dup = "91350100M000100Y43"
    ids = list(generate(200, 3)["bank"].column("uscc").to_pylist()) + [dup, dup]
    values, report = prepare_ids(ids)
    assert all(v is i for v, i in zip(values, ids))
    fresh, again = prepare_ids([f" {i.lower()}" for i in ids])
    assert list(fresh) == list(values) and dup in fresh
    assert (again.usable_rows == report.usable_rows).all() and again.summary() == report.summary()


def test_centralized_reference_one_hot_is_sparse_and_equal():
    """The reference's one-hot bins as a sparse matrix hold exactly the dense matrix's ones (same model, same AUC)."""
    import numpy as np
    import pandas as pd
    from scipy import sparse

    from fedcredit.data.binning import FeaturePrep
    from fedcredit.jobs.centralized import _matrix
    from fedcredit.protocols.design import Design

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=500), "b": rng.integers(0, 7, 500).astype(float),
                          "c": np.where(rng.random(500) < 0.2, np.nan, rng.random(500))})
    design = Design(FeaturePrep.fit(frame, "binned", 5), frame)
    got = _matrix(design)
    dense = np.zeros((design.rows, design.width))
    dense[np.arange(design.rows)[:, None], design.offsets + design.bins] = 1.0
    assert sparse.issparse(got) and got.nnz == design.rows * design.bins.shape[1]
    assert np.array_equal(got.toarray(), dense)


def test_publication_from_columns_is_the_canonical_rows(tmp_path):
    """Limits published column by column (no tuple per row held) sign and store exactly the canonical rows."""
    import base64

    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq

    from fedcredit.scoring.publish import COLUMNS, _digest, _reason_text, _tags, publish_limits, verify_limits

    rng = np.random.default_rng(1)
    n = 3000
    df = pd.DataFrame({"uscc": [f"91350100M{i:08d}X" for i in rng.permutation(n)], "score": rng.normal(600, 50, n),
                       "grade": rng.choice(list("ABCDE"), n), "pd": rng.random(n), "limit": rng.integers(0, 10**6, n),
                       "reason_codes": [["R1", "R2"] if i % 3 else (None if i % 2 else "X1") for i in range(n)]})
    signer = Identity.generate(COORDINATOR)
    paths = publish_limits(df, tmp_path, signer, "v1")
    rows = sorted(((u, float(s), g, float(p), int(lim), _reason_text(r, i), "v1") for i, (u, s, g, p, lim, r)
                   in enumerate(df[list(COLUMNS[:-1])].itertuples(index=False))), key=lambda r: r[0])
    doc = json.loads(paths["signature"].read_text())
    assert doc["digest"] == _digest(rows) and doc["rows"] == n
    assert doc["index"]["uscc"] == [r[0] for r in rows]
    assert base64.b64decode(doc["index"]["tags"]) == b"".join(_tags(r) for r in rows)
    stored = pq.read_table(paths["parquet"])
    assert [tuple(r[c] for c in COLUMNS) for r in stored.to_pylist()] == rows
    assert verify_limits(paths["parquet"], signer.public).rows == n


def test_checkpoint_blobs_are_pickled_straight_to_disk_with_the_same_names(tmp_path):
    """A large object is pickled into its blob file while hashed (no in-memory copy); the blob holds exactly
    ``pickle.dumps``'s bytes under their SHA-256, and the checkpoint loads back equal."""
    import pickle

    import numpy as np

    from fedcredit.node.checkpoint import Checkpoint, CheckpointStore

    state = {"x": np.arange(200_000, dtype=float), "raw": os.urandom(100_000)}
    store = CheckpointStore(tmp_path / "run", b"s" * 64)
    first = store.save(Checkpoint(state, 1, [b"reply" * 10_000]))
    expected = {hashlib.sha256(pickle.dumps(v, protocol=5)).hexdigest() for v in (state["x"], state["raw"])}
    blobs = {p.name: p.read_bytes() for p in (tmp_path / "run" / "blobs").iterdir()}
    assert expected <= set(blobs) and all(hashlib.sha256(b).hexdigest() == name for name, b in blobs.items())
    assert first.blobs_written == 2 and not [p for p in (tmp_path / "run" / "blobs").iterdir() if p.name.startswith(".")]
    loaded = store.load()
    assert np.array_equal(loaded.agent["x"], state["x"]) and loaded.agent["raw"] == state["raw"]
    assert store.save(Checkpoint(state, 2, [b"other"])).blobs_written == 0  # referenced by identity, not written again
