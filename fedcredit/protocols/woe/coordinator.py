"""The coordinator's side of federated WoE/IV binning: it starts the nodes and relays their sealed messages.

It holds no key and reads nothing: labels, label sums, bin decisions and selections travel
sealed between the bank and each host. Four rounds: start (the bank answers with its
encrypted labels), labels to the hosts, label sums to the bank, bin decisions to the
hosts (``ready``: a model may start in this round, after them), selections to the bank.
"""

from __future__ import annotations

from fedcredit.common.errors import ProtocolError
from fedcredit.common.wire import COORDINATOR, Message, expect
from fedcredit.protocols.script import ScriptedCoordinator
from fedcredit.protocols.woe.config import BANK, BINS, KINDS, LABELS, SELECTED, START, SUMS, WoeConfig


class WoeCoordinator(ScriptedCoordinator):
    name = "WoE binning"

    def __init__(self, run_id: str, parties: list[str], config: WoeConfig):
        if not parties or parties[0] != BANK or len(set(parties)) != len(parties) or len(parties) < 2:
            raise ProtocolError(f"WoE binning needs the bank first and at least one host; got {parties!r}")
        self.run_id, self.parties, self.hosts, self.cfg = run_id, list(parties), list(parties[1:]), config
        self.ready = False  # the nodes' features are decided once this round's messages are delivered

    def _check(self, replies: list[Message]) -> None:
        for m in replies:
            expect(m, KINDS, run_id=self.run_id)

    def _relay(self, replies: list[Message], kind: str, pairs: list[tuple[str, str]]) -> list[Message]:
        """Exactly one ``kind`` for each (sender, receiver) of ``pairs``, and nothing else: forwarded as they are."""
        got = sorted((m.sender, m.receiver) for m in replies if m.kind == kind)
        if got != sorted(pairs) or len(replies) != len(pairs):
            raise ProtocolError(f"WoE binning: expected {kind} for {sorted(pairs)}, "
                                f"got {[(m.kind, m.sender, m.receiver) for m in replies]}")
        return list(replies)

    def _run(self):
        meta = {"config": self.cfg.to_meta(), "hosts": self.hosts}
        start = [Message(START, COORDINATOR, p, self.run_id, 0, meta) for p in self.parties]
        to_hosts = [(BANK, h) for h in self.hosts]
        to_bank = [(h, BANK) for h in self.hosts]
        labels = self._relay((yield start), LABELS, to_hosts)
        sums = self._relay((yield labels), SUMS, to_bank)
        bins = self._relay((yield sums), BINS, to_hosts)
        self.ready = True
        selected = self._relay((yield bins), SELECTED, to_bank)
        self.closing = True
        if (yield selected):
            raise ProtocolError("WoE binning: no reply expected to the hosts' selections")
