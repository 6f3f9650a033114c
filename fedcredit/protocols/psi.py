"""Multi-party ECDH private set intersection, bank-centred, delivered as local row indices.

Parties form a ring ``[bank, host1, host2, ...]``. Every party hashes its IDs and
blinds them with its secret key; each blinded set travels once around the ring
(every party applies its key, order preserved, payloads sealed to the next party)
and comes back to its owner fully blinded, ``k_bank·k_host1·…·H(id)``. Equal IDs now
have equal values at every party, and nobody can link a value to an ID.

Then: hosts send their fully blinded sets (sorted) to the coordinator, which
intersects them and hands the hosts' common values to the bank; the bank keeps
those it also holds — the final intersection — and sorts them, which is the agreed
order; every host receives that list and maps it to its own rows.

Who learns what (docs/leakage.md): every party learns the size of every other
party's set (it blinds it) and which of its own rows are in the final
intersection; the coordinator learns the set sizes, the size of the hosts' common
set and of the final intersection; the bank learns the size of the hosts' common
set. No party learns which of its IDs outside the final intersection exist
elsewhere, and no payload carries an ID or a plain hash of one.

Sequential message rounds: ring size + 3 (6 for bank, tax, utilities).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from fedcredit.crypto import blinding
from fedcredit.crypto.blinding import BlindingKey
from fedcredit.data.ids import IdReport, prepare_ids
from fedcredit.common.errors import ProtocolError
from fedcredit.protocols.errors import InputError
from fedcredit.common.wire import COORDINATOR, Message, expect, meta_int, meta_str

BANK = "bank"
START, BLIND, FULL, HOSTS, FINAL, DONE = "psi.start", "psi.blind", "psi.full", "psi.hosts", "psi.final", "psi.done"
KINDS = (START, BLIND, FULL, HOSTS, FINAL, DONE)


@dataclass(frozen=True)
class PsiResult:
    """A party's outcome: its local row indices of the intersection, in the agreed order."""

    rows: np.ndarray
    size: int
    digest: str  # SHA-256 of the agreed intersection list; equal at every party
    report: IdReport


def _digest(points: bytes) -> str:
    return hashlib.sha256(points).hexdigest()


def _check_sorted(points: bytes, what: str) -> None:
    arr = blinding.as_array(points)
    if len(arr) > 1 and not (arr[1:] > arr[:-1]).all():
        raise ProtocolError(f"{what}: values are not strictly sorted (duplicates, or not in the agreed order)")


def _points(msg: Message, expected: int | None = None) -> bytes:
    try:
        buf = blinding.check_points(msg.payload, msg.describe())
    except Exception as exc:
        raise ProtocolError(str(exc)) from None
    n = meta_int(msg, "n")
    if blinding.count(buf) != n or (expected is not None and n != expected):
        want = n if expected is None else expected
        raise ProtocolError(f"{msg.describe()}: carries {blinding.count(buf)} points, expected {want}")
    return buf


