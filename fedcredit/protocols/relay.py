"""Sealing of node-to-node messages that the coordinator relays.

The whole inner message (header and payload) travels inside an envelope for its
receiver, so the coordinator can neither read nor alter it; the outer message keeps
only the routing fields (kind, sender, receiver, run id, step). On arrival the
envelope is opened and the inner header must repeat the outer routing exactly.
"""

from __future__ import annotations

from typing import Mapping

from fedcredit.crypto.envelope import Mailbox, Outbox
from fedcredit.crypto.errors import EnvelopeError
from fedcredit.crypto.identity import Identity, PublicIdentity
from fedcredit.common.errors import ProtocolError
from fedcredit.common.wire import Message

_ROUTING = ("kind", "sender", "receiver", "run_id", "step")


def _step_label(msg: Message) -> str:
    return f"{msg.kind}#{msg.step}"


class SealedRelay:
    """One party's sealing endpoint: seals what it sends to peers, opens what peers send it."""

    def __init__(self, identity: Identity, peers: Mapping[str, PublicIdentity] | list[PublicIdentity]):
        self.identity = identity
        self._outbox = Outbox(identity)
        self._mailbox = Mailbox(identity, peers)

    def seal(self, msg: Message) -> Message:
        """``msg`` sealed for its receiver when it is node-to-node; other messages unchanged."""
        if not msg.relayed:
            return msg
        if msg.sender != self.identity.name:
            raise ProtocolError(f"{msg.describe()}: {self.identity.name} cannot seal a message on behalf of {msg.sender}")
        peer = self._mailbox.senders.get(msg.receiver)
        if peer is None:
            raise ProtocolError(f"{msg.describe()}: no public identity known for receiver {msg.receiver!r}")
        blob = self._outbox.seal(peer, msg.to_bytes(), run_id=msg.run_id, step=_step_label(msg))
        return Message(msg.kind, msg.sender, msg.receiver, msg.run_id, msg.step, {}, blob, sealed=True)

    def open(self, msg: Message) -> Message:
        """The inner message of a sealed node-to-node message; unsealed node-to-node messages are refused."""
        if not msg.relayed:
            if msg.sealed:
                raise ProtocolError(f"{msg.describe()}: only node-to-node messages are sealed")
            return msg
        if not msg.sealed:
            raise ProtocolError(f"{msg.describe()}: node-to-node messages must be sealed; refusing a plain one")
        try:
            opened = self._mailbox.open(msg.payload, sender=msg.sender, run_id=msg.run_id, step=_step_label(msg))
        except EnvelopeError as exc:
            raise ProtocolError(f"{msg.describe()}: {exc}") from None
        inner = Message.from_bytes(opened.payload)
        for name in _ROUTING:
            if getattr(inner, name) != getattr(msg, name):
                raise ProtocolError(f"{msg.describe()}: sealed content says {name}={getattr(inner, name)!r}; routing was altered")
        if inner.sealed:
            raise ProtocolError(f"{msg.describe()}: nested sealing is not allowed")
        return inner
