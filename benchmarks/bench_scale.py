"""City scale (issue #20): the whole job as ``fedcredit demo`` runs it, seconds and peak memory per phase.

    python benchmarks/bench_scale.py [--rows N | --quick] [--json PATH] [--engine in-process|simulation]
                                     [--key-bits 2048] [--model scorecard_lr] [--compare ROWS]

Synthetic data for bank, tax and utilities (``fedcredit.data.synth``), then the job exactly as
``fedcredit demo --no-rescore`` runs it (``fedcredit.jobs.runner.run``: checks and the centralized
reference, validation, PSI, binning, the model to convergence, scoring, signed limits, the report,
audit verification, the outputs). Phases, from the job's own events:

    generate   synthetic data written as Parquet
    preflight  the runner's checks and the centralized reference (before any engine starts)
    validate   the engine starts, every node reads and validates its file      (until "validated")
    psi        private set intersection                                         (until "aligned")
    prepare    split, bins, feature selection, keys                (until the first "iteration")
    train      the joint model's iterations (the bank-only baseline runs inside the bank, in prepare)
    finish     scoring, limits, report at every node     (after the last iteration to "finished")
    outputs    audit verification, metrics.json/run.json, the staged folder committed

Per phase: wall seconds, microseconds per generated row, core-seconds of the process tree,
peak RSS. ``peak_rss_mb`` is the largest party's: with the in-process engine every party and the
coordinator share this one process, so its figure (kernel peak, VmHWM) is an upper bound of each
party's; with the simulation engine the nodes run in Ray worker processes, which serve whichever
node Flower hands them, so peaks are per process (each listed by name) and the largest is reported.
``largest_message_bytes``: the biggest bundle one node gets or sends in one round (one Flower
message), from every round's messages (``fedcredit.common.wire.BundleMeter``).
``--compare ROWS`` first runs ROWS in a child process (so neither run inherits the other's heap),
then this size, and gives this size's per-row cost over that one's per phase.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, machine, parser  # noqa: E402
from _phases import AllocationTrace, PhaseMeter, load_average  # noqa: E402

from rich.console import Console  # noqa: E402

from fedcredit.cli.data import generate  # noqa: E402
from fedcredit.cli.train import _demo_node_policy  # noqa: E402
from fedcredit.common.wire import BundleMeter  # noqa: E402
from fedcredit.data.schema import NODE_ROLES  # noqa: E402
from fedcredit.jobs import runner  # noqa: E402
from fedcredit.protocols.job import ModelSettings, NodeConfig  # noqa: E402
from fedcredit.scoring.policy import LimitPolicy  # noqa: E402

DEFAULT_ROWS, QUICK_ROWS = 1_000_000, 200_000
ORDER = ("generate", "preflight", "validate", "psi", "prepare", "train", "finish", "outputs")


class JobPhases:
    """The job's events (``on_event``) as phase changes of a PhaseMeter."""

    AFTER = {"start": "validate", "validated": "psi", "aligned": "prepare", "iteration": "train"}

    def __init__(self, meter: PhaseMeter, trace: AllocationTrace | None = None):
        self.meter, self.trace = meter, trace
        self.iterations = 0

    def __call__(self, kind: str, info: dict) -> None:
        if kind == "iteration":
            self.iterations += 1
        if self.trace is not None:
            self.trace.look()
        if kind in self.AFTER:
            self.enter(self.AFTER[kind])  # every iteration starts a segment: the last one turns out to be scoring
        elif kind == "finished":
            self.meter.relabel_last("finish")  # since the last iteration (a scoring run: since the bins)
            if self.trace is not None:
                self.trace.relabel_last("finish")
            self.enter("outputs")

    def enter(self, phase: str) -> None:
        self.meter.enter(phase)
        if self.trace is not None:
            self.trace.enter(phase)


def run_once(rows: int, *, engine: str, key_bits: int, model: str, seed: int, work: Path,
             backend: str = "paillier", max_iter: int | None = None, interval: float = 0.2,
             trace: AllocationTrace | None = None) -> dict:
    """Generate ``rows`` enterprises in ``work``, run the job there, return the figures."""
    settings = ModelSettings(seed=seed, key_bits=key_bits, model=model, backend=backend,
                             **({"max_iter": max_iter} if max_iter is not None else {}))
    load_before = load_average()
    meter, bundles = PhaseMeter(interval), BundleMeter()
    started = time.perf_counter()
    events = JobPhases(meter, trace)
    events.enter("generate")
    paths, _ = generate(work / "data", rows, seed, "parquet")
    nodes = [NodeConfig(role, str(paths[role][0]), policy=str(_demo_node_policy(work / "data", role, key_bits)))
             for role in NODE_ROLES]
    events.enter("preflight")
    try:
        metrics = runner.run(nodes, settings, work / "run", engine=engine, console=Console(file=sys.stderr),
                             centralized=True, policy=LimitPolicy(), on_event=events, on_round=_both(bundles.round, trace.look if trace else None))
    finally:
        meter.stop()
        if trace is not None:
            trace.enter("")
    total = time.perf_counter() - started
    found = figures(rows, engine, settings, meter, bundles, metrics, total, load_before)
    if trace is not None:
        found["allocations"] = trace.found
    return found


