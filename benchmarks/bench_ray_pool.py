"""The crypto worker pool on a local Ray cluster against the process pool: the same work, side by side (issue #20.4).

One run: a 2048-bit key; encrypt ROWS values, then grouped sums of those ciphertexts over
FEATURES columns of BINS bins (the histogram step of binning and SecureBoost) and X^T[[d]] over
FEATURES integer columns (the scorecard's gradient step), first through
the process pool (one worker per core), then through a Ray cluster started for the run on
127.0.0.1 with as many CPUs (``ray start --head``, ``fedcredit_netlab.ray_head``). Both pools'
sums run on the same ciphertexts and must give the same integers. The Ray pool's first task
starts and warms its workers (fedcredit imported, the fixed-base table built), as a node's
first job would. Per pool: wall seconds and
core-seconds of this whole process tree (pool workers, and the Ray cluster's GCS, raylet,
agents and workers), and the machine's. Usage:

    flock /tmp/fc-heavy.lock python benchmarks/bench_ray_pool.py [--quick] [--json PATH]

``--quick``: 10,000 rows instead of 20,000 (either is above the size at which the pools split work).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import Clock, emit, machine, machine_cpu_seconds, parser  # noqa: E402

import numpy as np  # noqa: E402

from fedcredit.crypto import RayPool, WorkerPool, generate_keypair  # noqa: E402
from fedcredit_netlab.ray_head import LocalRayHead  # noqa: E402

FEATURES, BINS, KEY_BITS = 30, 10, 2048


def measure(pool, kp, d, bins, X, given=None) -> tuple[dict, list, object]:
    """Encrypt ``d``, then sum ``given`` (default: the fresh ciphertexts) by bins and against ``X``;
    figures, the sums' ciphertexts, the fresh ciphertexts."""
    figures = {}
    machine0 = machine_cpu_seconds()
    with Clock() as enc:
        v = kp.public_key.encrypt(d, scale_bits=0, pool=pool)
    with Clock() as grouped:
        sums = (given or v).grouped_sum(bins, pool=pool)
    with Clock() as dot:
        products = (given or v).dot(X, pool=pool)
    clocks = (("encrypt", enc), ("grouped_sum", grouped), ("dot", dot))
    for name, clock in clocks:
        figures[f"{name}_s"], figures[f"{name}_core_s"] = round(clock.wall, 2), round(clock.cpu, 2)
    figures["wall_s"] = round(sum(clock.wall for _, clock in clocks), 2)
    figures["core_s"] = round(sum(clock.cpu for _, clock in clocks), 2)
    figures["machine_core_s"] = round(machine_cpu_seconds() - machine0, 2)
    return figures, sums.data + products.data, v


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    rows = 10_000 if args.quick else 20_000
    cores = os.cpu_count() or 1
    rng = np.random.default_rng(0)
    d = rng.integers(-(2**20), 2**20, rows)
    bins = np.stack([rng.permutation(np.arange(rows) % BINS) for _ in range(FEATURES)], axis=1)  # no empty bin
    X = rng.integers(1, 2**16, (rows, FEATURES))  # no zero column (its sum would be a fresh random zero)
    kp = generate_keypair(KEY_BITS)
    figures: dict = {"rows": rows, "features": FEATURES, "bins": BINS, "key_bits": KEY_BITS, "quick": args.quick,
                     "machine": machine(), "load_before": [round(x, 2) for x in os.getloadavg()]}
    with WorkerPool(cores) as pool:
        figures["process_pool"], expected, v = measure(pool, kp, d, bins, X)
        figures["process_pool"]["workers"] = cores
    with LocalRayHead(cpus=cores) as head:
        with Clock() as connect:
            pool = RayPool(head.address)
        with pool:
            figures["ray_pool"], got, _ = measure(pool, kp, d, bins, X, given=v)
            figures["ray_pool"].update(cpus=pool.cpus(), chunks_sent=pool.submitted, connect_s=round(connect.wall, 2))
    figures["identical_sums"] = got == expected
    figures["ratio_wall"] = round(figures["ray_pool"]["wall_s"] / figures["process_pool"]["wall_s"], 2)
    figures["ratio_core"] = round(figures["ray_pool"]["core_s"] / figures["process_pool"]["core_s"], 2)
    figures["load_after"] = [round(x, 2) for x in os.getloadavg()]
    emit(figures, args.json)
    if not figures["identical_sums"]:
        raise SystemExit("the Ray pool's sums differ from the process pool's")


if __name__ == "__main__":
    main()
