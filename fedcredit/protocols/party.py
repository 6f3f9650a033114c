"""The front every protocol party shares: check a message is for it, for its run and after setup, then dispatch.

A party names its message kinds (``KINDS``), its setup kind (``SETUP``), whether it is
set up, and its handler per kind; anything else it receives is a ``ProtocolError``.
"""

from __future__ import annotations

from typing import Callable

from fedcredit.common.errors import ProtocolError
from fedcredit.common.wire import Message, expect


class ProtocolParty:
    KINDS: tuple[str, ...] = ()
    SETUP: str = ""
    role: str
    run_id: str

    def _is_set_up(self) -> bool:
        raise NotImplementedError

    def _handlers(self) -> dict[str, Callable[[Message], list[Message]]]:
        raise NotImplementedError

    def handle(self, msg: Message) -> list[Message]:
        expect(msg, self.KINDS, receiver=self.role)
        if msg.kind != self.SETUP:
            if not self._is_set_up():
                raise ProtocolError(f"{msg.describe()}: {self.role} has not been set up")
            expect(msg, self.KINDS, run_id=self.run_id)
        handler = self._handlers().get(msg.kind)
        if handler is None:
            raise ProtocolError(f"unexpected {msg.describe()} at {self.role}")
        return handler(msg)

    def _reply(self, kind: str, receiver: str, step: int, meta=None, payload=b"") -> Message:
        return Message(kind, self.role, receiver, self.run_id, step, meta or {}, payload)