class PsiParty:
    """One data holder in the PSI (the bank or a host); drive it with ``handle``."""

    def __init__(self, role: str, ids, *, id_kind: str = "uscc", on_invalid: str = "error", key: BlindingKey | None = None, pool=None):
        if on_invalid not in ("error", "drop"):
            raise InputError(f"on_invalid must be 'error' or 'drop', got {on_invalid!r}")
        self.role = role
        values, self.report = prepare_ids(ids, id_kind)
        if on_invalid == "error" and self.report.refused:
            raise InputError(f"{role}: IDs cannot enter PSI: {self.report.summary()}")
        self._ids = values[self.report.usable_rows]
        self._key = key or BlindingKey()
        self._pool = pool
        self._ring: list[str] = []
        self._run_id = ""
        self._full: bytes | None = None
        self.result: PsiResult | None = None

    # -- protocol ---------------------------------------------------------
    def handle(self, msg: Message) -> list[Message]:
        """Process one message addressed to this party; return the messages it sends."""
        expect(msg, KINDS, receiver=self.role)
        if msg.kind == START:
            return self._start(msg)
        expect(msg, (BLIND, HOSTS, FINAL), run_id=self._run_id or None)
        if not self._ring:
            raise ProtocolError(f"{msg.describe()}: PSI has not started at {self.role}")
        if msg.kind == BLIND:
            return self._blind(msg)
        if msg.kind == HOSTS:
            return self._final_at_bank(msg)
        return self._final_at_host(msg)

    def _start(self, msg: Message) -> list[Message]:
        expect(msg, START, sender=COORDINATOR)
        ring = msg.meta.get("ring")
        if not isinstance(ring, list) or not ring or ring[0] != BANK or self.role not in ring or len(set(ring)) != len(ring):
            raise ProtocolError(f"{msg.describe()}: ring must list distinct parties, bank first, including {self.role!r}; got {ring!r}")
        if self._ring:
            raise ProtocolError(f"{msg.describe()}: PSI already started at {self.role}")
        self._ring, self._run_id = [str(r) for r in ring], msg.run_id
        points = blinding.hash_ids(self._ids, f"fedcredit-psi/{msg.run_id}".encode())
        return [self._send_on(self.role, 1, self._apply_key(points))]

    def _apply_key(self, points: bytes) -> bytes:
        return blinding.blind(self._key, points, self._pool)

    def _send_on(self, owner: str, hops: int, points: bytes) -> Message:
        nxt = self._ring[(self._ring.index(self.role) + 1) % len(self._ring)]
        return Message(BLIND, self.role, nxt, self._run_id, hops, {"owner": owner, "hops": hops, "n": blinding.count(points)}, points)

    def _blind(self, msg: Message) -> list[Message]:
        owner = meta_str(msg, "owner", allowed=self._ring)
        hops = meta_int(msg, "hops", minimum=1)
        expected_sender = self._ring[self._ring.index(self.role) - 1]
        expect(msg, BLIND, sender=expected_sender)
        points = _points(msg)
        if owner == self.role:
            if hops != len(self._ring) or blinding.count(points) != len(self._ids) or self._full is not None:
                raise ProtocolError(f"{msg.describe()}: own set returned after {hops} of {len(self._ring)} blindings or with a wrong size")
            self._full = points
            if self.role == BANK:
                return [Message(FULL, self.role, COORDINATOR, self._run_id, hops + 1, {"n": 0})]
            return [Message(FULL, self.role, COORDINATOR, self._run_id, hops + 1, {"n": len(self._ids)}, blinding.sorted_points(points))]
        if hops >= len(self._ring):
            raise ProtocolError(f"{msg.describe()}: set of {owner} already carries {hops} blindings")
        return [self._send_on(owner, hops + 1, self._apply_key(points))]

    def _final_at_bank(self, msg: Message) -> list[Message]:
        if self.role != BANK or self._full is None:
            raise ProtocolError(f"{msg.describe()}: only the bank, holding its fully blinded set, takes the hosts' common set")
        expect(msg, HOSTS, sender=COORDINATOR)
        common = _points(msg)
        mine = blinding.locate(common, self._full)
        final = blinding.sorted_points(blinding.as_array(common)[mine >= 0].tobytes())
        self._finish(final)
        return [Message(FINAL, self.role, COORDINATOR, self._run_id, msg.step + 1, {"n": blinding.count(final)}, final)]

    def _final_at_host(self, msg: Message) -> list[Message]:
        if self.role == BANK or self._full is None:
            raise ProtocolError(f"{msg.describe()}: only a host holding its fully blinded set takes the final list")
        expect(msg, FINAL, sender=COORDINATOR)
        final = _points(msg)
        self._finish(final)
        return [Message(DONE, self.role, COORDINATOR, self._run_id, msg.step + 1, {"n": self.result.size, "digest": self.result.digest})]

    def _finish(self, final: bytes) -> None:
        _check_sorted(final, f"{self.role}: the intersection list")
        where = blinding.locate(final, self._full)
        if (where < 0).any():
            raise ProtocolError(f"{self.role}: {(where < 0).sum()} values of the intersection are not in this party's set")
        rows = self.report.usable_rows[where]
        self.result = PsiResult(rows, len(rows), _digest(final), self.report)


