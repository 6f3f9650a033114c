"""One party's append-only, hash-chained, signed exchange log (JSON Lines) for one run.

Every line is one record, serialized canonically (sorted keys, no spaces, ASCII). Each
record carries its sequence number and the hash of the previous record; its own hash is
SHA-256 over the canonical record without ``hash`` and ``sig``, and ``sig`` is the
writer's Ed25519 signature on that hash. Records hold only facts derived from a message
(kind, routing, step, digest, sizes, ciphertext count, protection class) — never payload
bytes nor metadata values — except a serving run's ``query`` records, which list the queried
IDs and each one's verdict by design: the data holder checks them against its consent list.
Schema: docs/audit.md.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path

from fedcredit.audit.classes import protection_class
from fedcredit.crypto import Identity, PublicIdentity, SignatureError
from fedcredit.common.errors import FedCreditError
from fedcredit.common.wire import COORDINATOR, Message, check_header

FORMAT = "fedcredit-audit"
VERSION = 1
GENESIS = "0" * 64
DIRECTIONS = ("sent", "received")
RECORD_TYPES = ("header", "message", "identities", "checkpoint", "consent", "query", "close", "aborted")
ENDINGS = ("close", "aborted")  # a log ends with exactly one of these
_RECORD_DOMAIN = b"fedcredit/audit/record/v1\0"
_SIG_DOMAIN = b"fedcredit/audit/signature/v1\0"
_CHECKPOINT_DOMAIN = b"fedcredit/audit/checkpoint/v1\0"
CHECKPOINT_FIELDS = ("party", "run_id", "seq", "head", "signature", "fingerprint")


class AuditError(FedCreditError):
    """An audit log is malformed, incomplete, altered or violates the protection policy.

    ``file``, ``line`` and ``seq`` name the offending record when there is one.
    """

    def __init__(self, message: str, *, file=None, line: int | None = None, seq: int | None = None):
        where = []
        if file is not None:
            where.append(str(Path(file).name))
        if line is not None:
            where.append(f"line {line}")
        if seq is not None:
            where.append(f"seq {seq}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)
        self.file, self.line, self.seq, self.problem = file, line, seq, message


def canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")


def record_hash(record: dict) -> str:
    """SHA-256 (hex) over the canonical record without its ``hash`` and ``sig`` fields."""
    body = {k: v for k, v in record.items() if k not in ("hash", "sig")}
    return hashlib.sha256(_RECORD_DOMAIN + canonical(body)).hexdigest()


def signed_data(head: str) -> bytes:
    return _SIG_DOMAIN + bytes.fromhex(head)


def checkpoint_data(party: str, run_id: str, seq: int, head: str) -> bytes:
    return _CHECKPOINT_DOMAIN + canonical({"party": party, "run_id": run_id, "seq": seq, "head": head})


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def check_checkpoint(cp, what: str = "checkpoint") -> dict:
    """``cp`` if it has exactly the checkpoint fields with the right types; otherwise AuditError."""
    if not isinstance(cp, dict) or set(cp) != set(CHECKPOINT_FIELDS):
        got = sorted(cp) if isinstance(cp, dict) else type(cp).__name__
        raise AuditError(f"{what} has fields {got}, expected {sorted(CHECKPOINT_FIELDS)}")
    for name in ("party", "run_id", "head", "signature", "fingerprint"):
        if not isinstance(cp[name], str):
            raise AuditError(f"{what}: field {name!r} must be a string")
    if not isinstance(cp["seq"], int) or isinstance(cp["seq"], bool) or cp["seq"] < 0:
        raise AuditError(f"{what}: field 'seq' must be an integer ≥ 0")
    if len(cp["head"]) != 64 or any(c not in "0123456789abcdef" for c in cp["head"]):
        raise AuditError(f"{what}: field 'head' must be 64 lower-case hex digits")
    return cp


def verify_checkpoint(cp: dict, public: PublicIdentity, what: str = "checkpoint") -> None:
    """Raise AuditError unless ``cp`` is signed by ``public``."""
    check_checkpoint(cp, what)
    if cp["fingerprint"] != public.fingerprint:
        raise AuditError(f"{what} of {cp['party']!r} names key {cp['fingerprint'][:16]}…, "
                         f"but that party's key is {public.fingerprint[:16]}…")
    try:
        sig = base64.b64decode(cp["signature"], validate=True)
        public.verify(checkpoint_data(cp["party"], cp["run_id"], cp["seq"], cp["head"]), sig, what=what)
    except (ValueError, SignatureError) as exc:
        raise AuditError(f"{what} of {cp['party']!r}: {exc}") from None


class AuditWriter:
    """One party's append-only, hash-chained, signed JSON-Lines log for one run.

    Picklable: it keeps only the path, the identity and the chain state, and opens,
    appends and closes the file per record. It refuses to append when the file's size
    is not what it last wrote (someone else changed the log).
    """

    def __init__(self, path, identity: Identity, run_id: str, *, party: str | None = None, fsync: bool = True):
        if not isinstance(run_id, str) or not run_id:
            raise AuditError("audit log: run id must be a non-empty string")
        self.path = str(Path(path))
        self.identity = identity
        self.party = party or identity.name
        self.run_id = run_id
        self.fsync = fsync
        self.seq = 0           # sequence number of the next record
        self.head = GENESIS    # hash of the last record
        self.closed = False
        self._size = 0
        self._fingerprints: dict[str, str] = {self.party: identity.fingerprint}
        self._keys: dict[str, tuple[int, str, str]] = {}  # message run id -> (bits, fingerprint, backend)
        p = Path(self.path)
        if p.exists() and p.stat().st_size:
            raise AuditError(f"audit log {p} already exists; one log per party per run", file=p)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")
        self._append({"type": "header", "format": FORMAT, "version": VERSION,
                      "identity": identity.public.to_dict(), "fingerprint": identity.fingerprint})

    # -- writing ------------------------------------------------------------
    def _append(self, fields: dict) -> dict:
        if self.closed:
            raise AuditError(f"audit log {self.path} is closed", file=self.path)
        size = os.path.getsize(self.path) if os.path.exists(self.path) else -1
        if size != self._size:
            raise AuditError(f"audit log changed on disk ({size} bytes, the writer wrote {self._size}); refusing to append",
                             file=self.path)
        rec = {"v": VERSION, "party": self.party, "run_id": self.run_id, "seq": self.seq, "prev": self.head,
               "time": _now(), **fields}
        rec["hash"] = record_hash(rec)
        rec["sig"] = _b64(self.identity.sign(signed_data(rec["hash"])))
        line = canonical(rec) + b"\n"
        with open(self.path, "ab") as fh:
            fh.write(line)
            fh.flush()
            if self.fsync:
                os.fsync(fh.fileno())
        self._size += len(line)
        self.seq += 1
        self.head = rec["hash"]
        return rec

    def _learn(self, msg: Message) -> None:
        """Public facts the writer needs later: the run's Paillier key size, peers' fingerprints."""
        try:
            if msg.kind == "lr.setup" and not msg.sealed:
                from fedcredit.crypto import PaillierPublicKey

                config = msg.meta.get("config") or {}
                backend = config.get("backend", "paillier") if isinstance(config, dict) else "paillier"
                key = PaillierPublicKey(int(msg.meta["key_n"], 16), backend=backend)
                self._keys[msg.run_id] = (key.bits, key.fingerprint, key.backend)
            elif msg.kind == "job.peers" and not msg.sealed and isinstance(msg.meta.get("peers"), dict):
                for role, doc in msg.meta["peers"].items():
                    self._fingerprints.setdefault(role, PublicIdentity.from_dict(doc).fingerprint)
        except Exception:  # a malformed announcement teaches nothing; the protocol rejects it itself
            pass

    def record(self, message: bytes | Message, *, direction: str, paillier_key: str | None = None,
               key_bits: int | None = None) -> dict:
        """Record one message as ``direction`` ('sent' or 'received'): its exact wire bytes, or the Message
        (digest and size of its wire bytes computed piece by piece: no copy of a large payload)."""
        if direction not in DIRECTIONS:
            raise AuditError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        pieces = message.to_parts() if isinstance(message, Message) else [message]
        try:  # the header as the receiver decodes it (JSON), the payload shared, not copied
            msg = (Message(**check_header(json.loads(pieces[1])), payload=message.payload)
                   if isinstance(message, Message) else Message.from_bytes(message))
        except FedCreditError as exc:
            raise AuditError(f"cannot record a malformed message: {exc}", file=self.path) from None
        digest, size = hashlib.sha256(), 0
        for piece in pieces:
            digest.update(piece)
            size += memoryview(piece).nbytes
        end = msg.sender if direction == "sent" else msg.receiver
        if end != self.party and not (self.party == COORDINATOR and msg.relayed):
            raise AuditError(f"{self.party} cannot record {msg.describe()} as {direction}", file=self.path)
        self._learn(msg)
        bits, fingerprint, backend = self._keys.get(msg.run_id, (key_bits, paillier_key, "paillier"))
        protection, ciphertexts = protection_class(msg, key_bits or bits, key_fingerprint=fingerprint, backend=backend)
        return self._append({
            "type": "message", "direction": direction, "kind": msg.kind, "message_run_id": msg.run_id,
            "step": msg.step, "sender": msg.sender, "receiver": msg.receiver,
            "sender_fp": self._fingerprints.get(msg.sender), "receiver_fp": self._fingerprints.get(msg.receiver),
            "sealed": msg.sealed, "relayed": msg.relayed, "digest": digest.hexdigest(),
            "size": size, "payload_size": len(msg.payload), "ciphertexts": ciphertexts,
            "protection": protection, "paillier_key": paillier_key or fingerprint, "key_bits": key_bits or bits,
        })

    def record_identities(self, identities: dict) -> dict:
        """A signed record of every party's public identity (the coordinator's log pins node keys with it)."""
        parties = {}
        for role, pub in identities.items():
            if isinstance(pub, dict):
                pub = PublicIdentity.from_dict(pub)
            if not isinstance(pub, PublicIdentity):
                raise AuditError(f"identity of {role!r} must be a PublicIdentity, got {type(pub).__name__}")
            parties[str(role)] = {"fingerprint": pub.fingerprint, "identity": pub.to_dict()}
            self._fingerprints[str(role)] = pub.fingerprint
        return self._append({"type": "identities", "parties": parties})

    def record_consent(self, count: int, digest: str) -> dict:
        """A signed record of the consent set a node used for this run: how many enterprises, and the SHA-256
        digest of their sorted IDs (the IDs themselves never enter a log)."""
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise AuditError(f"consent count must be a whole number ≥ 0, got {count!r}")
        if not isinstance(digest, str) or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise AuditError("consent digest must be 64 lower-case hex digits (SHA-256)")
        return self._append({"type": "consent", "consent_count": count, "consent_digest": digest})

    def record_query(self, query_id: str, ids: list[str], verdicts: list[str]) -> dict:
        """A signed record of one online query: its id, the queried IDs and this party's verdict on each (a node:
        ok / unknown / no-consent / refused; the coordinator, before it asks: asked). The IDs are what a
        node was asked about anyway; its log keeps them so the data holder can check them against consent."""
        if not isinstance(query_id, str) or not query_id:
            raise AuditError("query record: the query id must be a non-empty string")
        if not (isinstance(ids, list) and isinstance(verdicts, list) and len(ids) == len(verdicts)
                and all(isinstance(v, str) for v in ids + verdicts)):
            raise AuditError("query record: the IDs and the verdicts must be equally long lists of strings")
        return self._append({"type": "query", "query_id": query_id, "ids": list(ids), "verdicts": list(verdicts)})

    def checkpoint(self) -> dict:
        """The signed chain head: {party, run_id, seq, head, signature, fingerprint}."""
        seq = self.seq - 1
        sig = self.identity.sign(checkpoint_data(self.party, self.run_id, seq, self.head))
        return {"party": self.party, "run_id": self.run_id, "seq": seq, "head": self.head,
                "signature": _b64(sig), "fingerprint": self.identity.fingerprint}

    def record_checkpoint(self, checkpoint: dict, public: PublicIdentity | None = None) -> dict:
        """Store a peer's signed chain head as a record of this log (checked against ``public`` if given)."""
        cp = check_checkpoint(dict(checkpoint), "checkpoint to record")
        if cp["run_id"] != self.run_id:
            raise AuditError(f"checkpoint of {cp['party']!r} is for run {cp['run_id']!r}, this log is {self.run_id!r}")
        if public is not None:
            verify_checkpoint(cp, public)
        known = self._fingerprints.get(cp["party"])
        if known is not None and known != cp["fingerprint"]:
            raise AuditError(f"checkpoint of {cp['party']!r} names key {cp['fingerprint'][:16]}…, expected {known[:16]}…")
        return self._append({"type": "checkpoint", "checkpoint": cp})

    def rollback(self) -> int:
        """Cut the file back to what this writer (restored from a checkpoint) last wrote; returns the bytes cut.

        A node that crashed while handling a message may have appended records that its
        saved state never saw; it handles that message again, so those records go. Only a
        tail is ever cut: the kept part must end with this writer's head, otherwise the log
        was changed by someone else and nothing is touched.
        """
        p = Path(self.path)
        size = p.stat().st_size if p.exists() else -1
        if size == self._size:
            return 0
        if size < self._size:
            raise AuditError(f"audit log is shorter ({size} bytes) than its checkpoint ({self._size} bytes); "
                             "it was truncated or replaced", file=p)
        with open(p, "rb") as fh:
            kept = fh.read(self._size)
        last = kept.rstrip(b"\n").rsplit(b"\n", 1)[-1] if kept else b""
        try:
            last_hash = json.loads(last)["hash"] if last else GENESIS
        except (ValueError, KeyError, TypeError):
            last_hash = None
        if not kept.endswith(b"\n") or last_hash != self.head:
            raise AuditError(f"audit log does not continue this node's checkpoint at byte {self._size}; "
                             "refusing to cut it", file=p)
        if self._adopt_abort(p, size):
            return 0
        with open(p, "r+b") as fh:
            fh.truncate(self._size)
            fh.flush()
            if self.fsync:
                os.fsync(fh.fileno())
        return size - self._size

    def state(self) -> dict:
        """The writer's chain state as plain JSON (a coordinator's journal keeps it to continue the log)."""
        return {"seq": self.seq, "head": self.head, "closed": self.closed, "size": self._size,
                "fingerprints": dict(self._fingerprints), "keys": {k: list(v) for k, v in self._keys.items()}}

    @classmethod
    def resume(cls, path, identity: Identity, run_id: str, state: dict, *, party: str | None = None,
               fsync: bool = True) -> "AuditWriter":
        """A writer that continues the log at ``path`` from ``state`` (``state()`` of an earlier writer);
        a tail written after that state is cut (``rollback``), anything else that differs is refused."""
        writer = cls.__new__(cls)
        writer.path, writer.identity, writer.party = str(Path(path)), identity, party or identity.name
        writer.run_id, writer.fsync = run_id, fsync
        try:
            writer.seq, writer.head, writer.closed = int(state["seq"]), str(state["head"]), bool(state["closed"])
            writer._size = int(state["size"])
            writer._fingerprints = {str(k): str(v) for k, v in state["fingerprints"].items()}
            writer._keys = {str(k): (int(v[0]), str(v[1]), str(v[2])) for k, v in state["keys"].items()}
        except (KeyError, TypeError, ValueError, IndexError, AttributeError):
            raise AuditError("cannot continue the audit log: its saved writer state is malformed", file=path) from None
        writer.rollback()
        return writer

    def _adopt_abort(self, path: Path, size: int) -> bool:
        """A failed attempt that ended the log itself (an ``aborted`` record: a node refusing a job under its
        policy) wrote the log's last word: keep it, and continue from its end closed. Only a tail that chains
        on from this writer's head, record by record, is kept."""
        with open(path, "rb") as fh:
            fh.seek(self._size)
            tail = fh.read(size - self._size)
        try:
            records = [json.loads(line) for line in tail.splitlines()]
        except ValueError:
            return False
        head = self.head
        for rec in records:
            if not isinstance(rec, dict) or rec.get("prev") != head or rec.get("hash") != record_hash(rec):
                return False
            head = rec["hash"]
        if not tail.endswith(b"\n") or not records or records[-1].get("type") != "aborted":
            return False
        self.seq, self.head, self._size, self.closed = self.seq + len(records), head, size, True
        return True

    def close(self) -> dict:
        """Write the final 'close' record and return the final signed head."""
        self._append({"type": "close", "records": self.seq + 1})
        self.closed = True
        return self.checkpoint()

    def abort(self, step: int, reason: str) -> dict:
        """End a failed run's log with a signed 'aborted' record (the step and why); returns the final head.

        An auditor then reads "aborted at step N: reason" instead of a truncated log, and
        the chain up to the failure still verifies.
        """
        self._append({"type": "aborted", "records": self.seq + 1, "step": int(step), "reason": str(reason)[:500]})
        self.closed = True
        return self.checkpoint()
