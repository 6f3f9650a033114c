"""Offline verification of a run's exchange logs, with public keys only.

``verify_audit(DIR)`` reads ``DIR/audit/<party>.jsonl`` (or ``DIR/<party>.jsonl``) and checks,
in this order, raising ``AuditError`` at the first problem (file, line, seq, what):

1. every line is a canonical record; the chain links (seq = line index, prev = hash of the
   previous record), every hash and every signature holds under the header's key;
2. each file's party is its file name, all logs are for one run, each log ends with one
   ``close`` record, or an ``aborted`` record (step and reason) when the run failed;
3. keys: the coordinator's header key equals the pinned key (``coordinator_key``), every
   node's header key equals the one the coordinator's signed ``identities`` record lists,
   and every listed party has a log;
4. message records: routed consistently with their writer, protection class allowed for
   their kind, fingerprints consistent with the pinned keys;
5. completeness: every ``sent`` record has a ``received`` record with the same digest at the
   receiver (relayed: sender → coordinator received + sent → receiver), and vice versa; in an
   aborted run a message may have been sent and never received (counted as undelivered),
   but nothing may be received that was not sent;
6. checkpoints: each recorded checkpoint is signed by its party and matches that party's
   chain at its seq; every node's final (close) head is recorded in the coordinator's log
   (in an aborted run, a node that could not hand its head over is noted instead);
7. online queries (serving runs): every node's ``query`` record lists exactly the IDs the
   coordinator recorded asking in that query, with a known verdict on each.
"""

from __future__ import annotations

import base64
import json
import shlex
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from fedcredit.audit.classes import PLAINTEXT, allowed_for
from fedcredit.audit.log import (
    DIRECTIONS, ENDINGS, FORMAT, GENESIS, VERSION, AuditError, canonical, check_checkpoint, record_hash, signed_data,
    verify_checkpoint,
)
from fedcredit.crypto import PublicIdentity, SignatureError
from fedcredit.common.errors import FedCreditError
from fedcredit.common.wire import COORDINATOR

DEFAULT_MIN_KEY_BITS = 2048  # the verifier's default: Paillier keys below it are test keys
_COMMON = {"v": int, "party": str, "run_id": str, "seq": int, "prev": str, "time": str, "type": str, "hash": str,
           "sig": str}
_FIELDS = {
    "header": {"format": str, "version": int, "identity": dict, "fingerprint": str},
    "message": {"direction": str, "kind": str, "message_run_id": str, "step": int, "sender": str, "receiver": str,
                "sender_fp": (str, type(None)), "receiver_fp": (str, type(None)), "sealed": bool, "relayed": bool,
                "digest": str, "size": int, "payload_size": int, "ciphertexts": int, "protection": str,
                "paillier_key": (str, type(None)), "key_bits": (int, type(None))},
    "identities": {"parties": dict},
    "checkpoint": {"checkpoint": dict},
    "consent": {"consent_count": int, "consent_digest": str},
    "query": {"query_id": str, "ids": list, "verdicts": list},
    "close": {"records": int},
    "aborted": {"records": int, "step": int, "reason": str},
}


@dataclass
class PartyLog:
    party: str
    path: Path
    records: list[dict]
    identity: PublicIdentity

    def where(self, seq: int | None = None) -> dict:
        return {"file": self.path, "line": None if seq is None else seq + 1, "seq": seq}


@dataclass
class AuditVerdict:
    ok: bool
    run_id: str
    parties: list[str]
    records: dict[str, int]
    messages: int                 # distinct message transmissions (sent records)
    matched: int                  # sent records matched by a received record
    checkpoints: int
    protection: dict[str, int]    # class -> sent records
    coordinator_pinned: bool
    fingerprints: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    aborted: dict | None = None   # {"party", "step", "reason"} when the run failed and its logs were closed as aborted
    undelivered: int = 0          # aborted runs: messages sent that never reached their receiver

    def summary(self) -> str:
        pinned = "pinned" if self.coordinator_pinned else "NOT pinned (pass --key)"
        logs = f"{len(self.parties)} party logs ({', '.join(self.parties)}), {sum(self.records.values())} records"
        if self.aborted is not None:
            a = self.aborted
            return (f"ABORTED: run {self.run_id} aborted at step {a['step']}: {a['reason']} (recorded by {a['party']}); "
                    f"the logs are intact: {logs}, {self.matched} messages received, {self.undelivered} undelivered, "
                    f"{self.checkpoints} checkpoints hold, protection allowed; coordinator key {pinned}")
        return (f"OK: run {self.run_id}: {logs}, {self.messages} messages all received, "
                f"{self.checkpoints} checkpoints hold, protection allowed; coordinator key {pinned}")


