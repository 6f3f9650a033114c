"""What a job leaves behind at each node: its own model part and, at the bank, the scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from fedcredit.atomic import atomic_write_bytes
from fedcredit.data.binning import FeaturePrep
from fedcredit.data.io import write_table
from fedcredit.errors import FedCreditError


def write_model_part(folder: Path, role: str, prep: FeaturePrep, labels: list[str], weights: np.ndarray,
                     reference_scores: np.ndarray | None = None) -> None:
    """``prep.json`` (this node's binning) and ``weights.json`` (its parameters, one per design column).

    The bank also keeps its training scores (``reference_scores.json``): later scoring runs
    compare their population with it (population stability index).
    """
    atomic_write_bytes(folder / "prep.json", prep.to_json().encode())
    doc = {"role": role, "parameters": [{"column": c, "weight": float(w)} for c, w in zip(labels, weights)]}
    atomic_write_bytes(folder / "weights.json", json.dumps(doc, indent=1).encode())
    if reference_scores is not None:
        atomic_write_bytes(folder / "reference_scores.json", json.dumps([float(v) for v in reference_scores]).encode())


def read_model_part(folder: Path, role: str) -> tuple[FeaturePrep, np.ndarray, np.ndarray | None]:
    """A node's saved model part: its preparation, its weights and (bank) its training scores."""
    folder = Path(folder)
    try:
        prep = FeaturePrep.from_json((folder / "prep.json").read_text())
        doc = json.loads((folder / "weights.json").read_text())
        reference = folder / "reference_scores.json"
        scores = np.asarray(json.loads(reference.read_text()), dtype=float) if reference.exists() else None
    except FileNotFoundError as exc:
        raise FedCreditError(f"{folder}: no saved model part for {role} ({exc.filename} missing)") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise FedCreditError(f"{folder}: saved model part is malformed ({exc})") from None
    if doc.get("role") != role:
        raise FedCreditError(f"{folder}: model part belongs to {doc.get('role')!r}, not to {role!r}")
    return prep, np.array([p["weight"] for p in doc["parameters"]], dtype=float), scores


def write_scores(path: Path, ids: np.ndarray, split: np.ndarray, scores: np.ndarray) -> None:
    """The bank's scores of every aligned enterprise: ``id``, ``split``, ``score`` (probability of default)."""
    names = np.array(["train", "validation", "test", "scored"], dtype=object)
    table = pa.table({"id": pa.array(list(ids), pa.string()), "split": pa.array(names[split].tolist(), pa.string()),
                      "score": pa.array(np.asarray(scores, dtype=float))})
    write_table(table, path, "parquet")
