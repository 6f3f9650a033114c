"""Federated scorecard development (issue #17): IV exactness, WoE-LR quality, noise selection, binning cost, optbinning.

    python benchmarks/bench_scorecard.py [--quick] [--json PATH] [--rows N] [--binning-rows N]

1. ``iv_max_abs_diff``: every node's ``model/<role>/iv.csv`` of each job run below (the IV
   the bank computed from encrypted label sums, host features too) against the pooled
   computation on the same training rows (``fedcredit.jobs.centralized.developed``).
2. ``woe_lr_auc`` / ``centralized_woe_lr_auc``: ``features = "woe"``, ``binning =
   "monotone"``, test AUC of the federated job and of scikit-learn's LR on the same pooled
   bins (synthetic: bare keys; German credit: ``german_`` keys), plus the bank-only AUC.
3. ``noise_kept`` / ``noise_total``: 100 N(0, 1) columns added to the utilities file
   (declared as extra float columns), the default job (one-hot quantile bins, ``min_iv``
   0.02): how many survive selection; test AUC without the noise, with it, with it and
   ``min_iv = 0`` (selection off), with it and monotone bins, and with it, selection off
   and l2 chosen from ``L2_GRID`` by validation AUC; the bank-only AUC beside them.
4. ``binning_s``: wall time of the WoE/IV step alone (quantile fit, small-bin merges,
   2048-bit Paillier label encryption, hosts' encrypted sums, decisions, selection) on
   100,000 training rows (10,000 with --quick), parties driven in one process with sealed
   messages; ``binning_core_s`` = CPU seconds of this process tree meanwhile.
5. optbinning (``OptimalBinning``, ``monotonic_trend = "auto_asc_desc"``,
   ``min_bin_size = 0.05`` like fedcredit's ``min_bin_share``) against fedcredit's quantile
   and monotone bins on the pooled training rows: IV and non-empty bins per feature.

Synthetic data: ``fedcredit synth`` (20,000 enterprises; 5,000 with --quick); German
credit as in ``bench_quality.py``. Jobs use 2048-bit Paillier (``--backend mock`` for a
faster look, the default with --quick: the figures of points 1–3 do not depend on the backend, only their times).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Clock, emit, machine, parser  # noqa: E402
from bench_quality import german_nodes, synthetic_nodes  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from fedcredit.crypto import Identity, WorkerPool  # noqa: E402
from fedcredit.data import synth  # noqa: E402
from fedcredit.data.binning import FeaturePrep  # noqa: E402
from fedcredit.data.io import write_table  # noqa: E402
from fedcredit.data.reference import feature_names, join_nodes  # noqa: E402
from fedcredit.jobs.centralized import _frame, centralized_auc, developed  # noqa: E402
from fedcredit.jobs.in_process import run_job  # noqa: E402
from fedcredit.protocols.job import ModelSettings, NodeConfig, split_assignment  # noqa: E402
from fedcredit.protocols.loop import drive  # noqa: E402
from fedcredit.protocols.relay import SealedRelay  # noqa: E402
from fedcredit.protocols.woe import WoeConfig, WoeCoordinator, woe_party  # noqa: E402

NOISE_COLUMNS = 100
L2_GRID = [0.1, 0.03, 0.01, 0.003, 0.001]  # the noise case with selection off, l2 chosen by validation AUC
ROLES = ("bank", "tax", "utilities")


# --- data ---------------------------------------------------------------------------------------------------

def with_noise(nodes: list[NodeConfig], root: Path, columns: int) -> list[NodeConfig]:
    """The same nodes, the utilities file widened with ``columns`` pure-noise float columns (seed 7)."""
    util = next(n for n in nodes if n.role == "utilities")
    table = pq.read_table(util.data)
    rng = np.random.default_rng(7)
    names = [f"noise_{k:03d}" for k in range(columns)]
    for name in names:
        table = table.append_column(name, pa.array(rng.normal(size=table.num_rows)))
    path = write_table(table, root / "utilities-noise.parquet")
    noisy = dataclasses.replace(util, data=str(path), extra=[*util.extra, *(f"{n}:float" for n in names)])
    return [noisy if n.role == "utilities" else n for n in nodes]


def pooled_train(nodes: list[NodeConfig], ids: np.ndarray, settings: ModelSettings):
    """Each node's training frame of the aligned ``ids`` and the training labels, as the job splits them."""
    train = split_assignment(ids, settings.seed, settings.train, settings.validation) == 0
    pooled = [_frame(node, ids) for node in nodes]
    labels = next(y for _, y in pooled if y is not None)
    return [frame[train].reset_index(drop=True) for frame, _ in pooled], labels[train]