class PsiCoordinator:
    """The coordinator's side: starts the ring, relays sealed sets, intersects the hosts' sets."""

    def __init__(self, run_id: str, parties: list[str]):
        if not parties or parties[0] != BANK or len(set(parties)) != len(parties) or len(parties) < 2:
            raise InputError(f"PSI needs the bank first and at least one host, all distinct; got {parties!r}")
        self.run_id = run_id
        self.ring = list(parties)
        self._round = 0
        self._full: dict[str, bytes] = {}
        self._common = np.empty(0, dtype=f"S{blinding.POINT_BYTES}")
        self.sizes: dict[str, int] = {}
        self.hosts_common = -1
        self.size = -1
        self.digest = ""
        self.done = False

    @property
    def rounds(self) -> int:
        """Sequential message rounds of a complete run."""
        return len(self.ring) + 3

    def start(self) -> list[Message]:
        self._round = 1
        return [Message(START, COORDINATOR, p, self.run_id, 0, {"ring": self.ring}) for p in self.ring]

    def advance(self, replies: list[Message]) -> list[Message]:
        """Check one round of replies (one per party) and return the next round's messages."""
        if self.done:
            raise ProtocolError("PSI is finished; no more replies expected")
        for msg in replies:
            expect(msg, KINDS, run_id=self.run_id)
        n = len(self.ring)
        if self._round <= n:
            out = self._relay_round(replies)
        elif self._round == n + 1:
            out = self._collect_full(replies)
        elif self._round == n + 2:
            out = self._bank_final(replies)
        else:
            out = self._check_done(replies)
        self._round += 1
        return out

    def _one_each(self, replies: list[Message], parties: list[str]) -> dict[str, Message]:
        by_sender = {m.sender: m for m in replies}
        if len(replies) != len(parties) or set(by_sender) != set(parties):
            raise ProtocolError(f"PSI round {self._round}: expected one reply from each of {parties}, got from {[m.sender for m in replies]}")
        return by_sender

    def _relay_round(self, replies: list[Message]) -> list[Message]:
        by_sender = self._one_each(replies, self.ring)
        for m in by_sender.values():
            expect(m, BLIND)
            if m.receiver not in self.ring or m.receiver == m.sender:
                raise ProtocolError(f"{m.describe()}: not addressed to another party of the ring")
        return list(by_sender.values())  # forwarded as they are (sealed for their receiver)

    def _collect_full(self, replies: list[Message]) -> list[Message]:
        for party, m in self._one_each(replies, self.ring).items():
            expect(m, FULL, receiver=COORDINATOR)
            if party != BANK:
                self._full[party] = _points(m)
                self.sizes[party] = blinding.count(self._full[party])
                _check_sorted(self._full[party], m.describe())
        hosts = self.ring[1:]
        common = blinding.as_array(self._full[hosts[0]])
        for h in hosts[1:]:
            common = np.intersect1d(common, blinding.as_array(self._full[h]), assume_unique=True)
        self._common = np.sort(common)
        self.hosts_common = len(common)
        return [Message(HOSTS, COORDINATOR, BANK, self.run_id, self._round + 1, {"n": len(common)}, self._common.tobytes())]

    def _bank_final(self, replies: list[Message]) -> list[Message]:
        msg = self._one_each(replies, [BANK])[BANK]
        expect(msg, FINAL, receiver=COORDINATOR)
        final = _points(msg)
        if not np.isin(blinding.as_array(final), self._common).all():
            raise ProtocolError(f"{msg.describe()}: the bank's list holds values outside the hosts' common set")
        self.size, self.digest = blinding.count(final), _digest(final)
        return [Message(FINAL, COORDINATOR, h, self.run_id, self._round + 1, {"n": self.size}, final) for h in self.ring[1:]]

    def _check_done(self, replies: list[Message]) -> list[Message]:
        for host, msg in self._one_each(replies, self.ring[1:]).items():
            expect(msg, DONE, receiver=COORDINATOR)
            if meta_int(msg, "n") != self.size or msg.meta.get("digest") != self.digest:
                raise ProtocolError(f"{msg.describe()}: {host} holds a different intersection (size {msg.meta.get('n')}, expected {self.size})")
        self.done = True
        return []
