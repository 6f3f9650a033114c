"""The ServerApp and ClientApp that ``flwr run`` starts on Flower's deployment engine.

The job's public settings come from the run config (``[tool.flwr.app.config]`` in
pyproject.toml, overridden by ``flwr run --run-config``; ``bank`` names the node that
plays the job's bank, ``roles`` the protocol roles, bank first); every node reads its name and
data from its own node config (``flower-supernode --node-config``), which never travels.
The coordinator writes ``metrics.json``, ``run.json``, the signed limits and
``audit/coordinator.jsonl`` into the run config's ``out`` folder on the SuperLink's machine, and
``status.json`` last (``{"ok": true|false, ...}``), which ``fedcredit train`` reads to
tell a failed run from a finished one (``flwr run --stream`` exits 0 either way).
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import time
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedcredit.common.atomic import atomic_write_json
from fedcredit.common.errors import FedCreditError
from fedcredit.deploy.processes import UNFINISHED_ENV
from fedcredit.flower.journal import FOLDER as JOURNAL, CoordinatorJournal
from fedcredit.deploy.naming import BANK, JobNodes, job_nodes_for_roles
from fedcredit.flower.saved_model import scoring_plan
from fedcredit.flower.server_app import run_job
from fedcredit.protocols import ModelSettings, coordinator_identity, finish_run, publication_for, step_line

if TYPE_CHECKING:
    from fedcredit.scoring.policy import LimitPolicy

STATUS = "status.json"

# run-config key -> ModelSettings field (run config values are bool/int/float/str only)
# (every setting but the crypto backend: deployments use Paillier; pyproject.toml lists their defaults,
# without which Flower drops a run-config key)
SETTINGS_KEYS = {f.name.replace("_", "-"): f.name for f in fields(ModelSettings) if f.name != "backend"}


def settings_from_run_config(cfg: dict) -> tuple[ModelSettings, list[str]]:
    """The model settings and the job's roles (``roles = "bank,tax,utilities"``, bank first)."""
    defaults = ModelSettings()
    kwargs = {}
    for key, field_name in SETTINGS_KEYS.items():
        if key in cfg:
            default = getattr(defaults, field_name)
            if isinstance(default, list):  # lists travel as comma-separated numbers ("0.1,0.01")
                try:
                    kwargs[field_name] = [float(v) for v in str(cfg[key]).split(",") if v.strip()]
                except ValueError:
                    raise FedCreditError(f"run config {key!r} must list numbers separated by commas, got {cfg[key]!r}") from None
            else:
                kwargs[field_name] = type(default)(cfg[key])
    roles = [r.strip() for r in str(cfg.get("roles", "bank,tax,utilities")).split(",") if r.strip()]
    if not roles or roles[0] != "bank" or len(set(roles)) != len(roles):
        raise FedCreditError(f"run config 'roles' must list unique roles, bank first; got {cfg.get('roles')!r}")
    return ModelSettings(**kwargs), roles


def job_nodes_from_run_config(cfg: dict, roles: list[str]) -> JobNodes:
    """The job's nodes: ``bank`` (the name of the node that plays the bank, default ``bank``) and the hosts
    of ``roles``."""
    return job_nodes_for_roles(roles, str(cfg.get("bank") or BANK), "run config 'bank'/'roles'")


def run_config_from_settings(settings: ModelSettings, roles: list[str], bank: str = BANK,
                             purpose: str = "credit-scoring") -> dict:
    """The run-config entries that reproduce ``settings`` at the coordinator (inverse of the function above).

    Every key is sent, so a run depends on the job file alone, not on the defaults in
    pyproject.toml. The crypto backend is not a run-config key: deployments use Paillier.
    """
    if settings.backend != "paillier":
        raise FedCreditError(f"the {settings.backend!r} crypto backend is for local runs only; "
                             "a federation always uses 'paillier'")
    cfg = {key: getattr(settings, field_name) for key, field_name in SETTINGS_KEYS.items()}
    cfg.update({key: ",".join(repr(float(v)) for v in value) for key, value in cfg.items() if isinstance(value, list)})
    cfg["roles"] = ",".join(roles)
    cfg["bank"] = bank
    cfg["purpose"] = purpose  # the job's purpose, as the hosts' consent lists name it (docs/governance.md)
    return cfg


