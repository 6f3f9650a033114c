"""Sub-protocols side by side: one message round carries a step of each, so independent runs cost no extra rounds.

Each sub-protocol keeps its own script; replies go back to the one whose run id they
carry. A node handles its bundle message by message in the order sent, so a later
protocol's first message may depend on an earlier one's last (the split after the
alignment's final list, a model's setup after the split).
"""

from __future__ import annotations

from typing import Callable

from fedcredit.common.wire import Message


def lockstep(protocols: dict[str, object], first: list[Message], on_other: Callable[[int, list[Message]], None],
             tail: Callable[[], list[Message]] | None = None, later: Callable[[], dict | None] | None = None):
    """Drive ``protocols`` (run id -> started protocol, whose first messages are in ``first``) to their ends.

    Replies whose run id names no protocol go to ``on_other(round, replies)`` (round 0 is
    the first). ``later()``, asked after every round, may return protocols to start now:
    their first messages go after the round's others (the models, once the binning has
    decided every node's features). ``tail()`` gives messages to send with the round after
    which every protocol is finished, when each announces that round (``closing``); the
    generator returns whether they went (if not, the caller sends them on their own).
    """
    active, outgoing, round_no, tail_sent = dict(protocols), list(first), 0, False
    outgoing += _launch(later, active) if later is not None else []
    while outgoing:
        if tail is not None and not tail_sent and all(getattr(p, "closing", False) for p in active.values()):
            outgoing, tail_sent = outgoing + tail(), True
        replies = yield outgoing
        routed: dict[str, list[Message]] = {run_id: [] for run_id in active}
        other = []
        for m in replies:
            (routed[m.run_id] if m.run_id in routed else other).append(m)
        on_other(round_no, other)
        outgoing = []
        for run_id, protocol in list(active.items()):
            out = protocol.advance(routed[run_id])
            if out:
                outgoing += out
            else:
                del active[run_id]
        if later is not None:
            started = _launch(later, active)
            later = None if started else later
            outgoing += started
        round_no += 1
    return tail_sent


def _launch(later: Callable[[], dict | None], active: dict) -> list[Message]:
    """Start the protocols ``later()`` offers (if any) and add them to ``active``; their first messages."""
    new = later() or {}
    active.update(new)
    return [m for protocol in new.values() for m in protocol.start()]
