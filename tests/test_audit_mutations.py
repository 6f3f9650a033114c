"""Mutation testing of the exchange logs: every random alteration of a verified run's logs is detected.

The run's logs are built once; each mutation rewrites copies of the files in a scratch
folder and ``verify_audit`` (with the coordinator's key pinned) must raise AuditError.
"""

from __future__ import annotations

import base64
import json
import random
import time
from collections import Counter

import pytest

from fedcredit.audit import AuditError, verify_audit
from fedcredit.audit.log import GENESIS, canonical, record_hash, signed_data
from fedcredit.crypto import Identity
from fedcredit.common.wire import COORDINATOR

from test_audit_log import build_run

PER_CLASS = 110
SEED = 20240611


def _lines(data: bytes) -> list[bytes]:
    return data[:-1].split(b"\n")


def _join(lines: list[bytes]) -> bytes:
    return b"\n".join(lines) + b"\n"


def _sign(rec: dict, ident: Identity) -> bytes:
    rec = {k: v for k, v in rec.items() if k not in ("hash", "sig")}
    rec["hash"] = record_hash(rec)
    rec["sig"] = base64.b64encode(ident.sign(signed_data(rec["hash"]))).decode()
    return canonical(rec)


def _rechain(records: list[dict], ident: Identity) -> list[bytes]:
    """Records renumbered, relinked and re-signed from the start with ``ident``."""
    out, prev = [], GENESIS
    for seq, rec in enumerate(records):
        rec = {**rec, "seq": seq, "prev": prev}
        if rec["type"] == "close":
            rec["records"] = len(records)
        line = _sign(rec, ident)
        prev = json.loads(line)["hash"]
        out.append(line)
    return out


def _tweak(rec: dict, rng: random.Random) -> dict:
    """A plausible semantic change to one record."""
    rec = dict(rec)
    if rec["type"] == "message":
        field = rng.choice(["digest", "step", "direction", "protection", "size", "kind"])
        rec[field] = {"digest": "0" * 64, "step": rec["step"] + 1,
                      "direction": "received" if rec["direction"] == "sent" else "sent",
                      "protection": "x25519-aesgcm" if rec["protection"] != "x25519-aesgcm" else "public-metadata",
                      "size": rec["size"] + 1, "kind": "lr.done"}[field]
    else:
        rec["time"] = "2000-01-01T00:00:00.000000Z"
    return rec