def policy_from_run_config(value: str) -> LimitPolicy:
    """The run config's ``policy``: a path on the coordinator's machine, or the policy's TOML text itself.

    A submitter's own policy file travels as its text (which always holds a line break,
    a path never does), so the committee-approved policy is the one that is signed even
    when the submitter is not on the coordinator's machine; ``run.json`` records its
    SHA-256.
    """
    from fedcredit.scoring.policy import LimitPolicy

    value = str(value)
    if not value:
        return LimitPolicy()
    if "\n" not in value:
        return LimitPolicy.load(value)
    digest = hashlib.sha256(value.encode()).hexdigest()
    try:
        doc = tomllib.loads(value)
    except tomllib.TOMLDecodeError as exc:
        raise FedCreditError(f"run config 'policy' (policy text sent with the job): not valid TOML ({exc})") from None
    return LimitPolicy.from_dict(doc, source=f"policy sent with the job, sha256 {digest}")


def _printer(steps: int):
    """Progress lines on the ServerApp's stdout (``flwr run --stream`` shows them to whoever submitted the job)."""

    def on_event(kind: str, info: dict) -> None:
        if kind == "validated":
            print("node data valid: " + ", ".join(f"{r} {v['rows']:,} rows" for r, v in info.items()), flush=True)
        elif kind == "aligned":
            print(f"PSI: {info['intersection']:,} enterprises known to every node", flush=True)
        elif kind == "iteration":
            print(step_line(info, steps), flush=True)
        elif kind == "finished":
            print("training finished; scoring and publishing", flush=True)
        elif kind == "node_lost":
            print(f"NODE LOST: {info['node']} in round {info['round']} ({info['reason']}); the job waits up to "
                  f"{info['return_timeout']:.0f} s for it to return and resumes from its checkpoint", flush=True)
        elif kind == "node_back":
            print(f"node {info['node']} is back after {info['waited_s']} s; round {info['round']} delivered again",
                  flush=True)

    return on_event


def _check_audit(folder: Path, roles: list[str], signer, key_bits: int) -> int:
    """Verify the audit trail the coordinator can see; returns its number of records.

    In a real federation each node keeps its log in its own out-dir, so the coordinator
    checks its own log (chain, hashes, signatures); when every node's log sits beside it
    (nodes writing into the same folder), the whole trail is verified as ``fedcredit audit
    verify`` would.
    """
    from fedcredit.audit.verify import read_log, verify_audit

    if all((folder / f"{role}.jsonl").exists() for role in roles):
        return sum(verify_audit(folder, signer.public, min_key_bits=key_bits).records.values())
    log = read_log(folder / "coordinator.jsonl")
    if log.identity != signer.public:
        raise FedCreditError("the coordinator's audit log is not signed with the coordinator's key")
    return len(log.records)


def write_status(out: Path, doc: dict) -> None:
    atomic_write_json(Path(out) / STATUS, doc)


