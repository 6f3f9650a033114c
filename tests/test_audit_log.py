"""Exchange logs of a small simulated run: written at both ends, verified offline, exported, reported."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest

from fedcredit.audit import ALLOWED, AuditError, AuditWriter, export_parquet, protection_class, verify_audit
from fedcredit.audit.classes import _KINDS
from fedcredit.crypto import Identity, PaillierPublicKey
from fedcredit.common.wire import COORDINATOR, Message, bundle

ROOT = Path(__file__).resolve().parent.parent
RUN = "run-audit-1"
ROLES = ["bank", "tax", "utilities"]
KEY_N = (1 << 2047) | (0x5DEECE66D << 64) | 1  # a 2048-bit odd modulus (only its size and fingerprint matter)
CT = 512  # bytes per ciphertext at 2048 bits
CANARY_NUM = 7391846205573918
CANARY_STR = "CANARY-91f3c0de-zz"
CANARY_BYTES = CANARY_STR.encode() + CANARY_NUM.to_bytes(8, "big")


def _paillier_part(n_ct: int, key_fp: str, fill: int) -> tuple[bytes, dict]:
    return bytes([fill]) * (n_ct * CT), {"key": key_fp, "scale_bits": 16, "bound": "ff", "shape": [n_ct]}


def _masked_part(n: int, fill: int) -> tuple[bytes, dict]:
    return bytes([fill]) * (8 * n), {"width": 8}


class Run:
    """Identities, writers and a delivery helper that records every message at both ends."""

    def __init__(self, folder: Path, fsync: bool = False):
        self.folder = Path(folder)
        self.ids = {p: Identity.generate(p) for p in [COORDINATOR, *ROLES]}
        self.writers = {p: AuditWriter(self.folder / "audit" / f"{p}.jsonl", ident, RUN, fsync=fsync)
                        for p, ident in self.ids.items()}

    def deliver(self, msg: Message) -> bytes:
        data = msg.to_bytes()
        w = self.writers
        w[msg.sender].record(data, direction="sent")
        if msg.relayed:
            w[COORDINATOR].record(data, direction="received")
            w[COORDINATOR].record(data, direction="sent")
        w[msg.receiver].record(data, direction="received")
        return data

    def finish(self) -> dict:
        coord = self.writers[COORDINATOR]
        for role in ROLES:
            self.writers[role].record_checkpoint(coord.checkpoint(), self.ids[COORDINATOR].public)
        for role in ROLES:
            coord.record_checkpoint(self.writers[role].close(), self.ids[role].public)
        return coord.close()


def build_run(folder: Path, fsync: bool = False, finish: bool = True) -> Run:
    """A small but realistic run: job control, PSI ring with sealed relays, one LR evaluation, scoring, publication."""
    run = Run(folder, fsync)
    send, C = run.deliver, COORDINATOR
    pubs = {r: run.ids[r].public for r in ROLES}
    for r in ROLES:
        send(Message("job.hello", C, r, RUN, 0, {"settings": {"key_bits": 2048, "seed": 7}}))
    for r in ROLES:
        send(Message("job.info", r, C, RUN, 1, {"rows": 1000, "features": 5, "identity": pubs[r].to_dict()}))
    run.writers[C].record_identities({C: run.ids[C].public, **pubs})
    # the coordinator's writer is pickled between messages, as node state is
    run.writers[C] = pickle.loads(pickle.dumps(run.writers[C]))
    for r in ROLES:
        send(Message("job.peers", C, r, RUN, 1, {"peers": {k: v.to_dict() for k, v in pubs.items()}}))
    psi = f"{RUN}/psi"
    for r in ROLES:
        send(Message("psi.start", C, r, psi, 0, {"ring": ROLES}))
    ring = ROLES + ROLES[:1]
    for hop, (a, b) in enumerate(zip(ring, ring[1:])):
        payload = os.urandom(40 * 32 + 60) + (CANARY_BYTES if hop == 0 else b"")
        send(Message("psi.blind", a, b, psi, 1 + hop, {}, payload, sealed=True))
    send(Message("psi.full", "bank", C, psi, 4, {"n": 0}))
    for h in ROLES[1:]:
        send(Message("psi.full", h, C, psi, 4, {"n": 40}, os.urandom(40 * 32)))
    send(Message("psi.hosts", C, "bank", psi, 5, {"n": 35}, os.urandom(35 * 32)))
    send(Message("psi.final", "bank", C, psi, 6, {"n": 30}, os.urandom(30 * 32)))
    for h in ROLES[1:]:
        send(Message("psi.final", C, h, psi, 7, {"n": 30}, os.urandom(30 * 32)))
        send(Message("psi.done", h, C, psi, 8, {"n": 30, "digest": "ab" * 32}))
    for r in ROLES:
        send(Message("job.split", C, r, RUN, 2, {"runs": {f"{RUN}/lr": ROLES}}))
        send(Message("job.prepared", r, C, RUN, 3, {"params": 12}))
    lr = f"{RUN}/lr"
    fp = PaillierPublicKey(KEY_N).fingerprint
    for r in ROLES:
        send(Message("lr.setup", C, r, lr, 0, {"config": {"key_bits": 2048, "backend": "paillier"},
                                                "key_n": format(KEY_N, "x"), "parties": ROLES}))
        send(Message("lr.ready", r, C, lr, 1, {"params": 12, "train_rows": 20}))
    for h in ROLES[1:]:
        send(Message("lr.labels", "bank", h, lr, 1, {}, os.urandom(4 * CT + 80), sealed=True))
    for a, b in [("bank", "tax"), ("bank", "utilities"), ("tax", "utilities")]:
        send(Message("lr.pair", a, b, lr, 1, {}, os.urandom(32 + 80), sealed=True))
    for r in ROLES:
        send(Message("lr.eval", C, r, lr, 1, {"evaluation": 0, "alpha": 0.0, "direction": None}))
        yz = _masked_part(1, 2) if r == "bank" else _paillier_part(1, fp, 2)
        payload, meta = bundle({"z": _masked_part(30, 1), "yz": yz})
        send(Message("lr.share", r, C, lr, 2, {**meta, "sq": 0.0, "canary": CANARY_NUM, "note": CANARY_STR}, payload))
    for r in ROLES:
        parts = {"sigma": _paillier_part(2, fp, 4), **({"val": _masked_part(10, 5)} if r == "bank" else {})}
        payload, meta = bundle(parts)
        send(Message("lr.sigmoid", C, r, lr, 3, {**meta, **({"loss": 0.69} if r == "bank" else {})}, payload))
    for r in ROLES:
        payload, meta = bundle({"g": _paillier_part(1, fp, 6)})
        send(Message("lr.gradient", r, C, lr, 6, meta, payload))
    for r in ROLES:
        payload, meta = bundle({"g": _masked_part(12, 7)})
        send(Message("lr.unmask", C, r, lr, 7, meta, payload))
        send(Message("lr.gram", r, C, lr, 8, {"gram": [[1.0]]}))
        send(Message("lr.finish", C, r, lr, 9))
        send(Message("lr.done", r, C, lr, 10, {"params": 12}))
    doc = {"ids": ["91350100M000100Y43"], "pd": [0.01], "reasons": [[f"canary {CANARY_STR} {CANARY_NUM}"]]}
    send(Message("job.scores", "bank", C, RUN, 4, {}, json.dumps(doc).encode()))
    if finish:
        run.final = run.finish()
    return run


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("auditrun")
    return build_run(folder, fsync=True)


def _copy(run: Run, tmp_path: Path) -> Path:
    shutil.copytree(run.folder / "audit", tmp_path / "audit")
    return tmp_path


def test_run_verifies(built):
    verdict = verify_audit(built.folder, built.ids[COORDINATOR].public)
    assert verdict.ok and verdict.coordinator_pinned
    assert verdict.parties == sorted([COORDINATOR, *ROLES])
    assert verdict.run_id == RUN
    assert verdict.protection["x25519-aesgcm"] == 3 + 2 + 3  # psi.blind, lr.labels, lr.pair
    assert verdict.protection["paillier-2048"] == 2 + 3  # lr.sigmoid to hosts, lr.gradient
    assert verdict.protection["paillier-2048+masked"] == 1 + 2  # lr.sigmoid to the bank, hosts' lr.share
    assert verdict.checkpoints == 2 * len(ROLES)
    assert verdict.summary().startswith("OK: run run-audit-1")
    assert not verdict.notes
    # pinned from a public identity file too
    key = built.folder / "coordinator.pub.json"
    built.ids[COORDINATOR].public.save(key)
    assert verify_audit(built.folder / "audit", key).ok


def test_records_carry_derived_facts(built):
    lines = (built.folder / "audit" / "bank.jsonl").read_text().splitlines()
    recs = [json.loads(x) for x in lines]
    assert recs[0]["type"] == "header" and recs[-1]["type"] == "close"
    sigmoid = next(r for r in recs if r.get("kind") == "lr.sigmoid")
    assert sigmoid["direction"] == "received" and sigmoid["protection"] == "paillier-2048+masked"
    assert sigmoid["ciphertexts"] == 2 and sigmoid["key_bits"] == 2048
    assert sigmoid["paillier_key"] == PaillierPublicKey(KEY_N).fingerprint
    assert sigmoid["receiver_fp"] == built.ids["bank"].fingerprint
    share = next(r for r in recs if r.get("kind") == "lr.share")
    assert share["direction"] == "sent" and share["protection"] == "masked" and share["ciphertexts"] == 0
    blind = [r for r in recs if r.get("kind") == "psi.blind"]
    assert {r["direction"] for r in blind} == {"sent", "received"} and all(r["sealed"] for r in blind)
    # a relayed message has the same digest at sender, coordinator (twice) and receiver
    digest = next(r["digest"] for r in blind if r["direction"] == "sent")
    coord = [json.loads(x) for x in (built.folder / "audit" / "coordinator.jsonl").read_text().splitlines()]
    tax = [json.loads(x) for x in (built.folder / "audit" / "tax.jsonl").read_text().splitlines()]
    assert sorted(r["direction"] for r in coord if r.get("digest") == digest) == ["received", "sent"]
    assert [r["direction"] for r in tax if r.get("digest") == digest] == ["received"]


def test_no_canary_in_any_log_line(built):
    needles = set()
    for value in (str(CANARY_NUM), CANARY_STR, format(CANARY_NUM, "x"), format(CANARY_NUM, "X")):
        needles |= {value, value.lower(), value.encode().hex(), repr(value), repr(value.encode())}
    needles |= {CANARY_NUM.to_bytes(8, "big").hex(), CANARY_BYTES.hex(), repr(CANARY_BYTES)}
    import base64
    needles |= {base64.b64encode(CANARY_STR.encode()).decode()[:20]}
    for path in (built.folder / "audit").glob("*.jsonl"):
        raw = path.read_bytes()
        for needle in needles:
            assert needle.encode() not in raw, f"canary {needle!r} found in {path.name}"
        assert CANARY_BYTES not in raw and CANARY_NUM.to_bytes(8, "big") not in raw


def test_schema_is_documented():
    text = (ROOT / "docs" / "audit.md").read_text()
    from fedcredit.audit.verify import _COMMON, _FIELDS

    for name in set(_COMMON) | {f for spec in _FIELDS.values() for f in spec}:
        assert f"`{name}`" in text, f"record field {name} missing from docs/audit.md"
    for kind in _FIELDS:
        assert f"`{kind}`" in text
    for kind, classes in ALLOWED.items():
        assert f"`{kind}`" in text, f"{kind} missing from the protection table in docs/audit.md"


def test_every_protocol_kind_has_a_protection_policy():
    import importlib
    import pkgutil

    import fedcredit.protocols as protocols

    kinds = set()
    for info in pkgutil.iter_modules(protocols.__path__):
        kinds |= set(getattr(importlib.import_module(f"fedcredit.protocols.{info.name}"), "KINDS", ()))
    missing = sorted(kinds - set(_KINDS))
    assert not missing, f"no protection policy for {missing}"
    assert all(ALLOWED[k] for k in _KINDS)


def test_protection_classes():
    fp = PaillierPublicKey(KEY_N).fingerprint
    payload, meta = bundle({"z": _paillier_part(2, fp, 1)})
    m = Message("lr.gradient", "bank", COORDINATOR, RUN, 1, meta, payload)
    assert protection_class(m, 2048) == ("paillier-2048", 2)
    assert protection_class(m, None)[0] == "plaintext"  # no key known: opaque bytes are not protection
    assert protection_class(m, 2048, key_fingerprint="00" * 32)[0] == "plaintext"  # another key
    assert protection_class(m, 1024)[0] == "paillier-1024"
    assert "paillier-1024" not in ALLOWED["lr.gradient"]
    assert protection_class(Message("lr.labels", "bank", "tax", RUN, 1, {}, b"x", sealed=True), 2048) == ("x25519-aesgcm", 0)
    assert protection_class(Message("lr.labels", "bank", "tax", RUN, 1, meta, payload), 2048)[0] == "paillier-2048"
    assert "paillier-2048" not in ALLOWED["lr.labels"]
    words, wmeta = bundle({"z": _masked_part(4, 1), "yz": _paillier_part(1, fp, 2)})
    assert protection_class(Message("lr.share", "tax", COORDINATOR, RUN, 1, wmeta, words), 2048)[0] == "paillier-2048+masked"
    assert "masked" in ALLOWED["lr.share"] and "plaintext" not in ALLOWED["lr.share"]
    raw = Message("lr.gradient", "tax", COORDINATOR, RUN, 1, {}, b"\x01" * 512)
    assert protection_class(raw, 2048)[0] == "plaintext"
    assert protection_class(Message("psi.full", "tax", COORDINATOR, RUN, 1, {}, b"\x01" * 33), None)[0] == "plaintext"
    assert protection_class(Message("psi.full", "tax", COORDINATOR, RUN, 1, {}, b"\x01" * 64), None) == ("ecdh-blinded", 0)


def _tiny_run(folder: Path, extra) -> Run:
    """job.hello to every node, then ``extra(run)``, then checkpoints and close."""
    run = Run(folder)
    run.writers[COORDINATOR].record_identities({r: run.ids[r].public for r in ROLES})
    for r in ROLES:
        run.deliver(Message("job.hello", COORDINATOR, r, RUN, 0, {"settings": {}}))
    extra(run)
    run.finish()
    return run


def test_unsealed_relayed_message_is_rejected(tmp_path):
    _tiny_run(tmp_path, lambda run: run.deliver(Message("psi.blind", "bank", "tax", RUN, 1, {}, os.urandom(64))))
    with pytest.raises(AuditError, match=r"bank\.jsonl, line \d+, seq \d+: sent psi\.blind #1 bank→tax .* carries a "
                                         r"plaintext payload; allowed for psi\.blind: x25519-aesgcm"):
        verify_audit(tmp_path)


def test_unsealed_labels_are_rejected(tmp_path):
    fp = PaillierPublicKey(KEY_N).fingerprint

    def extra(run):
        run.deliver(Message("lr.setup", COORDINATOR, "bank", RUN, 0, {"config": {}, "key_n": format(KEY_N, "x")}))
        run.deliver(Message("lr.setup", COORDINATOR, "tax", RUN, 0, {"config": {}, "key_n": format(KEY_N, "x")}))
        payload, meta = bundle({"y": _paillier_part(1, fp, 3)})
        run.deliver(Message("lr.labels", "bank", "tax", RUN, 2, meta, payload))

    _tiny_run(tmp_path, extra)
    with pytest.raises(AuditError, match=r"(bank|tax)\.jsonl.*lr\.labels #2 bank→tax .*protection 'paillier-2048'; "
                                         r"allowed for lr\.labels: x25519-aesgcm"):
        verify_audit(tmp_path)


def test_plaintext_feature_payload_is_rejected(tmp_path):
    _tiny_run(tmp_path, lambda run: run.deliver(Message("lr.gradient", "bank", COORDINATOR, RUN, 3, {},
                                                        b"0.25,0.5,0.75")))
    with pytest.raises(AuditError, match="lr.gradient #3 bank→coordinator .* carries a plaintext payload"):
        verify_audit(tmp_path)


def test_sent_without_receive_is_named(tmp_path):
    def extra(run):
        data = Message("job.prepared", "utilities", COORDINATOR, RUN, 3, {"params": 4}).to_bytes()
        run.writers["utilities"].record(data, direction="sent")

    _tiny_run(tmp_path, extra)
    with pytest.raises(AuditError) as err:
        verify_audit(tmp_path)
    msg = str(err.value)
    assert msg.startswith("utilities.jsonl, line ") and "sent job.prepared #3 utilities→coordinator" in msg
    assert "no matching 'received' record in coordinator.jsonl" in msg


def test_relay_missing_at_coordinator_is_named(tmp_path):
    def extra(run):
        data = Message("lr.pair", "tax", "utilities", RUN, 2, {}, os.urandom(100), sealed=True).to_bytes()
        run.writers["tax"].record(data, direction="sent")
        run.writers["utilities"].record(data, direction="received")

    _tiny_run(tmp_path, extra)
    with pytest.raises(AuditError, match=r"tax\.jsonl.*lr\.pair #2 tax→utilities .*no matching 'received' record "
                                         r"in coordinator\.jsonl"):
        verify_audit(tmp_path)


def test_wrong_pinned_key_and_missing_checkpoint(tmp_path, built):
    with pytest.raises(AuditError, match="pinned coordinator key"):
        verify_audit(built.folder, Identity.generate("coordinator").public)
    run = Run(tmp_path)
    run.writers[COORDINATOR].record_identities({r: run.ids[r].public for r in ROLES})
    for r in ROLES:
        run.writers[r].close()  # closed, but the final heads never reach the coordinator
    run.writers[COORDINATOR].close()
    with pytest.raises(AuditError, match=r"final head of \w+\.jsonl .* is not recorded in the coordinator's log"):
        verify_audit(tmp_path)


def test_writer_refuses_misuse(tmp_path):
    ident = Identity.generate("bank")
    w = AuditWriter(tmp_path / "bank.jsonl", ident, RUN, fsync=False)
    with pytest.raises(AuditError, match="already exists"):
        AuditWriter(tmp_path / "bank.jsonl", ident, RUN)
    with pytest.raises(AuditError, match="cannot record"):
        w.record(Message("job.info", "tax", COORDINATOR, RUN, 1).to_bytes(), direction="sent")
    with pytest.raises(AuditError, match="malformed"):
        w.record(b"garbage", direction="sent")
    with open(tmp_path / "bank.jsonl", "ab") as fh:
        fh.write(b"{}\n")
    with pytest.raises(AuditError, match="changed on disk"):
        w.record(Message("job.info", "bank", COORDINATOR, RUN, 1).to_bytes(), direction="sent")


def test_export_parquet(built, tmp_path):
    import pandas as pd

    out = export_parquet(built.folder, tmp_path / "records.parquet")
    df = pd.read_parquet(out)
    total = sum(len(p.read_text().splitlines()) for p in (built.folder / "audit").glob("*.jsonl"))
    assert len(df) == total
    assert set(df["party"]) == {COORDINATOR, *ROLES}
    msgs = df[df["type"] == "message"]
    assert msgs["digest"].notna().all() and (msgs["size"] > 0).all()
    assert set(df["type"]) == {"header", "message", "identities", "checkpoint", "close"}


def test_report_is_self_contained_and_has_the_verdict(built, tmp_path):
    from fedcredit.audit import render_audit_report

    out = render_audit_report(built.folder, tmp_path / "audit.html", built.ids[COORDINATOR].public)
    text = out.read_text()
    assert "VERIFIED" in text and "OK: run run-audit-1" in text
    assert "data:image/png;base64," in text
    assert "src='http" not in text and 'src="http' not in text and "<link" not in text and "<script" not in text
    assert "lr.share" in text and "paillier-2048" in text and "x25519-aesgcm" in text
    assert "bank → coordinator → tax" in text and "coordinator → tax" in text  # relayed end to end; direct
    # a broken run still renders, with the problem as its verdict
    broken = _copy(built, tmp_path / "broken")
    path = broken / "audit" / "tax.jsonl"
    path.write_bytes(path.read_bytes()[:-20])
    text = render_audit_report(broken, tmp_path / "broken.html").read_text()
    assert "FAILED" in text and "tax.jsonl" in text and "truncated" in text


def test_cli(built, tmp_path):
    from typer.testing import CliRunner

    from fedcredit.cli.audit import audit_app

    key = tmp_path / "coord.pub.json"
    built.ids[COORDINATOR].public.save(key)
    cli = CliRunner()
    res = cli.invoke(audit_app, ["verify", str(built.folder), "--key", str(key)])
    assert res.exit_code == 0, res.output
    assert res.output.startswith("OK: run run-audit-1") and "pinned" in res.output
    res = cli.invoke(audit_app, ["report", str(built.folder), "--out", str(tmp_path / "a.html"), "--key", str(key)])
    assert res.exit_code == 0 and (tmp_path / "a.html").exists(), res.output
    res = cli.invoke(audit_app, ["export", str(built.folder), "--out", str(tmp_path / "r.parquet")])
    assert res.exit_code == 0 and "records exported" in res.output, res.output
    broken = _copy(built, tmp_path / "broken")
    (broken / "audit" / "bank.jsonl").rename(broken / "audit" / "x.jsonl")
    (broken / "audit" / "tax.jsonl").rename(broken / "audit" / "bank.jsonl")
    (broken / "audit" / "x.jsonl").rename(broken / "audit" / "tax.jsonl")
    res = cli.invoke(audit_app, ["verify", str(broken), "--key", str(key)])
    assert res.exit_code == 1
    assert "FAILED: " in res.output and "swapped" in res.output and "Traceback" not in res.output
    other = tmp_path / "other.pub.json"
    Identity.generate("coordinator").public.save(other)
    res = cli.invoke(audit_app, ["verify", str(built.folder), "--key", str(other)])
    assert res.exit_code == 1 and "pinned coordinator key" in res.output
    res = cli.invoke(audit_app, ["verify", str(tmp_path / "nowhere")])
    assert res.exit_code == 1 and "no such directory" in res.output
