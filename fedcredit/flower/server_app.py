"""The ServerApp: finds the job's nodes and the role each plays, then relays the job coordinator's rounds.

Every round, the coordinator's outgoing protocol messages are grouped per node into
one Flower message; replies are unbundled and handed back. A node's error comes
back naming the node and stops the job with that message.
"""

from __future__ import annotations

import json
import time
import uuid

from flwr.app import Context, RecordDict
from flwr.serverapp import Grid, ServerApp

from fedcredit.crypto import WorkerPool
from fedcredit.common.errors import FedCreditError
from fedcredit.deploy.naming import BANK, JobNodes, job_nodes_for_roles
from fedcredit.flower.codec import ABORT_TYPE, MESSAGE_TYPE, from_record, to_record
from fedcredit.flower.delivery import Deliveries
from fedcredit.protocols import JobCoordinator, ModelSettings, audited

ABORT_TIMEOUT_S = 30.0  # how long a failed job waits for its nodes to close their audit logs


def ask_names(deliveries: Deliveries, nodes: list[int]) -> dict[int, str]:
    """Each node's name (its ``query.role`` answer: the name in its node config), by Flower node id."""
    replies = deliveries.exchange({n: RecordDict() for n in nodes}, "query.role", numbered=False)
    refusals = [f"node {nid}: {reply.error.reason}" for nid, reply in sorted(replies.items()) if reply.has_error()]
    if refusals:  # every node's reason (a refused app bundle is refused by each node)
        raise FedCreditError("; ".join(refusals))
    return {nid: str(reply.content["node"]["role"]) for nid, reply in replies.items()}


def find_job_nodes(deliveries: Deliveries, grid: Grid, job: JobNodes, registry: dict[str, int] | None,
                   timeout: float) -> dict[str, int]:
    """The Flower node id of each of the job's roles; nodes outside the job are left alone.

    With ``registry`` (node name -> node id of the key registered under that name) only the
    job's nodes are asked who they are, once online: a node outside the job is sent nothing
    and learns nothing of it. Without one, every connected node is asked (the caller warns)
    until each of the job's names has answered.
    """
    if registry is not None:
        missing = [name for name in job.names if name not in registry]
        if missing:
            raise FedCreditError(f"node(s) {', '.join(missing)} of this job have no registered key at this coordinator "
                                 f"(registered: {', '.join(sorted(registry)) or 'none'})")
        wanted = {registry[name]: name for name in job.names}
        deadline = time.monotonic() + timeout
        while not set(wanted) <= set(grid.get_node_ids()):
            if time.monotonic() > deadline:
                offline = sorted(wanted[n] for n in set(wanted) - set(grid.get_node_ids()))
                raise FedCreditError(f"node(s) {', '.join(offline)} of this job did not connect within {timeout:.0f} s")
            time.sleep(0.2)
        for nid, name in ask_names(deliveries, list(wanted)).items():
            if name != wanted[nid]:
                raise FedCreditError(f"node {nid} holds the key registered for {wanted[nid]!r} but says it is "
                                     f"{name!r}; check its node config's role")
        return {job.role_of(name): nid for nid, name in wanted.items()}
    node_of: dict[str, int] = {}
    asked: set[int] = set()
    deadline = time.monotonic() + timeout
    while True:
        new = sorted(set(grid.get_node_ids()) - asked)
        for nid, name in (ask_names(deliveries, new) if new else {}).items():
            if name in node_of:
                raise FedCreditError(f"two nodes claim the name {name!r} (nodes {node_of[name]} and {nid})")
            node_of[name] = nid
        asked.update(new)
        missing = [name for name in job.names if name not in node_of]
        if not missing:
            return {job.role_of(name): node_of[name] for name in job.names}
        if time.monotonic() > deadline:
            raise FedCreditError(f"node(s) {', '.join(missing)} of this job did not connect within {timeout:.0f} s "
                                 f"(connected: {', '.join(sorted(node_of)) or 'none'})")
        time.sleep(0.2)


