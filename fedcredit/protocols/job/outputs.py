"""The coordinator's outputs of a finished job, whatever engine carried its messages.

The in-process and simulation engines (``fedcredit.jobs.runner``) and the deployment
ServerApp (``fedcredit.flower.deployment``) end a job the same way: the coordinator signs
and publishes the limits (checked right after signing), then writes ``metrics.json`` and
``run.json``. Its signing identity is made once per key folder, so every run of a
federation is signed by the same key.
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

import pandas as pd

from fedcredit import __version__
from fedcredit.common.atomic import atomic_write_bytes
from fedcredit.crypto import Identity
from fedcredit.protocols.job import ModelSettings, Publication
from fedcredit.common.errors import FedCreditError
from fedcredit.scoring.lineage import Lineage
from fedcredit.scoring.policy import LimitPolicy
from fedcredit.scoring.publish import publish_limits, verify_limits
from fedcredit.scoring.quality import describe_warning


def publication_for(policy: LimitPolicy, signer: str | None = None, allow_weak_model: bool = False) -> Publication:
    """The coordinator's view of a limit policy: grades and caps from probabilities, capacity at its owner,
    the quality gate (``allow_weak_model`` publishes a model that fails it, recorded as an override)."""

    def grade(pd):
        points, grades = policy.grade(pd)
        return points, grades, policy.cap_for(grades)

    return Publication(grade=grade, capacity=policy.capacity,
                       loss_table=lambda g, p, lim: policy.expected_loss_table(g, p, lim).to_dict("records"), signer=signer,
                       quality=policy.quality, allow_weak_model=allow_weak_model, grade_order=list(policy.bands.grades),
                       scaling=asdict(policy.scorecard), missing=policy.missing_answer)


def coordinator_identity(keys: Path, run: Path | None = None) -> Identity:
    """The coordinator's signing identity, created once per key folder (private file 0600).

    With ``run`` (a run's output folder) the folder also gets the public half in
    ``run/keys/coordinator.pub.json`` when the key lives elsewhere (a federation's key folder),
    so each run folder can be verified, and compared with the next publication, on its own."""
    private, public = keys / "coordinator.key.json", keys / "coordinator.pub.json"
    if private.exists():
        ident = Identity.load(private)
    else:
        ident = Identity.generate("coordinator")
        ident.save(private, public_path=public)
    if run is not None and not (Path(run) / "keys" / "coordinator.pub.json").exists():
        ident.public.save(Path(run) / "keys" / "coordinator.pub.json")
    return ident


def finish_run(result: dict, out: Path, signer: Identity, settings: ModelSettings, policy: LimitPolicy, *,
               roles: list[str], task: str, engine: str, seconds: float, audit_records: int,
               extra: dict | None = None, run_extra: dict | None = None, lineage: Lineage | None = None) -> dict:
    """The coordinator's outputs of a finished job, whatever the engine: the signed limits
    (checked right after signing), ``metrics.json`` and ``run.json``; returns the metrics.

    ``lineage`` places the limits among the model's publications (``fedcredit.scoring.lineage``):
    a training run's are version 1 of its own model; a scoring run names the publication it follows."""
    quality = result.get("quality")
    run_id = str(result.get("run_id"))
    if lineage is None:
        if task != "train":
            raise FedCreditError("a scoring run's limits must name the publication they follow (lineage)")
        lineage = Lineage.first(run_id)
    publication = lineage.metadata(run_id)
    published = publish_limits(pd.DataFrame(result["publication"]), out, signer, model_version=lineage.model,
                               metadata={"publication": publication, **({"quality_gate": quality} if quality else {})})
    verify_limits(published["parquet"], signer.public)
    m = result.get("metrics") or {}
    metrics = {
        **(_scored_figures(m) if task == "score" else
           {"test_auc": m.get("auc"), "test_ks": m.get("ks"), "test_gini": m.get("gini")}),
        "bank_only_auc": (result.get("bank_only") or {}).get("auc"),
        "rounds": result["rounds"], "seconds": round(result.get("seconds", seconds), 1), "total_seconds": round(seconds, 1),
        "intersection": result["intersection"], "evaluations": result["evaluations"],
        "audit_records": audit_records, **(extra or {}),
    }
    if quality:
        metrics.update(quality_gate="overridden" if quality["override"] else "passed",
                       heldout_auc=quality["auc"], heldout_rows=quality["rows"],
                       grade_order_warnings=[describe_warning(w, w.get("rows", "held-out"))
                                             for w in quality.get("grade_order_warnings", [])])
    if "trees" in result:
        metrics["trees"] = result["trees"]
    stability = {k: result[k] for k in ("csi", "csi_notes") if k in result}  # scoring runs: CSI per node feature
    metrics.update(stability)
    atomic_write_bytes(out / "metrics.json", (json.dumps(metrics, indent=2) + "\n").encode())
    run_doc = {
        "run_id": result.get("run_id"), "task": task, "engine": engine, "settings": asdict(settings),
        "nodes": result["nodes"], "roles": roles, "rounds": metrics["rounds"], "seconds": metrics["seconds"],
        "key_fingerprints": {"paillier": result["key_fingerprint"], "identities": result["identities"],
                             "coordinator_signing": signer.fingerprint},
        "policy": policy.source, "quality_gate": quality, "publication": publication, "history": result["history"],
        "versions": _versions(),
        **({"regularization": result["regularization"]} if "regularization" in result else {}), **stability,
        **(run_extra or {}),
    }
    atomic_write_bytes(out / "run.json", (json.dumps(run_doc, indent=2, default=float) + "\n").encode())
    return metrics


def _scored_figures(m: dict) -> dict:
    """A scoring run's figures, named for what they are: ``scored_*`` over every scored enterprise
    (in-sample when ``in_sample_rows`` > 0: the saved model trained or validated on them), ``test_*``
    only over the rest (the saved model's test rows and enterprises it never saw), None when the
    saved model's split is unknown (``in_sample_rows`` None)."""
    oos = m.get("out_of_sample") or {}
    return {"scored_auc": m.get("auc"), "scored_ks": m.get("ks"), "scored_gini": m.get("gini"),
            "in_sample_rows": m.get("in_sample_rows"), "test_auc": oos.get("auc"), "test_ks": oos.get("ks"),
            "test_gini": oos.get("gini"), "test_rows": oos.get("rows")}


def _versions() -> dict:
    """Versions that decide a run's numbers, read from the installed distributions (nothing imported)."""
    return {"fedcredit": __version__, "flwr": _installed("flwr"), "phe": _installed("phe"),
            "python": platform.python_version()}


def _installed(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "?"