def audit_files(folder) -> list[Path]:
    folder = Path(folder)
    base = folder / "audit" if (folder / "audit").is_dir() else folder
    if not base.is_dir():
        raise AuditError(f"{folder}: no such directory")
    files = sorted(base.glob("*.jsonl"))
    if not files:
        raise AuditError(f"{base}: no audit logs (*.jsonl)")
    return files


def _type_ok(value, want) -> bool:
    kinds = want if isinstance(want, tuple) else (want,)
    if isinstance(value, bool) and bool not in kinds:
        return False
    return isinstance(value, kinds)


def _pin(key) -> PublicIdentity | None:
    if key is None or isinstance(key, PublicIdentity):
        return key
    try:
        return PublicIdentity.load(key)
    except FedCreditError as exc:
        raise AuditError(f"coordinator key {key}: {exc}") from None


def read_log(path, signatures: bool = True) -> PartyLog:
    """Parse one log and check its chain, hashes and (unless told not to) signatures under its header key."""
    path = Path(path)
    data = path.read_bytes()
    if not data:
        raise AuditError("empty log", file=path)
    if not data.endswith(b"\n"):
        raise AuditError("log does not end with a newline: the last record is cut (truncated log)", file=path)
    lines = data[:-1].split(b"\n")
    records, prev, identity = [], GENESIS, None
    for i, line in enumerate(lines):
        where = {"file": path, "line": i + 1, "seq": i}
        try:
            rec = json.loads(line.decode("ascii"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise AuditError(f"not a JSON record ({exc.__class__.__name__})", **where) from None
        if not isinstance(rec, dict):
            raise AuditError("record is not a JSON object", **where)
        try:
            same = canonical(rec) == line
        except ValueError:
            same = False
        if not same:
            raise AuditError("record is not in canonical form (altered)", **where)
        kind = rec.get("type")
        spec = {**_COMMON, **_FIELDS.get(kind, {})} if kind in _FIELDS else None
        if spec is None:
            raise AuditError(f"unknown record type {kind!r}", **where)
        if set(rec) != set(spec):
            raise AuditError(f"{kind} record has fields {sorted(rec)}, expected {sorted(spec)}", **where)
        for name, want in spec.items():
            if not _type_ok(rec[name], want):
                raise AuditError(f"field {name!r} has the wrong type", **where)
        if rec["v"] != VERSION:
            raise AuditError(f"record version {rec['v']}, expected {VERSION}", **where)
        if rec["seq"] != i:
            raise AuditError(f"sequence number {rec['seq']} at position {i}: records deleted, inserted or reordered",
                             **where)
        if rec["prev"] != prev:
            raise AuditError("chain broken: prev is not the hash of the previous record "
                             "(records deleted, inserted, reordered or altered)", **where)
        if rec["hash"] != record_hash(rec):
            raise AuditError("record hash does not match its content (altered)", **where)
        if i == 0:
            if kind != "header":
                raise AuditError("first record is not a header", **where)
            if rec["format"] != FORMAT or rec["version"] != VERSION:
                raise AuditError(f"not a version-{VERSION} {FORMAT} log", **where)
            try:
                identity = PublicIdentity.from_dict(rec["identity"], path=f"{path.name} header")
            except FedCreditError as exc:
                raise AuditError(f"header identity: {exc}", **where) from None
            if rec["fingerprint"] != identity.fingerprint:
                raise AuditError("header fingerprint does not match its identity", **where)
        elif kind == "header":
            raise AuditError("a second header inside the log", **where)
        if records and (rec["party"], rec["run_id"]) != (records[0]["party"], records[0]["run_id"]):
            raise AuditError(f"record names party {rec['party']!r} run {rec['run_id']!r}, the log is "
                             f"{records[0]['party']!r} run {records[0]['run_id']!r}", **where)
        if kind in ENDINGS and i != len(lines) - 1:
            raise AuditError(f"records after the {kind} record", **where)
        records.append(rec)
        prev = rec["hash"]
    last = records[-1]
    if last["type"] not in ENDINGS:
        raise AuditError(f"log ends at seq {last['seq']} without a close or aborted record (truncated log)",
                         file=path, line=len(records), seq=last["seq"])
    if last["records"] != len(records):
        raise AuditError(f"{last['type']} record counts {last['records']} records, the log holds {len(records)}",
                         file=path, line=len(records), seq=last["seq"])
    party = records[0]["party"]
    if party != path.stem:
        raise AuditError(f"log of party {party!r} stored as {path.name} (logs swapped or renamed)", file=path, line=1, seq=0)
    log = PartyLog(party, path, records, identity)
    if signatures:
        check_signatures(log)
    return log


def check_signatures(log: PartyLog) -> None:
    """Every record's signature under the log's header key."""
    for rec in log.records:
        try:
            log.identity.verify(signed_data(rec["hash"]), base64.b64decode(rec["sig"], validate=True),
                                what=f"record {rec['seq']} of {log.path.name}")
        except (ValueError, SignatureError) as exc:
            raise AuditError(f"bad signature: {exc}", **log.where(rec["seq"])) from None


def _message_key(r: dict) -> tuple:
    return (r["digest"], r["kind"], r["message_run_id"], r["step"], r["sender"], r["receiver"], r["size"])


def _describe(r: dict) -> str:
    return f"{r['direction']} {r['kind']} #{r['step']} {r['sender']}→{r['receiver']} (digest {r['digest'][:12]}…)"


def verify_command(folder, key_bits: int, key=None) -> str:
    """The ``fedcredit audit verify`` command line that checks the run in ``folder`` as it was made.

    Runs with keys below the verifier's default minimum (e.g. the demo's 1024-bit test keys)
    need ``--min-key-bits``; paths are shell-quoted so the line can be pasted as printed.
    ``key`` defaults to the run's ``keys/coordinator.pub.json``.
    """
    key = key if key is not None else Path(folder) / "keys" / "coordinator.pub.json"
    argv = ["fedcredit", "audit", "verify", str(folder), "--key", str(key)]
    if key_bits < DEFAULT_MIN_KEY_BITS:
        argv += ["--min-key-bits", str(key_bits)]
    return shlex.join(argv)


def verify_audit(folder, coordinator_key=None, *, min_key_bits: int = 2048, allow_mock: bool = False) -> AuditVerdict:
    """Verify every log of a run; AuditVerdict if all holds, otherwise AuditError naming file, record and problem."""
    pinned = _pin(coordinator_key)
    logs: dict[str, PartyLog] = {}
    for path in audit_files(folder):  # cheap structural checks of every log first, then signatures
        log = read_log(path, signatures=False)
        if log.party in logs:
            raise AuditError(f"a second log of {log.party!r}", **log.where(0))
        logs[log.party] = log
    for log in logs.values():
        check_signatures(log)
    coord = logs.get(COORDINATOR)
    if coord is None:
        raise AuditError(f"no coordinator log ({COORDINATOR}.jsonl) among {sorted(p.name for p in audit_files(folder))}")
    run_id = coord.records[0]["run_id"]
    for log in logs.values():
        if log.records[0]["run_id"] != run_id:
            raise AuditError(f"log is for run {log.records[0]['run_id']!r}, the coordinator's for {run_id!r}",
                             **log.where(0))

    # 3. keys
    if pinned is not None and coord.identity != pinned:
        raise AuditError(f"coordinator log is signed by {coord.identity.fingerprint[:16]}…, "
                         f"the pinned coordinator key is {pinned.fingerprint[:16]}…", **coord.where(0))
    listed = [r for r in coord.records if r["type"] == "identities"]
    if not listed:
        raise AuditError("the coordinator's log has no identities record: node keys cannot be pinned", **coord.where())
    keys: dict[str, PublicIdentity] = {COORDINATOR: coord.identity}
    for rec in listed:
        for role, entry in rec["parties"].items():
            try:
                pub = PublicIdentity.from_dict(entry["identity"], path=f"identities record of {role}")
                if entry["fingerprint"] != pub.fingerprint:
                    raise AuditError("fingerprint does not match the identity")
            except (FedCreditError, KeyError, TypeError) as exc:
                raise AuditError(f"identities record: party {role!r}: {exc}", **coord.where(rec["seq"])) from None
            if role in keys and keys[role] != pub:
                raise AuditError(f"identities record gives {role!r} a second key", **coord.where(rec["seq"]))
            keys[role] = pub
    for party, log in logs.items():
        if party not in keys:
            raise AuditError(f"log of {party!r}, a party the coordinator's identities record does not list",
                             **log.where(0))
        if log.identity != keys[party]:
            raise AuditError(f"log of {party!r} is signed by {log.identity.fingerprint[:16]}…, the coordinator "
                             f"lists {keys[party].fingerprint[:16]}… for it (wrong key or swapped log)", **log.where(0))
    missing = sorted(set(keys) - set(logs))
    if missing:
        raise AuditError(f"no log for {', '.join(missing)} (listed in the coordinator's identities record)")

    # 4. message records: routing, protection, fingerprints
    sent_at, recv_at = defaultdict(Counter), defaultdict(Counter)  # party -> Counter(message key)
    first = {}  # (party, direction, key) -> first record (for messages)
    protection = Counter()
    for party, log in logs.items():
        for rec in log.records:
            if rec["type"] != "message":
                continue
            where = log.where(rec["seq"])
            d = rec["direction"]
            if d not in DIRECTIONS:
                raise AuditError(f"direction {d!r}", **where)
            if rec["message_run_id"] != run_id and not rec["message_run_id"].startswith(run_id + "/"):
                raise AuditError(f"message of run {rec['message_run_id']!r} in the log of run {run_id!r}", **where)
            relayed = COORDINATOR not in (rec["sender"], rec["receiver"])
            if rec["relayed"] != relayed:
                raise AuditError("relayed flag contradicts the routing", **where)
            for end in ("sender", "receiver"):
                if rec[end] not in keys:
                    raise AuditError(f"{_describe(rec)}: {end} {rec[end]!r} is not a party of the run", **where)
                fp = rec[f"{end}_fp"]
                if fp is not None and fp != keys[rec[end]].fingerprint:
                    raise AuditError(f"{_describe(rec)}: {end} fingerprint {fp[:16]}… is not the key of "
                                     f"{rec[end]!r}", **where)
            end = rec["sender"] if d == "sent" else rec["receiver"]
            if end != party and not (party == COORDINATOR and relayed):
                raise AuditError(f"{_describe(rec)} recorded by {party!r}, which is not an end of it", **where)
            if rec["sender"] == rec["receiver"]:
                raise AuditError(f"{_describe(rec)}: a party sending to itself", **where)
            cls = rec["protection"]
            allowed = allowed_for(rec["kind"], min_key_bits, allow_mock)
            if not allowed:
                raise AuditError(f"{_describe(rec)}: message kind {rec['kind']!r} is not in the protection table",
                                 **where)
            if cls not in allowed:
                what = "a plaintext payload" if cls == PLAINTEXT else f"protection {cls!r}"
                raise AuditError(f"{_describe(rec)} carries {what}; allowed for {rec['kind']}: "
                                 f"{', '.join(sorted(allowed))}", **where)
            if rec["sealed"] != (cls == "x25519-aesgcm"):
                raise AuditError(f"{_describe(rec)}: sealed flag contradicts protection {cls!r}", **where)
            if rec["size"] < rec["payload_size"] or rec["ciphertexts"] < 0 or \
                    (cls.startswith(("paillier-", "mock-paillier-")) and rec["ciphertexts"] < 1):
                raise AuditError(f"{_describe(rec)}: sizes or ciphertext count inconsistent", **where)
            k = _message_key(rec)
            (sent_at if d == "sent" else recv_at)[party][k] += 1
            first.setdefault((party, d, k), rec)
            if d == "sent" and party == rec["sender"]:
                protection[cls] += 1

    # 5. completeness: every sent is received, every received was sent (with multiplicity)
    ended = {party: log.records[-1] for party, log in logs.items() if log.records[-1]["type"] == "aborted"}
    matched, undelivered = 0, 0
    # every leg of a message's path must hold it the same number of times
    keyset = set()
    for table in list(sent_at.values()) + list(recv_at.values()):
        keyset |= set(table)
    for k in sorted(keyset):
        sender, receiver = k[4], k[5]
        relayed = COORDINATOR not in (sender, receiver)
        chain = ([(sender, "sent"), (COORDINATOR, "received"), (COORDINATOR, "sent"), (receiver, "received")]
                 if relayed else [(sender, "sent"), (receiver, "received")])
        counts = [(sent_at if d == "sent" else recv_at)[p][k] for p, d in chain]
        if ended and all(a >= b for a, b in zip(counts, counts[1:])):  # lost on the way when the run failed
            matched += counts[-1]
            undelivered += counts[0] - counts[-1]
            continue
        if len(set(counts)) != 1:
            # name the first leg that has a record the next leg lacks (or vice versa)
            top = max(counts)
            have = next(i for i, c in enumerate(counts) if c == top)
            lack = next(i for i, c in enumerate(counts) if c < top)
            hp, hd = chain[have]
            lp, ld = chain[lack]
            rec = first[(hp, hd, k)]
            extra = "" if counts[lack] == 0 else f" (only {counts[lack]} of {top})"
            raise AuditError(f"{_describe(rec)} has no matching '{ld}' record in {lp}.jsonl{extra}",
                             **logs[hp].where(rec["seq"]))
        matched += counts[0]

    # 6. checkpoints
    n_checkpoints = 0
    covered = defaultdict(set)  # party -> seqs covered by checkpoints in other logs
    for party, log in logs.items():
        for rec in log.records:
            if rec["type"] != "checkpoint":
                continue
            where = log.where(rec["seq"])
            try:
                cp = check_checkpoint(rec["checkpoint"], "recorded checkpoint")
            except AuditError as exc:
                raise AuditError(exc.problem, **where) from None
            other = cp["party"]
            if other not in logs:
                raise AuditError(f"checkpoint of {other!r}, which has no log", **where)
            if other == party:
                raise AuditError("a log records its own checkpoint", **where)
            if cp["run_id"] != run_id:
                raise AuditError(f"checkpoint of {other!r} is for run {cp['run_id']!r}", **where)
            try:
                verify_checkpoint(cp, keys[other], "recorded checkpoint")
            except AuditError as exc:
                raise AuditError(exc.problem, **where) from None
            target = logs[other].records
            if cp["seq"] >= len(target):
                raise AuditError(f"checkpoint of {other!r} at seq {cp['seq']}, but {other}.jsonl has only "
                                 f"{len(target)} records (truncated log)", **where)
            if target[cp["seq"]]["hash"] != cp["head"]:
                raise AuditError(f"checkpoint of {other!r} at seq {cp['seq']} does not match {other}.jsonl "
                                 f"(log rewritten)", **where)
            covered[other].add(cp["seq"])
            n_checkpoints += 1
    notes = []
    for party, log in logs.items():
        if party == COORDINATOR:
            continue
        close = log.records[-1]
        if close["seq"] not in covered[party] or not any(
                r["type"] == "checkpoint" and r["checkpoint"]["party"] == party and r["checkpoint"]["seq"] == close["seq"]
                for r in coord.records):
            if ended:
                notes.append(f"the final head of {party}.jsonl (seq {close['seq']}) did not reach the coordinator "
                             "before the run was aborted")
                continue
            raise AuditError(f"the final head of {party}.jsonl (seq {close['seq']}) is not recorded in the "
                             f"coordinator's log", **log.where(close["seq"]))
    _check_queries(logs)
    if pinned is None:
        notes.append("coordinator key not pinned: the coordinator's header key was trusted as found")
    if not any(r["type"] == "checkpoint" and r["checkpoint"]["party"] == COORDINATOR
               for p, log in logs.items() if p != COORDINATOR for r in log.records):
        notes.append("no node holds a checkpoint of the coordinator's log")
    return AuditVerdict(
        ok=True, run_id=run_id, parties=sorted(logs), records={p: len(l.records) for p, l in sorted(logs.items())},
        messages=matched, matched=matched, checkpoints=n_checkpoints, protection=dict(protection),
        coordinator_pinned=pinned is not None, fingerprints={p: k.fingerprint for p, k in sorted(keys.items())},
        notes=notes, aborted=_abort_of(ended), undelivered=undelivered)


QUERY_VERDICTS = {COORDINATOR: {"asked"}, None: {"ok", "unknown", "no-consent", "refused"}}


def _check_queries(logs: dict[str, PartyLog]) -> None:
    """7. Every node's query records against the coordinator's: the same IDs per query, verdicts of a known kind."""
    asked: dict[str, list] = {}
    for party in [COORDINATOR, *sorted(p for p in logs if p != COORDINATOR)]:
        log = logs[party]
        allowed = QUERY_VERDICTS[COORDINATOR if party == COORDINATOR else None]
        for rec in log.records:
            if rec["type"] != "query":
                continue
            where = log.where(rec["seq"])
            ids, verdicts, query = rec["ids"], rec["verdicts"], rec["query_id"]
            if len(ids) != len(verdicts) or not all(isinstance(v, str) for v in ids) \
                    or not all(v in allowed for v in verdicts):
                raise AuditError(f"query {query!r}: one verdict of {sorted(allowed)} per queried ID", **where)
            if party == COORDINATOR:
                if query in asked:
                    raise AuditError(f"query {query!r} recorded twice", **where)
                asked[query] = ids
            elif asked.get(query) != ids:
                raise AuditError(f"query {query!r}: {party} lists IDs the coordinator's record of the query does "
                                 "not (or no such query)", **where)


def _abort_of(ended: dict[str, dict]) -> dict | None:
    """The run's abort as the coordinator recorded it (else the first node that did)."""
    if not ended:
        return None
    party = COORDINATOR if COORDINATOR in ended else sorted(ended)[0]
    rec = ended[party]
    return {"party": party, "step": rec["step"], "reason": rec["reason"]}


def load_records(folder) -> list[dict]:
    """Every record of every log (parsed and chain-checked, not cross-verified), with its file name."""
    rows = []
    for path in audit_files(folder):
        for rec in read_log(path).records:
            rows.append({**rec, "file": path.name})
    return rows


def export_parquet(folder, out_path) -> Path:
    """One row per record of every log in ``folder`` (nested fields as JSON text)."""
    import pandas as pd

    from fedcredit.common.atomic import atomic_write

    cols = ["file", "party", "run_id", "seq", "type", "time", "direction", "kind", "message_run_id", "step", "sender",
            "receiver", "sender_fp", "receiver_fp", "sealed", "relayed", "digest", "size", "payload_size",
            "ciphertexts", "protection", "paillier_key", "key_bits", "prev", "hash", "sig", "detail"]
    rows = []
    for rec in load_records(folder):
        extra = {k: v for k, v in rec.items() if k not in cols and k != "v"}
        rows.append({**{c: rec.get(c) for c in cols if c != "detail"},
                     "detail": json.dumps(extra, sort_keys=True) if extra else None})
    df = pd.DataFrame(rows, columns=cols)
    for c in ("step", "size", "payload_size", "ciphertexts", "key_bits"):
        df[c] = df[c].astype("Int64")
    for c in ("sealed", "relayed"):
        df[c] = df[c].astype("boolean")
    df["time"] = pd.to_datetime(df["time"], utc=True)
    out_path = Path(out_path)
    atomic_write(out_path, lambda tmp: df.to_parquet(tmp, index=False))
    return out_path