# --- 1-3: federated jobs against the pooled reference ----------------------------------------------------------

def run(name: str, nodes: list[NodeConfig], settings: ModelSettings, out: Path) -> dict:
    """One in-process job; its test AUC, the centralized AUC on the same bins, and its IV tables vs the pooled ones."""
    with Clock() as clock:
        result = run_job([dataclasses.replace(n, out_dir=str(out)) for n in nodes], settings)
    ids = pq.read_table(out / "scores.parquet")["id"].to_numpy()
    central = centralized_auc(nodes, ids, settings)
    frames, labels = pooled_train(nodes, ids, settings)
    diff, same_selection, tables = 0.0, True, {}
    for node, frame in zip(nodes, frames):
        fed = pd.read_csv(out / "model" / node.role / "iv.csv")
        ref = developed(node, frame, labels, settings)[0].selection_table()
        if list(fed.feature) != list(ref.feature):
            raise SystemExit(f"{name}: {node.role}'s iv.csv lists {list(fed.feature)}, the pooled run {list(ref.feature)}")
        diff = max(diff, float(np.max(np.abs(fed.iv.to_numpy() - ref.iv.to_numpy()), initial=0.0)))
        same_selection &= fed.kept.tolist() == ref.kept.tolist() and fed.bins.tolist() == ref.bins.tolist()
        tables[node.role] = fed
    fed_auc, bank_only = result["metrics"]["auc"], (result.get("bank_only") or {}).get("auc")
    print(f"{name}: federated test AUC {fed_auc:.4f}, centralized {central:.4f} (gap {fed_auc - central:+.4f})"
          + (f", bank-only {bank_only:.4f}" if bank_only is not None else "")
          + f"; max |IV fed − pooled| {diff:.3g}, same bins and selection: {same_selection}; "
          f"{result['intersection']:,} aligned rows, {result['evaluations']} evaluations, {clock.text()}", flush=True)
    if "regularization" in result:
        print(f"  l2 chosen by validation AUC: {result['regularization']['chosen_l2']} (path "
              + ", ".join(f"{r['l2']}: {r['val_auc']:.4f}" for r in result["regularization"]["path"]) + ")", flush=True)
    return {"auc": fed_auc, "centralized_auc": central, "bank_only_auc": bank_only, "iv_diff": diff,
            "chosen_l2": (result.get("regularization") or {}).get("chosen_l2"),
            "same_selection": same_selection, "tables": tables, "seconds": round(clock.wall, 1),
            "core_s": round(clock.cpu, 1), "load": clock.load, "rows": result["intersection"]}


def woe_scorecard(prefix: str, nodes: list[NodeConfig], base: ModelSettings, out: Path) -> tuple[dict, float]:
    r = run(f"{prefix or 'synthetic'} WoE scorecard (monotone bins)", nodes,
            dataclasses.replace(base, mode="woe", binning="monotone", bank_only_baseline=True), out)
    kept = sum(int(t.kept.sum()) for t in r["tables"].values())
    total = sum(len(t) for t in r["tables"].values())
    p = f"{prefix}_" if prefix else ""
    return ({f"{p}woe_lr_auc": round(r["auc"], 4), f"{p}centralized_woe_lr_auc": round(r["centralized_auc"], 4),
             f"{p}woe_lr_gap": round(r["auc"] - r["centralized_auc"], 4),
             f"{p}woe_bank_only_auc": round(r["bank_only_auc"], 4), f"{p}woe_features_kept": f"{kept}/{total}",
             f"{p}woe_rows": r["rows"], f"{p}woe_seconds": r["seconds"], f"{p}woe_core_s": r["core_s"],
             f"{p}woe_load": r["load"], f"{p}woe_same_selection": r["same_selection"]}, r["iv_diff"])


