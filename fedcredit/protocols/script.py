"""Coordinators written as scripts: a generator yields each round's messages and receives the replies.

Multi-round logic then reads top to bottom instead of as a state table, and every
scripted coordinator offers the same ``start``/``advance`` driver interface.
"""

from __future__ import annotations

from fedcredit.common.errors import ProtocolError
from fedcredit.common.wire import Message


class ScriptedCoordinator:
    """Subclasses implement ``_run`` (a generator) and may override ``_check`` for incoming replies."""

    name = "protocol"
    done = False
    rounds = 0
    closing = False  # set by a script just before it yields its last round: a driver may add other messages to it

    def _run(self):
        raise NotImplementedError

    def _check(self, replies: list[Message]) -> None:
        """Reject replies that do not belong to this protocol (before the script sees them)."""

    def start(self) -> list[Message]:
        self._script = self._run()
        return next(self._script)

    def advance(self, replies: list[Message]) -> list[Message]:
        if self.done:
            raise ProtocolError(f"{self.name} is finished; no more replies expected")
        self._check(replies)
        self.rounds += 1
        try:
            return self._script.send(replies)
        except StopIteration:
            self.done = True
            return []
