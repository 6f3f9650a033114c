"""Message records joined into transmissions: one message, end to end, with every leg that recorded it.

A message is recorded by its sender (``sent``) and its receiver (``received``); a relayed
node-to-node message also by the coordinator, once received and once sent on. All these
records carry the same digest (the hash of the exact wire bytes), so joining on it shows
each message once — ``bank → coordinator → tax`` — rather than as unrelated hops, and
says which of its expected legs were recorded. The report's tables are built from these.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from fedcredit.common.wire import COORDINATOR

FAMILIES = {"job": "job control and publication", "psi": "PSI alignment", "woe": "WoE/IV binning",
            "lr": "scorecard LR", "sb": "SecureBoost", "query": "online limit queries"}
OTHER = "other"


def family(kind) -> str:
    """The protocol family a message kind belongs to (``lr.share`` -> ``lr``); unknown prefixes are ``other``."""
    prefix = str(kind).split(".", 1)[0]
    return prefix if prefix in FAMILIES else OTHER


@dataclass
class Transmission:
    """One distinct message (same digest, kind, run, step, sender and receiver) and its recorded legs."""

    kind: str
    run: str
    step: int
    sender: str
    receiver: str
    relayed: bool
    size: int
    ciphertexts: int
    protection: str
    first: str = ""  # earliest record time (ISO 8601 UTC, so it sorts as text)
    legs: Counter = field(default_factory=Counter)  # (party, direction) -> records

    @property
    def expected_legs(self) -> list[tuple[str, str]]:
        via = [(COORDINATOR, "received"), (COORDINATOR, "sent")] if self.relayed else []
        return [(self.sender, "sent"), *via, (self.receiver, "received")]

    @property
    def count(self) -> int:
        """How often the message was sent: its origin's ``sent`` records, else the most any leg holds."""
        return self.legs[(self.sender, "sent")] or max(self.legs.values())

    @property
    def legs_held(self) -> int:
        """Expected legs that recorded the message as often as it was sent."""
        return sum(1 for leg in self.expected_legs if self.legs[leg] >= self.count)

    @property
    def route(self) -> str:
        return f"{self.sender} → {COORDINATOR} → {self.receiver}" if self.relayed else f"{self.sender} → {self.receiver}"


def transmissions(messages: list[dict]) -> list[Transmission]:
    """Join ``message`` records on (digest, kind, run, step, sender, receiver), in order of their first record."""
    out: dict[tuple, Transmission] = {}
    for r in messages:
        key = (r.get("digest"), str(r.get("kind")), str(r.get("message_run_id")), _int(r.get("step")),
               str(r.get("sender")), str(r.get("receiver")))
        t = out.get(key)
        if t is None:
            t = out[key] = Transmission(kind=key[1], run=key[2], step=key[3], sender=key[4], receiver=key[5],
                                        relayed=bool(r.get("relayed")), size=_int(r.get("size")),
                                        ciphertexts=_int(r.get("ciphertexts")), protection=str(r.get("protection")))
        t.legs[(str(r.get("party")), str(r.get("direction")))] += 1
        time = str(r.get("time") or "")
        t.first = min(t.first, time) if t.first else time
    return sorted(out.values(), key=lambda t: t.first)


@dataclass
class Totals:
    """Messages, bytes and ciphertexts of a group of transmissions, with their classes and routes."""

    messages: int = 0
    bytes: int = 0
    ciphertexts: int = 0
    legs_held: int = 0
    legs_expected: int = 0
    classes: set = field(default_factory=set)
    routes: dict = field(default_factory=lambda: defaultdict(set))  # (sender, relayed) -> receivers

    def add(self, t: Transmission) -> None:
        self.messages += t.count
        self.bytes += t.count * t.size
        self.ciphertexts += t.count * t.ciphertexts
        self.legs_held += t.legs_held
        self.legs_expected += len(t.expected_legs)
        self.classes.add(t.protection)
        self.routes[(t.sender, t.relayed)].add(t.receiver)

    @property
    def complete(self) -> bool:
        return self.legs_held == self.legs_expected

    def route_text(self) -> str:
        """``bank, tax → coordinator``; relayed messages end to end: ``bank → coordinator → tax, utilities``."""
        groups: dict[tuple, set] = defaultdict(set)  # (relayed, receivers) -> senders
        for (sender, relayed), receivers in self.routes.items():
            groups[(relayed, tuple(sorted(receivers)))].add(sender)
        parts = []
        for (relayed, receivers), senders in sorted(groups.items(), key=lambda kv: (kv[0][0], COORDINATOR not in kv[1],
                                                                                    sorted(kv[1]))):
            via = f" → {COORDINATOR}" if relayed else ""
            parts.append(f"{', '.join(sorted(senders))}{via} → {', '.join(receivers)}")
        return "; ".join(parts)


def per_kind(items: list[Transmission]) -> dict[str, Totals]:
    """Totals per message kind, by family (job, psi, lr, sb) and then in order of first appearance."""
    out: dict[str, Totals] = {}
    for t in items:
        out.setdefault(t.kind, Totals()).add(t)
    order = [*FAMILIES, OTHER]
    return dict(sorted(out.items(), key=lambda kv: order.index(family(kv[0]))))


def per_class(items: list[Transmission]) -> dict[str, Totals]:
    out: dict[str, Totals] = {}
    for t in items:
        out.setdefault(t.protection, Totals()).add(t)
    return dict(sorted(out.items()))


def per_step(items: list[Transmission]) -> dict[tuple, Totals]:
    """Totals per (run, step, kind, route), in order of their first record (the job's sub-runs interleave)."""
    out: dict[tuple, Totals] = {}
    for t in sorted(items, key=lambda t: t.first):
        out.setdefault((t.run, t.step, t.kind, t.route), Totals()).add(t)
    return out


def _int(value) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0
