"""Cost of one vertical SecureBoost tree, 2048-bit Paillier vs the mock cipher, and AUC against the reference.

    python benchmarks/bench_secureboost.py [--quick] [--json PATH] [--rows N] [--trees T] [--depth D]
                                           [--no-mock] [--no-reference] [--trace]

Three parties: the bank (labels, Paillier key, 30 features) and two hosts, tax and
utilities (150 features each: 300 host features). Data: ``fedcredit.data.synth.generate``
joined on USCC (bank 8, tax 11, utilities 17 base columns), widened to 30 / 150 / 150
columns with derived columns: extra column i of a party is a noisy copy of the party's
numeric base column (i mod count), ``x + std(x)·N(0, 1)`` (missing values stay missing).
Every feature is quantile-binned into 10 bins (+ a missing bin) on the training rows.
``--rows`` training rows (default 100,000; 2,000 with --quick) plus a quarter as many test
rows. Depth 5, learning rate 0.3, λ = 1, g/h at 16 fixed-point bits.

The same trees are grown with the Paillier backend and with the mock cipher (asserted:
identical tree signatures and scores), and by the plaintext reference
(``gbdt_reference.GbdtReference``, asserted identical too); ``--no-mock`` / ``--no-reference``
skip either run (and its check) at sizes where they cost too much. Parties are binned one at a
time and their float frames dropped, so 1,000,000 rows fit in a few GB. A tree's time runs from the
bank starting it (gradients; the first on ``sb.tree``, each later one in the reply that
reports the last) to the bank reporting it (``sb.tree_done``); key generation and prediction
are timed separately, and the JSON splits the Paillier run's time by party and message
handled (bank ``sb.tree`` and ``sb.left``: gradients encrypted; host ``sb.gradients``: root
histograms; host ``sb.share``: deeper levels; bank ``sb.histograms``: decryption and split
finding). The crypto
WorkerPool has os.cpu_count() workers, so core-seconds per tree = seconds per tree × that;
beside it, ``cpu_core_seconds_per_tree`` is the CPU time (user + system) the process and its
pool workers measurably spent per tree (psutil, sampled at a tree's start and end), which is
the honest figure when others share the machine. ``peak_rss_mb``: this process's peak plus its
largest finished child; ``worker_peak_rss_mb``: each live pool process's peak.
Target (issue #9): ≤ 180 core-seconds per tree at 100,000 rows × (30 + 300) features,
depth 5 (FATE 2.x: about 114 s per tree on 16 cores = 1,824 core-seconds).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, machine, machine_cpu_seconds, parser, peak_rss_mb  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import psutil  # noqa: E402

from fedcredit.crypto import WorkerPool  # noqa: E402
from fedcredit.data import synth  # noqa: E402
from fedcredit.data.binning import FeaturePrep  # noqa: E402
from fedcredit.data.reference import feature_names, join_nodes  # noqa: E402
from fedcredit.models.gbdt_reference import GbdtReference, PartyBins  # noqa: E402
from fedcredit.protocols import secureboost as sb  # noqa: E402
from fedcredit.protocols.loop import drive  # noqa: E402
from fedcredit.protocols.secureboost import SbConfig, SbCoordinator, TreePartyData, sb_party  # noqa: E402
from fedcredit.scoring.metrics import auc  # noqa: E402

FATE_CORE_SECONDS = 114 * 16
ROLES = ("bank", "tax", "utilities")
WIDTH = {"bank": 30, "tax": 150, "utilities": 150}


def load() -> float:
    return round(os.getloadavg()[0], 2)


def widen(frame: pd.DataFrame, width: int, rng: np.random.Generator) -> pd.DataFrame:
    """Add noisy copies of the numeric base columns until the frame has ``width`` columns."""
    numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])]
    extra = {}
    for i in range(width - frame.shape[1]):
        src = numeric[i % len(numeric)]
        x = frame[src].to_numpy(dtype=float)
        sd = np.nanstd(x) or 1.0
        extra[f"{src}__d{i}"] = x + sd * rng.standard_normal(len(x))
    return pd.concat([frame.reset_index(drop=True), pd.DataFrame(extra)], axis=1)


def prepared(rows: int, test_rows: int, seed: int = 0):
    """Binned party data per role (aligned rows: training first, then test), labels.

    One role at a time: widen its columns, fit the bins on the training rows, bin, and drop
    the float frame before the next role, so that at a million rows only one party's widened
    frame (1.25M × 150 float64: 1.5 GB) is alive beside the binned matrices. The noisy copies
    are drawn from one generator in role order, so the data are those of a whole-frame build."""
    need = rows + test_rows
    generated = int(need / 0.7) + 1000  # synth's coverage leaves about 73% of enterprises in all three nodes
    joined = join_nodes(synth.generate(generated, seed))
    if len(joined) < need:
        raise SystemExit(f"only {len(joined)} aligned rows generated, need {need}")
    joined = joined.iloc[:need].reset_index(drop=True)
    y = joined["default_12m"].to_numpy().astype(np.int8)
    base = {r: joined[feature_names(r)] for r in ROLES}
    del joined
    rng = np.random.default_rng(seed + 1)
    data = {}
    for role in ROLES:
        frame = widen(base.pop(role), WIDTH[role], rng)
        prep = FeaturePrep.fit(frame.iloc[:rows])  # the training rows come first
        data[role] = TreePartyData.from_prep(prep, frame, np.arange(rows), y if role == "bank" else None)
        del frame
    return data, y


def tree_cpu_seconds() -> float:
    """User + system CPU seconds of this process and every live descendant (the crypto pool's workers).

    Sampled at a tree's start and end, the difference is the CPU the tree used on however many
    cores, whatever else runs on the machine. (getrusage's CHILDREN would miss the workers: they
    are children of the forkserver, which outlives the pool.)"""
    me = psutil.Process()
    total = 0.0
    for proc in [me, *me.children(recursive=True)]:
        try:
            t = proc.cpu_times()
        except psutil.NoSuchProcess:  # ended between listing and reading
            continue
        total += t.user + t.system
    return total


def worker_peak_rss_mb() -> list[float]:
    """Peak resident memory (VmHWM) of each live descendant process, MiB."""
    peaks = []
    for proc in psutil.Process().children(recursive=True):
        try:
            with open(f"/proc/{proc.pid}/status") as fh:
                peaks.append(next(int(line.split()[1]) for line in fh if line.startswith("VmHWM")) / 1024.0)
        except (OSError, StopIteration):
            continue
    return sorted(round(p) for p in peaks)


def run(data, cfg: SbConfig, workers: int, trace: bool = False) -> dict:
    """One federated training + prediction; per-tree wall times and load averages."""
    ends = []
    with WorkerPool(workers) as pool:
        parties = {r: sb_party(r, data[r], pool=pool, goss_seed=0 if r == "bank" else None) for r in ROLES}
        bank = parties["bank"]
        handle = bank.handle

        def stamped(stage, into, name):  # the bank's own stages: a tree starts, is reported, prediction starts
            def inner(*args):
                into.append((name, time.perf_counter(), tree_cpu_seconds()))
                return stage(*args)
            return inner

        growing = []
        bank._grow = stamped(bank._grow, growing, "tree")
        bank._tree_done = stamped(bank._tree_done, ends, "tree")
        bank._predict_all = stamped(bank._predict_all, ends, "predict")

        def timed(msg):
            if trace and msg.kind == sb.HISTOGRAMS:  # one per host and tree level
                print(f"    {cfg.backend}: histograms from {msg.sender} after {time.perf_counter() - growing[-1][1]:.1f} s "
                      f"({len(msg.payload) / 2**20:.1f} MiB, load {load()})", flush=True)
            return handle(msg)

        bank.handle = timed
        spent: dict[str, float] = {}  # seconds inside each party's handle, per (party, message kind received)
        for role, party in parties.items():
            def clocked(msg, inner=party.handle, role=role):
                t = time.perf_counter()
                try:
                    return inner(msg)
                finally:
                    key = f"{role} {msg.kind}"
                    spent[key] = spent.get(key, 0.0) + time.perf_counter() - t
            party.handle = clocked

        def progress(rec):
            now, cpu = time.perf_counter(), tree_cpu_seconds()
            ends.append((rec["tree"], now, cpu))
            print(f"  {cfg.backend}: tree {rec['tree']}/{cfg.n_trees} in {now - growing[-1][1]:.1f} s, "
                  f"{cpu - growing[-1][2]:.1f} CPU s (load {load()})", flush=True)

        coord = SbCoordinator("bench", list(ROLES), cfg, on_progress=progress)
        load_before, machine_before = load(), machine_cpu_seconds()
        t0 = time.perf_counter()
        rounds = drive(coord, parties, tap=None)
        total = time.perf_counter() - t0
        machine_cpu = machine_cpu_seconds() - machine_before
        worker_peaks = worker_peak_rss_mb()
    starts = [(t, c) for _, t, c in growing]
    tree_ends = [(t, c) for k, t, c in ends if k != "predict"]
    predict_start = next((t for k, t, _ in ends if k == "predict"), None)
    tree_s = [e[0] - s[0] for s, e in zip(starts, tree_ends)]
    tree_cpu = [e[1] - s[1] for s, e in zip(starts, tree_ends)]
    return {"bank": bank, "parties": parties, "tree_s": tree_s, "tree_cpu_s": tree_cpu, "setup_s": starts[0][0] - t0,
            "predict_s": (t0 + total) - predict_start if predict_start else None, "total_s": total,
            "rounds": rounds, "spent": {k: round(v, 2) for k, v in sorted(spent.items())}, "load_before": load_before, "load_after": load(),
            "machine_cpu_s": machine_cpu, "worker_peak_rss_mb": worker_peaks}


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--rows", type=int, default=None, help="training rows (default 100,000; 2,000 with --quick)")
    p.add_argument("--trees", type=int, default=None, help="trees (default 1)")
    p.add_argument("--depth", type=int, default=5)
    p.add_argument("--key-bits", type=int, default=2048)
    p.add_argument("--trace", action="store_true", help="print the arrival of each level's histograms")
    p.add_argument("--no-mock", action="store_true", help="skip the mock-cipher run (and its equality check)")
    p.add_argument("--no-reference", action="store_true", help="skip the plaintext reference (and its equality check)")
    args = p.parse_args()
    rows = args.rows or (2_000 if args.quick else 100_000)
    trees = args.trees or 1
    test_rows = rows // 4
    workers = os.cpu_count() or 1
    figures = {"machine": machine(), "workers": workers, "key_bits": args.key_bits, "depth": args.depth,
               "trees": trees, "load_start": load()}
    t = time.perf_counter()
    data, y = prepared(rows, test_rows)
    train, test = np.arange(rows), np.arange(rows, rows + test_rows)
    features = {r: data[r].bins.shape[1] for r in ROLES}
    prepare_s = time.perf_counter() - t
    print(f"data: {rows:,} training + {test_rows:,} test rows, features {features}, default rate "
          f"{y[train].mean():.3f}, prepared in {prepare_s:.0f} s, peak RSS {peak_rss_mb():.0f} MiB (load {load()})", flush=True)

    base = dict(n_trees=trees, max_depth=args.depth, learning_rate=0.3, key_bits=args.key_bits)
    enc = run(data, SbConfig(backend="paillier", **base), workers, args.trace)
    eb = enc["bank"]
    tree_s, cpu_s = float(np.mean(enc["tree_s"])), float(np.mean(enc["tree_cpu_s"]))
    print(f"paillier: {tree_s:.1f} s/tree, {tree_s * workers:.0f} core-s (wall × {workers}), {cpu_s:.0f} CPU s per tree; "
          f"by party and message {enc['spent']}; peak RSS {peak_rss_mb():.0f} MiB, workers {enc['worker_peak_rss_mb']} MiB, "
          f"load {enc['load_before']} -> {enc['load_after']}", flush=True)
    signatures = [tr.signature() for tr in eb.trees]
    mock = None
    if not args.no_mock:
        mock = run(data, SbConfig(backend="mock", **base), workers)
        mb = mock["bank"]
        assert signatures == [tr.signature() for tr in mb.trees], "Paillier and mock trees differ"
        assert np.array_equal(eb.scores, mb.scores)
        for role in ROLES[1:]:
            assert enc["parties"][role].lookup == mock["parties"][role].lookup

    ref_fit_s = reference_auc = None
    if not args.no_reference:
        t = time.perf_counter()
        blocks = [PartyBins(r, data[r].train_bins, data[r].n_bins) for r in ROLES]
        model = GbdtReference(eb.gbdt_config()).fit(blocks, y[train])
        ref_fit_s = round(time.perf_counter() - t, 2)
        assert [tr.signature() for tr in model.trees] == signatures, "reference trees differ"
        ref_scores = model.decision_function([PartyBins(r, data[r].bins[test], data[r].n_bins) for r in ROLES])
        reference_auc = round(auc(y[test], ref_scores), 4)
    test_auc = auc(y[test], eb.raw_scores[test])

    mock_tree_s = float(np.mean(mock["tree_s"])) if mock else None
    host_splits = sum(1 for tr in eb.trees for n in tr.nodes if n.party not in ("bank", None))
    figures.update({
        "rows": rows, "test_rows": test_rows, "features": sum(features.values()), "features_by_party": features,
        "prepare_s": round(prepare_s, 1),
        "tree_s": round(tree_s, 2), "tree_s_each": [round(s, 2) for s in enc["tree_s"]],
        "mock_tree_s": round(mock_tree_s, 3) if mock else None,
        "mock_tree_s_each": [round(s, 3) for s in mock["tree_s"]] if mock else None,
        "core_seconds_per_tree": round(tree_s * workers, 1), "cpu_core_seconds_per_tree": round(cpu_s, 1),
        "cpu_core_seconds_each": [round(s, 1) for s in enc["tree_cpu_s"]],
        "machine_cpu_seconds_paillier_run": round(enc["machine_cpu_s"], 1),
        "target_core_seconds": 180, "fate_core_seconds": FATE_CORE_SECONDS,
        "test_auc": round(test_auc, 4), "reference_auc": reference_auc,
        "checked_against": (checked := [n for n, on in (("mock", mock), ("reference", ref_fit_s)) if on]),
        "identical_trees": True if checked else None,  # None: neither check ran
        "host_splits": host_splits,
        "setup_s": round(enc["setup_s"], 2), "predict_s": round(enc["predict_s"], 2),
        "mock_predict_s": round(mock["predict_s"], 2) if mock else None, "reference_fit_s": ref_fit_s,
        "paillier_seconds_by_party_and_message": enc["spent"],
        "mock_seconds_by_party_and_message": mock["spent"] if mock else None,
        "load_paillier": [enc["load_before"], enc["load_after"]],
        "load_mock": [mock["load_before"], mock["load_after"]] if mock else None,
        "load_end": load(), "peak_rss_mb": round(peak_rss_mb()), "worker_peak_rss_mb": enc["worker_peak_rss_mb"],
    })
    mock_text = f"{mock_tree_s:.2f} s mock" if mock else "mock skipped"
    ref_text = f"reference {reference_auc:.4f}" if reference_auc is not None else "reference skipped"
    print(f"{rows:,} rows × {sum(features.values())} features, depth {args.depth}: tree {tree_s:.1f} s Paillier vs "
          f"{mock_text}; {tree_s * workers:.0f} core-s per tree by wall × {workers}, {cpu_s:.0f} measured CPU s "
          f"(target 180, FATE {FATE_CORE_SECONDS}); test AUC {test_auc:.4f} vs {ref_text}; "
          f"peak RSS {peak_rss_mb():.0f} MiB", flush=True)
    emit(figures, args.json)


if __name__ == "__main__":
    main()