def run_job(grid: Grid, settings: ModelSettings, roles: list[str], result: dict, *, on_event=None,
            run_id: str | None = None, timeout: float = 600.0, publication=None, task: str = "train",
            audit=None, registry: dict[str, int] | None = None, return_timeout: float = 600.0,
            bank_name: str = BANK, purpose: str = "credit-scoring", submitter: dict | None = None, journal=None,
            saved: dict | None = None, on_round=None) -> dict:
    """Run one job over ``grid`` and store the coordinator's result (or ``error``) in ``result``.

    The body of every fedcredit ServerApp: the simulation's (``make_server_app``) and the
    deployment engine's (``fedcredit.flower.deployment.server_app``). The node named
    ``bank_name`` plays the role ``bank``, each host its own name (``find_job_nodes``; with
    ``registry``, node name -> node id of its registered key, only the job's nodes are contacted).
    A node lost mid-job is waited for up to ``return_timeout`` seconds (``Deliveries``).
    ``submitter`` ({name, fingerprint}, verified at the coordinator) reaches the nodes in the job's HELLO.
    With ``journal`` (``fedcredit.flower.journal.CoordinatorJournal``) every round is journaled,
    and a journal being resumed continues the job a killed coordinator left. ``saved`` (scoring jobs)
    names the saved model and its previous publication to the nodes (``JobCoordinator``).
    ``on_round(outgoing, replies)`` sees every round's protocol messages (``fedcredit.common.wire.BundleMeter``).
    """
    started = time.perf_counter()
    role_of: dict[int, str] = {}
    name_of: dict[int, str] = {}
    coordinator = None
    deliveries = Deliveries(grid, name_of=lambda nid: f"{name_of.get(nid, '?')} (Flower node {nid})", timeout=timeout,
                            return_timeout=return_timeout, on_event=on_event,
                            run=journal.origin if journal is not None else None)
    try:
        job = job_nodes_for_roles(roles, bank_name)
        node_of = find_job_nodes(deliveries, grid, job, registry, timeout)
        role_of.update({nid: role for role, nid in node_of.items()})
        name_of.update({nid: job.name_of(role) for role, nid in node_of.items()})
        with WorkerPool() as pool:
            def make(rid: str, keypairs=None):
                return JobCoordinator(rid, roles, settings, pool=pool, on_event=on_event, publication=publication,
                                      task=task, bank_name=bank_name, purpose=purpose,
                                      submitter=submitter, saved=saved,
                                      keypairs=keypairs)

            resumed = None
            if journal is not None and journal.resume:
                run_id = journal.check(settings, roles, task)
                resumed = journal.replay(make, audit)
            if resumed is not None:
                coordinator, outgoing, seqs, saved = resumed
                deliveries.seq.update({node_of[r]: n for r, n in seqs.items()})
            else:
                coordinator = make(run_id or uuid.uuid4().hex[:12])
                if audit is not None:
                    coordinator = audited(coordinator, *audit)
                if journal is not None:
                    journal.begin(coordinator.run_id, settings, roles, task)
                outgoing, saved = coordinator.start(), None
            while outgoing:
                per_node: dict[int, list] = {}
                for m in outgoing:
                    per_node.setdefault(node_of[m.receiver], []).append(m)
                if journal is not None and saved is None:
                    journal.save_keys(coordinator.generated_keypairs())
                    journal.write_pending(coordinator.rounds + 1, {role_of[n]: s for n, s in deliveries.seq.items()},
                                          outgoing, coordinator.writer.state() if audit is not None else None)
                if saved is not None:  # the pending round's replies had come before the coordinator was killed
                    (messages, heads), saved = saved, None
                    deliveries.seq.update({n: deliveries.seq.get(n, 0) + 1 for n in per_node})
                else:
                    replies = deliveries.exchange({n: to_record(ms) for n, ms in per_node.items()}, MESSAGE_TYPE)
                    messages, heads = unbundle_replies(replies, name_of)
                    if journal is not None:
                        journal.append_replies(coordinator.rounds + 1, messages, heads)
                if on_round is not None:
                    on_round(outgoing, messages)
                for head in heads:
                    if hasattr(coordinator, "record_final_head"):
                        coordinator.record_final_head(head)
                outgoing = coordinator.advance(messages)
        result.update(coordinator.result, rounds=coordinator.rounds, run_id=coordinator.run_id,
                      wall_seconds=time.perf_counter() - started, round_seconds=list(deliveries.round_seconds))
    except Exception as exc:  # reported to the caller; Flower itself would only log it
        result["error"] = str(exc) if isinstance(exc, FedCreditError) else f"{type(exc).__name__}: {exc}"
        if coordinator is not None:
            abort_nodes(deliveries, coordinator, {role: nid for nid, role in role_of.items()}, exc)
            if journal is not None:  # the run ended; a finished one's journal goes once its outputs are written
                journal.finish()
    return result


def unbundle_replies(replies: dict, name_of: dict[int, str]) -> tuple[list, list[dict]]:
    """A round's protocol replies (in the order the bundles were sent) and the nodes' final log heads."""
    messages, heads = [], []
    for nid, reply in replies.items():
        if reply.has_error():
            raise FedCreditError(f"node {name_of[nid]} failed: {reply.error.reason}")
        if "audit" in reply.content:
            heads.append(json.loads(str(reply.content["audit"]["final_head"])))
        messages.extend(from_record(reply.content))
    return messages, heads


def abort_nodes(deliveries: Deliveries, coordinator, node_of: dict[str, int], exc: Exception) -> None:
    """Tell every node the job failed (it closes its audit log as aborted and drops its state), record the
    final heads that come back, then close the coordinator's log as aborted. Never raises."""
    try:
        contents = {node_of[m.receiver]: to_record([m]) for m in coordinator.abort_messages(exc)}
        for reply in deliveries.once(contents, ABORT_TYPE, ABORT_TIMEOUT_S).values():
            if not reply.has_error() and "audit" in reply.content and hasattr(coordinator, "record_final_head"):
                coordinator.record_final_head(json.loads(str(reply.content["audit"]["final_head"])))
    except Exception:  # noqa: BLE001 — the job's own error is the one reported
        pass
    try:
        coordinator.close_aborted(exc)
    except Exception:  # noqa: BLE001
        pass


def make_server_app(settings: ModelSettings, roles: list[str], result: dict, *, on_event=None,
                    run_id: str | None = None, timeout: float = 600.0, publication=None, task: str = "train",
                    audit=None, purpose: str = "credit-scoring", bank_name: str = "bank", on_round=None) -> ServerApp:
    """A ServerApp that runs one job and stores the coordinator's result (or ``error``) in ``result``."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_job(grid, settings, roles, result, on_event=on_event, run_id=run_id, timeout=timeout,
                publication=publication, task=task, audit=audit, purpose=purpose, bank_name=bank_name,
                on_round=on_round)

    return app
