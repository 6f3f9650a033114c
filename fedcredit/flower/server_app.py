"""The ServerApp: learns which Flower node plays which role, then relays the job coordinator's rounds.

Every round, the coordinator's outgoing protocol messages are grouped per node into
one Flower message; replies are unbundled and handed back. A node's error comes
back naming its role and stops the job with that message.
"""

from __future__ import annotations

import json
import time
import uuid

from flwr.app import Context, Message as FlowerMessage, RecordDict
from flwr.serverapp import Grid, ServerApp

from fedcredit.crypto import WorkerPool
from fedcredit.errors import FedCreditError
from fedcredit.flower.codec import MESSAGE_TYPE, from_record, to_record
from fedcredit.protocols.audited import audited
from fedcredit.protocols.job import JobCoordinator, ModelSettings

POLL_S = 0.05


def exchange(grid: Grid, contents: dict[int, RecordDict], message_type: str, timeout: float) -> dict[int, FlowerMessage]:
    """Send one message per node and wait for every reply, pulling every POLL_S seconds."""
    msgs = [FlowerMessage(c, dst_node_id=nid, message_type=message_type) for nid, c in contents.items()]
    pending = set(grid.push_messages(msgs))
    deadline = time.monotonic() + timeout
    replies: dict[int, FlowerMessage] = {}
    while pending:
        if time.monotonic() > deadline:
            missing = sorted(contents.keys() - replies.keys())
            raise FedCreditError(f"no reply within {timeout:.0f} s from Flower node(s) {missing}")
        for reply in grid.pull_messages(pending):
            replies[reply.metadata.src_node_id] = reply
            pending.discard(reply.metadata.reply_to_message_id)
        if pending:
            time.sleep(POLL_S)
    return replies


def wait_for_nodes(grid: Grid, count: int, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= count:
            return nodes
        if time.monotonic() > deadline:
            raise FedCreditError(f"only {len(nodes)} of {count} nodes connected within {timeout:.0f} s")
        time.sleep(0.2)


def discover_roles(grid: Grid, nodes: list[int], expected: list[str], timeout: float) -> dict[str, int]:
    replies = exchange(grid, {n: RecordDict() for n in nodes}, "query.role", timeout)
    node_of: dict[str, int] = {}
    for nid, reply in replies.items():
        if reply.has_error():
            raise FedCreditError(f"node {nid}: {reply.error.reason}")
        role = str(reply.content["node"]["role"])
        if role in node_of:
            raise FedCreditError(f"two nodes claim the role {role!r} (nodes {node_of[role]} and {nid})")
        node_of[role] = nid
    if sorted(node_of) != sorted(expected):
        raise FedCreditError(f"connected roles {sorted(node_of)} do not match the job's {sorted(expected)}")
    return node_of


def run_job(grid: Grid, settings: ModelSettings, roles: list[str], result: dict, *, on_event=None,
            run_id: str | None = None, timeout: float = 600.0, publication=None, task: str = "train",
            audit=None, registry: dict[str, int] | None = None) -> dict:
    """Run one job over ``grid`` and store the coordinator's result (or ``error``) in ``result``.

    The body of every fedcredit ServerApp: the simulation's (``make_server_app``) and the
    deployment engine's (``fedcredit.flower.deployment.server_app``). With ``registry``
    (role -> node id of the key registered for that role) a node may only play its own role.
    """
    started = time.perf_counter()
    try:
        node_of = discover_roles(grid, wait_for_nodes(grid, len(roles), timeout), roles, timeout)
        for role, nid in node_of.items():
            if registry is not None and registry.get(role) != nid:
                raise FedCreditError(f"node {nid} claims the role {role!r}, but the key registered for {role!r} "
                                     f"is node {registry.get(role)}")
        role_of = {nid: role for role, nid in node_of.items()}
        with WorkerPool() as pool:
            coordinator = JobCoordinator(run_id or uuid.uuid4().hex[:12], roles, settings, pool=pool, on_event=on_event,
                                         publication=publication, task=task)
            if audit is not None:
                coordinator = audited(coordinator, *audit)
            outgoing = coordinator.start()
            while outgoing:
                per_node: dict[int, list] = {}
                for m in outgoing:
                    per_node.setdefault(node_of[m.receiver], []).append(m)
                replies = exchange(grid, {n: to_record(ms) for n, ms in per_node.items()}, MESSAGE_TYPE, timeout)
                for nid, reply in replies.items():
                    if reply.has_error():
                        raise FedCreditError(f"node {role_of[nid]} failed: {reply.error.reason}")
                    if "audit" in reply.content and hasattr(coordinator, "record_final_head"):
                        coordinator.record_final_head(json.loads(str(reply.content["audit"]["final_head"])))
                outgoing = coordinator.advance([m for r in replies.values() for m in from_record(r.content)])
        result.update(coordinator.result, rounds=coordinator.rounds, run_id=coordinator.run_id,
                      wall_seconds=time.perf_counter() - started)
    except Exception as exc:  # reported to the caller; Flower itself would only log it
        result["error"] = str(exc) if isinstance(exc, FedCreditError) else f"{type(exc).__name__}: {exc}"
    return result


def make_server_app(settings: ModelSettings, roles: list[str], result: dict, *, on_event=None,
                    run_id: str | None = None, timeout: float = 600.0, publication=None, task: str = "train",
                    audit=None) -> ServerApp:
    """A ServerApp that runs one job and stores the coordinator's result (or ``error``) in ``result``."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_job(grid, settings, roles, result, on_event=on_event, run_id=run_id, timeout=timeout,
                publication=publication, task=task, audit=audit)

    return app
