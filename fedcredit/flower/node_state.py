"""A node's checkpoint between deliveries: its agent, the last delivery it completed and that delivery's reply.

Flower's deployment engine starts a fresh process per message, and a node may crash at
any moment. The checkpoint is replaced atomically after each delivery, so it always
holds a completed one; a crash mid-delivery loses only that delivery's work. When the
coordinator delivers again (same number) the node either answers from the checkpoint
(it had finished, the reply was lost) or handles it again from the previous state,
after cutting from its audit log whatever the crashed attempt had appended. A lock file
keeps two ClientApp processes of the same node from handling deliveries at once.
"""

from __future__ import annotations

import fcntl
import os
import pickle
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from fedcredit.common.atomic import atomic_write_bytes
from fedcredit.common.errors import FedCreditError
from fedcredit.protocols import NodeAgent
from fedcredit.common.wire import Message


@dataclass
class Checkpoint:
    agent: NodeAgent
    seq: int                                   # the last delivery completed
    replies: list[bytes] = field(default_factory=list)  # its replies, wire bytes, for a redelivery
    head: dict | None = None                   # the final audit head that went beside them, if any


@dataclass
class Outcome:
    replies: list[Message]
    head: dict | None
    replayed: bool  # answered from the checkpoint: the delivery had been handled before


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(f"{path}.lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def load(path: Path) -> Checkpoint | None:
    if not path.exists():
        return None
    try:
        cp = pickle.loads(path.read_bytes())
    except Exception as exc:  # a checkpoint is only ever replaced whole, so this is damage from outside
        raise FedCreditError(f"node checkpoint {path} is unreadable ({type(exc).__name__}); "
                             "the node cannot resume this run") from None
    if not isinstance(cp, Checkpoint):
        raise FedCreditError(f"node checkpoint {path} does not hold a fedcredit checkpoint")
    return cp


def abort_run(path: Path, message: Message) -> dict | None:
    """The job failed: the node's agent (from its last completed delivery) ends its audit log as aborted,
    and its checkpoint goes — a failed run leaves no node state. Returns the final audit head, if any."""
    path = Path(path)
    with _locked(path):
        cp = load(path)
        if cp is None:
            return None
        agent = cp.agent
        agent.restore()
        agent.abort(message)
        head = agent.take_final_head()
        path.unlink()
    Path(f"{path}.lock").unlink(missing_ok=True)
    return head


def handle_delivery(path: Path, seq: int, messages: list[Message], new_agent: Callable[[], NodeAgent],
                    pool) -> Outcome:
    """Handle delivery ``seq`` exactly once, whatever crashed before; see the module docstring."""
    path = Path(path)
    with _locked(path):
        cp = load(path)
        done = cp.seq if cp is not None else 0
        if seq == done and cp is not None:
            return Outcome([Message.from_bytes(b) for b in cp.replies], cp.head, True)
        if seq != done + 1:
            lost = " (its checkpoint is missing: was the work directory replaced?)" if cp is None else ""
            raise FedCreditError(f"delivery {seq} is out of order: this node completed delivery {done}{lost}; "
                                 "it cannot resume this run")
        if cp is not None:
            agent = cp.agent
            agent.restore()
        else:
            agent = new_agent()
        agent.attach_pool(pool)
        replies = [r for m in messages for r in agent.handle(m)]
        head = agent.take_final_head()
        atomic_write_bytes(path, pickle.dumps(Checkpoint(agent, seq, [r.to_bytes() for r in replies], head)),
                           mode=0o600)
        return Outcome(replies, head, False)
