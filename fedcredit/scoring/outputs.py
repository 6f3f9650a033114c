"""What a job leaves behind at each node: its own model part and, at the bank, the scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from fedcredit.common.atomic import atomic_write_bytes
from fedcredit.data.binning import FeaturePrep
from fedcredit.data.io import write_table
from fedcredit.common.errors import FedCreditError


def write_table_csv(path: Path, table) -> Path:
    """A table a modeller or a risk committee reads (``iv.csv``, ``scorecard.csv``), written atomically."""
    return atomic_write_bytes(Path(path), table.to_csv(index=False).encode())


def _write_part(folder: Path, prep: FeaturePrep, name: str, doc: dict, reference_scores: np.ndarray | None) -> None:
    atomic_write_bytes(folder / "prep.json", prep.to_json().encode())
    atomic_write_bytes(folder / name, json.dumps(doc, indent=1).encode())
    if reference_scores is not None:
        atomic_write_bytes(folder / "reference_scores.json", json.dumps([float(v) for v in reference_scores]).encode())


def write_model_part(folder: Path, role: str, prep: FeaturePrep, labels: list[str], weights: np.ndarray,
                     reference_scores: np.ndarray | None = None) -> None:
    """``prep.json`` (this node's binning) and ``weights.json`` (its parameters, one per design column).

    The bank also keeps its training scores (``reference_scores.json``): later scoring runs
    compare their population with it (population stability index).
    """
    doc = {"role": role, "parameters": [{"column": c, "weight": float(w)} for c, w in zip(labels, weights)]}
    _write_part(folder, prep, "weights.json", doc, reference_scores)


def _read_part(folder: Path, role: str, name: str) -> tuple[FeaturePrep, dict, np.ndarray | None]:
    """prep.json, the part document ``name`` and (bank) reference_scores.json of a saved part."""
    folder = Path(folder)
    try:
        prep = FeaturePrep.from_json((folder / "prep.json").read_text())
        doc = json.loads((folder / name).read_text())
        reference = folder / "reference_scores.json"
        scores = np.asarray(json.loads(reference.read_text()), dtype=float) if reference.exists() else None
    except FileNotFoundError as exc:
        raise FedCreditError(f"{folder}: no saved model part for {role} ({exc.filename} missing)") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise FedCreditError(f"{folder}: saved model part is malformed ({exc})") from None
    if not isinstance(doc, dict) or doc.get("role") != role:
        raise FedCreditError(f"{folder}: model part belongs to {doc.get('role') if isinstance(doc, dict) else None!r}, "
                             f"not to {role!r}")
    return prep, doc, scores


def read_model_part(folder: Path, role: str) -> tuple[FeaturePrep, np.ndarray, np.ndarray | None]:
    """A node's saved scorecard part: its preparation, its weights and (bank) its training scores."""
    prep, doc, scores = _read_part(folder, role, "weights.json")
    try:
        weights = np.array([p["weight"] for p in doc["parameters"]], dtype=float)
    except (KeyError, TypeError, ValueError) as exc:
        raise FedCreditError(f"{folder}: saved model part is malformed ({exc})") from None
    return prep, weights, scores


TREE_PART = "secureboost.json"


def write_tree_part(folder: Path, role: str, prep: FeaturePrep, part: dict, reference_scores: np.ndarray | None = None) -> None:
    """A SecureBoost node's part: ``prep.json`` and ``secureboost.json`` (the bank's trees with leaf
    weights and hosts' record numbers, or a host's private lookup table with its thresholds)."""
    _write_part(folder, prep, TREE_PART, {**part, "model": "secureboost"}, reference_scores)


def saved_model_kind(folder: Path) -> str:
    """Which model a saved part holds: ``scorecard_lr`` (weights.json) or ``secureboost``."""
    folder = Path(folder)
    if (folder / TREE_PART).exists():
        return "secureboost"
    if (folder / "weights.json").exists():
        return "scorecard_lr"
    raise FedCreditError(f"{folder}: no saved model part (neither weights.json nor {TREE_PART})")


def read_tree_part(folder: Path, role: str) -> tuple[FeaturePrep, dict, np.ndarray | None]:
    """A SecureBoost node's saved part: its preparation, its part document and (bank) its training scores."""
    prep, doc, scores = _read_part(folder, role, TREE_PART)
    if doc.get("model") != "secureboost":
        raise FedCreditError(f"{folder}/{TREE_PART}: not a SecureBoost model part")
    return prep, doc, scores


def write_scores(path: Path, ids: np.ndarray, split: np.ndarray, scores: np.ndarray) -> None:
    """The bank's scores of every aligned enterprise: ``id``, ``split``, ``score`` (probability of default)."""
    names = np.array(["train", "validation", "test", "scored"], dtype=object)
    table = pa.table({"id": pa.array(list(ids), pa.string()), "split": pa.array(names[split].tolist(), pa.string()),
                      "score": pa.array(np.asarray(scores, dtype=float))})
    write_table(table, path, "parquet")


def read_saved_split(path: Path, ids) -> np.ndarray | None:
    """Per ID, its split in the training run whose bank wrote ``path`` (``scores.parquet``):
    ``train``, ``validation``, ``test``, or ``""`` for an enterprise that run never aligned;
    None when the file is not there (the saved model's split is then unknown)."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.exists():
        return None
    try:
        table = pq.read_table(path, columns=["id", "split"])
    except Exception as exc:
        raise FedCreditError(f"{path}: the training run's scores are unreadable ({exc})") from None
    known = dict(zip(table.column("id").to_pylist(), table.column("split").to_pylist()))
    return np.array([known.get(str(i), "") for i in ids], dtype=object)
