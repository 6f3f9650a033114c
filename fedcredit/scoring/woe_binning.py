"""One node's scorecard development on its own features: bins, WoE/IV per bin, monotone merges, selection.

The same object serves three places, so their numbers agree by construction:
- a host: label-free small-bin merging and counts, then it adopts the merges, WoE and IV
  that the bank computed from the encrypted label sums, and selects its features;
- the bank: the same on its own features with its own labels;
- the centralized reference: every node's features with the pooled labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedcredit.common.errors import FedCreditError
from fedcredit.data.binning import FeaturePrep, merge_small_bins
from fedcredit.scoring.woe import TRENDS, bin_stats, merge_stats, monotone_map, select_features, woe_correlation

BINNINGS = ("quantile", "monotone")
# a WoE trend as a monotone constraint on the score (log-odds of default) along the bins: rising WoE = falling risk
TREND_DIRECTION = {"ascending": -1, "descending": 1}


def trend_directions(decisions: list["BinDecision"], kept) -> list[int]:
    """Per kept feature, in order, the tree constraint its WoE trend implies (0: no trend, e.g. categories)."""
    return [TREND_DIRECTION.get(d.trend, 0) for d, k in zip(decisions, kept) if k]


@dataclass(frozen=True)
class WoeSettings:
    """How bins are merged and features chosen (the job's ``[model]`` keys of the same names)."""

    binning: str = "quantile"
    trend: str = "auto"
    min_bin_share: float = 0.05
    min_iv: float = 0.02
    top_k: int = 0
    max_correlation: float = 1.0

    def __post_init__(self) -> None:
        checks = [(self.binning in BINNINGS, f"binning must be one of {', '.join(BINNINGS)}, got {self.binning!r}"),
                  (self.trend in TRENDS, f"trend must be one of {', '.join(TRENDS)}, got {self.trend!r}"),
                  (0 <= self.min_bin_share < 0.5, f"min_bin_share must be in [0, 0.5), got {self.min_bin_share!r}"),
                  (self.min_iv >= 0, f"min_iv must be ≥ 0 (0 turns selection off), got {self.min_iv!r}"),
                  (self.top_k >= 0, f"top_k must be ≥ 0 (0: no limit), got {self.top_k!r}"),
                  (0 < self.max_correlation <= 1, f"max_correlation must be in (0, 1] (1: off), got {self.max_correlation!r}")]
        for ok, text in checks:
            if not ok:
                raise FedCreditError(text)


@dataclass(frozen=True)
class BinDecision:
    """What the label holder decided for one feature: merges of its bins, their WoE and IV terms, the trend."""

    bin_map: list[int]
    woe: list[float]
    iv_terms: list[float]
    trend: str

    @property
    def iv(self) -> float:
        return float(sum(self.iv_terms))


def decide(events, counts, ordered: int, settings: WoeSettings) -> BinDecision:
    """Monotone merges (when asked, over the ``ordered`` value bins) and the WoE/IV of the resulting bins."""
    events, counts = np.asarray(events, dtype=np.int64), np.asarray(counts, dtype=np.int64)
    if settings.binning == "monotone" and ordered > 1:
        mapping, trend = monotone_map(events, counts, ordered, settings.trend)
    else:
        mapping, trend = list(range(len(counts))), "none"
    stats = bin_stats(*merge_stats(events, counts, mapping))
    return BinDecision(mapping, stats.woe.tolist(), stats.iv_terms.tolist(), trend)


class NodeBinning:
    """A node's prepared features on its training rows, from quantile bins to the selected WoE features."""

    def __init__(self, prep: FeaturePrep, train_frame: pd.DataFrame, settings: WoeSettings):
        self.prep, self.settings = prep, settings
        self.rows = len(train_frame)
        raw = prep.bins(train_frame)  # no maps yet: the raw quantile bins
        min_count = settings.min_bin_share * self.rows
        for j, spec in enumerate(prep.specs):
            spec.bin_map = merge_small_bins(spec, np.bincount(raw[:, j], minlength=spec.raw_n_bins()), min_count)
        self.bins = np.column_stack([s.map_bins(raw[:, j]) for j, s in enumerate(prep.specs)]) if prep.specs \
            else np.zeros((self.rows, 0), dtype=np.int64)
        self.decisions: list[BinDecision | None] = [None] * len(prep.specs)
        self.selection = None

    @property
    def names(self) -> list[str]:
        return self.prep.names

    def counts(self) -> list[list[int]]:
        """Training rows per (merged) bin of every feature: what a host reveals beside its encrypted label sums."""
        return [np.bincount(self.bins[:, j], minlength=s.n_bins()).tolist() for j, s in enumerate(self.prep.specs)]

    def ordered(self) -> list[int]:
        """Per feature, how many leading bins are value bins in value order (monotone merging may join them):
        a numeric feature's bins but a separate missing one; none for categories."""
        out = []
        for spec in self.prep.specs:
            if spec.kind != "numeric":
                out.append(0)
                continue
            missing = spec.bin_map[spec.raw_n_bins() - 1]
            alone = sum(1 for b in spec.bin_map if b == missing) == 1
            out.append(spec.n_bins() - 1 if alone else spec.n_bins())
        return out

    def check_counts(self, counts: list[list[int]], where: str) -> None:
        """A label holder's check of another node's counts: every row once, no non-empty bin below the minimum share."""
        least = self.settings.min_bin_share * self.rows
        for j, c in enumerate(counts):
            c = np.asarray(c)
            if c.sum() != self.rows or np.any((c > 0) & (c < least)):
                raise FedCreditError(f"{where}: feature {j} has bin counts {c.tolist()}; expected {self.rows} rows in bins "
                                     f"of at least {self.settings.min_bin_share:.0%} of them each")

    def own_events(self, labels: np.ndarray) -> list[np.ndarray]:
        """The label holder's events (defaults) per bin of each of its features."""
        y = np.asarray(labels, dtype=np.int64)
        return [np.bincount(self.bins[:, j], weights=y, minlength=s.n_bins()).astype(np.int64)
                for j, s in enumerate(self.prep.specs)]

    def decide_own(self, labels: np.ndarray) -> list[BinDecision]:
        """The bank's (or a centralized run's) decisions for its own features."""
        counts = self.counts()
        return [decide(e, c, o, self.settings) for e, c, o in zip(self.own_events(labels), counts, self.ordered())]

    def adopt(self, decisions: list[BinDecision]) -> None:
        """Apply the label holder's merges and WoE to this node's bins."""
        if len(decisions) != len(self.prep.specs):
            raise FedCreditError(f"bin decisions for {len(decisions)} features, this node has {len(self.prep.specs)}")
        self.bins = self.bins.copy()  # a restored or shared-memory copy may be read-only
        for j, (spec, d) in enumerate(zip(self.prep.specs, decisions)):
            if len(d.bin_map) != spec.n_bins() or len(d.woe) != max(d.bin_map, default=-1) + 1 \
                    or len(d.iv_terms) != len(d.woe) or sorted(set(d.bin_map)) != list(range(len(d.woe))):
                raise FedCreditError(f"bin decision for feature {j} does not fit its {spec.n_bins()} bins")
            self.bins[:, j] = np.asarray(d.bin_map, dtype=np.int64)[self.bins[:, j]]
            spec.bin_map = [d.bin_map[b] for b in spec.bin_map]
            spec.woe = [float(w) for w in d.woe]
        self.decisions = list(decisions)

    def select(self) -> FeaturePrep:
        """Selection by IV, correlation of WoE values and top-k (job settings); returns the kept features' prep."""
        s = self.settings
        ivs = [d.iv for d in self.decisions]
        corr = woe_correlation(self.bins, [spec.woe for spec in self.prep.specs]) if s.max_correlation < 1 else None
        self.selection = select_features(ivs, [spec.n_bins() for spec in self.prep.specs], s.min_iv, s.top_k, corr,
                                         s.max_correlation, self.names)
        return self.prep.subset([n for n, k in zip(self.names, self.selection.kept) if k])

    def directions(self) -> list[int]:
        """Monotone tree constraints of the selected features, from their WoE trends."""
        return trend_directions(self.decisions, self.selection.kept)

    def selection_table(self) -> pd.DataFrame:
        """Feature, IV, bins, trend, kept, reason (``iv.csv``)."""
        return pd.DataFrame([{"feature": s.name, "iv": d.iv, "bins": s.n_bins(), "trend": d.trend, "kept": k, "reason": r}
                             for s, d, k, r in zip(self.prep.specs, self.decisions, self.selection.kept, self.selection.reasons)],
                            columns=["feature", "iv", "bins", "trend", "kept", "reason"])

    def bin_table(self) -> pd.DataFrame:
        """Feature, bin, range, share of training rows, WoE, IV term: every feature's bins after merging."""
        rows = []
        for j, (spec, d) in enumerate(zip(self.prep.specs, self.decisions)):
            shares = np.bincount(self.bins[:, j], minlength=spec.n_bins()) / max(self.rows, 1)
            for b, label in enumerate(spec.bin_labels()):
                rows.append({"feature": spec.name, "bin": b, "range": label, "share": float(shares[b]),
                             "woe": d.woe[b], "iv": d.iv_terms[b]})
        return pd.DataFrame(rows, columns=["feature", "bin", "range", "share", "woe", "iv"])

