"""Synthetic SME data for the bank, tax and utilities nodes, deterministic per seed.

Each enterprise has hidden traits: size, operating health (what tax filings
reflect), activity momentum (what meters reflect) and credit discipline (what the
bank sees), plus rare distress events (tax arrears, a production stop that shows as
an electricity collapse). Each node observes noisy views of a different trait, and
the 12-month default depends on all of them with interactions and thresholds — so
a model over every node clearly beats the bank's own data. Everything is vectorized
(a million enterprises in a few seconds). ``court=True`` adds a fourth node with its own
column names, drawn from the same enterprises (fedcredit/data/synth_court.py). ``month=2`` (3, …) gives
the same enterprises a month later, drifted (fedcredit/data/synth_drift.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from fedcredit.data import synth_court, synth_drift, uscc
from fedcredit.data.io import FORMATS, write_table
from fedcredit.data.schema import BANK, INDUSTRIES, MONTHS, NODE_ROLES, TAX, TAX_RATINGS, UTILITIES
from fedcredit.common.errors import FedCreditError

# Share of all enterprises each node knows (independent draws; see `coverage`).
COVERAGE = {"bank": 0.95, "tax": 0.90, "utilities": 0.85}

# Per industry (order of INDUSTRIES): population share, log-revenue mean (CNY),
# effective VAT ratio, electricity intensity (kWh per CNY), seasonal amplitude,
# share with a gas connection.
_INDUSTRY_P = np.array([0.22, 0.30, 0.10, 0.12, 0.10, 0.10, 0.06])
_LOG_REVENUE = np.array([15.6, 15.1, 15.8, 14.3, 14.8, 14.9, 14.2])
_VAT_RATIO = np.array([0.035, 0.018, 0.030, 0.025, 0.040, 0.028, 0.006])
_KWH_PER_CNY = np.array([0.080, 0.010, 0.020, 0.045, 0.012, 0.015, 0.030])
_SEASONALITY = np.array([0.08, 0.10, 0.15, 0.25, 0.05, 0.10, 0.35])
_GAS_SHARE = np.array([0.70, 0.25, 0.30, 0.85, 0.15, 0.30, 0.40])


@dataclass(frozen=True)
class SynthConfig:
    rows: int
    seed: int = 0
    month: int = 1

    def __post_init__(self) -> None:
        if self.month < 1:
            raise FedCreditError(f"--month must be 1 or later, got {self.month}")
        if self.rows < 10:
            raise FedCreditError(f"--rows must be at least 10, got {self.rows}")
        if self.seed < 0:
            raise FedCreditError(f"--seed must be non-negative, got {self.seed}")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _money(x: np.ndarray) -> np.ndarray:
    return np.round(x, 2)


def generate(rows: int, seed: int = 0, court: bool = False, month: int = 1,
             drift: synth_drift.Drift | None = None) -> dict[str, pa.Table]:
    """The three nodes' tables for ``rows`` enterprises (and the court's with ``court``); the same seed gives
    the same tables, and the three are the same with or without the court (it draws from a stream of its own).

    ``month`` 2, 3, … gives the same enterprises (same IDs at the same nodes, in the same order) that
    many months later, each month moved by ``drift`` (default ``Drift()``; fedcredit/data/synth_drift.py),
    labels re-derived from the drifted risk. Month 1 is the population itself."""
    cfg = SynthConfig(rows, seed, month)
    streams = np.random.SeedSequence(cfg.seed).spawn(7)  # child i depends on i only: adding streams changes none
    rng = lambda i: np.random.default_rng(streams[i])  # noqa: E731  (a fresh generator: months observe alike)
    first, world, hits = _world_in_month(cfg, rng(0), drift)
    rng_court = rng(6)  # the court's records, then (continuing) its district and order
    tables = _observe(first, rng, rng_court if court else None)
    if cfg.month > 1:  # enterprises a month hit are observed anew; the records of the others stay as they were
        moved = np.logical_or.reduce(list(hits.values()))
        now = _observe(world, rng, rng(6) if court else None)
        both = np.arange(cfg.rows) + cfg.rows * moved
        tables = {role: pa.concat_tables([tables[role], now[role]]).take(pa.array(both)) for role in tables}
    members, rng_order = coverage(cfg.rows, rng(4)), rng(5)
    out = {}
    for role in NODE_ROLES:
        rows_of_node = np.flatnonzero(members[role])
        rng_order.shuffle(rows_of_node)  # each node stores its enterprises in its own order
        out[role] = tables[role].take(pa.array(rows_of_node))
    if court:
        out[synth_court.ROLE] = tables[synth_court.ROLE].take(pa.array(synth_court.members(cfg.rows, rng_court)))
    return out


def _observe(world: "_World", rng, rng_court: np.random.Generator | None) -> dict[str, pa.Table]:
    """Every node's view of every enterprise of ``world`` (in the world's order), each from its own stream
    (the court's, from ``rng_court``, only when given)."""
    tables = {"tax": _tax_table(world, rng(1)), "utilities": _utilities_table(world, rng(2)),
              "bank": _bank_table(world, rng(3))}
    if rng_court is not None:
        tables[synth_court.ROLE] = synth_court.court_columns(world, rng_court)
    return tables


def drift_hits(rows: int, seed: int = 0, month: int = 2, drift: synth_drift.Drift | None = None) -> dict[str, list[str]]:
    """Who the months up to ``month`` hit, by USCC: ``sector``, ``slowdown``, ``distressed`` and, when the drift
    moves everyone's credit discipline, ``everyone`` (demos and tests check that monitoring finds them)."""
    cfg = SynthConfig(rows, seed, month)
    _, world, hits = _world_in_month(cfg, np.random.default_rng(np.random.SeedSequence(cfg.seed).spawn(7)[0]), drift)
    return {kind: [str(i) for i in world.ids[mask]] for kind, mask in hits.items()}


def _world_in_month(cfg: SynthConfig, rng_world: np.random.Generator, drift: synth_drift.Drift | None):
    """Month 1's world, the world of ``cfg.month`` and, per kind of hit, which enterprises any month so far hit."""
    first = world = _World.draw(cfg.rows, rng_world)
    hits = {kind: np.zeros(cfg.rows, dtype=bool) for kind in synth_drift.HITS}
    for rng in synth_drift.month_streams(cfg.seed, cfg.month):
        shift = synth_drift.month_shift(world.industry, rng, drift or synth_drift.Drift())
        world = world.drifted(shift)
        hits = {kind: mask | shift.hit[kind] for kind, mask in hits.items()}
    return first, world, hits


def coverage(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Which enterprises each node knows; every enterprise is known to at least one node."""
    members = {role: rng.random(n) < share for role, share in COVERAGE.items()}
    nobody = ~(members["bank"] | members["tax"] | members["utilities"])
    members["bank"] = members["bank"] | nobody
    return members


@dataclass
class _Draws:
    """An enterprise's own luck, drawn once: a later month re-derives events, revenue, growth and default
    from drifted traits with the same draws, so only what the drift moved changes."""

    arrears_u: np.ndarray
    stop_u: np.ndarray
    revenue_z: np.ndarray
    growth_z: np.ndarray
    default_u: np.ndarray


@dataclass
class _World:
    """Hidden traits of every enterprise; nodes only ever see noisy consequences."""

    ids: np.ndarray
    industry: np.ndarray
    age: np.ndarray
    size: np.ndarray
    health: np.ndarray  # operating health: margins, compliance (tax-visible)
    momentum: np.ndarray  # activity momentum: production, footfall (meter-visible)
    discipline: np.ndarray  # credit discipline (bank-visible)
    arrears_event: np.ndarray
    stop_event: np.ndarray
    revenue: np.ndarray
    growth: np.ndarray
    default: np.ndarray
    draws: _Draws
    revenue_shift: np.ndarray  # log change of revenue since month 1 (a sector's downturn; 0 in month 1)

    @classmethod
    def draw(cls, n: int, rng: np.random.Generator) -> "_World":
        ids = uscc.generate(n, rng)
        industry = rng.choice(len(INDUSTRIES), size=n, p=_INDUSTRY_P)
        age = np.minimum(0.3 + rng.gamma(2.0, 3.5, n), 40.0)
        size = rng.standard_normal(n)
        common = rng.standard_normal(n)
        health = 0.55 * common + 0.835 * rng.standard_normal(n)
        momentum = 0.45 * common + 0.893 * rng.standard_normal(n)
        discipline = 0.45 * common + 0.893 * rng.standard_normal(n)
        arrears_u, stop_u = rng.random(n), rng.random(n)
        revenue_z, growth_z = rng.standard_normal(n), rng.standard_normal(n)
        draws = _Draws(arrears_u, stop_u, revenue_z, growth_z, rng.random(n))
        return cls.derive(ids, industry, age, size, health, momentum, discipline, draws, np.zeros(n))

    @classmethod
    def derive(cls, ids, industry, age, size, health, momentum, discipline, draws: _Draws,
               revenue_shift: np.ndarray) -> "_World":
        """Distress events, revenue, growth and the 12-month default from the traits and the enterprise's draws."""
        arrears_event = draws.arrears_u < _sigmoid(-2.6 - 1.3 * health)
        stop_event = draws.stop_u < _sigmoid(-3.2 - 1.4 * momentum)
        revenue = np.exp(_LOG_REVENUE[industry] + 0.85 * size + 0.1 * health + 0.25 * draws.revenue_z + revenue_shift)
        growth = np.clip(0.04 + 0.14 * health + 0.10 * momentum + 0.12 * draws.growth_z + revenue_shift, -0.9, 3.0)
        growth = np.clip(np.where(stop_event, growth - 0.25, growth), -0.95, 3.0)
        # Default within 12 months: every trait matters, distress compounds
        # (interactions), and thresholds make it non-linear.
        logit = (
            -4.45
            - 0.55 * discipline
            - 0.60 * health
            - 0.55 * momentum
            + 0.35 * health * momentum  # both weak: much worse than either alone
            + 0.90 * arrears_event
            + 1.30 * stop_event
            + 0.70 * (arrears_event & stop_event)
            + 0.90 * (growth < -0.15)
            + 0.40 * (age < 2.0)
            - 0.15 * np.clip(size, -2, 2)
        )
        default = draws.default_u < _sigmoid(logit)
        return cls(ids, industry, age, size, health, momentum, discipline, arrears_event, stop_event, revenue, growth,
                   default, draws, revenue_shift)

    def drifted(self, shift: "synth_drift.TraitShift") -> "_World":
        """The same enterprises a month later: traits moved by ``shift``, everything downstream re-derived."""
        return _World.derive(self.ids, self.industry, self.age, self.size, self.health + shift.health,
                             self.momentum + shift.momentum, self.discipline + shift.discipline, self.draws,
                             self.revenue_shift + shift.revenue)


def _tax_table(w: _World, rng: np.random.Generator) -> pa.Table:
    n = len(w.ids)
    noise = lambda s=1.0: s * rng.standard_normal(n)  # noqa: E731
    revenue = w.revenue * np.exp(noise(0.05))
    growth = np.where(w.age < 2.0, np.nan, np.round(np.clip(w.growth + noise(0.03), -0.95, 3.0), 4))
    vat = revenue * _VAT_RATIO[w.industry] * np.exp(noise(0.25))
    margin = np.clip(0.05 + 0.035 * w.health + noise(0.03), 0.0, None)
    income_rate = np.where(revenue < 3e6, 0.05, 0.25)
    income_tax = np.where(rng.random(n) < 0.04, np.nan, revenue * margin * income_rate)
    compliance = 0.9 * w.health + noise(0.6) - 1.2 * w.arrears_event
    rating_idx = np.select([compliance > 1.0, compliance > -0.3, compliance > -1.4], [0, 1, 3], default=4)
    rating_idx = np.where(w.age < 1.5, 2, rating_idx)  # new taxpayers are rated M
    missed = rng.binomial(12, _sigmoid(-3.2 - 1.0 * w.health + 1.5 * w.arrears_event))
    # arrears of distressed firms are on file 80 % of the time (some settle before the year
    # closes); 2 % of healthy firms carry small, temporary arrears
    on_file = np.where(w.arrears_event, rng.random(n) < 0.8, rng.random(n) < 0.02)
    arrears = np.where(on_file, revenue * np.exp(np.where(w.arrears_event, -3.3, -5.5) + noise(0.8)), 0.0)
    employees = np.maximum(1, np.round(np.exp(-12.0 + 0.85 * np.log(revenue) + 0.15 * w.health + noise(0.4))))
    invoices = rng.poisson(revenue / 25_000.0 * np.exp(0.1 * w.momentum))
    return pa.table(
        {
            "uscc": pa.array(w.ids, pa.string()),
            "industry": pa.array(np.asarray(INDUSTRIES, dtype=object)[w.industry], pa.string()),
            "years_registered": np.round(w.age, 2),
            "declared_revenue_cny": _money(revenue),
            "revenue_growth_yoy": pa.array(growth, from_pandas=True),
            "vat_paid_cny": _money(vat),
            "income_tax_paid_cny": pa.array(_money(income_tax), from_pandas=True),
            "taxpayer_credit_rating": pa.array(np.asarray(TAX_RATINGS, dtype=object)[rating_idx], pa.string()),
            "ontime_filing_months_12m": (12 - missed).astype(np.int64),
            "tax_arrears_cny": _money(arrears),
            "social_insured_employees": employees.astype(np.int64),
            "invoices_issued_12m": invoices.astype(np.int64),
        },
        schema=_arrow_schema(TAX),
    )


def _utilities_table(w: _World, rng: np.random.Generator) -> pa.Table:
    n = len(w.ids)
    base = w.revenue * _KWH_PER_CNY[w.industry] / 12.0 * np.exp(0.3 * rng.standard_normal(n))
    month = np.arange(12)
    # summer peak (air conditioning) with a smaller winter bump
    season = 1.0 + _SEASONALITY[w.industry][:, None] * (np.cos((month[None, :] - 7) * np.pi / 6) + 0.3 * np.cos((month[None, :] - 0) * np.pi / 3))
    trend_rate = 0.22 * w.momentum + 0.08 * rng.standard_normal(n)
    trend = np.exp(trend_rate[:, None] * (month[None, :] - 5.5) / 12.0)
    volatility = 0.06 + 0.12 * _sigmoid(-1.5 * w.momentum)
    shock = np.exp(volatility[:, None] * rng.standard_normal((n, 12)))
    # a production stop: the last 2-5 months collapse to 10-50 % of normal
    stop_len = rng.integers(2, 6, n)
    stopped = w.stop_event[:, None] & (month[None, :] >= 12 - stop_len[:, None])
    collapse = np.where(stopped, rng.uniform(0.1, 0.5, n)[:, None], 1.0)
    kwh = np.round(base[:, None] * season * trend * shock * collapse, 1)
    kwh[rng.random((n, 12)) < 0.015] = np.nan  # meters not read
    water = np.where(rng.random(n) < 0.08, np.nan, np.round(base * 12 * 0.004 * np.exp(0.4 * rng.standard_normal(n)), 1))
    has_gas = rng.random(n) < _GAS_SHARE[w.industry]
    gas = np.where(has_gas, np.round(base * 12 * 0.02 * np.exp(0.5 * rng.standard_normal(n)), 1), np.nan)
    late = rng.poisson(np.exp(-1.1 - 0.75 * w.momentum - 0.25 * w.health + 0.8 * w.stop_event))
    notices = rng.poisson(np.exp(-3.2 - 0.9 * w.momentum + 1.4 * w.stop_event))
    days = np.round(6.0 + 7.0 * np.exp(-0.5 * w.momentum) * np.exp(0.3 * rng.standard_normal(n)), 1)
    columns = {"uscc": pa.array(w.ids, pa.string())}
    for i, name in enumerate(MONTHS):
        columns[name] = pa.array(kwh[:, i], from_pandas=True)
    columns.update(
        {
            "water_m3_12m": pa.array(water, from_pandas=True),
            "gas_m3_12m": pa.array(gas, from_pandas=True),
            "late_payments_12m": late.astype(np.int64),
            "disconnection_notices_24m": notices.astype(np.int64),
            "avg_days_to_pay": days,
        }
    )
    return pa.table(columns, schema=_arrow_schema(UTILITIES))


def _bank_table(w: _World, rng: np.random.Generator) -> pa.Table:
    n = len(w.ids)
    lines = 1 + rng.poisson(0.5 + 0.5 * np.clip(w.size, 0, None))
    has_loan = rng.random(n) < 0.8
    balance = np.where(has_loan, w.revenue * np.exp(-1.7 + 0.6 * rng.standard_normal(n) - 0.15 * w.discipline), 0.0)
    revolving = rng.random(n) < 0.75
    util = np.clip(_sigmoid(-0.4 - 0.9 * w.discipline + 0.5 * rng.standard_normal(n)) * 1.1, 0, 1.3)
    util = np.where(revolving, np.round(util, 4), np.nan)
    late_p = _sigmoid(-2.0 - 1.2 * w.discipline)
    dpd_steps = np.array([3, 7, 15, 30, 45, 60, 90, 120])
    severity = np.clip(np.round(rng.exponential(1.2 + 0.8 * _sigmoid(-w.discipline), n)), 0, len(dpd_steps) - 1).astype(int)
    dpd = np.where(rng.random(n) < late_p, dpd_steps[severity], 0)
    share = rng.beta(2.0, 2.0, n)  # share of the firm's flows at this bank
    inflow = w.revenue * share * np.exp(0.25 * rng.standard_normal(n) + 0.05 * w.momentum)
    outflow = inflow * np.exp(0.04 - 0.05 * w.health + 0.04 * rng.standard_normal(n))
    relationship = np.minimum(np.round(w.age * 12 * rng.uniform(0.2, 1.0, n)), 360)
    overdraft = rng.poisson(np.exp(0.1 - 1.0 * w.discipline))
    return pa.table(
        {
            "uscc": pa.array(w.ids, pa.string()),
            "loan_balance_cny": _money(balance),
            "credit_lines": lines.astype(np.int64),
            "max_dpd_24m": dpd.astype(np.int64),
            "inflow_12m_cny": _money(inflow),
            "outflow_12m_cny": _money(outflow),
            "relationship_months": relationship.astype(np.int64),
            "credit_utilization": pa.array(util, from_pandas=True),
            "overdraft_days_12m": overdraft.astype(np.int64),
            "default_12m": w.default.astype(np.int8),
        },
        schema=_arrow_schema(BANK),
    )


_ARROW_TYPES = {"id": pa.string(), "float": pa.float64(), "int": pa.int64(), "category": pa.string(), "label": pa.int8()}


def _arrow_schema(schema) -> pa.Schema:
    return pa.schema([pa.field(c.name, _ARROW_TYPES[c.kind], nullable=c.nullable) for c in schema.columns])


def write_nodes(tables: dict[str, pa.Table], out: str | Path, fmt: str = "parquet") -> dict[str, Path]:
    """Write each node's table to ``out/<role>.<fmt>`` (atomically, one file at a time)."""
    if fmt not in FORMATS:
        raise FedCreditError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    out = Path(out)
    return {role: write_table(table, out / f"{role}.{fmt}", fmt) for role, table in tables.items()}