def _both(first, second):
    return first if second is None else lambda *args: (first(*args), second(*args))


def figures(rows: int, engine: str, settings: ModelSettings, meter: PhaseMeter, bundles: BundleMeter,
            metrics: dict, total: float, load_before: list[float]) -> dict:
    """The benchmark's JSON object (keys ``rows``, ``total_s``, ``peak_rss_mb``, ``phases`` as issue #20 names them)."""
    shared = engine == "in-process"
    phases = {}
    for name, ph in sorted(meter.phases().items(), key=lambda kv: ORDER.index(kv[0]) if kv[0] in ORDER else 99):
        largest_process = max(ph["processes"].values(), default=0.0)
        party = ph["own_peak_mb"] if shared else max(ph["own_peak_mb"], largest_process)
        phases[name] = {"seconds": round(ph["seconds"], 2), "peak_rss_mb": round(party, 1),
                        "tree_rss_mb": round(ph["tree_peak_mb"], 1), "core_seconds": round(ph["core_seconds"], 1),
                        "per_row_us": round(ph["seconds"] / rows * 1e6, 2)}
    peaks = meter.process_peaks()
    top = sorted(peaks.items(), key=lambda kv: -kv[1])[:8]
    return {
        "benchmark": "scale", "engine": engine, "model": settings.model, "key_bits": settings.key_bits,
        "backend": settings.backend, "rows": rows, "aligned": metrics.get("intersection"),
        "test_auc": metrics.get("test_auc"), "bank_only_auc": metrics.get("bank_only_auc"),
        "centralized_auc": metrics.get("centralized_auc"), "evaluations": metrics.get("evaluations"),
        "rounds": metrics.get("rounds"), "total_s": round(total, 1),
        "peak_rss_mb": round(max(p["peak_rss_mb"] for p in phases.values()), 1),
        "peak_rss_scope": ("one process holds every party and the coordinator (in-process engine): its peak is an "
                           "upper bound of each party's" if shared else
                           "largest single process: the driver (coordinator) or a Ray worker (serves whichever "
                           "node Flower hands it); per process below"),
        "core_seconds": round(meter.cpu_seconds(), 1),
        "largest_message_bytes": bundles.largest, "largest_message": bundles.where,
        "message_bytes_total": bundles.total,
        "phases": phases,
        "processes": [{"pid": pid, "name": meter.names.get(pid, "?"), "peak_rss_mb": round(mb, 1)} for pid, mb in top],
        "load_before": load_before, "load_after": load_average(), "machine": machine(),
        "notes": "RSS sampled every ~0.2 s over the process tree (tree_rss_mb sums processes, so pages shared by "
                 "forked workers count more than once); this process's peak per phase is the kernel's VmHWM, reset "
                 "at each phase start; core_seconds: user+system CPU of every process seen in the tree",
    }


def compare(small: dict, large: dict) -> dict:
    """Per phase: the large run's per-row cost over the small run's (1.0 = linear)."""
    out = {}
    for name, ph in large["phases"].items():
        base = small["phases"].get(name, {}).get("per_row_us")
        out[name] = round(ph["per_row_us"] / base, 2) if base else None
    return {"rows": small["rows"], "per_row_ratio": out, "small": small}


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--rows", type=int, default=None, help=f"enterprises (default {DEFAULT_ROWS:,}; {QUICK_ROWS:,} with --quick)")
    p.add_argument("--engine", choices=runner.ENGINES, default="in-process")
    p.add_argument("--key-bits", type=int, default=2048)
    p.add_argument("--model", default="scorecard_lr", choices=("scorecard_lr", "secureboost"))
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--backend", default="paillier", choices=("paillier", "mock"),
                   help="mock: no real encryption (tests of the benchmark itself)")
    p.add_argument("--max-iter", type=int, default=None, help="cap the model's iterations (tests of the benchmark)")
    p.add_argument("--compare", type=int, default=None, metavar="ROWS",
                   help="also run ROWS first (in a child process) and give per-row cost ratios per phase")
    p.add_argument("--trace-memory", action="store_true",
                   help="also find where each phase's memory is held (tracemalloc: several times slower)")
    p.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it (default: a temporary one)")
    args = p.parse_args()
    rows = args.rows or (QUICK_ROWS if args.quick else DEFAULT_ROWS)
    small = _child_run(args, args.compare) if args.compare else None
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        work = args.keep or Path(tmp)
        result = run_once(rows, engine=args.engine, key_bits=args.key_bits, model=args.model, seed=args.seed,
                          work=work, backend=args.backend, max_iter=args.max_iter,
                          trace=AllocationTrace() if args.trace_memory else None)
    if small is not None:
        result["compare"] = compare(small, result)
    emit(result, args.json)


def _child_run(args, rows: int) -> dict:
    """The comparison size's figures, measured in a fresh process."""
    with tempfile.TemporaryDirectory(prefix="bench-scale-compare-") as tmp:
        out = Path(tmp) / "figures.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--rows", str(rows), "--json", str(out),
               "--engine", args.engine, "--key-bits", str(args.key_bits), "--model", args.model,
               "--seed", str(args.seed), "--backend", args.backend]
        if args.max_iter is not None:
            cmd += ["--max-iter", str(args.max_iter)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())


if __name__ == "__main__":
    main()
