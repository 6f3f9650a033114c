"""A node's runs: each run's agent kept in memory between deliveries, checkpointed after each one.

Every delivery carries a number. The node handles delivery ``done + 1`` from its last
completed state, answers a repeated delivery ``done`` from its checkpoint (it had
finished, the reply was lost), and refuses anything else. The agent stays in memory
between deliveries (the node service, or a simulation worker that serves the node
again); the checkpoint is what survives a crash. A cached agent is used only while the
checkpoint on disk is the one it saved, so two processes serving the same node (Ray may
move a simulated node between workers) never act on a stale agent. When handling fails,
the cached agent is dropped (it may be half-changed) and the next delivery starts from
the checkpoint. Whichever agent resumes (loaded or cached), it first cuts from the audit
log whatever a failed attempt appended after its last delivery: that attempt may have run
in another process, which leaves the checkpoint, and so this process's cache, current.
A lock file keeps two processes of the same node from handling deliveries at once.
"""

from __future__ import annotations

import fcntl
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from fedcredit.common.errors import FedCreditError
from fedcredit.common.wire import Message
from fedcredit.node.checkpoint import Checkpoint, CheckpointStore, SaveStats, node_secret


@dataclass
class Outcome:
    replies: list[Message]
    head: dict | None
    replayed: bool  # answered from the checkpoint: the delivery had been handled before


@dataclass
class _Live:
    agent: object
    seq: int  # the delivery it completed
    generation: bytes | None  # the checkpoint it saved then


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def run_folder(work: Path, run: str) -> Path:
    """``<work>/run-<run>``: one Flower run's checkpoint at this node."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", str(run)):
        raise FedCreditError(f"run id {run!r} is not a plain name (letters, digits, '_', '.', '-')")
    return Path(work) / f"run-{run}"


def has_checkpoint(work: Path) -> bool:
    """Whether ``work`` holds the checkpoint of a run in progress (a node that must rejoin its job)."""
    return any(Path(work).glob("run-*/checkpoint"))


class NodeRuns:
    """The runs of one node, with the delivery rules of the module docstring; ``new_agent(run)`` starts a run."""

    def __init__(self, work: Path, new_agent: Callable[[str], object], pool=None):
        self.work = Path(work)
        self.new_agent = new_agent
        self.pool = pool
        self.secret = node_secret(self.work)
        self._stores: dict[str, CheckpointStore] = {}
        self._live: dict[str, _Live] = {}

    def store(self, run: str) -> CheckpointStore:
        if run not in self._stores:
            self._stores[run] = CheckpointStore(run_folder(self.work, run), self.secret)
        return self._stores[run]

    def last_save(self, run: str) -> SaveStats | None:
        """Bytes and seconds of the run's latest checkpoint (benchmarks)."""
        return self.store(run).last

    def forget(self, run: str | None = None) -> None:
        """Drop cached agents (all, or one run's): what a crashed process loses."""
        for key in [run] if run is not None else list(self._live):
            self._live.pop(key, None)
            self._stores.pop(key, None)

    def _cached(self, run: str, store: CheckpointStore) -> _Live | None:
        live = self._live.get(run)
        if live is None or live.generation is None or live.generation != store.generation():
            return None  # another process has served this node since (or nothing is cached)
        return live

    def deliver(self, run: str, seq: int, messages: list[Message], ends_job: bool = False,
                submitter: dict | None = None) -> Outcome:
        """Handle delivery ``seq`` of ``run`` exactly once, whatever crashed before.

        ``submitter`` is the job's signer as this node verified it (its policy judges that one)."""
        store = self.store(run)
        with _locked(store.folder.with_name(store.folder.name + ".lock")):
            live = self._cached(run, store)
            cp = store.load() if live is None else None
            done = live.seq if live is not None else (cp.seq if cp is not None else 0)
            if seq == done and done > 0:
                cp = cp or store.load()
                return Outcome([Message.from_bytes(b) for b in cp.replies], cp.head, True)
            if seq != done + 1:
                lost = " (its checkpoint is missing: was the work directory replaced?)" if done == 0 else ""
                raise FedCreditError(f"delivery {seq} is out of order: this node completed delivery {done}{lost}; "
                                     "it cannot resume this run")
            if live is not None or cp is not None:
                agent = live.agent if live is not None else cp.agent
                agent.restore()  # cut audit records a failed or crashed attempt appended after this state
            else:
                agent = self.new_agent(run)
            self._live.pop(run, None)  # until this delivery is saved, the agent may be half-changed
            agent.attach_pool(self.pool)
            if submitter is not None:
                agent.verified_submitter = submitter
            replies = [r for m in messages for r in agent.handle(m)]
            head = agent.take_final_head()
            store.save(Checkpoint(agent, seq, [r.to_bytes() for r in replies], head))
            self._live[run] = _Live(agent, seq, store.generation())
            if ends_job:
                agent.attach_pool(None)
            return Outcome(replies, head, False)

    def abort(self, run: str, message: Message) -> dict | None:
        """The job failed: the agent (as of its last completed delivery) ends its audit log as aborted and its
        state goes — a failed run leaves no node state. Returns the final audit head, if any."""
        store = self.store(run)
        lock = store.folder.with_name(store.folder.name + ".lock")
        with _locked(lock):
            live = self._cached(run, store)
            self._live.pop(run, None)
            cp = store.load()
            if cp is None:
                return None
            agent = live.agent if live is not None else cp.agent
            agent.restore()
            agent.abort(message)
            head = agent.take_final_head()
            store.delete()
        lock.unlink(missing_ok=True)
        self._stores.pop(run, None)
        return head
