"""The ClientApp: a node's role and data come from its own configuration; its state lives in its work directory.

Each message bundle is handed to the node's ``NodeAgent``; the agent lives in a
checkpoint in the work directory between messages (``node_state``), because Flower's
deployment engine starts a fresh process per message and a node may crash and return. Errors go back to the
coordinator as Flower errors naming the node's role.
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
from fedcredit.flower.codec import from_record, to_record
from fedcredit.flower.delivery import NODE_ERROR, delivery_seq
from fedcredit.flower.node_state import abort_run, handle_delivery
from fedcredit.protocols import NodeAgent, NodeConfig

_POOL: list[WorkerPool] = []


def _release_pool() -> None:
    """The job is over at this node: stop its workers and their forkserver now.

    Simulation runs ClientApps inside Ray worker processes that are killed without running
    exit handlers, which would leave the forkserver behind.
    """
    while _POOL:
        _POOL.pop().shutdown()
    stop_forkserver()


def _pool() -> WorkerPool:
    """One worker pool per process, reused across messages (simulation keeps processes alive)."""
    if not _POOL:
        _POOL.append(WorkerPool())
        atexit.register(_POOL[0].shutdown)
    return _POOL[0]


def node_config_from_context(context: Context) -> tuple[NodeConfig, Path]:
    """Deployment: ``flower-supernode --node-config "role='tax' data='/srv/tax.parquet' work-dir='/var/fc'"``.

    A SuperNode serves job after job: each run writes into its own ``OUT-DIR/run-<Flower run id>/``
    (audit log, model part, scores), so one run never meets another's files.
    """
    cfg = dict(context.node_config)
    if "role" not in cfg or "data" not in cfg:
        raise ValueError("node config must set role and data (e.g. --node-config \"role='tax' data='/srv/tax.parquet'\")")
    split = lambda key: [v for v in str(cfg.get(key, "")).split(",") if v]  # noqa: E731
    node = NodeConfig(
        role=str(cfg["role"]), data=str(cfg["data"]), id_column=str(cfg.get("id-column", "uscc")),
        id_kind=str(cfg.get("id-kind", "uscc")), label=cfg.get("label") or None,
        features=split("features") or None, categorical=split("categorical"), extra=split("extra"),
        layout=str(cfg.get("layout", "standard")),
        out_dir=str(Path(str(cfg["out-dir"])) / f"run-{context.run_id}") if cfg.get("out-dir") else None)
    return node, Path(str(cfg.get("work-dir", "fedcredit-work")))


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
        return FlowerMessage(RecordDict({"node": ConfigRecord({"role": node.role})}), reply_to=msg)

    @app.query("step")
    def step(msg: FlowerMessage, context: Context) -> FlowerMessage:
        node, work = None, None
        try:
            node, work = resolve(context)
            seq = delivery_seq(msg.content)
            if seq is None:
                raise FedCreditError("protocol step without a delivery number")
            incoming = from_record(msg.content)
            outcome = handle_delivery(work / f"agent-{context.run_id}.pkl", seq, incoming, lambda: NodeAgent(node),
                                      _pool())
            if NodeAgent.ends_job(incoming):
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
            head = abort_run(work / f"agent-{context.run_id}.pkl", incoming[0])
            _release_pool()
            content = RecordDict()
            if head is not None:
                content["audit"] = ConfigRecord({"final_head": json.dumps(head)})
            return FlowerMessage(content, reply_to=msg)
        except Exception as exc:
            return _node_error(msg, node, exc)

    return app


app = make_client_app()
