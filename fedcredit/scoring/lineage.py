"""Publication versions: every publication of a model's limits names, under its signature, the one it replaces.

A model is published first by its training run (version 1) and again by every scoring
run that re-rates the enterprises as their data changes. A bank acts on the newest
limits, and a monitoring step compares two publications; both must be able to tell
from the signed files alone that publication N+1 follows publication N of the same
model, not another model's or a file someone swapped in. So each signature file carries
``metadata.publication`` = ``{"model", "version", "run_id", "previous"}``, where
``previous`` holds the run id, version and rows digest of the publication it follows
(the digest covers every row, see ``fedcredit.scoring.publish``). The previous
publication is verified with its signer's key before it is chained to.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from fedcredit.common.errors import FedCreditError
from fedcredit.crypto import PublicIdentity
from fedcredit.scoring.publish import verify_limits

KEY_FILE = Path("keys") / "coordinator.pub.json"


class LineageError(FedCreditError):
    """A previous publication that cannot be chained to (missing, unverifiable, another model's)."""


@dataclass(frozen=True)
class Lineage:
    """Where a new publication stands: its model (the training run id), its version and what it follows."""

    model: str
    version: int
    previous: dict | None = None  # {"run_id", "version", "digest", "signer"} of the publication it follows

    @classmethod
    def first(cls, model: str) -> "Lineage":
        """A training run's publication: version 1 of its own model."""
        return cls(str(model), 1)

    def metadata(self, run_id: str) -> dict:
        """The signed ``publication`` entry of this run's limits."""
        return {"model": self.model, "version": self.version, "run_id": str(run_id), "previous": self.previous}


def published(folder: Path, key: PublicIdentity | Path | None = None) -> dict:
    """The verified publication in run folder ``folder``: {"model", "version", "run_id", "digest", "signer"}.

    ``key`` defaults to the folder's own ``keys/coordinator.pub.json``. A publication made
    before versions existed counts as version 1 of its model when its run trained it.
    """
    folder = Path(folder)
    limits = folder / "limits.parquet"
    if not limits.exists():
        raise LineageError(f"{folder}: no published limits (limits.parquet) to follow")
    key = key if key is not None else folder / KEY_FILE
    if not isinstance(key, PublicIdentity) and not Path(key).exists():
        raise LineageError(f"{folder}: no coordinator key to verify its limits with ({key})")
    report = verify_limits(limits, key)
    pub = (report.metadata or {}).get("publication")
    if isinstance(pub, dict):
        try:
            model, version, run_id = str(pub["model"]), int(pub["version"]), str(pub["run_id"])
        except (KeyError, TypeError, ValueError):
            raise LineageError(f"{folder}/limits.sig.json: malformed publication entry {pub!r}") from None
    else:
        run = _run_doc(folder)
        if run.get("task") != "train":
            raise LineageError(f"{folder}: its limits carry no publication version and its run did not train the "
                               "model, so its place in the model's publications is unknown")
        model, version, run_id = str(run.get("run_id") or report.model_version), 1, str(run.get("run_id"))
    return {"model": model, "version": version, "run_id": run_id, "digest": report.digest, "signer": report.fingerprint}


def following(folder: Path, key: PublicIdentity | Path | None = None, model: str | None = None) -> Lineage:
    """The lineage of a publication that follows the one in ``folder`` (of ``model``, when given)."""
    prev = published(folder, key)
    if model is not None and prev["model"] != str(model):
        raise LineageError(f"{folder}: publishes model {prev['model']}, not {model}")
    return Lineage(prev["model"], prev["version"] + 1,
                   {k: prev[k] for k in ("run_id", "version", "digest", "signer")})


def latest(root: Path, model: str, key: PublicIdentity | Path | None = None) -> Path | None:
    """Among the run folders under ``root``, the one holding the newest publication of ``model`` (None: none).

    Folders whose limits do not verify are skipped here; chaining to the one found verifies it again.
    """
    best: tuple[int, float, Path] | None = None
    for sig in Path(root).glob("*/limits.sig.json"):
        try:
            doc = json.loads(sig.read_text())
        except (OSError, ValueError):
            continue
        pub = (doc.get("metadata") or {}).get("publication") if isinstance(doc, dict) else None
        if isinstance(pub, dict) and str(pub.get("model")) == str(model):
            version = pub.get("version")
        elif doc.get("model_version") == str(model) and _run_doc(sig.parent).get("task") == "train":
            version = 1  # the model's own training run, published before versions existed
        else:
            continue
        if not isinstance(version, int):
            continue
        rank = (version, sig.stat().st_mtime, sig.parent)
        if best is None or rank[:2] > best[:2]:
            best = rank
    return best[2] if best is not None else None


def _run_doc(folder: Path) -> dict:
    try:
        doc = json.loads((Path(folder) / "run.json").read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}
