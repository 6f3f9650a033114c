"""A job file submitted to a named federation: what is sent, and a record of it beside the outputs.

Only public settings travel: the ``[job]``/``[model]`` settings, the role names and the
name of the job's bank, the
coordinator-side paths of the federation and, when the submitter brings one, the limit
policy's text. Node data paths and column settings stay in each node's own config. The
record (``submission.json``, written atomically, also when the run fails) is what a
reviewer checks later: which federation, which settings, which policy, which verdict.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from fedcredit.common.atomic import atomic_write_json
from fedcredit.flower import submit as submit_mod
from fedcredit.deploy.federations import Federation
from fedcredit.common.errors import FedCreditError
from fedcredit.jobs.jobfile import JobFile

RECORD = "submission.json"


@dataclass
class Submission:
    """The run config for one job on one federation, and where its outputs go."""

    job: JobFile | None  # None: a scoring job, whose settings are its saved model's at the coordinator
    federation: Federation
    run_config: dict
    coordinator_out: str
    policy: dict = field(default_factory=dict)  # {"file", "sha256"} | {"coordinator_path"} | {"builtin": True}


def plan(job: JobFile, fed: Federation, out: Path, policy: Path | None = None) -> Submission:
    """Build the run config; a local ``policy`` file is checked here and sent as text."""
    from fedcredit.flower.deployment import run_config_from_settings

    try:
        cfg = run_config_from_settings(job.settings, job.roles, job.bank, job.purpose)
    except FedCreditError as exc:
        raise FedCreditError(f"{job.path}: [model] backend: {exc}") from None
    return _planned(job, fed, cfg, fed.coordinator_out(out, job.bank), policy)


def plan_scoring(fed: Federation, model_run: str, bank: str, purpose: str, out: Path,
                 policy: Path | None = None) -> Submission:
    """A scoring job: the saved model ``model_run`` (a training run id of ``bank``'s) applied by every node to
    the data it holds now. Only the run id, bank and purpose travel; the coordinator takes the model's
    settings and nodes from its own record of the training run."""
    if not model_run or not str(model_run).strip():
        raise FedCreditError("--model must name the training run whose model scores (its run id, in its run.json)")
    cfg = {"task": "score", "model-run": str(model_run).strip(), "bank": bank, "purpose": purpose}
    return _planned(None, fed, cfg, fed.coordinator_out(out, bank), policy)


def _planned(job: JobFile | None, fed: Federation, cfg: dict, coordinator_out: str, policy: Path | None) -> Submission:
    """The submission with the federation's coordinator paths and the limit policy (sent as text when local)."""
    from fedcredit.scoring.policy import LimitPolicy

    for key in ("registry", "keys"):
        if getattr(fed, key):
            cfg[key] = getattr(fed, key)
    if policy is not None:
        LimitPolicy.load(policy)  # refuse a bad policy before anything runs
        text = Path(policy).read_text()
        text = text if text.endswith("\n") else text + "\n"
        cfg["policy"] = text
        what = {"file": str(Path(policy).resolve()), "sha256": hashlib.sha256(text.encode()).hexdigest()}
    elif fed.policy:
        cfg["policy"] = fed.policy
        what = {"coordinator_path": fed.policy}
    else:
        what = {"builtin": True}
    return Submission(job, fed, cfg, coordinator_out, what)


def run(sub: Submission, out: Path, *, echo=print, timeout: float = 3600.0) -> dict:
    """Submit, stream, and record; returns the coordinator's status or raises (the record says why)."""
    fed = sub.federation
    fed.ca()
    out = Path(out).resolve()
    record = {"federation": fed.name, "defined_in": fed.source, "superlink": fed.superlink, "certs": str(fed.certs.resolve()),
              "job": str(sub.job.path.resolve()) if sub.job is not None else None,
              "coordinator_out": sub.coordinator_out, "policy": sub.policy, "run_config": sub.run_config,
              "submitter_key": fed.submitter,
              "submitted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        status = submit_mod.submit(fed.superlink, fed.certs, out, sub.run_config, echo=echo, timeout=timeout,
                                   coordinator_out=sub.coordinator_out, submitter_key=fed.submitter)
    except FedCreditError as exc:
        _write(out, {**record, "status": {"ok": False, "error": str(exc)}})
        raise
    _write(out, {**record, "status": status})
    return status


def resume(out: Path, *, echo=print, timeout: float = 3600.0) -> dict:
    """Continue the job submitted from ``out`` (its ``submission.json``) whose coordinator stopped mid-run:
    the same run config with ``resume = true``; the coordinator replays its journal and goes on."""
    out = Path(out).resolve()
    try:
        record = json.loads((out / RECORD).read_text())
        superlink, certs, run_config = record["superlink"], Path(record["certs"]), dict(record["run_config"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FedCreditError(f"--resume {out}: not the output folder of a submitted job ({RECORD} with superlink, "
                             f"certs and run_config: {exc})") from None
    if record.get("status", {}).get("ok"):
        raise FedCreditError(f"--resume {out}: that job finished ({out / RECORD} says ok); nothing to resume")
    resumed = {**record, "resumed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        status = submit_mod.submit(superlink, certs, out, {**run_config, "resume": True}, echo=echo, timeout=timeout,
                                   coordinator_out=record["coordinator_out"], submitter_key=record.get("submitter_key"))
    except FedCreditError as exc:
        _write(out, {**resumed, "status": {"ok": False, "error": str(exc)}})
        raise
    _write(out, {**resumed, "status": status})
    return status


def _write(out: Path, doc: dict) -> None:
    atomic_write_json(out / RECORD, doc)