class Mutator:
    def __init__(self, files: dict[str, bytes], ids: dict[str, Identity], rng: random.Random):
        self.files, self.ids, self.rng = files, ids, rng
        self.wrong = Identity.generate("mallory")

    def _pick(self, min_lines: int = 1):
        party = self.rng.choice(sorted(p for p, d in self.files.items() if len(_lines(d)) >= min_lines))
        return party, _lines(self.files[party])

    def flip_byte(self):
        party, _ = self._pick()
        data = bytearray(self.files[party])
        pos = self.rng.randrange(len(data))
        data[pos] ^= self.rng.randrange(1, 256)
        return {party: bytes(data)}

    def delete_record(self):
        party, lines = self._pick()
        del lines[self.rng.randrange(len(lines))]
        return {party: _join(lines) if lines else b""}

    def reorder_records(self):
        party, lines = self._pick(2)
        i, j = self.rng.sample(range(len(lines)), 2)
        lines[i], lines[j] = lines[j], lines[i]
        return {party: _join(lines)}

    def duplicate_record(self):
        party, lines = self._pick()
        i = self.rng.randrange(len(lines))
        lines.insert(self.rng.randrange(len(lines) + 1), lines[i])
        return {party: _join(lines)}

    def insert_forged(self):
        """A new message record with the right party, run, seq and prev, signed with a wrong key."""
        party, lines = self._pick()
        records = [json.loads(x) for x in lines]
        at = self.rng.randrange(1, len(records) + 1)
        template = self.rng.choice([r for r in records if r["type"] == "message"])
        forged = _tweak({**template, "seq": at, "prev": records[at - 1]["hash"]}, self.rng)
        lines.insert(at, _sign(forged, self.wrong))
        if self.rng.random() < 0.5:  # and renumber the records after it (their content untouched)
            lines = lines[: at + 1] + [_sign({**json.loads(x), "seq": at + 1 + k}, self.wrong)
                                       for k, x in enumerate(lines[at + 1:])]
        return {party: _join(lines)}

    def truncate_tail(self):
        party, lines = self._pick()
        keep = self.rng.randrange(len(lines))
        return {party: _join(lines[:keep]) if keep else b""}

    def truncate_mid_line(self):
        party, _ = self._pick()
        data = self.files[party]
        return {party: data[: self.rng.randrange(1, len(data) - 1)]}

    def swap_logs(self):
        a, b = self.rng.sample(sorted(self.files), 2)
        return {a: self.files[b], b: self.files[a]}

    def resign_wrong_key(self):
        """A record changed and re-signed with a wrong key (half the time the whole log, header included)."""
        party, lines = self._pick()
        records = [json.loads(x) for x in lines]
        if self.rng.random() < 0.5:
            i = self.rng.randrange(len(records))
            lines[i] = _sign(_tweak(records[i], self.rng), self.wrong)
            return {party: _join(lines)}
        wrong = Identity.generate(party)  # same name, other key
        i = self.rng.randrange(1, len(records))
        records[i] = _tweak(records[i], self.rng)
        records[0] = {**records[0], "identity": wrong.public.to_dict(), "fingerprint": wrong.fingerprint}
        return {party: _join(_rechain(records, wrong))}

    def rewrite_own_key(self):
        """A dishonest writer drops one of its own records and re-chains the log with its own (right) key."""
        party, lines = self._pick(3)
        records = [json.loads(x) for x in lines]
        del records[self.rng.randrange(1, len(records) - 1)]
        return {party: _join(_rechain(records, self.ids[party]))}

    CLASSES = ("flip_byte", "delete_record", "reorder_records", "duplicate_record", "insert_forged",
               "truncate_tail", "truncate_mid_line", "swap_logs", "resign_wrong_key", "rewrite_own_key")


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mutbase")
    run = build_run(folder)
    verify_audit(folder, run.ids[COORDINATOR].public)  # the unmutated run verifies
    files = {p.stem: p.read_bytes() for p in sorted((folder / "audit").glob("*.jsonl"))}
    return run, files


def test_every_mutation_is_detected(baseline, tmp_path):
    run, files = baseline
    key = run.ids[COORDINATOR].public
    rng = random.Random(SEED)
    mutator = Mutator(files, run.ids, rng)
    audit = tmp_path / "audit"
    audit.mkdir()
    for party, data in files.items():
        (audit / f"{party}.jsonl").write_bytes(data)
    tried, caught, missed, problems = Counter(), Counter(), [], Counter()
    started = time.perf_counter()
    schedule = [c for c in Mutator.CLASSES for _ in range(PER_CLASS)]
    rng.shuffle(schedule)
    for name in schedule:
        changed = getattr(mutator, name)()
        if all(changed[p] == files[p] for p in changed):  # a no-op (e.g. swapping two equal lines): draw again
            changed = getattr(mutator, name)()
        for party, data in changed.items():
            (audit / f"{party}.jsonl").write_bytes(data)
        tried[name] += 1
        try:
            verify_audit(tmp_path, key)
        except AuditError as exc:
            caught[name] += 1
            problems[exc.problem.split(":")[0][:40]] += 1
        else:
            missed.append(name)
        for party in changed:
            (audit / f"{party}.jsonl").write_bytes(files[party])
    elapsed = time.perf_counter() - started
    table = ", ".join(f"{n}: {caught[n]}/{tried[n]}" for n in Mutator.CLASSES)
    assert sum(tried.values()) >= 1000
    assert not missed, f"undetected mutations {Counter(missed)}; detected per class: {table}"
    assert all(caught[n] == tried[n] > 0 for n in Mutator.CLASSES), table
    print(f"\n{sum(caught.values())} mutations detected in {elapsed:.1f}s: {table}\nfirst problems named: "
          f"{dict(problems.most_common(8))}")
    verify_audit(tmp_path, key)  # the restored logs verify again
