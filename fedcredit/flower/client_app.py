"""The simulation's ClientApp: the node's agents run inside Flower's (Ray) worker process.

Each message bundle is handed to the node's runs (``fedcredit.node.runs``): the agent
stays in the worker's memory between messages and is checkpointed in the node's work
directory after each one, so a node may crash and return. A worker keeps one node's agent
in memory at a time (Ray hands any node's message to any worker): the memory of a worker is
that of one party, not of every party it served. Errors go back to the
coordinator as Flower errors naming the node's role. The deployment engine uses the
thin relay (``relay_app``) and the node service instead.
"""

from __future__ import annotations

import atexit
import json
from pathlib import Path
from typing import Callable

from flwr.app import Context, Error, Message as FlowerMessage, RecordDict, ConfigRecord
from flwr.clientapp import ClientApp

from fedcredit.crypto import WorkerPool
from fedcredit.crypto.parallel import stop_forkserver
from fedcredit.common.errors import FedCreditError
from fedcredit.flower.codec import NODE_ERROR, from_record, to_record
from fedcredit.flower.delivery import delivery_run, delivery_seq
from fedcredit.node.config import node_from_config
from fedcredit.node.runs import NodeRuns
from fedcredit.protocols import NodeAgent, NodeConfig

_POOL: list[WorkerPool] = []
_RUNS: dict[tuple[str, str], NodeRuns] = {}  # (work dir, role) -> that node's runs in this process


def _runs(node: NodeConfig, work: Path) -> NodeRuns:
    """The node's runs in this process (their worker pool is attached per delivery: an abort needs none,
    and must not wait for one to start)."""
    key = (str(Path(work).resolve()), node.role)
    if key not in _RUNS:
        _RUNS[key] = NodeRuns(work, lambda run: NodeAgent(node))
    for other, runs in _RUNS.items():  # one node's agent in this process's memory at a time: a worker that
        if other != key:  # serves the next node drops the last one's (it reloads its checkpoint if it serves it again)
            runs.forget()
    return _RUNS[key]


def _release_pool() -> None:
    """The job is over at this node: stop its workers and their forkserver now.

    Simulation runs ClientApps inside Ray worker processes that are killed without running
    exit handlers, which would leave the forkserver behind.
    """
    while _POOL:
        _POOL.pop().shutdown()
    stop_forkserver()
    _RUNS.clear()  # cached agents are only a shortcut: a later message reloads its checkpoint


def _pool() -> WorkerPool:
    """One worker pool per process, reused across messages (simulation keeps processes alive)."""
    if not _POOL:
        _POOL.append(WorkerPool())
        atexit.register(_POOL[0].shutdown)
    return _POOL[0]


def node_config_from_context(context: Context) -> tuple[NodeConfig, Path]:
    """Simulation: the node's settings from its node config (``fedcredit.node.config``) for this Flower run."""
    return node_from_config(dict(context.node_config), context.run_id)


def _node_error(msg: FlowerMessage, node: NodeConfig | None, exc: Exception) -> FlowerMessage:
    """A node's failure as a Flower error the coordinator shows with the node's role."""
    who = node.role if node is not None else "unknown role"
    return FlowerMessage(Error(code=NODE_ERROR, reason=f"[{who}] {type(exc).__name__}: {exc}"), reply_to=msg)


def make_client_app(resolve: Callable[[Context], tuple[NodeConfig, Path]] = node_config_from_context) -> ClientApp:
    """A ClientApp whose node settings come from ``resolve(context)``."""
    app = ClientApp()

    @app.query("role")
    def role(msg: FlowerMessage, context: Context) -> FlowerMessage:
        try:
            node, _ = resolve(context)
        except Exception as exc:  # the coordinator shows this with the node id
            return FlowerMessage(Error(code=NODE_ERROR, reason=f"[unconfigured node] {exc}"), reply_to=msg)
        return FlowerMessage(RecordDict({"node": ConfigRecord({"role": node.name or node.role})}), reply_to=msg)

    @app.query("step")
    def step(msg: FlowerMessage, context: Context) -> FlowerMessage:
        node, work = None, None
        try:
            node, work = resolve(context)
            seq = delivery_seq(msg.content)
            if seq is None:
                raise FedCreditError("protocol step without a delivery number")
            incoming = from_record(msg.content)
            ends = NodeAgent.ends_job(incoming)
            runs = _runs(node, work)
            runs.pool = _pool()
            outcome = runs.deliver(delivery_run(msg.content) or str(context.run_id), seq, incoming, ends_job=ends)
            if ends:
                _release_pool()
            content = to_record(outcome.replies)
            if outcome.head is not None:  # the node's closed audit-log head travels beside its last reply
                content["audit"] = ConfigRecord({"final_head": json.dumps(outcome.head)})
            return FlowerMessage(content, reply_to=msg)
        except Exception as exc:
            return _node_error(msg, node, exc)

    @app.query("abort")
    def abort(msg: FlowerMessage, context: Context) -> FlowerMessage:
        node = None
        try:
            node, work = resolve(context)
            incoming = from_record(msg.content)
            if len(incoming) != 1:
                raise FedCreditError(f"an abort carries one job.abort message, got {len(incoming)}")
            head = _runs(node, work).abort(delivery_run(msg.content) or str(context.run_id), incoming[0])
            _release_pool()
            content = RecordDict()
            if head is not None:
                content["audit"] = ConfigRecord({"final_head": json.dumps(head)})
            return FlowerMessage(content, reply_to=msg)
        except Exception as exc:
            return _node_error(msg, node, exc)

    return app


app = make_client_app()
