"""Synthetic court records: a fourth data holder with its own column names, drawn from the same population.

The court is the worked example of docs/add-a-data-holder.md: it keeps the enterprise's
USCC under its own column name (``enterprise_code``) and has no built-in schema, so its
node declares every column (``layout = "custom"`` plus ``extra``). What it sees:

* litigation that follows traits other nodes see in other ways (credit discipline,
  operating health, tax arrears, production stops), and
* a disputes trait only the court observes (creditors and suppliers suing), which raises
  the odds of default by ``exp(s·d − s²/2)``. It is drawn given the outcome
  (``d ~ N(s·default, 1)``): the same joint distribution as a trait drawn first, but the
  bank's, tax bureau's and utility's tables stay byte-identical for a given seed.

So a model with the court beats the three-node model, by a margin set by ``DISPUTE_SHIFT``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

ROLE = "court"
ID_COLUMN = "enterprise_code"
# The court's columns as its node declares them (``extra = ["NAME:KIND", ...]``).
COLUMNS = {
    "lawsuits_as_defendant_36m": "int",
    "enforcement_cases_open": "int",
    "judgment_amount_cny": "float",
    "dishonest_debtor_listed": "category",
}
COVERAGE = 0.90  # share of the population registered in the court's district
DISPUTE_SHIFT = 1.5

_ARROW = {"int": pa.int64(), "float": pa.float64(), "category": pa.string()}


def extra_declarations() -> list[str]:
    """The ``extra`` list of the court's job section and node config."""
    return [f"{name}:{kind}" for name, kind in COLUMNS.items()]


def court_table(world, rng: np.random.Generator) -> pa.Table:
    """The court's rows (its share of ``world``, in its own order): one per enterprise in its district."""
    return court_columns(world, rng).take(pa.array(members(len(world.ids), rng)))


def members(n: int, rng: np.random.Generator) -> np.ndarray:
    """The enterprises (rows of the world) in the court's district, in the court's order; drawn from ``rng``
    after ``court_columns`` (so the court's tables stay what they were before months existed)."""
    rows = np.flatnonzero(rng.random(n) < COVERAGE)
    rng.shuffle(rows)
    return rows


def court_columns(world, rng: np.random.Generator) -> pa.Table:
    """The court's records of every enterprise of ``world``, in the world's order."""
    n = len(world.ids)
    disputes = rng.standard_normal(n) + DISPUTE_SHIFT * world.default
    discipline, health, size = world.discipline, world.health, np.clip(world.size, -2, 2)
    lawsuits = rng.poisson(np.exp(-1.3 + 0.35 * size - 0.30 * discipline - 0.25 * health
                                  + 0.55 * disputes + 0.5 * world.arrears_event))
    enforcement = rng.poisson(np.exp(-3.2 - 0.40 * discipline + 0.7 * world.arrears_event
                                     + 0.5 * world.stop_event + 0.6 * disputes))
    judgments = rng.binomial(lawsuits, 0.45)
    amount = world.revenue * np.exp(-3.6 + 0.7 * rng.standard_normal(n)) * judgments
    amount = np.where(judgments > 0, np.round(amount, 2), np.nan)  # missing: no judgment in 36 months
    listed = (enforcement > 0) & (rng.random(n) < 1.0 / (1.0 + np.exp(0.6 - 0.9 * disputes + 0.5 * discipline)))
    columns = {
        ID_COLUMN: pa.array(world.ids, pa.string()),
        "lawsuits_as_defendant_36m": lawsuits.astype(np.int64),
        "enforcement_cases_open": enforcement.astype(np.int64),
        "judgment_amount_cny": pa.array(amount, from_pandas=True),
        "dishonest_debtor_listed": pa.array(np.where(listed, "yes", "no").astype(object), pa.string()),
    }
    schema = pa.schema([pa.field(ID_COLUMN, pa.string(), nullable=False),
                        *(pa.field(name, _ARROW[kind]) for name, kind in COLUMNS.items())])
    return pa.table(columns, schema=schema)
