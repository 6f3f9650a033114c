"""Run a job on an engine with live progress, then write the coordinator's outputs.

Outputs in DIR: ``metrics.json`` and ``run.json`` (coordinator); ``scores.parquet``
(bank) and ``model/<role>/`` (each node's own part), written by the nodes.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from fedcredit.audit.verify import verify_audit
from fedcredit.common.errors import FedCreditError
from fedcredit.jobs.display import job_display
from fedcredit.jobs.outdir import Staging, previous_run, write_status
from fedcredit.jobs.preflight import check_job
from fedcredit.protocols.job import ModelSettings, NodeConfig
from fedcredit.protocols.job.outputs import coordinator_identity, finish_run, publication_for
from fedcredit.scoring.lineage import following
from fedcredit.scoring.policy import LimitPolicy

ENGINES = ("simulation", "in-process")


def run(nodes: list[NodeConfig], settings: ModelSettings, out: Path, *, engine: str = "simulation",
        console: Console | None = None, centralized: bool = False, policy: LimitPolicy | None = None,
        keys: Path | None = None, model: Path | None = None, own: tuple[str, ...] = (),
        allow_weak_model: bool = False, purpose: str = "credit-scoring", previous: Path | None = None,
        ray_address: str | None = None, on_event=None, on_round=None) -> dict:
    """Check everything, run the job, publish signed limits, write metrics.json and run.json into ``out``,
    return the metrics.

    Before any engine starts: ``out`` must be new, empty or an earlier run's folder (``own``:
    entries the caller made for this run), every node's file valid and the overlap big
    enough. The run writes into a staging folder and its outputs replace the earlier run's
    only when it has finished (``fedcredit.jobs.outdir``). With ``model`` (the output folder
    of a training run) nothing is trained: every node scores its aligned enterprises with
    its own saved part, and the limits are published. A trained model that fails the
    policy's quality gate publishes nothing (``QualityGateError``) unless ``allow_weak_model``.
    A scoring run's limits follow the publication in ``previous`` (a run folder; default: the
    model's training run), checked before anything starts (``fedcredit.scoring.lineage``).
    ``ray_address``: the in-process engine's crypto workers run on that Ray cluster (docs/scale.md).
    ``on_event(kind, info)`` sees the job's events besides the display, and "start" when the engine
    starts (after the checks); ``on_round(outgoing, replies)`` each round's messages (benchmarks).
    """
    if engine not in ENGINES:
        raise FedCreditError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if ray_address is not None and engine != "in-process":  # (the simulation's nodes run inside its own Ray)
        raise FedCreditError("a job's ray_address needs the in-process engine (--engine in-process)")
    console = console or Console()
    out = Path(out)
    before = previous_run(out, own)
    try:
        checked = check_job(nodes, settings, model=model)
        lineage = following(Path(previous or model)) if model is not None else None
    except FedCreditError as exc:
        write_status(out, {"ok": False, "error": str(exc)})
        raise
    for line in checked.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(line)}", soft_wrap=True)
    staging = Staging(out)
    stage = staging.start()
    try:
        reference = None
        if centralized and model is None:  # before the job, so the bank's report shows it beside the federated AUC
            from fedcredit.jobs.centralized import centralized_auc

            reference = centralized_auc(nodes, checked.ids, settings)
        metrics = _run_staged(nodes, settings, stage, staging, engine=engine, console=console, reference=reference,
                              policy=policy or LimitPolicy(), keys=keys, model=model, allow_weak_model=allow_weak_model,
                              purpose=purpose, previous=previous, lineage=lineage, ray_address=ray_address,
                              on_event=on_event, on_round=on_round)
    except BaseException as exc:
        staging.fail(exc, before == "finished", settings.key_bits)
        raise
    staging.commit()
    return metrics


def _run_staged(nodes, settings: ModelSettings, stage: Path, staging: Staging, *, engine: str, console: Console,
                reference: float | None, policy: LimitPolicy, keys: Path | None, model: Path | None,
                allow_weak_model: bool, purpose: str, previous: Path | None = None, lineage=None,
                ray_address: str | None = None, on_event=None, on_round=None) -> dict:
    """The run itself, every output written into ``stage``."""
    task = "score" if model is not None else "train"
    nodes = [replace(n, out_dir=str(stage), model_dir=str(Path(model) / "model" / n.role) if model is not None else None,
                     previous_dir=str(previous) if previous is not None else None)
             for n in nodes]
    signer = coordinator_identity(Path(keys), stage) if keys else coordinator_identity(staging.keys())
    publication = replace(publication_for(policy, signer.fingerprint, allow_weak_model=allow_weak_model),
                          centralized_auc=reference)
    started = time.perf_counter()
    with job_display(console, settings) as shown:
        display = shown if on_event is None else _both(shown, on_event)
        if on_event is not None:
            on_event("start", {})
        if engine == "simulation":
            from fedcredit.flower.simulation import run_simulated_job

            result = run_simulated_job(nodes, settings, stage / "work", on_event=display, publication=publication,
                                       task=task, audit=(stage / "audit", signer), run_id=staging.run_id, purpose=purpose,
                                       on_round=on_round)
        else:
            from fedcredit.jobs.in_process import run_job

            result = run_job(nodes, settings, on_event=display, publication=publication, task=task,
                             audit=(stage / "audit", signer), run_id=staging.run_id, purpose=purpose,
                             ray_address=ray_address, on_round=on_round)
    audit_records = sum(verify_audit(stage / "audit", signer.public, min_key_bits=settings.key_bits,
                                     allow_mock=settings.backend == "mock").records.values())
    extra = {"centralized_auc": reference} if reference is not None else {}
    return finish_run(result, stage, signer, settings, policy, roles=[n.role for n in nodes], task=task, engine=engine,
                      seconds=time.perf_counter() - started, audit_records=audit_records, extra=extra, lineage=lineage)


def _both(first, second):
    """One ``on_event`` callable calling two."""
    def both(kind: str, info: dict) -> None:
        first(kind, info)
        second(kind, info)
    return both
