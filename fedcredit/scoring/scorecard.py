"""Scorecard scaling (PD <-> points), grade bands and the tables credit committees read.

Credit teams do not act on probabilities: they act on points and grades whose meaning is
fixed by convention. The usual convention, used here, ties points to the odds of being
good: ``base_points`` at odds ``base_odds``:1 and every ``pdo`` more points doubles the
odds (defaults: 600 points at 50:1, 20 points to double). Grades then cut the points axis
into bands that a limit policy can attach caps and risk sharing to.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd_

from fedcredit.common.errors import FedCreditError

#: PDs of exactly 0 or 1 would map to infinite points; they are clipped this far inside (0, 1).
PD_EPS = 1e-12

DEFAULT_GRADES = ("A", "B", "C", "D")
#: Minimum points of A, B and C (D is everything below). With the default scaling these are
#: PD <= 0.99 % (odds 100:1), PD <= 2.75 % (about 35:1) and PD <= 7.4 % (12.5:1).
DEFAULT_MIN_POINTS = (620.0, 590.0, 560.0)


class ScorecardError(FedCreditError):
    """Invalid scorecard settings, grade bands or inputs to them."""


def _finite_number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ScorecardError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ScorecardError(f"{name} must be finite, got {value!r}")
    return value


def _pd_array(pd, name: str = "pd") -> np.ndarray:
    arr = np.asarray(pd, dtype=float)
    if arr.ndim > 1:
        raise ScorecardError(f"{name} must be a scalar or 1-D, got shape {arr.shape}")
    bad = ~((arr >= 0.0) & (arr <= 1.0))  # also catches NaN
    if np.any(bad):
        first = np.atleast_1d(arr)[np.atleast_1d(bad)][0]
        raise ScorecardError(f"{name} must lie in [0, 1]; found {first!r} ({int(np.sum(bad))} value(s) outside)")
    return arr


@dataclass(frozen=True)
class Scorecard:
    """Points = offset + factor * ln(odds of good), factor = pdo / ln 2, offset = base - factor * ln(base_odds)."""

    base_points: float = 600.0
    base_odds: float = 50.0
    pdo: float = 20.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "base_points", _finite_number(self.base_points, "base_points"))
        object.__setattr__(self, "base_odds", _finite_number(self.base_odds, "base_odds"))
        object.__setattr__(self, "pdo", _finite_number(self.pdo, "pdo"))
        if self.base_odds <= 0:
            raise ScorecardError(f"base_odds must be > 0 (odds good:bad), got {self.base_odds!r}")
        if self.pdo <= 0:
            raise ScorecardError(f"pdo (points to double the odds) must be > 0, got {self.pdo!r}")

    @property
    def factor(self) -> float:
        return self.pdo / math.log(2.0)

    @property
    def offset(self) -> float:
        return self.base_points - self.factor * math.log(self.base_odds)

    def points(self, pd) -> np.ndarray:
        """Points of each PD (vectorized). PDs of 0 or 1 are clipped by ``PD_EPS`` so points stay finite."""
        p = np.clip(_pd_array(pd), PD_EPS, 1.0 - PD_EPS)
        return self.offset + self.factor * (np.log1p(-p) - np.log(p))

    def pd(self, points) -> np.ndarray:
        """Inverse of :meth:`points`: PD = 1 / (1 + odds), odds = exp((points - offset) / factor)."""
        s = np.asarray(points, dtype=float)
        if np.any(np.isnan(s)):
            raise ScorecardError("points must not be NaN")
        # 1 / (1 + exp(z)) without overflow for large |z|
        z = (s - self.offset) / self.factor
        e = np.exp(-np.abs(z))
        return np.where(z >= 0, e / (1.0 + e), 1.0 / (1.0 + e))


@dataclass(frozen=True)
class GradeBands:
    """Grades from best to worst; ``min_points[i]`` is the lowest score that still earns ``grades[i]``.

    The last grade has no minimum: it takes every score below the previous band. Bands
    must be strictly ordered so that every score has exactly one grade.
    """

    grades: tuple[str, ...] = DEFAULT_GRADES
    min_points: tuple[float, ...] = DEFAULT_MIN_POINTS

    def __post_init__(self) -> None:
        grades, mins = tuple(self.grades), tuple(self.min_points)
        if len(grades) < 1:
            raise ScorecardError("at least one grade is needed")
        for g in grades:
            if not isinstance(g, str) or not g or len(g) > 16 or not all(c.isalnum() or c in "+-_" for c in g):
                raise ScorecardError(f"grade names must be 1-16 letters, digits, '+', '-' or '_', got {g!r}")
        if len(set(grades)) != len(grades):
            raise ScorecardError(f"grade names must be unique, got {list(grades)}")
        if len(mins) != len(grades) - 1:
            raise ScorecardError(
                f"{len(grades)} grades need {len(grades) - 1} minimum points (the last grade takes the rest), got {len(mins)}")
        mins = tuple(_finite_number(m, f"minimum points of grade {g!r}") for g, m in zip(grades, mins))
        for i in range(1, len(mins)):
            if not mins[i] < mins[i - 1]:
                raise ScorecardError(
                    f"bands must be strictly decreasing from the best grade: {grades[i]!r} starts at {mins[i]:g} "
                    f"but {grades[i - 1]!r} starts at {mins[i - 1]:g}")
        object.__setattr__(self, "grades", grades)
        object.__setattr__(self, "min_points", mins)

    def assign(self, points) -> np.ndarray:
        """Grade of every score (object array of str)."""
        s = np.atleast_1d(np.asarray(points, dtype=float))
        if np.any(np.isnan(s)):
            raise ScorecardError("points must not be NaN")
        ascending = np.asarray(self.min_points[::-1], dtype=float)
        index = len(ascending) - np.searchsorted(ascending, s, side="right")
        return np.asarray(self.grades, dtype=object)[index]

    def index(self, grades) -> np.ndarray:
        """Position of each grade in best-to-worst order; unknown grades are refused by name."""
        g = np.atleast_1d(np.asarray(grades, dtype=object))
        lookup = {name: i for i, name in enumerate(self.grades)}
        try:
            return np.fromiter((lookup[x] for x in g), dtype=np.int64, count=len(g))
        except KeyError as exc:
            raise ScorecardError(f"unknown grade {exc.args[0]!r}; the bands define {', '.join(self.grades)}") from None


def _labels(y, n: int) -> np.ndarray:
    arr = np.asarray(y)
    if arr.shape != (n,):
        raise ScorecardError(f"labels must be 1-D with one value per PD ({n}), got shape {arr.shape}")
    try:
        num = arr.astype(float)
    except (TypeError, ValueError):
        raise ScorecardError("labels must be 0 (good) or 1 (default)") from None
    if not np.all((num == 0) | (num == 1)):
        raise ScorecardError("labels must be 0 (good) or 1 (default)")
    return num.astype(np.int64)


def calibration_table(pd, y, bins: int = 10) -> pd_.DataFrame:
    """Predicted vs observed default rate in equal-count bins of predicted PD.

    Quantile bins keep every row of the table equally well estimated; ties at bin edges
    can merge bins, so fewer than ``bins`` rows may come back. Columns: ``bin`` (1 = lowest
    PD), ``pd_min``, ``pd_max``, ``count``, ``mean_pd``, ``expected_defaults`` (sum of PD),
    ``defaults``, ``observed_default_rate``.
    """
    p = np.atleast_1d(_pd_array(pd))
    labels = _labels(y, len(p))
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ScorecardError(f"bins must be a positive integer, got {bins!r}")
    if len(p) == 0:
        raise ScorecardError("calibration needs at least one row")
    codes = pd_.qcut(p, q=min(int(bins), len(p)), labels=False, duplicates="drop")
    codes = np.asarray(codes, dtype=float)
    # all PDs equal: qcut finds no edges; everything is one bin
    codes = np.zeros(len(p), dtype=int) if np.isnan(codes).any() else codes.astype(int)
    frame = pd_.DataFrame({"bin": codes + 1, "pd": p, "y": labels})
    out = frame.groupby("bin").agg(pd_min=("pd", "min"), pd_max=("pd", "max"), count=("pd", "size"),
                                   mean_pd=("pd", "mean"), expected_defaults=("pd", "sum"), defaults=("y", "sum"))
    out["observed_default_rate"] = out["defaults"] / out["count"]
    out = out.reset_index()
    out["bin"] = np.arange(1, len(out) + 1)  # renumber after merged bins
    return out


def grade_table(grades, pd, y=None, order=None) -> pd_.DataFrame:
    """Enterprises, share and mean PD per grade; defaults and observed default rate when labels ``y`` are given.

    ``order`` (e.g. ``GradeBands.grades``) lists every grade in display order, including
    grades nobody fell into; without it the grades present are listed sorted.
    """
    g = np.atleast_1d(np.asarray(grades, dtype=object))
    p = np.atleast_1d(_pd_array(pd))
    if g.shape != p.shape:
        raise ScorecardError(f"grades and PDs must have the same length, got {len(g)} and {len(p)}")
    frame = pd_.DataFrame({"grade": g, "pd": p})
    if y is not None:
        frame["y"] = _labels(y, len(p))
    names = list(order) if order is not None else sorted(set(g.tolist()))
    unknown = sorted(set(g.tolist()) - set(names))
    if unknown:
        raise ScorecardError(f"grades {unknown} are not in the given order {names}")
    grouped = frame.groupby("grade")
    out = pd_.DataFrame({"grade": names})
    out["enterprises"] = out["grade"].map(grouped.size()).fillna(0).astype(np.int64)
    out["share"] = out["enterprises"] / max(len(g), 1)
    out["mean_pd"] = out["grade"].map(grouped["pd"].mean()).astype(float)
    if y is not None:
        out["defaults"] = out["grade"].map(grouped["y"].sum()).fillna(0).astype(np.int64)
        with np.errstate(invalid="ignore", divide="ignore"):
            out["observed_default_rate"] = np.where(out["enterprises"] > 0, out["defaults"] / out["enterprises"].clip(lower=1), np.nan)
    return out


def points_table(bins: pd_.DataFrame, grid_weights: list[np.ndarray], coefficients: list, scale_bits: int,
                 scaling: Scorecard, intercept: int | None = None) -> pd_.DataFrame:
    """A node's points per bin: ``points = −factor · weight`` for each bin's effective weight on the scoring grid
    (integers at ``2^scale_bits``). With the bank's ``intercept`` (same grid) a first row holds the base points,
    ``offset − factor · intercept``: base points plus an enterprise's points from every node's table is then its
    published score (``Scorecard.points`` of its probability), up to floating-point rounding.

    ``bins`` has one row per bin of the features in ``grid_weights`` order (feature, bin, range, share, woe,
    iv); ``coefficients`` gives each feature's coefficient (a number) or its one-hot weights (one per bin)."""
    rows = []
    if intercept is not None:
        rows.append({"feature": "(base points)", "bin": None, "range": "", "share": 1.0, "woe": None, "iv": None,
                     "coefficient": math.ldexp(intercept, -scale_bits),
                     "points": scaling.offset - scaling.factor * math.ldexp(intercept, -scale_bits)})
    by_feature = {name: group for name, group in bins.groupby("feature", sort=False)}
    for (name, group), ints, coef in zip(by_feature.items(), grid_weights, coefficients):
        if len(group) != len(ints):
            raise ScorecardError(f"points table: feature {name!r} has {len(group)} bins and {len(ints)} weights")
        for (_, row), weight in zip(group.iterrows(), ints):
            c = coef[int(row["bin"])] if np.ndim(coef) else coef
            rows.append({**row.to_dict(), "coefficient": float(c),
                         "points": 0.0 - scaling.factor * math.ldexp(int(weight), -scale_bits)})  # no "-0.0"
    return pd_.DataFrame(rows, columns=["feature", "bin", "range", "share", "woe", "iv", "coefficient", "points"])
