"""Per-message checkpoint cost at a node, by rows: the node service's store against a whole-agent pickle.

The default scorecard job runs in this process with every node behind ``NodeRuns`` (the
node service's delivery handling: agents cached in memory, a checkpoint after every
delivery). For every delivery the store reports the signed state file's bytes, the new
blobs it wrote (large objects written once, when created), the delivery's replies (kept
for a redelivery; they are the message that leaves the node anyway) and the seconds the
save took. Beside it, at the middle delivery of each node, the size and time of pickling
the whole agent — what every delivery cost before (format 1). Runs at 20,000 and 200,000
enterprises (``--quick``: 2,000 and 20,000), mock crypto backend (the checkpoint's
mechanics do not depend on it; Paillier ciphertexts only make blobs and replies larger).

JSON keys: ``sizes`` {rows: {role: {deliveries, state_bytes_median, state_bytes_max,
save_s_median, save_s_max, later_blob_bytes_median, first_blob_bytes, reply_bytes_median,
whole_pickle_bytes, whole_pickle_s}}}, ``state_growth`` (largest state file at the big
size over the small), ``whole_pickle_growth``, ``load_avg``, ``machine``.
"""

from __future__ import annotations

import os
import pickle
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine, parser  # noqa: E402

from fedcredit.common.wire import Message  # noqa: E402
from fedcredit.crypto import WorkerPool  # noqa: E402
from fedcredit.data import synth  # noqa: E402
from fedcredit.node.runs import NodeRuns  # noqa: E402
from fedcredit.protocols.job import JobCoordinator, ModelSettings, NodeAgent, NodeConfig  # noqa: E402
from fedcredit.protocols.loop import drive_bundles  # noqa: E402

ROLES = ("bank", "tax", "utilities")


def measure(rows: int, root: Path, max_iter: int) -> dict:
    paths = synth.write_nodes(synth.generate(rows, 42), root / f"data-{rows}")
    settings = ModelSettings(backend="mock", key_bits=1024, max_iter=max_iter, bank_only_baseline=False)
    nodes = {r: NodeConfig(r, str(paths[r])) for r in ROLES}
    stats: dict[str, list] = {r: [] for r in ROLES}
    whole: dict[str, tuple[int, float]] = {}
    with WorkerPool() as pool:
        runs = {r: NodeRuns(root / f"work-{rows}" / r, lambda run, n=n: NodeAgent(n), pool) for r, n in nodes.items()}
        seqs = {r: 0 for r in ROLES}

        def deliver(role: str, msgs: list[Message]) -> list[Message]:
            seqs[role] += 1
            outcome = runs[role].deliver("1", seqs[role], [Message.from_bytes(m.to_bytes()) for m in msgs])
            stats[role].append(runs[role].last_save("1"))
            if seqs[role] == 12:  # mid-training: what a whole-agent pickle costs per delivery
                agent = runs[role]._live["1"].agent
                started = time.perf_counter()
                data = pickle.dumps(agent, protocol=5)
                whole[role] = (len(data), time.perf_counter() - started)
            return [Message.from_bytes(r.to_bytes()) for r in outcome.replies]

        drive_bundles(JobCoordinator("bench", list(ROLES), settings, pool=pool), deliver)
    out = {}
    for role, saves in stats.items():
        later = saves[1:]
        out[role] = {
            "deliveries": len(saves),
            "state_bytes_median": int(statistics.median(s.state_bytes for s in saves)),
            "state_bytes_max": max(s.state_bytes for s in saves),
            "save_s_median": round(statistics.median(s.seconds for s in saves), 4),
            "save_s_max": round(max(s.seconds for s in saves), 4),
            "first_blob_bytes": saves[0].blob_bytes,
            "later_blob_bytes_median": int(statistics.median(s.blob_bytes for s in later)) if later else 0,
            "reply_bytes_median": int(statistics.median(s.reply_bytes for s in saves)),
            "whole_pickle_bytes": whole.get(role, (None, None))[0],
            "whole_pickle_s": round(whole[role][1], 4) if role in whole else None,
        }
    return out


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--max-iter", type=int, default=5, help="L-BFGS iterations of the job (deliveries per node)")
    args = p.parse_args()
    small, big = (2_000, 20_000) if args.quick else (20_000, 200_000)
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="bench-checkpoint-") as tmp:
        sizes = {}
        for rows in (small, big):
            started = time.perf_counter()
            sizes[rows] = measure(rows, Path(tmp), args.max_iter)
            print(f"{rows:,} enterprises: {time.perf_counter() - started:.1f} s", flush=True)
            for role, fig in sizes[rows].items():
                print(f"  {role:9s} state file median {fig['state_bytes_median']:>9,} B (max {fig['state_bytes_max']:,}), "
                      f"save {fig['save_s_median'] * 1e3:.1f} ms median ({fig['save_s_max'] * 1e3:.1f} max); "
                      f"first delivery's blobs {fig['first_blob_bytes']:,} B; whole-agent pickle "
                      f"{fig['whole_pickle_bytes'] or 0:,} B in {(fig['whole_pickle_s'] or 0) * 1e3:.1f} ms", flush=True)
            load.append(os.getloadavg()[0])
    growth = {r: round(sizes[big][r]["state_bytes_max"] / sizes[small][r]["state_bytes_max"], 2) for r in ROLES}
    whole = {r: round(sizes[big][r]["whole_pickle_bytes"] / sizes[small][r]["whole_pickle_bytes"], 2)
             for r in ROLES if sizes[big][r]["whole_pickle_bytes"] and sizes[small][r]["whole_pickle_bytes"]}
    print(f"largest state file, {big:,} over {small:,} rows: {growth}; whole-agent pickle: {whole}")
    emit({"sizes": {str(k): v for k, v in sizes.items()}, "state_growth": growth, "whole_pickle_growth": whole,
          "load_avg": load, "machine": machine(), "quick": args.quick}, args.json)


if __name__ == "__main__":
    main()