def noise_case(nodes: list[NodeConfig], base: ModelSettings, root: Path) -> tuple[dict, float]:
    noisy = with_noise(nodes, root, NOISE_COLUMNS)
    clean = run("default job, no noise", nodes, dataclasses.replace(base, bank_only_baseline=True), root / "clean")
    kept = run(f"default job, {NOISE_COLUMNS} noise columns at utilities (min_iv 0.02)", noisy, base, root / "noise")
    off = run(f"default job, {NOISE_COLUMNS} noise columns, min_iv 0 (selection off)", noisy,
              dataclasses.replace(base, min_iv=0.0), root / "noise-off")
    mono_run = run(f"default job, {NOISE_COLUMNS} noise columns, binning monotone", noisy,
                   dataclasses.replace(base, binning="monotone"), root / "noise-mono")
    grid = run(f"default job, {NOISE_COLUMNS} noise columns, min_iv 0, l2_grid {L2_GRID}", noisy,
               dataclasses.replace(base, min_iv=0.0, l2_grid=L2_GRID), root / "noise-grid")
    runs = {"without": clean, "with": kept, "min_iv_0": off, "monotone": mono_run, "min_iv_0_l2_grid": grid}
    util = kept["tables"]["utilities"]
    noise = util[util.feature.str.startswith("noise_")]
    survivors = noise[noise.kept]
    mono = mono_run["tables"]["utilities"]
    mono_noise = mono[mono.feature.str.startswith("noise_")]
    print(f"noise: {len(survivors)}/{len(noise)} kept at min_iv {base.min_iv} (quantile bins; IV of noise median "
          f"{noise.iv.median():.4f}, max {noise.iv.max():.4f}"
          + (f", top survivors {', '.join(f'{f} {v:.4f}' for f, v in survivors.nlargest(3, 'iv')[['feature', 'iv']].values)}"
             if len(survivors) else "")
          + f"); with monotone bins {int(mono_noise.kept.sum())}/{len(mono_noise)} kept", flush=True)
    figures = {"noise_kept": int(len(survivors)), "noise_total": int(len(noise)),
               "noise_kept_monotone": int(mono_noise.kept.sum()),
               "noise_iv_median": round(float(noise.iv.median()), 5), "noise_iv_max": round(float(noise.iv.max()), 5),
               "real_utilities_kept": f"{int(util[~util.feature.str.startswith('noise_')].kept.sum())}/"
                                      f"{int((~util.feature.str.startswith('noise_')).sum())}",
               "auc_without_noise": round(clean["auc"], 4), "auc_with_noise": round(kept["auc"], 4),
               "auc_with_noise_min_iv_0": round(off["auc"], 4), "auc_with_noise_monotone": round(mono_run["auc"], 4),
               "auc_with_noise_min_iv_0_l2_grid": round(grid["auc"], 4), "noise_chosen_l2": grid["chosen_l2"],
               "bank_only_auc": round(clean["bank_only_auc"], 4),
               "centralized_auc_without_noise": round(clean["centralized_auc"], 4),
               "centralized_auc_with_noise": round(kept["centralized_auc"], 4),
               "centralized_auc_with_noise_min_iv_0": round(off["centralized_auc"], 4),
               "centralized_auc_with_noise_monotone": round(mono_run["centralized_auc"], 4),
               "centralized_auc_with_noise_min_iv_0_l2_grid": round(grid["centralized_auc"], 4),
               "noise_seconds": {k: r["seconds"] for k, r in runs.items()},
               "noise_core_s": {k: r["core_s"] for k, r in runs.items()},
               "noise_load": {k: r["load"] for k, r in runs.items()}}
    return figures, max(r["iv_diff"] for r in runs.values())


# --- 4: the WoE/IV step alone ---------------------------------------------------------------------------------

