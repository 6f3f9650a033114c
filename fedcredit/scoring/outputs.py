"""What a job leaves behind at each node: its own model part and, at the bank, the scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from fedcredit.atomic import atomic_write_bytes
from fedcredit.data.binning import FeaturePrep
from fedcredit.data.io import write_table


def write_model_part(folder: Path, role: str, prep: FeaturePrep, labels: list[str], weights: np.ndarray) -> None:
    """``prep.json`` (this node's binning) and ``weights.json`` (its parameters, one per design column)."""
    atomic_write_bytes(folder / "prep.json", prep.to_json().encode())
    doc = {"role": role, "parameters": [{"column": c, "weight": float(w)} for c, w in zip(labels, weights)]}
    atomic_write_bytes(folder / "weights.json", json.dumps(doc, indent=1).encode())


def write_scores(path: Path, ids: np.ndarray, split: np.ndarray, scores: np.ndarray) -> None:
    """The bank's scores of every aligned enterprise: ``id``, ``split``, ``score`` (probability of default)."""
    names = np.array(["train", "validation", "test"], dtype=object)
    table = pa.table({"id": pa.array(list(ids), pa.string()), "split": pa.array(names[split].tolist(), pa.string()),
                      "score": pa.array(np.asarray(scores, dtype=float))})
    write_table(table, path, "parquet")
