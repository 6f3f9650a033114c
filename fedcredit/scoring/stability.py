"""Population stability index (PSI): has the scored population drifted from the one the model was built on?

A model is only trustworthy on enterprises that look like those it was trained on. Credit
teams check this with the PSI between a reference score distribution (training) and the
population being scored:

    PSI = sum over bins of (actual% - expected%) * ln(actual% / expected%)

Bins are quantiles of the *expected* (reference) population, so each holds about the same
share of it. An empty bin would make the logarithm infinite; shares are floored at
``EPSILON`` instead. Customary reading (the thresholds are conventions, not statistics):

- PSI < 0.10: stable, no action;
- 0.10 <= PSI <= 0.25: moderate shift, investigate;
- PSI > 0.25: significant shift, the model should not be trusted on this population
  without review.

Quantile bins make the index depend only on the ranks of the scores: it is the same for
PD, points or log-odds, as long as both populations are on the same scale.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fedcredit.common.errors import FedCreditError

EPSILON = 1e-4
"""Floor for a bin's share, so an empty bin adds a large but finite term."""

STABLE, MODERATE = 0.10, 0.25
"""Upper bounds of the 'stable' and 'moderate shift' bands."""


def _values(name: str, scores) -> np.ndarray:
    values = np.asarray(scores, dtype=float).ravel()
    if values.size == 0:
        raise FedCreditError(f"PSI needs scores in the {name} population, got none")
    if not np.all(np.isfinite(values)):
        raise FedCreditError(f"the {name} scores contain NaN or infinite values")
    return values


def _edges(expected: np.ndarray, bins: int) -> np.ndarray:
    """Inner bin edges: quantiles of the expected scores, duplicates (from ties) merged."""
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise FedCreditError(f"bins must be a positive integer, got {bins!r}")
    inner = np.quantile(expected, np.arange(1, bins) / bins)
    return np.unique(inner)


def _shares(values: np.ndarray, inner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Right-closed bins: a score equal to an edge falls in the lower bin.
    index = np.searchsorted(inner, values, side="left")
    counts = np.bincount(index, minlength=len(inner) + 1)
    return counts, counts / values.size


def psi_table(expected_scores, actual_scores, bins: int = 10) -> pd.DataFrame:
    """One row per bin: ``bin``, ``lower``, ``upper``, ``range``, counts, shares and ``contribution``.

    ``lower``/``upper`` are the bin's bounds (the outer ones infinite, so every actual score
    lands in some bin); the bin holds scores in ``(lower, upper]``. ``contribution`` sums to
    the PSI. Fewer than ``bins`` rows come back when ties in the expected scores merge
    quantiles.
    """
    expected = _values("expected (reference)", expected_scores)
    actual = _values("actual (scoring)", actual_scores)
    inner = _edges(expected, bins)
    exp_counts, exp_share = _shares(expected, inner)
    act_counts, act_share = _shares(actual, inner)
    lower = np.concatenate([[-np.inf], inner])
    upper = np.concatenate([inner, [np.inf]])
    return pd.DataFrame({
        "bin": np.arange(1, len(lower) + 1),
        "lower": lower,
        "upper": upper,
        "range": [_range(lo, hi) for lo, hi in zip(lower, upper)],
        "expected_count": exp_counts,
        "actual_count": act_counts,
        "expected_share": exp_share,
        "actual_share": act_share,
        "contribution": psi_terms(exp_share, act_share),
    })


def psi_terms(expected_share, actual_share) -> np.ndarray:
    """Each bin's term (a - e) * ln(a / e), shares floored at ``EPSILON``; the terms sum to the index.

    Shared by the score PSI above and the per-feature CSI (``characteristic_index``: the model
    document's training vs test rows, and monitoring's previous publication vs this run), so all read alike.
    """
    e = np.maximum(np.asarray(expected_share, dtype=float), EPSILON)
    a = np.maximum(np.asarray(actual_share, dtype=float), EPSILON)
    return (a - e) * np.log(a / e)


def feature_bin_shares(rows: str, bins, n_bins: list[int], names: list[str]) -> list[np.ndarray]:
    """Each feature's share of the rows in each of its bins (a list of arrays, one per feature of ``names``).

    ``bins``: bin indices (0 .. n_bins[j] - 1), one row per enterprise and one column per
    feature; ``rows`` names the population in errors ("training", "scored", …).
    """
    n_bins = [int(k) for k in n_bins]
    if len(n_bins) != len(names):
        raise FedCreditError(f"characteristic_stability: {len(names)} feature names but {len(n_bins)} bin counts")
    matrix = _bin_matrix(rows, bins, names)
    return [_bin_shares(rows, matrix[:, j], k, name) for j, (name, k) in enumerate(zip(names, n_bins))]


def characteristic_index(expected_share, actual_share, name: str) -> float:
    """CSI of one feature from its bin shares in the reference and the current population (same bins)."""
    e, a = np.asarray(expected_share, dtype=float), np.asarray(actual_share, dtype=float)
    if e.shape != a.shape or e.ndim != 1:
        raise FedCreditError(f"characteristic stability of {name!r}: {e.size} reference bins but {a.size} current bins "
                             "(the shares must come from the same bins)")
    return float(psi_terms(e, a).sum())


def _bin_matrix(rows: str, bins, names: list[str]) -> np.ndarray:
    values = np.asarray(bins)
    if values.ndim != 2 or values.shape[1] != len(names):
        raise FedCreditError(f"characteristic_stability: the {rows} bins must be a (rows, {len(names)}) array of "
                             f"bin indices, one column per feature; got shape {values.shape}")
    if values.shape[0] == 0:
        raise FedCreditError(f"characteristic_stability: no {rows} rows")
    if not np.issubdtype(values.dtype, np.integer):
        as_float = values.astype(float)
        if not np.all(np.isfinite(as_float)) or not np.all(as_float == np.round(as_float)):
            raise FedCreditError(f"characteristic_stability: the {rows} bins must be integer bin indices")
    return values.astype(np.int64)


def _bin_shares(rows: str, column: np.ndarray, k: int, name: str) -> np.ndarray:
    outside = (column < 0) | (column >= k)
    if outside.any():
        raise FedCreditError(f"characteristic_stability: feature {name!r} has {k} bins (0..{k - 1}) but the {rows} "
                             f"rows hold bin {int(column[outside][0])}")
    return np.bincount(column, minlength=k) / column.size


def population_stability_index(expected_scores, actual_scores, bins: int = 10) -> float:
    """PSI of ``actual_scores`` against ``expected_scores`` (see the module docstring for thresholds)."""
    return float(psi_table(expected_scores, actual_scores, bins)["contribution"].sum())


def interpret_psi(value: float) -> str:
    """The customary reading of a PSI value: 'stable', 'moderate shift' or 'significant shift'."""
    if value < STABLE:
        return "stable"
    if value <= MODERATE:
        return "moderate shift"
    return "significant shift"


def _range(lower: float, upper: float) -> str:
    if np.isinf(lower) and np.isinf(upper):
        return "all"
    if np.isinf(lower):
        return f"≤ {upper:.4g}"
    if np.isinf(upper):
        return f"> {lower:.4g}"
    return f"({lower:.4g}, {upper:.4g}]"