def binning_step(rows: int, key_bits: int) -> dict:
    """The WoE protocol on ``rows`` training rows of joined synthetic nodes, as a job's nodes run it."""
    population = int(rows / 0.6 / 0.72) + 1000  # about 72 % of enterprises are at all three nodes, 60 % train
    joined = join_nodes(synth.generate(population, 11))
    train = np.flatnonzero(split_assignment(joined["uscc"].tolist(), 42, 0.6, 0.2) == 0)[:rows]
    if len(train) < rows:
        raise SystemExit(f"binning step: only {len(train):,} training rows from {population:,} enterprises")
    frames = {r: joined[feature_names(r)].iloc[train].reset_index(drop=True) for r in ROLES}
    y = joined["default_12m"].to_numpy()[train]
    ids = {r: Identity.generate(r) for r in ROLES}
    relays = {r: SealedRelay(ids[r], [ids[o].public for o in ROLES if o != r]) for r in ROLES}
    settings = ModelSettings(key_bits=key_bits)
    spent: dict[str, float] = {}
    with WorkerPool() as pool, Clock() as clock:
        started = time.perf_counter()
        parties = {r: woe_party(r, FeaturePrep.fit(frames[r], "binned", settings.n_bins), frames[r],
                                y if r == "bank" else None, publish_names=True, pool=pool) for r in ROLES}
        spent["quantile fit"] = time.perf_counter() - started
        for party in parties.values():
            party.handle = _timed(party.role, party.handle, spent)
        coordinator = WoeCoordinator("bench/woe", list(ROLES), WoeConfig(settings.woe_settings(), key_bits, "paillier"))
        rounds = drive(coordinator, parties, relays=relays)
        pool.shutdown()  # its workers' CPU time is counted once they are reaped
    features = {r: len(frames[r].columns) for r in ROLES}
    kept = {r: int(p.binning.selection_table().kept.sum()) for r, p in parties.items()}
    print(f"binning + IV step: {rows:,} training rows, features {features}, kept {kept}, {key_bits}-bit Paillier, "
          f"{rounds} rounds: {clock.text()}", flush=True)
    print("  seconds inside: " + ", ".join(f"{k} {v:.1f}" for k, v in spent.items()), flush=True)
    return {"binning_breakdown_s": {k: round(v, 2) for k, v in spent.items()},"binning_s": round(clock.wall, 2), "binning_core_s": round(clock.cpu, 1), "binning_rows": rows,
            "binning_load": clock.load, "binning_features": features, "binning_rounds": rounds}


def _timed(role: str, handle, spent: dict[str, float]):
    """``handle`` that adds its wall time to ``spent["<role> <message kind>"]``."""
    def timed(msg):
        started = time.perf_counter()
        try:
            return handle(msg)
        finally:
            key = f"{role} {msg.kind}"
            spent[key] = spent.get(key, 0.0) + time.perf_counter() - started
    return timed


# --- 5: optbinning ---------------------------------------------------------------------------------------------

def optbinning_table(dataset: str, nodes: list[NodeConfig], ids: np.ndarray, base: ModelSettings) -> pd.DataFrame:
    """Per feature on the pooled training rows: IV and non-empty bins of fedcredit quantile, monotone and optbinning."""
    from optbinning import OptimalBinning

    frames, labels = pooled_train(nodes, ids, base)
    rows = []
    for node, frame in zip(nodes, frames):
        found = {}
        for method in ("quantile", "monotone"):
            binning = developed(node, frame, labels, dataclasses.replace(base, binning=method))[0]
            bins = binning.bin_table()
            found[method] = (binning.selection_table().set_index("feature").iv,
                             bins[bins.share > 0].groupby("feature").size(), {s.name: s.kind for s in binning.prep.specs})
        kinds = found["quantile"][2]
        for name in frame.columns:
            if name not in kinds:
                continue
            numeric = kinds[name] == "numeric"
            x = frame[name].to_numpy(dtype=float) if numeric else frame[name].astype(object).where(frame[name].notna()).to_numpy()
            opt = OptimalBinning(name, dtype="numerical" if numeric else "categorical",
                                 monotonic_trend="auto_asc_desc" if numeric else None,
                                 min_bin_size=base.min_bin_share).fit(x, labels)
            table = opt.binning_table.build()
            counts = table.drop(index="Totals")["Count"].to_numpy(dtype=int)
            rows.append({"dataset": dataset, "role": node.role, "feature": name, "kind": kinds[name],
                         "iv_quantile": float(found["quantile"][0][name]), "bins_quantile": int(found["quantile"][1][name]),
                         "iv_monotone": float(found["monotone"][0][name]), "bins_monotone": int(found["monotone"][1][name]),
                         "iv_optbinning": float(opt.binning_table.iv), "bins_optbinning": int((counts > 0).sum()),
                         "optbinning_status": opt.status})
    return pd.DataFrame(rows)


