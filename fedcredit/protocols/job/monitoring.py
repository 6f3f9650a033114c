"""Feature stability at the node that owns the feature: the bin shares stay there, only the index leaves.

At the end of every training and scoring run each node writes, into its own out folder,
the share of the run's aligned (published) population in each bin of each of its model
features: ``<out_dir>/monitor/<role>.json``. In a scoring run it also reads the previous
publication's file (``NodeConfig.previous_dir``, default the training run's folder) and
sends the coordinator one number per feature, the characteristic stability index (CSI) —
never the shares. A host that keeps its feature names private labels them ``<role> f<j>``
(j: the feature's place in its model part, the same in every run of the model).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np

from fedcredit.common.atomic import atomic_write_bytes
from fedcredit.common.errors import FedCreditError, ProtocolError
from fedcredit.common.wire import Message
from fedcredit.protocols import vertical_lr
from fedcredit.protocols.job.settings import SCORED, NodeConfig
from fedcredit.scoring.stability import characteristic_index, feature_bin_shares

FOLDER = "monitor"
FORMAT = "fedcredit-feature-shares"


def feature_labels(role: str, names: list[str], publish_names: bool) -> list[str]:
    """How this node's model features are named outside it: by name (the bank; a host that publishes its
    names), else ``<role> f<j>``."""
    if role == vertical_lr.BANK or publish_names:
        return list(names)
    return [f"{role} f{j}" for j in range(len(names))]


def previous_folder(config: NodeConfig) -> Path | None:
    """Where the previous publication's run left this node's outputs: ``previous_dir``, else the training
    run's folder (two levels above the saved model part)."""
    if config.previous_dir:
        return Path(config.previous_dir)
    return Path(config.model_dir).parent.parent if config.model_dir else None


def report_stability(config: NodeConfig, run_id: str, prep, features, aligned_rows: np.ndarray,
                     split: np.ndarray) -> dict:
    """This node's part of ``job.reported`` on stability; writes its bin shares when it has an out folder.

    Training runs: nothing to report (``{}``). Scoring runs: ``{"csi": {label: value}}`` against the
    previous publication's shares, or ``{"csi_note": why}`` when there are none to compare with.
    """
    if prep is None or aligned_rows is None or not prep.specs or len(aligned_rows) == 0:
        return {}
    labels = feature_labels(config.role, prep.names, config.publish_feature_names)
    frame = features.iloc[aligned_rows].reset_index(drop=True)
    shares = feature_bin_shares("aligned", prep.bins(frame), [s.n_bins() for s in prep.specs], labels)
    bins = _fingerprint(prep)
    scoring = bool(np.all(split == SCORED))
    previous = _read_previous(previous_folder(config), config.role) if scoring else None
    model = previous.get("model") if previous is not None and previous.get("bins") == bins else None
    if config.out_dir:
        doc = {"format": FORMAT, "run_id": run_id, "model": run_id if not scoring else model, "bins": bins,
               "features": {label: [float(v) for v in share] for label, share in zip(labels, shares)}}
        atomic_write_bytes(Path(config.out_dir) / FOLDER / f"{config.role}.json",
                           (json.dumps(doc, indent=1) + "\n").encode())
    if not scoring:
        return {}
    if previous is None:
        return {"csi_note": "no bin shares of the previous publication at this node (a model trained before "
                            "monitoring, or no previous run there): no CSI"}
    if previous.get("bins") != bins:
        return {"csi_note": "the previous publication's bin shares at this node are of other bins (another model): "
                            "no CSI"}
    old = previous["features"]
    return {"csi": {label: round(characteristic_index(old[label], share, label), 6)
                    for label, share in zip(labels, shares) if label in old}}


def _fingerprint(prep) -> str:
    """SHA-256 of the node's bins (its saved preparation): shares compare only over the same bins."""
    canonical = json.dumps(json.loads(prep.to_json()), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _read_previous(folder: Path | None, role: str) -> dict | None:
    """The previous publication's shares of this node (None when the file is absent)."""
    if folder is None:
        return None
    path = folder / FOLDER / f"{role}.json"
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise FedCreditError(f"{path}: unreadable bin shares of the previous publication ({exc})") from None
    features = doc.get("features") if isinstance(doc, dict) else None
    if not isinstance(features, dict) or doc.get("format") != FORMAT or not all(
            isinstance(v, list) and all(isinstance(x, (int, float)) for x in v) for v in features.values()):
        raise FedCreditError(f"{path}: expected {FORMAT!r} with features mapping each label to its bin shares")
    return doc


def collect_csi(reported: dict[str, Message]) -> dict:
    """The coordinator's view of every node's stability report: ``{"csi": {role: {label: value}}}`` and,
    for nodes that had nothing to compare with, ``{"csi_notes": {role: why}}``. Anything but one
    finite, non-negative number per label is refused (bin shares never reach the coordinator). A
    training run's nodes report none: ``{}``."""
    csi, notes = {}, {}
    for role, msg in reported.items():
        values, note = msg.meta.get("csi"), msg.meta.get("csi_note")
        if note is not None:
            if not isinstance(note, str) or values is not None:
                raise ProtocolError(f"{msg.describe()}: csi_note must be a text, sent instead of csi")
            notes[role] = note[:200]
        if values is None:
            continue
        if not isinstance(values, dict) or not all(
                isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
                and math.isfinite(v) and v >= 0 for k, v in values.items()):
            raise ProtocolError(f"{msg.describe()}: csi must map each feature label to one non-negative number")
        csi[role] = {k: float(v) for k, v in values.items()}
    if not csi and not notes:  # a training run: nothing to compare with yet
        return {}
    return {"csi": csi, **({"csi_notes": notes} if notes else {})}
