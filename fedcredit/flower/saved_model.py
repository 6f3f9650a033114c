"""A scoring job on a federation: the coordinator finds the saved model among its own runs.

The submitter names the model by its training run id (``model-run``). Everything else a
scoring run needs the coordinator already holds: the training run's ``run.json`` (the
model settings, the job's nodes and its bank) and the model's publications so far,
which sit beside the new run's folder in the bank's own output folder. So a bank can
score only its own models, the settings cannot drift from the ones the model was
trained with, and the new limits chain to the model's newest publication.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from fedcredit.common.errors import FedCreditError
from fedcredit.crypto import PublicIdentity
from fedcredit.protocols import ModelSettings
from fedcredit.scoring.lineage import Lineage, following, latest


@dataclass(frozen=True)
class ScoringPlan:
    """The saved model's settings and roles, what the nodes' hello names, and where the new limits stand."""

    trained: Path
    settings: ModelSettings
    roles: list[str]
    saved: dict  # HELLO meta: {"model": training run id, "previous": run id of the newest scoring publication}
    lineage: Lineage


def training_run(root: Path, model: str) -> tuple[Path, dict]:
    """The folder under ``root`` whose ``run.json`` is the training run ``model``, and that document."""
    for doc_path in sorted(Path(root).glob("*/run.json")):
        try:
            doc = json.loads(doc_path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and doc.get("run_id") == model and doc.get("task") == "train":
            return doc_path.parent, doc
    raise FedCreditError(f"no training run {model!r} among this bank's runs at the coordinator ({root}); "
                         "give the run id of a finished training job of this bank (its run.json 'run_id')")


def scoring_plan(cfg: dict, out: Path, key: PublicIdentity | None = None) -> ScoringPlan:
    """The plan for run config ``cfg`` (``model-run``, ``bank``) whose outputs go to ``out``.

    ``key`` verifies earlier publications (the federation's coordinator key); None: each
    run folder's own ``keys/coordinator.pub.json``.
    """
    model = str(cfg.get("model-run") or "").strip()
    if not model:
        raise FedCreditError("run config 'model-run' must name the training run whose model scores (its run id)")
    root = Path(out).parent
    trained, doc = training_run(root, model)
    bank = str(cfg.get("bank") or "bank")
    if str(doc.get("bank") or "bank") != bank:
        raise FedCreditError(f"training run {model} belongs to bank {doc.get('bank') or 'bank'!r}, not to {bank!r}")
    try:
        settings, roles = ModelSettings(**doc["settings"]), [str(r) for r in doc["roles"]]
    except (KeyError, TypeError) as exc:
        raise FedCreditError(f"{trained / 'run.json'}: no usable settings/roles ({exc})") from None
    newest = latest(root, model, key) or trained
    lineage = following(newest, key, model=model)
    previous = None if newest == trained else lineage.previous["run_id"]
    return ScoringPlan(trained, settings, roles, {"model": model, "previous": previous}, lineage)