def optbinning_summary(table: pd.DataFrame) -> dict:
    out = {}
    for dataset, part in table.groupby("dataset", sort=False):
        for method in ("quantile", "monotone", "optbinning"):
            out[f"{dataset}_mean_iv_{method}"] = round(float(part[f"iv_{method}"].mean()), 4)
            out[f"{dataset}_mean_bins_{method}"] = round(float(part[f"bins_{method}"].mean()), 2)
        out[f"{dataset}_monotone_vs_optbinning_iv_ratio_median"] = round(
            float((part.iv_monotone / part.iv_optbinning.where(part.iv_optbinning > 0)).median()), 3)
    return out


def print_optbinning(table: pd.DataFrame) -> None:
    cols = ["dataset", "role", "feature", "kind", "iv_quantile", "bins_quantile", "iv_monotone", "bins_monotone",
            "iv_optbinning", "bins_optbinning", "optbinning_status"]
    with pd.option_context("display.width", 200, "display.max_rows", 500, "display.float_format", "{:.4f}".format):
        print(table[cols].to_string(index=False), flush=True)


# --- main ----------------------------------------------------------------------------------------------------

def main() -> None:
    p = parser(__doc__)
    p.add_argument("--rows", type=int, default=None, help="synthetic population (default 20,000; 5,000 with --quick)")
    p.add_argument("--binning-rows", type=int, default=None,
                   help="training rows of the timed WoE/IV step (default 100,000; 10,000 with --quick)")
    p.add_argument("--backend", choices=("paillier", "mock"), default=None,
                   help="the jobs' cipher for points 1-3 (default paillier; mock with --quick); the timed step is Paillier")
    args = p.parse_args()
    args.backend = args.backend or ("mock" if args.quick else "paillier")
    rows = args.rows or (5_000 if args.quick else 20_000)
    binning_rows = args.binning_rows or (10_000 if args.quick else 100_000)
    base = ModelSettings(key_bits=2048, backend=args.backend, bank_only_baseline=False)
    figures = {"machine": machine(), "quick": args.quick, "synthetic_enterprises": rows, "key_bits": base.key_bits,
               "backend": base.backend, "load_at_start": [round(v, 2) for v in os.getloadavg()]}
    print(f"{'--quick: ' if args.quick else ''}{rows:,} synthetic enterprises, {binning_rows:,} rows in the timed "
          f"binning step, {base.backend} {base.key_bits}-bit; load {figures['load_at_start']}", flush=True)
    with Clock() as whole, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        syn, ger = synthetic_nodes(root / "syn", rows), german_nodes(root / "ger")
        woe_syn, d1 = woe_scorecard("", syn, base, root / "syn-woe")
        woe_ger, d2 = woe_scorecard("german", ger, base, root / "ger-woe")
        noise, d3 = noise_case(syn, base, root / "noise")
        figures.update({"iv_max_abs_diff": max(d1, d2, d3), **woe_syn, **woe_ger, **noise})
        figures.update(binning_step(binning_rows, base.key_bits))
        with Clock() as opt_clock:
            table = pd.concat([optbinning_table("synthetic", syn, pq.read_table(root / "syn-woe" / "scores.parquet")["id"]
                                                .to_numpy(), base),
                               optbinning_table("german", ger, pq.read_table(root / "ger-woe" / "scores.parquet")["id"]
                                                .to_numpy(), base)], ignore_index=True)
        print_optbinning(table)
        print(f"optbinning comparison: {opt_clock.text()}", flush=True)
        figures.update(optbinning_summary(table))
        figures["optbinning_features"] = table.round(5).to_dict(orient="records")
    figures.update(total_seconds=round(whole.wall, 1), total_core_s=round(whole.cpu, 1), load=whole.load)
    emit(figures, args.json)


if __name__ == "__main__":
    main()
