"""Local feature preparation at each node: quantile binning (the scorecard default) or standardization.

Bins are fitted on the node's own training rows only and never leave the node.
Binned features become one-hot design columns (encrypted gradients are then grouped
sums); missing values get their own bin, and unseen categories fall into it too.
Standardized features become a fixed-point integer matrix (encrypted gradients are
multi-exponentiations). WoE features are one column per feature holding its bin's weight of
evidence (encrypted gradients: grouped sums, then a small dot product).

Quantile bins may be merged afterwards (``bin_map``): bins holding less than a minimum share
of the training rows are merged before any count leaves the node (``merge_small_bins``,
label-free), and the bank may merge adjacent bins further until WoE is monotone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fedcredit.common.errors import FedCreditError

MODES = ("binned", "standardized", "woe")
WOE_SCALE_BITS = 12  # WoE design values are quantized to multiples of 2^-12
STANDARD_SCALE_BITS = 8  # standardized values are quantized to multiples of 2^-8
STANDARD_CLIP = 8.0


@dataclass
class FeatureSpec:
    """How one column is turned into design columns."""

    name: str
    kind: str  # "numeric" or "category"
    edges: list[float] = field(default_factory=list)  # numeric bins: right-open edges
    categories: list[str] = field(default_factory=list)
    mean: float = 0.0
    std: float = 1.0
    bin_map: list[int] = field(default_factory=list)  # raw bin -> merged bin (empty: no merging)
    woe: list[float] = field(default_factory=list)  # weight of evidence per (merged) bin, once computed

    def raw_n_bins(self) -> int:
        """Value bins plus the missing/unknown bin, before any merging."""
        return (len(self.edges) + 1 if self.kind == "numeric" else len(self.categories)) + 1

    def n_bins(self) -> int:
        """Bins after merging (the last raw bin is missing/unknown)."""
        return max(self.bin_map) + 1 if self.bin_map else self.raw_n_bins()

    def raw_labels(self) -> list[str]:
        if self.kind == "category":
            return [*self.categories, "missing/other"]
        bounds = [-np.inf, *self.edges, np.inf]
        return [f"[{bounds[i]:.6g}, {bounds[i + 1]:.6g})" for i in range(len(bounds) - 1)] + ["missing"]

    def bin_labels(self) -> list[str]:
        """One label per (merged) bin: a value range (numeric, with "or missing" when merged in) or categories."""
        raw = self.raw_labels()
        if not self.bin_map:
            return raw
        groups = [[r for r, b in enumerate(self.bin_map) if b == k] for k in range(self.n_bins())]
        if self.kind == "category":
            return [", ".join(raw[r] for r in g) for g in groups]
        missing = self.raw_n_bins() - 1
        bounds = [-np.inf, *self.edges, np.inf]
        labels = []
        for g in groups:
            values = [r for r in g if r != missing]
            text = f"[{bounds[values[0]]:.6g}, {bounds[values[-1] + 1]:.6g})" if values else ""
            labels.append(" or ".join(t for t in (text, "missing" if missing in g else "") if t) or "empty")
        return labels

    def map_bins(self, raw: np.ndarray) -> np.ndarray:
        """Merged bin of raw bin indices."""
        return np.asarray(self.bin_map, dtype=np.int64)[raw] if self.bin_map else raw


class FeaturePrep:
    """A node's fitted preparation: binning or standardization of its feature columns."""

    def __init__(self, mode: str, specs: list[FeatureSpec]):
        if mode not in MODES:
            raise FedCreditError(f"feature mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.mode = mode
        self.specs = specs

    @classmethod
    def fit(cls, frame: pd.DataFrame, mode: str = "binned", n_bins: int = 10, categorical=()) -> "FeaturePrep":
        """Fit on the training rows of ``frame``; object/category columns and ``categorical`` are categories."""
        if n_bins < 2:
            raise FedCreditError(f"n_bins must be at least 2, got {n_bins}")
        specs = []
        for name in frame.columns:
            col = frame[name]
            if name in categorical or not pd.api.types.is_numeric_dtype(col):
                cats = sorted(str(v) for v in col.dropna().unique())
                specs.append(FeatureSpec(name, "category", categories=cats))
                continue
            values = col.to_numpy(dtype=float)
            finite = values[np.isfinite(values)]
            if finite.size == 0:
                specs.append(FeatureSpec(name, "numeric"))
                continue
            edges = np.unique(np.quantile(finite, np.linspace(0, 1, n_bins + 1)[1:-1]))
            specs.append(FeatureSpec(name, "numeric", edges=[float(e) for e in edges],
                                     mean=float(finite.mean()), std=float(finite.std()) or 1.0))
        return cls(mode, specs)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.specs]

    @property
    def n_features(self) -> int:
        return len(self.specs)

    def bins(self, frame: pd.DataFrame) -> np.ndarray:
        """Bin index of every cell (rows × features); the last bin of a feature is missing/unknown."""
        self._check_columns(frame)
        out = np.empty((len(frame), len(self.specs)), dtype=np.int64)
        for j, spec in enumerate(self.specs):
            col = frame[spec.name]
            missing_bin = spec.raw_n_bins() - 1
            if spec.kind == "category":
                lookup = {c: i for i, c in enumerate(spec.categories)}
                out[:, j] = [lookup.get(str(v), missing_bin) if pd.notna(v) else missing_bin for v in col.tolist()]
            else:
                values = col.to_numpy(dtype=float)
                b = np.searchsorted(np.asarray(spec.edges), values, side="right")
                out[:, j] = np.where(np.isfinite(values), b, missing_bin)
            out[:, j] = spec.map_bins(out[:, j])
        return out

    def matrix(self, frame: pd.DataFrame) -> np.ndarray:
        """Standardized mode: integer design matrix at scale 2^STANDARD_SCALE_BITS (categories one-hot)."""
        self._check_columns(frame)
        cols = []
        one = 1 << STANDARD_SCALE_BITS
        for j, spec in enumerate(self.specs):
            if spec.kind == "category":
                codes = FeaturePrep("binned", [spec]).bins(frame[[spec.name]])[:, 0]
                cols.append(np.eye(spec.n_bins(), dtype=np.int64)[codes] * one)
                continue
            values = frame[spec.name].to_numpy(dtype=float)
            z = np.clip(np.nan_to_num((values - spec.mean) / spec.std, nan=0.0), -STANDARD_CLIP, STANDARD_CLIP)
            cols.append(np.round(z * one).astype(np.int64)[:, None])
            cols.append((~np.isfinite(values)).astype(np.int64)[:, None] * one)  # missing indicator
        return np.hstack(cols) if cols else np.zeros((len(frame), 0), dtype=np.int64)

    def column_labels(self) -> list[str]:
        """A label per design column (bins, or standardized columns and missing indicators)."""
        if self.mode == "binned":
            return [f"{s.name} {label}" for s in self.specs for label in s.bin_labels()]
        if self.mode == "woe":
            return [f"{s.name} (WoE)" for s in self.specs]
        labels = []
        for s in self.specs:
            labels += [f"{s.name}={c}" for c in s.bin_labels()] if s.kind == "category" else [s.name, f"{s.name} missing"]
        return labels

    def subset(self, names: list[str], mode: str | None = None) -> "FeaturePrep":
        """The same preparation restricted to ``names`` (feature selection), optionally in another mode."""
        keep = set(names)
        return FeaturePrep(mode or self.mode, [s for s in self.specs if s.name in keep])

    def _check_columns(self, frame: pd.DataFrame) -> None:
        missing = [n for n in self.names if n not in frame.columns]
        if missing:
            raise FedCreditError(f"feature columns missing from the data: {', '.join(missing)}")

    def to_json(self) -> str:
        return json.dumps({"mode": self.mode, "specs": [s.__dict__ for s in self.specs]}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "FeaturePrep":
        doc = json.loads(text)
        return cls(doc["mode"], [FeatureSpec(**s) for s in doc["specs"]])


def merge_small_bins(spec: FeatureSpec, counts: np.ndarray, min_count: float) -> list[int]:
    """A label-free ``bin_map`` so that no non-empty bin holds fewer than ``min_count`` training rows.

    Counts are the node's own rows per raw bin; nothing about labels is used, so a node
    applies this before any count of its leaves it. Numeric value bins merge with their
    smaller neighbour (order is kept); a small missing bin joins the highest value bin (the
    tree splits already rank missing above every value); small categories pool into one
    group that joins "missing/other" while still too small. An empty missing bin stays on
    its own (it describes no enterprise). Returns the map of raw bin -> merged bin.
    """
    counts = np.asarray(counts, dtype=float)
    last = len(counts) - 1
    if spec.kind == "category":
        groups = [[r] for r in range(last) if counts[r] >= min_count]
        small = [r for r in range(last) if counts[r] < min_count and counts[r] > 0]
        other = [last] + [r for r in range(last) if counts[r] == 0]
        if small and counts[small].sum() >= min_count:
            groups.append(small)
        else:
            other += small
        if 0 < counts[other].sum() < min_count and groups:
            smallest = min(range(len(groups)), key=lambda k: counts[groups[k]].sum())
            groups[smallest] += other
        else:
            groups.append(other)
    else:
        groups = [[r] for r in range(last)]
        while len(groups) > 1:
            sizes = [counts[g].sum() for g in groups]
            k = int(np.argmin(sizes))
            if sizes[k] >= min_count:
                break
            left, right = sizes[k - 1] if k > 0 else np.inf, sizes[k + 1] if k + 1 < len(groups) else np.inf
            j = k - 1 if left <= right else k + 1
            a, b = min(j, k), max(j, k)
            groups[a:b + 1] = [groups[a] + groups[b]]
        if 0 < counts[last] < min_count:
            groups[-1] = groups[-1] + [last]
        else:
            groups.append([last])
    order = sorted(groups, key=min)
    mapping = [0] * len(counts)
    for k, group in enumerate(order):
        for r in group:
            mapping[r] = k
    return mapping
