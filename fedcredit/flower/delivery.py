"""Reliable rounds over a Flower Grid: every node's messages carry a delivery number, lost nodes are waited for.

A node that crashes or restarts mid-round never answers; Flower's SuperLink then
answers for it with a ``NODE_UNAVAILABLE`` error once its heartbeats stop. We name the
node, wait for it to come back online (with node authentication a restarted SuperNode
keeps its node id) and deliver the same bundle again under the same delivery number.
The node keeps a checkpoint per delivery (``fedcredit.node.runs``), so a bundle
it had already processed is answered from its checkpoint and one it had not is
processed from its last completed state: the job goes on as if nothing had happened.
A node that does not come back within ``return_timeout`` fails the job with its name.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from flwr.app import ConfigRecord, Message as FlowerMessage, RecordDict
from flwr.serverapp import Grid

from fedcredit.common.errors import FedCreditError

POLL_S = 0.05
# Flower's own error codes (flwr.common.constant.ErrorCode) that mean "the node or its app went away"
# (load failures and exceptions are deterministic and end the job like a NODE_ERROR)
LOST_CODES = {3: "message unavailable", 4: "reply unavailable", 5: "node unavailable", 8: "ClientApp crashed"}
DELIVERY = "delivery"


def delivery_run(content: RecordDict) -> str | None:
    """The Flower run whose node state a bundle continues (a resumed job's first run), or None."""
    if DELIVERY not in content or "run" not in content[DELIVERY]:
        return None
    run = content[DELIVERY]["run"]
    if not isinstance(run, str) or not run:
        raise FedCreditError(f"malformed delivery run {run!r} (expected the name of a Flower run)")
    return run


def delivery_seq(content: RecordDict) -> int | None:
    """The delivery number the coordinator put on a bundle (None on bundles without one)."""
    if DELIVERY not in content or "seq" not in content[DELIVERY]:
        return None
    seq = content[DELIVERY].get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise FedCreditError(f"malformed delivery number {seq!r} (expected an integer >= 1)")
    return seq


@dataclass
class Deliveries:
    """The coordinator's side of reliable rounds: per-node delivery numbers and the wait for lost nodes."""

    grid: Grid
    name_of: Callable[[int], str] = str
    timeout: float = 600.0          # a node that is online but silent this long fails the job
    return_timeout: float = 600.0   # a lost node must be back online within this many seconds
    max_redeliveries: int = 5       # per bundle; a node that keeps crashing on the same bundle fails the job
    on_event: Callable[[str, dict], None] | None = None
    seq: dict[int, int] = field(default_factory=dict)
    round: int = 0
    round_seconds: list[float] = field(default_factory=list)  # wall time of each numbered round (benchmarks)
    run: str | None = None  # the Flower run whose node state the job continues (its first run; resumed jobs)

    def _event(self, kind: str, **info) -> None:
        if self.on_event is not None:
            self.on_event(kind, info)

    def _run(self) -> dict:
        return {"run": self.run} if self.run is not None else {}

    def exchange(self, contents: dict[int, RecordDict], message_type: str, *,
                 numbered: bool = True) -> dict[int, FlowerMessage]:
        """Deliver one bundle per node and return every node's reply; lost nodes are waited for and served again.

        ``numbered`` bundles carry the node's next delivery number (protocol steps);
        queries that change nothing at the node (its role) go without one.
        """
        self.round += 1
        started = time.perf_counter()
        for nid, content in contents.items():
            if numbered:
                self.seq[nid] = self.seq.get(nid, 0) + 1
                content[DELIVERY] = ConfigRecord({"seq": self.seq[nid], **self._run()})
        replies: dict[int, FlowerMessage] = {}
        attempts = {nid: 0 for nid in contents}
        todo = dict(contents)
        while todo:
            got, lost = self._push_and_pull(todo, message_type)
            replies.update(got)
            todo = {}
            for nid, why in lost.items():
                attempts[nid] += 1
                if attempts[nid] > self.max_redeliveries:
                    raise FedCreditError(f"node {self.name_of(nid)} was lost {attempts[nid]} times on the same round "
                                         f"{self.round} ({why}); giving up")
                self._await_return(nid, why)
                todo[nid] = contents[nid]
        if numbered:
            self.round_seconds.append(time.perf_counter() - started)
        # in the order the bundles were sent, not the order replies arrived in: the coordinator sums
        # floating-point contributions across nodes, and its results must not depend on timing
        return {nid: replies[nid] for nid in contents}

    def once(self, contents: dict[int, RecordDict], message_type: str, timeout: float) -> dict[int, FlowerMessage]:
        """One unnumbered try, waiting at most ``timeout`` seconds and never for lost nodes: the replies
        that came (a failed job's abort must not wait for a node that is gone)."""
        saved, self.timeout = self.timeout, timeout
        if self.run is not None:  # the node closes the log of the run it holds
            for content in contents.values():
                content[DELIVERY] = ConfigRecord(self._run())
        try:
            got, _lost = self._push_and_pull(contents, message_type, partial=True)
        except FedCreditError:
            return {}
        finally:
            self.timeout = saved
        return got

    def _push_and_pull(self, contents: dict[int, RecordDict], message_type: str, partial: bool = False):
        msgs = [FlowerMessage(c, dst_node_id=nid, message_type=message_type) for nid, c in contents.items()]
        ids = list(self.grid.push_messages(msgs))
        node_of_msg = dict(zip(ids, contents))
        pending = set(ids)
        deadline = time.monotonic() + self.timeout
        replies: dict[int, FlowerMessage] = {}
        lost: dict[int, str] = {}
        while pending:
            if time.monotonic() > deadline:
                if partial:
                    break
                missing = sorted(self.name_of(node_of_msg[m]) for m in pending)
                raise FedCreditError(f"no reply within {self.timeout:.0f} s from node(s) {', '.join(missing)} "
                                     f"in round {self.round} (they are online but silent)")
            for reply in self.grid.pull_messages(list(pending)):
                mid = reply.metadata.reply_to_message_id
                if mid not in pending:
                    continue
                pending.discard(mid)
                nid = node_of_msg[mid]
                if reply.has_error() and reply.error.code in LOST_CODES:
                    lost[nid] = f"Flower: {LOST_CODES[reply.error.code]}"
                else:
                    replies[nid] = reply
            if pending:
                time.sleep(POLL_S)
        return replies, lost

    def _await_return(self, nid: int, why: str) -> None:
        name = self.name_of(nid)
        self._event("node_lost", node=name, node_id=nid, round=self.round, reason=why,
                    return_timeout=self.return_timeout)
        started = time.monotonic()
        while nid not in set(self.grid.get_node_ids()):
            if time.monotonic() - started > self.return_timeout:
                raise FedCreditError(f"node {name} was lost in round {self.round} ({why}) and did not come back "
                                     f"within {self.return_timeout:.0f} s; the job stopped without outputs")
            time.sleep(0.5)
        self._event("node_back", node=name, node_id=nid, round=self.round,
                    waited_s=round(time.monotonic() - started, 1))
