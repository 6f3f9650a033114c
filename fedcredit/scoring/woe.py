"""Weight of evidence, information value, monotone bin merging and IV-based feature selection.

Pure arithmetic on per-bin counts, so the bank runs it on counts it decrypted from a host
exactly as a centralized computation runs it on pooled data: both give the same numbers.

Conventions (docs/job.md): ``WoE = ln(share of goods / share of bads)`` per bin, so a higher
WoE means a safer bin; ``IV = Σ (goods% − bads%) · WoE``. A bin without goods or without
bads counts as holding half of one (the usual correction, so WoE stays finite); an empty
bin has WoE 0 and adds nothing. Readings: < 0.02 useless, 0.02–0.1 weak, 0.1–0.3 medium,
> 0.3 strong.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedcredit.common.errors import FedCreditError

TRENDS = ("auto", "ascending", "descending")


@dataclass(frozen=True)
class BinStats:
    """One feature's WoE and IV per bin, from its events (defaults) and row counts per bin."""

    events: np.ndarray
    counts: np.ndarray
    woe: np.ndarray
    iv_terms: np.ndarray

    @property
    def iv(self) -> float:
        return float(self.iv_terms.sum())


def bin_stats(events, counts) -> BinStats:
    """WoE and IV per bin; ``events[b] ≤ counts[b]`` (integers)."""
    events, counts = np.asarray(events, dtype=np.int64), np.asarray(counts, dtype=np.int64)
    if events.shape != counts.shape or np.any(events < 0) or np.any(events > counts):
        raise FedCreditError(f"bin statistics: events {events.tolist()} must lie between 0 and the counts {counts.tolist()}")
    goods = counts - events
    total_goods, total_bads = goods.sum(), events.sum()
    woe = np.zeros(len(counts))
    iv = np.zeros(len(counts))
    if total_goods and total_bads:
        filled = counts > 0
        g = np.maximum(goods, 0.5) / total_goods
        b = np.maximum(events, 0.5) / total_bads
        woe[filled] = np.log(g[filled] / b[filled])
        iv[filled] = (goods[filled] / total_goods - events[filled] / total_bads) * woe[filled]
    return BinStats(events, counts, woe, iv)


def merge_stats(events, counts, mapping) -> tuple[np.ndarray, np.ndarray]:
    """Events and counts of merged bins (``mapping``: bin -> merged bin)."""
    mapping = np.asarray(mapping, dtype=np.int64)
    size = int(mapping.max()) + 1 if len(mapping) else 0
    return (np.bincount(mapping, weights=events, minlength=size).astype(np.int64),
            np.bincount(mapping, weights=counts, minlength=size).astype(np.int64))


def monotone_map(events, counts, ordered: int, trend: str = "auto") -> tuple[list[int], str]:
    """Merge adjacent bins among the first ``ordered`` ones (the value bins, in value order) until WoE is
    monotone; bins after them (a separate missing bin) stay as they are.

    ``trend`` ascending (WoE rises with the value, risk falls), descending, or auto: the
    direction whose merged bins keep the higher IV. Pool-adjacent-violators on the event
    rates: each merge joins a bin with its neighbour that breaks the order, so the result is
    the finest monotone partition. Returns (map of bin -> merged bin, the trend used).
    """
    if trend not in TRENDS:
        raise FedCreditError(f"monotone trend must be one of {', '.join(TRENDS)}, got {trend!r}")
    events, counts = np.asarray(events, dtype=np.int64), np.asarray(counts, dtype=np.int64)
    if trend == "auto":
        best = None
        for candidate in ("ascending", "descending"):
            mapping, _ = monotone_map(events, counts, ordered, candidate)
            iv = bin_stats(*merge_stats(events, counts, mapping)).iv
            if best is None or iv > best[0] + 1e-12:
                best = (iv, mapping, candidate)
        return best[1], best[2]
    sign = 1.0 if trend == "ascending" else -1.0  # ascending WoE = falling event rate
    blocks: list[list[int]] = []  # each: [events, counts, first bin]
    for b in range(ordered):
        blocks.append([int(events[b]), int(counts[b]), b])
        while len(blocks) > 1 and _violates(blocks[-2], blocks[-1], sign):
            e, n, _ = blocks.pop()
            blocks[-1][0] += e
            blocks[-1][1] += n
    mapping = [0] * len(counts)
    starts = [blk[2] for blk in blocks] + [ordered]
    for k in range(len(blocks)):
        for b in range(starts[k], starts[k + 1]):
            mapping[b] = k
    for extra, b in enumerate(range(ordered, len(counts))):
        mapping[b] = len(blocks) + extra
    return mapping, trend


def _violates(left: list, right: list, sign: float) -> bool:
    """True when the event rate does not fall (ascending WoE) or rise (descending) from ``left`` to ``right``.
    Empty blocks always merge: they have no rate."""
    if left[1] == 0 or right[1] == 0:
        return True
    return sign * (right[0] / right[1] - left[0] / left[1]) >= 0


@dataclass(frozen=True)
class Selection:
    """Per feature: kept or not, and why (one line a reviewer can read)."""

    kept: list[bool]
    reasons: list[str]


def select_features(ivs, bins, min_iv: float, top_k: int = 0, correlation=None, max_correlation: float = 1.0,
                    names=None) -> Selection:
    """Drop features with fewer than two bins or IV below ``min_iv`` (0: keep all that carry any bins), then,
    strongest first, any feature correlated above ``max_correlation`` (absolute, 1: off) with a kept
    stronger one, then all but the ``top_k`` strongest (0: no limit)."""
    ivs = np.asarray(ivs, dtype=float)
    names = list(names) if names is not None else [f"feature {j}" for j in range(len(ivs))]
    kept, reasons = [True] * len(ivs), ["kept"] * len(ivs)
    for j, (iv, nb) in enumerate(zip(ivs, bins)):
        if nb < 2:
            kept[j], reasons[j] = False, "a single bin after merging (no information)"
        elif iv < min_iv:
            kept[j], reasons[j] = False, f"IV {iv:.4f} below min_iv {min_iv:g}"
    order = [j for j in np.argsort(-ivs, kind="stable") if kept[j]]
    if correlation is not None and max_correlation < 1.0:
        chosen: list[int] = []
        for j in order:
            worst = max(chosen, key=lambda k: abs(correlation[j, k]), default=None)
            if worst is not None and abs(correlation[j, worst]) > max_correlation:
                kept[j] = False
                reasons[j] = f"correlation {correlation[j, worst]:+.2f} with {names[worst]} (higher IV)"
            else:
                chosen.append(j)
        order = chosen
    if top_k and len(order) > top_k:
        for j in order[top_k:]:
            kept[j], reasons[j] = False, f"not among the top {top_k} by IV"
    return Selection(kept, reasons)


def woe_correlation(bins: np.ndarray, woe: list[np.ndarray]) -> np.ndarray:
    """Pearson correlation of the WoE-encoded features (rows × features of bin indices); constant ones 0."""
    if bins.shape[1] == 0:
        return np.zeros((0, 0))
    x = np.column_stack([np.asarray(w, dtype=float)[bins[:, j]] for j, w in enumerate(woe)])
    x = x - x.mean(axis=0)
    norm = np.sqrt((x * x).sum(axis=0))
    norm[norm == 0] = np.inf
    x = x / norm
    return x.T @ x
