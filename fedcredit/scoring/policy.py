"""Pre-credit limit policy: grade caps, an optional capacity term, risk sharing and expected loss.

A policy is a small TOML file (see docs/limits.md and examples/limits.toml) that a risk
committee signs off, so it is validated strictly: an unknown key is more likely a typo
that silently falls back to a default than an intention, and a wrong cap or share moves
real money. Every error names the file and the key.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd_

from fedcredit.common.errors import FedCreditError
from fedcredit.scoring.scorecard import (DEFAULT_GRADES, DEFAULT_MIN_POINTS, GradeBands, Scorecard,
                                         ScorecardError, _pd_array)

DEFAULT_CAPS_CNY = {"A": 5_000_000, "B": 2_000_000, "C": 500_000, "D": 0}
DEFAULT_SHARING = {"A": "8:2", "B": "6:4", "C": "4:6", "D": "0:10"}
DEFAULT_LGD = 0.45
MISSING_RULES = ("zero", "cap")
MISSING_ANSWERS = ("refer", "decline")  # [missing] answer: an online query about an enterprise a node lacks

_TOP_KEYS = {"lgd", "scorecard", "bands", "caps_cny", "risk_sharing", "capacity", "quality", "monitoring",
             "missing"}
_SCORECARD_KEYS = {"base_points", "base_odds", "pdo"}
_BANDS_KEYS = {"grades", "min_points"}
_CAPACITY_KEYS = {"node", "column", "multiple", "missing"}
_QUALITY_KEYS = {"min_auc", "min_margin_over_bank_only", "grade_order_tolerance"}
_MONITORING_KEYS = {"red_grade_drop", "amber_grade_drop", "red_pd", "csi_watch", "csi_shifted", "psi_watch", "psi_shifted"}
_RATIO = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*:\s*(\d+(?:\.\d+)?)\s*$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,62}$")


class PolicyError(FedCreditError):
    """A limit policy file or value is invalid; the message names the file and the key."""


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class RiskShare:
    """How a loss is split between the guarantee (risk-compensation) fund and the bank; sums to 1."""

    fund: float
    bank: float

    @classmethod
    def parse(cls, value, where: str) -> "RiskShare":
        """``"8:2"`` (any non-negative ratio, normalized) or ``{fund = 0.8, bank = 0.2}`` summing to 1."""
        if isinstance(value, str):
            m = _RATIO.match(value)
            if not m:
                raise PolicyError(f"{where}: expected a fund:bank ratio such as \"8:2\", got {value!r}")
            fund, bank = float(m.group(1)), float(m.group(2))
            if fund + bank <= 0:
                raise PolicyError(f"{where}: ratio {value!r} has no positive part")
            return cls(fund / (fund + bank), bank / (fund + bank))
        if isinstance(value, dict):
            extra = sorted(set(value) - {"fund", "bank"})
            if extra:
                raise PolicyError(f"{where}: unknown key(s) {extra}; expected fund and bank")
            for part in ("fund", "bank"):
                if part not in value:
                    raise PolicyError(f"{where}.{part}: missing")
                v = value[part]
                if not _is_number(v) or not math.isfinite(v) or not 0 <= v <= 1:
                    raise PolicyError(f"{where}.{part}: must be a share between 0 and 1, got {v!r}")
            if abs(value["fund"] + value["bank"] - 1.0) > 1e-9:
                raise PolicyError(f"{where}: shares must sum to 1, got fund {value['fund']} + bank {value['bank']}"
                                  f" = {value['fund'] + value['bank']:g}")
            return cls(float(value["fund"]), float(value["bank"]))
        raise PolicyError(f"{where}: expected \"fund:bank\" such as \"8:2\" or {{fund = 0.8, bank = 0.2}}, got {value!r}")

    def __str__(self) -> str:
        return f"{self.fund:g}:{self.bank:g}"


@dataclass(frozen=True)
class Capacity:
    """A repayment-capacity bound owned by one node: ``multiple`` x its ``column``.

    The owner computes it locally (:meth:`apply`) on the caps the coordinator sends it, so
    the raw column never leaves the node. ``missing`` says what a missing (or negative)
    value means: ``"zero"`` (default: no evidenced capacity, no unsecured line) or ``"cap"``
    (the grade cap alone applies).
    """

    node: str
    column: str
    multiple: float
    missing: str = "zero"

    def __post_init__(self) -> None:
        for key in ("node", "column"):
            v = getattr(self, key)
            if not isinstance(v, str) or not _NAME.match(v):
                raise PolicyError(f"capacity.{key}: expected a node/column name, got {v!r}")
        if not _is_number(self.multiple) or not math.isfinite(self.multiple):
            raise PolicyError(f"capacity.multiple: must be a number, got {self.multiple!r}")
        if self.multiple <= 0:
            raise PolicyError(f"capacity.multiple: must be > 0 (a limit is never a negative or zero multiple of "
                              f"capacity; drop [capacity] to use grade caps alone), got {self.multiple!r}")
        if self.missing not in MISSING_RULES:
            raise PolicyError(f"capacity.missing: must be one of {', '.join(MISSING_RULES)}, got {self.missing!r}")

    def amounts(self, values) -> np.ndarray:
        """Capacity in CNY (float): ``multiple * value``; missing values become 0 or +inf per ``missing``.

        Negative values (e.g. a negative declared revenue) count as no capacity: 0.
        """
        v = np.atleast_1d(np.asarray(values, dtype=float))
        out = np.maximum(self.multiple * v, 0.0)
        return np.where(np.isnan(v), 0.0 if self.missing == "zero" else np.inf, out)

    def apply(self, caps, values) -> np.ndarray:
        """At the capacity owner: limit = floor(min(cap, multiple * value)) in whole CNY."""
        caps = np.atleast_1d(np.asarray(caps, dtype=np.int64))
        amounts = self.amounts(values)
        if amounts.shape != caps.shape:
            raise PolicyError(f"capacity: {len(amounts)} values for {len(caps)} caps")
        return np.floor(np.minimum(caps.astype(float), amounts)).astype(np.int64)


@dataclass(frozen=True)
class QualityPolicy:
    """The quality gate a model must pass before its limits are published (see docs/limits.md).

    ``min_auc``: the floor of the joint model's AUC on held-out rows; ``min_margin_over_bank_only``:
    how much the joint model must beat the bank-only baseline (when one was trained);
    ``grade_order_tolerance``: how far a better grade's observed default rate may exceed a
    worse grade's before a warning (a share, 0.01 = one percentage point).
    """

    min_auc: float = 0.55
    min_margin_over_bank_only: float = 0.0
    grade_order_tolerance: float = 0.01

    def __post_init__(self) -> None:
        for key, low, high in (("min_auc", 0.0, 1.0), ("min_margin_over_bank_only", -1.0, 1.0),
                               ("grade_order_tolerance", 0.0, 1.0)):
            v = getattr(self, key)
            if not _is_number(v) or not math.isfinite(v) or not low <= v <= high:
                raise PolicyError(f"quality.{key}: must be a number in [{low:g}, {high:g}], got {v!r}")


@dataclass(frozen=True)
class MonitoringPolicy:
    """Early-warning thresholds for comparing a publication with the previous one (docs/monitoring.md).

    red: the grade falls ``red_grade_drop`` grades or more, into the last grade, or the new PD
    exceeds ``red_pd``; amber: it falls ``amber_grade_drop`` or more (but less than red); green
    otherwise. A stability index (score PSI, feature CSI) below ``*_watch`` is stable, from
    ``*_watch`` up to ``*_shifted`` to watch, and above ``*_shifted`` shifted.
    """

    red_grade_drop: int = 2
    amber_grade_drop: int = 1
    red_pd: float = 0.25
    csi_watch: float = 0.10
    csi_shifted: float = 0.25
    psi_watch: float = 0.10
    psi_shifted: float = 0.25

    def __post_init__(self) -> None:
        for key in ("amber_grade_drop", "red_grade_drop"):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise PolicyError(f"monitoring.{key}: must be a whole number of grades, at least 1, got {v!r}")
        if self.amber_grade_drop >= self.red_grade_drop:
            raise PolicyError(f"monitoring.amber_grade_drop ({self.amber_grade_drop}) must be smaller than "
                              f"monitoring.red_grade_drop ({self.red_grade_drop})")
        if not _is_number(self.red_pd) or not math.isfinite(self.red_pd) or not 0 < self.red_pd < 1:
            raise PolicyError(f"monitoring.red_pd: must be a probability in (0, 1), got {self.red_pd!r}")
        for index in ("csi", "psi"):
            watch, shifted = getattr(self, f"{index}_watch"), getattr(self, f"{index}_shifted")
            for key, v in ((f"{index}_watch", watch), (f"{index}_shifted", shifted)):
                if not _is_number(v) or not math.isfinite(v) or v <= 0:
                    raise PolicyError(f"monitoring.{key}: must be a positive number, got {v!r}")
            if watch >= shifted:
                raise PolicyError(f"monitoring.{index}_watch ({watch:g}) must be below monitoring.{index}_shifted "
                                  f"({shifted:g})")

    def verdict(self, value: float, index: str) -> str:
        """'stable', 'watch' or 'shifted' for a PSI (``index="psi"``) or a CSI (``"csi"``) value."""
        if value < getattr(self, f"{index}_watch"):
            return "stable"
        return "watch" if value <= getattr(self, f"{index}_shifted") else "shifted"


@dataclass(frozen=True)
class LimitPolicy:
    """Scorecard scaling, grade bands, per-grade caps and risk sharing, LGD, optional capacity."""

    scorecard: Scorecard = field(default_factory=Scorecard)
    bands: GradeBands = field(default_factory=GradeBands)
    caps: dict = field(default_factory=lambda: dict(DEFAULT_CAPS_CNY))
    sharing: dict = field(default_factory=lambda: {g: RiskShare.parse(r, g) for g, r in DEFAULT_SHARING.items()})
    lgd: float = DEFAULT_LGD
    capacity: Capacity | None = None
    source: str = "<defaults>"
    quality: QualityPolicy = field(default_factory=QualityPolicy)
    # an online query about an enterprise some node does not know (or holds no consent for): "refer" (no
    # limit: the bank decides by hand) or "decline" (limit 0); never a score from a smaller model
    missing_answer: str = "refer"
    monitoring: MonitoringPolicy = field(default_factory=MonitoringPolicy)

    def __post_init__(self) -> None:
        if self.missing_answer not in MISSING_ANSWERS:
            raise PolicyError(f"{self.source}: missing.answer: must be one of {', '.join(MISSING_ANSWERS)}, "
                              f"got {self.missing_answer!r}")
        for name, table in (("caps_cny", self.caps), ("risk_sharing", self.sharing)):
            missing = [g for g in self.bands.grades if g not in table]
            extra = [g for g in table if g not in self.bands.grades]
            if missing:
                raise PolicyError(f"{self.source}: {name}: missing grade(s) {missing}")
            if extra:
                raise PolicyError(f"{self.source}: {name}: {extra} not among the grades {list(self.bands.grades)}")
        if not _is_number(self.lgd) or not 0 < self.lgd <= 1:
            raise PolicyError(f"{self.source}: lgd: loss given default must lie in (0, 1], got {self.lgd!r}")
        steps = len(self.bands.grades) - 1
        if self.monitoring.amber_grade_drop > steps:
            raise PolicyError(f"{self.source}: monitoring.amber_grade_drop ({self.monitoring.amber_grade_drop}) exceeds the "
                              f"{steps} steps from the best to the worst grade: no warning could ever be raised")

    # -- loading ----------------------------------------------------------------------------

    @classmethod
    def load(cls, path) -> "LimitPolicy":
        path = Path(path)
        try:
            with open(path, "rb") as fh:
                doc = tomllib.load(fh)
        except FileNotFoundError:
            raise PolicyError(f"{path}: policy file not found") from None
        except IsADirectoryError:
            raise PolicyError(f"{path}: is a directory, expected a TOML policy file") from None
        except tomllib.TOMLDecodeError as exc:
            raise PolicyError(f"{path}: not valid TOML: {exc}") from None
        except UnicodeDecodeError:
            raise PolicyError(f"{path}: not valid TOML: not UTF-8 text") from None
        return cls.from_dict(doc, source=str(path))

    @classmethod
    def from_dict(cls, doc: dict, source: str = "<dict>") -> "LimitPolicy":
        """Build and validate a policy from a parsed TOML document; omitted sections take the defaults."""
        if not isinstance(doc, dict):
            raise PolicyError(f"{source}: a policy is a TOML table, got {type(doc).__name__}")
        _no_unknown(doc, _TOP_KEYS, source, "")
        try:
            sc = _table(doc, "scorecard", source)
            _no_unknown(sc, _SCORECARD_KEYS, source, "scorecard.")
            for k, v in sc.items():
                if not _is_number(v):
                    raise PolicyError(f"{source}: scorecard.{k}: must be a number, got {v!r}")
            scorecard = Scorecard(**sc)
        except ScorecardError as exc:
            raise PolicyError(f"{source}: scorecard: {exc}") from None

        bd = _table(doc, "bands", source)
        _no_unknown(bd, _BANDS_KEYS, source, "bands.")
        if ("grades" in bd) != ("min_points" in bd):
            raise PolicyError(f"{source}: bands: give both grades and min_points (or neither for the defaults)")
        grades, mins = bd.get("grades", list(DEFAULT_GRADES)), bd.get("min_points", list(DEFAULT_MIN_POINTS))
        if not isinstance(grades, list) or not isinstance(mins, list):
            raise PolicyError(f"{source}: bands: grades and min_points must be arrays")
        for m in mins:
            if not _is_number(m):
                raise PolicyError(f"{source}: bands.min_points: must be numbers, got {m!r}")
        try:
            bands = GradeBands(tuple(grades), tuple(mins))
        except ScorecardError as exc:
            raise PolicyError(f"{source}: bands: {exc}") from None
        default_grades = set(bands.grades) <= set(DEFAULT_GRADES)

        caps_doc = _table(doc, "caps_cny", source, None if default_grades else "caps_cny")
        caps_doc = caps_doc if "caps_cny" in doc else {g: DEFAULT_CAPS_CNY[g] for g in bands.grades}
        caps = {}
        for g, v in caps_doc.items():
            if _is_number(v) and isinstance(v, float) and v.is_integer():
                v = int(v)
            if not isinstance(v, int) or isinstance(v, bool):
                raise PolicyError(f"{source}: caps_cny.{g}: must be a whole number of CNY, got {v!r}")
            if v < 0:
                raise PolicyError(f"{source}: caps_cny.{g}: a cap cannot be negative, got {v}")
            caps[g] = v

        share_doc = _table(doc, "risk_sharing", source, None if default_grades else "risk_sharing")
        share_doc = share_doc if "risk_sharing" in doc else {g: DEFAULT_SHARING[g] for g in bands.grades}
        sharing = {g: RiskShare.parse(v, f"{source}: risk_sharing.{g}") for g, v in share_doc.items()}

        lgd = doc.get("lgd", DEFAULT_LGD)
        if not _is_number(lgd) or not math.isfinite(lgd) or not 0 < lgd <= 1:
            raise PolicyError(f"{source}: lgd: loss given default must lie in (0, 1], got {lgd!r}")

        capacity = None
        if "capacity" in doc:
            cp = _table(doc, "capacity", source)
            _no_unknown(cp, _CAPACITY_KEYS, source, "capacity.")
            for k in ("node", "column", "multiple"):
                if k not in cp:
                    raise PolicyError(f"{source}: capacity.{k}: missing")
            try:
                capacity = Capacity(cp["node"], cp["column"], cp["multiple"], cp.get("missing", "zero"))
            except PolicyError as exc:
                raise PolicyError(f"{source}: {exc}") from None
        quality = _sub_policy(doc, "quality", _QUALITY_KEYS, QualityPolicy, source)
        monitoring = _sub_policy(doc, "monitoring", _MONITORING_KEYS, MonitoringPolicy, source)
        md = _table(doc, "missing", source)
        _no_unknown(md, {"answer"}, source, "missing.")
        return cls(scorecard, bands, caps, sharing, float(lgd), capacity, source, quality,
                   missing_answer=md.get("answer", "refer"), monitoring=monitoring)

    # -- limits and expected loss ----------------------------------------------------------

    def _grade_index(self, grades) -> np.ndarray:
        try:
            return self.bands.index(grades)
        except ScorecardError as exc:
            raise PolicyError(f"{self.source}: {exc}") from None

    def grade(self, pd) -> tuple[np.ndarray, np.ndarray]:
        """(points, grades) of each PD under this policy's scorecard and bands."""
        points = np.atleast_1d(self.scorecard.points(pd))
        return points, self.bands.assign(points)

    def cap_for(self, grades) -> np.ndarray:
        """The unsecured cap (int64 CNY) of each grade."""
        table = np.asarray([self.caps[g] for g in self.bands.grades], dtype=np.int64)
        return table[self._grade_index(grades)]

    def limits(self, grades, capacity=None) -> np.ndarray:
        """Limit per enterprise: its grade's cap, or floor(min(cap, capacity)) when capacity amounts (CNY) are given.

        ``capacity`` holds amounts already resolved by :meth:`Capacity.amounts` (so the
        missing-value rule has been applied at the owning node); NaN is refused.
        """
        caps = self.cap_for(grades)
        if capacity is None:
            return caps
        cap_amounts = np.atleast_1d(np.asarray(capacity, dtype=float))
        if cap_amounts.shape != caps.shape:
            raise PolicyError(f"capacity has {len(cap_amounts)} values for {len(caps)} grades")
        if np.any(np.isnan(cap_amounts)):
            raise PolicyError("capacity contains missing values; resolve them with Capacity.amounts (policy rule "
                              "'missing') at the node that owns the column")
        return np.floor(np.minimum(caps.astype(float), np.maximum(cap_amounts, 0.0))).astype(np.int64)

    def expected_loss_table(self, grades, pd, limits) -> pd_.DataFrame:
        """Per grade: enterprises, total limit, mean PD, expected loss PD x LGD x limit and its fund/bank split.

        Every grade of the bands is listed (zero rows for empty grades) so reports line up
        across runs. Expected loss assumes the whole limit is drawn (exposure = limit).
        """
        idx = self._grade_index(grades)
        p = np.atleast_1d(_pd_array(pd))
        lim = np.atleast_1d(np.asarray(limits, dtype=float))
        if not (len(idx) == len(p) == len(lim)):
            raise PolicyError(f"grades, pd and limits must have the same length, got {len(idx)}, {len(p)}, {len(lim)}")
        if np.any(~np.isfinite(lim)) or np.any(lim < 0):
            raise PolicyError("limits must be finite and non-negative")
        k = len(self.bands.grades)
        count = np.bincount(idx, minlength=k)
        el = np.bincount(idx, weights=p * self.lgd * lim, minlength=k)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_pd = np.where(count > 0, np.bincount(idx, weights=p, minlength=k) / np.maximum(count, 1), np.nan)
        fund = np.array([self.sharing[g].fund for g in self.bands.grades])
        bank = np.array([self.sharing[g].bank for g in self.bands.grades])
        return pd_.DataFrame({
            "grade": list(self.bands.grades),
            "enterprises": count.astype(np.int64),
            "total_limit_cny": np.bincount(idx, weights=lim, minlength=k),
            "mean_pd": mean_pd,
            "expected_loss_cny": el,
            "fund_share": fund,
            "bank_share": bank,
            "fund_expected_loss_cny": el * fund,
            "bank_expected_loss_cny": el * bank,
        })


def _no_unknown(table: dict, allowed: set, source: str, prefix: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise PolicyError(f"{source}: unknown key(s) {', '.join(prefix + k for k in unknown)}; "
                          f"allowed: {', '.join(prefix + k for k in sorted(allowed))}")


def _sub_policy(doc: dict, key: str, allowed: set, make, source: str):
    """The ``[key]`` table built by ``make`` (QualityPolicy, MonitoringPolicy: defaults when absent), every
    error naming the file."""
    table = _table(doc, key, source)
    _no_unknown(table, allowed, source, f"{key}.")
    try:
        return make(**table)
    except PolicyError as exc:
        raise PolicyError(f"{source}: {exc}") from None


def _table(doc: dict, key: str, source: str, required: str | None = None) -> dict:
    """The sub-table ``key`` ({} when absent unless ``required`` explains why it is needed)."""
    if key not in doc:
        if required:
            raise PolicyError(f"{source}: [{key}] is missing: grades other than the default A/B/C/D have no default")
        return {}
    value = doc[key]
    if not isinstance(value, dict):
        raise PolicyError(f"{source}: {key}: must be a table ([{key}]), got {type(value).__name__}")
    return value