def run_coordinator(grid: Grid, cfg: dict, flower_run_id: int | None = None, submitter: dict | None = None) -> dict:
    """Run the job at the coordinator, write its outputs into ``cfg['out']``; returns metrics or raises.

    ``submitter`` ({name, fingerprint}) is who signed the job, as verified by the ServerApp gate."""
    if not str(cfg.get("out", "")):
        raise FedCreditError("run config 'out' (the coordinator's output folder) is empty")
    out = Path(str(cfg["out"])).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    (out / STATUS).unlink(missing_ok=True)
    started = time.perf_counter()
    try:
        task = str(cfg.get("task") or "train")
        if task not in ("train", "score"):
            raise FedCreditError(f"run config 'task' must be train or score here, got {task!r}")
        settings, roles = settings_from_run_config(cfg)
        signer = coordinator_identity(Path(str(cfg.get("keys") or out / "keys")), out)
        scoring = None
        if task == "score":  # the saved model's own settings and nodes; the limits follow its last publication
            scoring = scoring_plan(cfg, out, signer.public if cfg.get("keys") else None)
            settings, roles = scoring.settings, scoring.roles
        job = job_nodes_from_run_config(cfg, roles)
        policy = policy_from_run_config(cfg.get("policy", ""))
        publication = publication_for(policy, signer.fingerprint)
        steps = f"at most {settings.max_iter} iterations" if settings.model == "scorecard_lr" else f"{settings.trees} trees"
        print(f"fedcredit job: {settings.model}, bank {job.bank}, hosts {','.join(job.hosts)}, {settings.key_bits}-bit "
              f"keys, {steps}; waiting for {len(roles)} nodes", flush=True)
        registry = None
        if str(cfg.get("registry", "")):  # node name -> node id of its registered key (fedcredit coordinator start)
            registry = {str(k): int(v) for k, v in json.loads(Path(str(cfg["registry"])).read_text()).items()}
        else:
            print("warning: no registry: every connected node is asked who it is, so nodes outside this job learn "
                  "that a job runs (give the federation STATE/registry.json)", flush=True)
        result: dict = {}
        resume = str(cfg.get("resume", "false")).lower() == "true"
        journal = CoordinatorJournal(out / JOURNAL, flower_run_id, resume=resume, run_config=cfg,
                                     index=os.environ.get(UNFINISHED_ENV) or None)
        resumed = {}
        if resume:  # the nodes' folders keep the first run's id; this Flower run is recorded beside it
            print(f"resuming job {journal.run.get('run_id')} (first Flower run {journal.origin}) from its journal",
                  flush=True)
            resumed, flower_run_id = {"resumed_in_flower_run": flower_run_id}, int(journal.origin)
        run_job(grid, settings, roles, result, on_event=_printer(settings.progress_steps),
                timeout=float(cfg.get("timeout", 600.0)), return_timeout=float(cfg.get("node-return-timeout", 600.0)),
                publication=publication, audit=(out / "audit", signer), registry=registry, submitter=submitter, journal=journal,
                bank_name=job.bank, task=task, saved=scoring.saved if scoring else None,
                purpose=str(cfg.get("purpose") or "credit-scoring"))
        if "error" in result:
            raise FedCreditError(result["error"])
        audit_records = _check_audit(out / "audit", roles, signer, settings.key_bits)
        metrics = finish_run(
            result, out, signer, settings, policy, roles=roles, task=task, engine="deployment",
            seconds=time.perf_counter() - started, audit_records=audit_records,
            lineage=scoring.lineage if scoring else None,
            extra={"bank": job.bank, "seconds_per_round": round(result["wall_seconds"] / max(result["rounds"], 1), 3),
                   "median_round_s": round(statistics.median(result["round_seconds"]), 3)
                   if result.get("round_seconds") else None},
            run_extra={"flower_run_id": flower_run_id, "bank": job.bank, "node_names": dict(zip(roles, job.names)),
                       **resumed})
        write_status(out, {"ok": True, "run_id": result.get("run_id"), "flower_run_id": flower_run_id, **resumed,
                           "metrics": metrics})
        journal.finish()  # with the coordinator's private keys
        auc = metrics.get("test_auc") if task == "train" else metrics.get("scored_auc")
        print(f"done: {'test' if task == 'train' else 'scored'} AUC {auc if auc is None else round(auc, 4)}, "
              f"{metrics['rounds']} rounds in {metrics['seconds']:.1f} s "
              f"({metrics['seconds_per_round']:.2f} s/round); outputs in {out}", flush=True)
        return metrics
    except Exception as exc:
        msg = str(exc) if isinstance(exc, FedCreditError) else f"{type(exc).__name__}: {exc}"
        write_status(out, {"ok": False, "error": msg, "flower_run_id": flower_run_id,
                           "seconds": round(time.perf_counter() - started, 1)})
        print(f"fedcredit job FAILED: {msg}", flush=True)
        raise


server_app = ServerApp()


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    from fedcredit.deploy.supernode import shorten_pull_backoff

    from fedcredit.flower.serverapp_gate import verified_submitter

    submitter = verified_submitter()  # no job without a submitter signature checked by the gate
    shorten_pull_backoff(0.02, 0.5)  # replies are registered before their objects arrive (flwr 1.41)
    if context.run_config.get("task") == "query":  # online limit queries until stopped (fedcredit serve)
        from fedcredit.flower.serving import run_serving

        run_serving(grid, dict(context.run_config), getattr(context, "run_id", None), submitter=submitter)
        return
    # raising marks the Flower run as failed (``flwr ls`` shows it) after status.json says why
    run_coordinator(grid, dict(context.run_config), getattr(context, "run_id", None), submitter=submitter)
