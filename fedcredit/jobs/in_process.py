"""The embedded engine without Flower: a whole job in one process (tests, notebooks, the Python API).

Messages are still encoded, sealed and decoded exactly as over the network.
"""

from __future__ import annotations

import uuid

from fedcredit.crypto import make_pool
from fedcredit.protocols.job import JobCoordinator, ModelSettings, NodeAgent, NodeConfig
from fedcredit.protocols.audited import audited
from fedcredit.protocols.loop import abort_job, drive


def run_job(nodes: list[NodeConfig], settings: ModelSettings | None = None, *, run_id: str | None = None,
            workers: int | None = None, ray_address: str | None = None, on_event=None, tap=None, publication=None, task: str = "train",
            audit=None, purpose: str = "credit-scoring", on_round=None) -> dict:
    """Run a job over ``nodes`` (the bank first) and return the coordinator's result.

    Every party shares one crypto worker pool: ``workers`` local processes, or the Ray cluster at
    ``ray_address`` (``fedcredit.crypto.ray_pool``; one process connects to one Ray cluster, so a
    local job has one address for all its parties). ``tap`` sees every encoded message,
    ``on_round(outgoing, replies)`` every round's messages.
    """
    settings = settings or ModelSettings()
    run_id = run_id or uuid.uuid4().hex[:12]
    with make_pool(workers, ray_address) as pool:
        agents = {n.role: NodeAgent(n, pool=pool) for n in nodes}
        coordinator = JobCoordinator(run_id, [n.role for n in nodes], settings, pool=pool, on_event=on_event,
                                     publication=publication, task=task, purpose=purpose,
                                     bank_name=nodes[0].name or nodes[0].role)  # the bank comes first
        if audit is not None:  # (folder, coordinator identity): the coordinator's end of the audit trail
            coordinator = audited(coordinator, *audit)
        try:
            rounds = drive(coordinator, agents, tap=tap, on_round=on_round)
        except BaseException as exc:  # Ctrl-C too: the logs say the run was aborted, not cut
            abort_job(coordinator, agents, exc, tap=tap)
            raise
    return {**coordinator.result, "rounds": rounds, "run_id": run_id}
