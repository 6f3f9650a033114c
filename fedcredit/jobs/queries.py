"""Online limit queries in one process (tests, notebooks, local use): a serving run without Flower.

Every message is still encoded, sealed and decoded exactly as over the network
(``fedcredit.protocols.loop``); the nodes are ``QueryNode`` agents holding their saved
scorecard parts (``NodeConfig.model_dir``) and reading their current data files.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from pathlib import Path

from fedcredit.common.errors import FedCreditError
from fedcredit.crypto import Identity
from fedcredit.protocols.audited import audited
from fedcredit.protocols.job import ModelSettings, NodeConfig
from fedcredit.protocols.job.outputs import publication_for
from fedcredit.protocols.loop import abort_job, drive
from fedcredit.protocols.query import QueryCoordinator, QueryNode, check_ids
from fedcredit.scoring.policy import LimitPolicy


def saved_settings(model_dir: str | Path) -> ModelSettings:
    """The model settings of the training run whose node part is ``model_dir`` (its ``run.json``, two folders up)."""
    path = Path(model_dir).parent.parent / "run.json"
    try:
        return ModelSettings(**json.loads(path.read_text())["settings"])
    except FileNotFoundError:
        raise FedCreditError(f"{path}: not found; the training run's run.json names the model's settings") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise FedCreditError(f"{path}: cannot read the model's settings ({exc})") from None


def run_local_queries(nodes: list[NodeConfig], model_run_id: str, id_batches: list[list[str]], policy: LimitPolicy,
                      signer: Identity, *, settings: ModelSettings | None = None, run_id: str | None = None,
                      purpose: str = "credit-scoring", audit: str | Path | None = None, clock=None,
                      query_ids: list[str] | None = None, tap=None, on_event=None) -> list[dict]:
    """Open a serving run over ``nodes`` (the bank first; each with ``model_dir``), answer one query per batch of
    ``id_batches``, close the run; return the signed answers in order.

    ``settings`` default to the training run's (``saved_settings``); ``audit`` is the folder for every
    party's audit log (the nodes' go to their ``out_dir``/audit, so give them the same folder);
    ``clock`` (a function returning today's UTC date) replaces the nodes' clock (budget tests).
    """
    if not nodes or any(not n.model_dir for n in nodes):
        raise FedCreditError("every node of a serving run needs its saved model part (model_dir)")
    settings = settings or saved_settings(nodes[0].model_dir)
    run_id = run_id or uuid.uuid4().hex[:12]
    query_ids = query_ids or [f"q{k + 1}" for k in range(len(id_batches))]
    if len(query_ids) != len(id_batches):
        raise FedCreditError(f"{len(query_ids)} query ids for {len(id_batches)} batches")
    for ids in id_batches:  # a malformed batch is refused before the serving run starts
        check_ids(ids)
    agents = {n.role: QueryNode(n) for n in nodes}
    if clock is not None:
        for agent in agents.values():
            agent.clock = clock
    coordinator = QueryCoordinator(run_id, [n.role for n in nodes], model=model_run_id,
                                   publication=publication_for(policy, signer.fingerprint), signer=signer,
                                   settings=settings, bank_name=nodes[0].name or nodes[0].role, purpose=purpose,
                                   on_event=on_event)
    if audit is not None:
        coordinator = audited(coordinator, Path(audit), signer)
    answers = []
    try:
        drive(coordinator, agents, tap=tap)
        for query_id, ids in zip(query_ids, id_batches):
            drive(coordinator, agents, tap=tap, first=coordinator.submit(query_id, ids))
            answers.append(coordinator.answer)
        drive(coordinator, agents, tap=tap, first=coordinator.finish())
    except BaseException as exc:  # the logs say the run was aborted, not cut
        abort_job(coordinator, agents, exc, tap=tap)
        raise
    return answers


def with_model(nodes: list[NodeConfig], training_out: str | Path, out_dir: str | Path | None = None) -> list[NodeConfig]:
    """``nodes`` pointed at a local training run's saved parts (``<training_out>/model/<role>``), writing their
    audit logs under ``out_dir`` when given."""
    return [replace(n, model_dir=str(Path(training_out) / "model" / n.role),
                    out_dir=str(out_dir) if out_dir is not None else n.out_dir) for n in nodes]
