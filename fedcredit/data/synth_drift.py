"""A later month of the same synthetic enterprises: what moved, and for whom.

Monitoring (docs/monitoring.md) compares a scoring run with the previous publication; to
show it, the generator can produce month 2, 3, … of the population month 1 holds. Each
month moves the hidden traits of ``fedcredit.data.synth`` and re-derives everything
downstream (distress events, revenue, growth, the 12-month default) with every
enterprise's own draws, so labels stay consistent with the drifted risk and an enterprise
nothing happened to keeps its records. Per month:

* a **sector downturn**: one industry's revenue falls (``sector_revenue``, a log change:
  -0.15 is about -14 %) and its operating health weakens — lower declared revenue, VAT and
  income tax, worse growth, more tax arrears at the tax bureau;
* **slowing activity** at a share of all firms (``slowdown_share``): momentum falls —
  lower meter readings, more late utility bills and disconnection notices;
* **distress** at a small share (``distressed_share``): health, momentum and credit
  discipline all fall sharply, so their grade drops two or more (every node sees it);
* optionally, a change of credit discipline for everyone (``discipline``, 0 by default).

Who was hit is drawn from a stream of its own per month, so month 1 stays what it was.
Enterprises a month hit are observed anew (fresh noise in their records); the records of
the others stay exactly as they were, so what moves is what the drift moved.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fedcredit.common.errors import FedCreditError
from fedcredit.data.schema import INDUSTRIES

HITS = ("sector", "slowdown", "distressed", "everyone")  # what a month did, per enterprise
DRIFT_STREAM = 7  # the SeedSequence child of the seed that months after the first draw from (0-6 make month 1)


@dataclass(frozen=True)
class Drift:
    """How much one month moves the population (the defaults give a clearly visible but plausible month)."""

    sector: str = "manufacturing"
    sector_revenue: float = -0.15
    sector_health: float = -0.3
    slowdown_share: float = 0.12
    slowdown_momentum: float = -1.0
    distressed_share: float = 0.03
    distress: float = -2.0
    discipline: float = 0.0

    def __post_init__(self) -> None:
        if self.sector not in INDUSTRIES:
            raise FedCreditError(f"drift sector must be one of {', '.join(INDUSTRIES)}, got {self.sector!r}")
        for name in ("slowdown_share", "distressed_share"):
            share = getattr(self, name)
            if not 0.0 <= share <= 1.0:
                raise FedCreditError(f"drift {name} must be a share between 0 and 1, got {share!r}")
        for name in ("sector_revenue", "sector_health", "slowdown_momentum", "distress", "discipline"):
            if not np.isfinite(getattr(self, name)):
                raise FedCreditError(f"drift {name} must be a finite number, got {getattr(self, name)!r}")


@dataclass
class TraitShift:
    """One month's change of every enterprise's traits (zeros where nothing happened), and who was hit."""

    health: np.ndarray
    momentum: np.ndarray
    discipline: np.ndarray
    revenue: np.ndarray  # log change of revenue
    hit: dict[str, np.ndarray] = field(default_factory=dict)  # "sector", "slowdown", "distressed" -> row mask


def month_shift(industry: np.ndarray, rng: np.random.Generator, drift: Drift) -> TraitShift:
    """The trait changes of one month for enterprises of ``industry`` (codes into INDUSTRIES)."""
    n = len(industry)
    sector = industry == INDUSTRIES.index(drift.sector)
    slowdown = rng.random(n) < drift.slowdown_share
    distressed = rng.random(n) < drift.distressed_share
    severity = rng.uniform(0.8, 1.2, n)  # distress hits each firm a little differently
    health = drift.sector_health * sector + drift.distress * severity * distressed
    momentum = drift.slowdown_momentum * slowdown + drift.distress * severity * distressed
    discipline = np.full(n, drift.discipline) + 0.75 * drift.distress * severity * distressed
    revenue = drift.sector_revenue * sector + 0.5 * drift.distress * severity * distressed
    return TraitShift(health, momentum, discipline, revenue, {"sector": sector, "slowdown": slowdown,
                                                              "distressed": distressed,
                                                              "everyone": np.full(n, drift.discipline != 0)})


def month_streams(seed: int, month: int) -> list[np.random.Generator]:
    """One generator per month after the first (month 2 first), independent of month 1's streams; the step
    into month k is the same whichever later month is asked for."""
    parent = np.random.SeedSequence(seed).spawn(DRIFT_STREAM + 1)[DRIFT_STREAM]
    return [np.random.default_rng(s) for s in parent.spawn(max(month - 1, 0))]
