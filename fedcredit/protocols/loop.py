"""The in-process transport: drives a coordinator and its parties in one process.

Used by tests, notebooks and the Python API. Every message is encoded to bytes and
decoded again, exactly as it would cross a network, and node-to-node messages are
sealed when the parties have relays — so the same checks apply as over Flower.
"""

from __future__ import annotations

from typing import Callable, Mapping

from fedcredit.common.errors import ProtocolError
from fedcredit.common.wire import Message
from fedcredit.protocols.relay import SealedRelay


def drive(
    coordinator,
    parties: Mapping[str, object],
    relays: Mapping[str, SealedRelay] | None = None,
    tap: Callable[[bytes], None] | None = None,
    first: list[Message] | None = None,
    on_round: Callable[[list[Message], list[Message]], None] | None = None,
) -> int:
    """Run ``coordinator`` (``start``/``advance``) against ``parties`` (``handle``) to the end.

    Returns the number of sequential message rounds. ``tap`` sees every encoded
    message that crosses a node boundary (for leakage tests). ``first``: the first round's
    messages when the coordinator has started otherwise (a serving run's query: ``submit``).
    ``on_round(outgoing, replies)`` sees each round's messages (``fedcredit.common.wire.BundleMeter``).
    """

    def wire(msg: Message) -> Message:
        data = msg.to_bytes()
        if tap is not None:
            tap(data)
        return Message.from_bytes(data)

    outgoing = coordinator.start() if first is None else first
    rounds = 0
    while outgoing:
        rounds += 1
        replies = []
        for msg in outgoing:
            party = parties.get(msg.receiver)
            if party is None:
                raise ProtocolError(f"{msg.describe()}: no such party")
            relay = relays.get(msg.receiver) if relays else None
            inbound = wire(msg)
            for reply in party.handle(relay.open(inbound) if relay else inbound):
                replies.append(wire(relay.seal(reply) if relay else reply))
            hand_over_final_head(party, coordinator)
        if on_round is not None:
            on_round(outgoing, replies)
        outgoing = coordinator.advance(replies)
    return rounds


def abort_job(coordinator, parties: Mapping[str, object], exc: BaseException,
              tap: Callable[[bytes], None] | None = None) -> None:
    """After ``exc`` stopped a job: every node ends its audit log as aborted, then the coordinator does.

    Best effort by design: a node that cannot close its log (its own failure) is left as
    it is and the coordinator's aborted record still names the step and the reason.
    """
    for msg in coordinator.abort_messages(exc):
        party = parties.get(msg.receiver)
        try:
            data = msg.to_bytes()
            if tap is not None:
                tap(data)
            party.abort(Message.from_bytes(data))
        except Exception:  # noqa: BLE001 — the job has failed already; its first error is the one reported
            continue
        hand_over_final_head(party, coordinator)
    coordinator.close_aborted(exc)


def hand_over_final_head(party, coordinator) -> None:
    """Pass a party's closed audit-log head to the coordinator's audit trail, when both keep one."""
    take = getattr(party, "take_final_head", None)
    head = take() if take is not None else None
    record = getattr(coordinator, "record_final_head", None)
    if head is not None and record is not None:
        record(head)


def drive_bundles(coordinator, deliver: Callable[[str, list[Message]], list[Message]],
                  first: list[Message] | None = None) -> int:
    """Run ``coordinator`` to the end handing each node its round's messages as one bundle, as the engines do.

    ``deliver(role, messages)`` returns the node's replies (through whatever transport a
    test or benchmark puts in between). Returns the number of rounds. ``first``: as in ``drive``.
    """
    outgoing = coordinator.start() if first is None else first
    rounds = 0
    while outgoing:
        rounds += 1
        per_node: dict[str, list[Message]] = {}
        for msg in outgoing:
            per_node.setdefault(msg.receiver, []).append(msg)
        replies = [reply for role, msgs in per_node.items() for reply in deliver(role, msgs)]
        outgoing = coordinator.advance(replies)
    return rounds
