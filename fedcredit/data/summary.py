"""Plain descriptive figures of a set of node tables (the demo's summary).

This reads every node's IDs in one process, which only the embedded demo on
synthetic data may do; a real federation learns its overlap through PSI.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np

from fedcredit.data.validate import NodeData


@dataclass(frozen=True)
class NodeFigures:
    role: str
    rows: int
    features: int
    missing_share: float
    default_rate: float | None


def node_figures(node: NodeData) -> NodeFigures:
    feats = node.features
    missing = float(feats.isna().to_numpy().mean()) if feats.size else 0.0
    rate = float(node.label.mean()) if node.label is not None else None
    return NodeFigures(node.role, len(node), feats.shape[1], missing, rate)


def overlaps(nodes: dict[str, NodeData]) -> dict[tuple[str, ...], int]:
    """Number of enterprises shared by every pair of nodes and by all of them."""
    sets = {role: set(node.ids.tolist()) for role, node in nodes.items()}
    out: dict[tuple[str, ...], int] = {}
    for k in range(2, len(sets) + 1):
        for group in combinations(sets, k):
            out[group] = len(set.intersection(*(sets[r] for r in group)))
    return out


def default_rate_on(bank: NodeData, ids: set) -> float:
    """The bank's default rate restricted to ``ids`` (e.g. the all-node overlap)."""
    mask = np.fromiter((i in ids for i in bank.ids), dtype=bool, count=len(bank.ids))
    return float(bank.label[mask].mean()) if mask.any() else float("nan")


def common_ids(nodes: dict[str, NodeData]) -> set:
    """IDs known to every node."""
    return set.intersection(*(set(node.ids.tolist()) for node in nodes.values()))
