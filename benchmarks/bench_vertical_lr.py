"""Cost of one epoch of vertical LR (one full-batch gradient evaluation), encrypted vs mock cipher.

    python benchmarks/bench_vertical_lr.py [--quick] [--json PATH] [--rows N] [--features F ...]

Three parties (bank + 2 hosts), binned features (10 bins), 2048-bit Paillier. An epoch is
one evaluation of the model: partial predictions, scores at the key holder, residual,
every party's encrypted gradient, unmasking (5 message rounds). Measured as the mean time
between evaluations of a short run, side by side with the same protocol on the mock cipher.
Target (issue #5): ≤ 200 core-seconds per epoch at 100,000 rows × 330 features
(FATE 2.x: 136 s on 16 cores = 2,176 core-seconds).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, machine, parser  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from fedcredit.crypto import WorkerPool  # noqa: E402
from fedcredit.data.binning import FeaturePrep  # noqa: E402
from fedcredit.protocols.design import Design  # noqa: E402
from fedcredit.protocols.job import split_assignment  # noqa: E402
from fedcredit.protocols.loop import drive  # noqa: E402
from fedcredit.protocols.vertical_lr import LrConfig, LrCoordinator, LrParty, PartyData  # noqa: E402

FATE_CORE_SECONDS = 136 * 16


def parties_for(rows: int, features: int, seed: int = 0, pool=None) -> dict[str, LrParty]:
    """Bank with 30 features (or a third of them) and the label; hosts share the rest."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, features))
    beta = rng.standard_normal(features) * (rng.random(features) < 0.3)
    y = (rng.random(rows) < 1 / (1 + np.exp(-(x @ beta * 0.4 - 2.5)))).astype(np.int8)
    bank_cols = min(30, features // 3) if features > 30 else features // 3
    host_cols = features - bank_cols
    blocks = {"bank": x[:, :bank_cols], "tax": x[:, bank_cols:bank_cols + host_cols // 2],
              "utilities": x[:, bank_cols + host_cols // 2:]}
    split = split_assignment([f"row-{i}" for i in range(rows)], seed, 0.6, 0.2)
    train, val = np.flatnonzero(split == 0), np.flatnonzero(split == 1)
    out = {}
    for role, block in blocks.items():
        frame = pd.DataFrame(block, columns=[f"{role}_{i}" for i in range(block.shape[1])])
        prep = FeaturePrep.fit(frame.iloc[train])
        bank = role == "bank"
        data = PartyData(Design(prep, frame.iloc[train], intercept=bank), Design(prep, frame, intercept=bank), train, val,
                         y if bank else None)
        out[role] = LrParty(role, data, pool=pool)
    return out


def epoch(rows: int, features: int, backend: str, evaluations: int, workers: int) -> dict:
    stamps, wire = [], []
    with WorkerPool(workers) as pool:
        parties = parties_for(rows, features, pool=pool)
        cfg = LrConfig(backend=backend, key_bits=2048, max_iter=evaluations - 1, ftol=0.0, gtol=1e-12)
        coord = LrCoordinator("bench", ["bank", "tax", "utilities"], cfg, pool=pool, score=False,
                              on_progress=lambda rec: stamps.append((time.perf_counter(), len(wire))))
        drive(coord, parties, tap=lambda b: wire.append(len(b)))
    times = [t for t, _ in stamps]
    seconds = (times[-1] - times[0]) / (len(times) - 1)
    sizes = np.cumsum([0] + wire)
    per_epoch_bytes = (sizes[stamps[-1][1]] - sizes[stamps[0][1]]) / (len(stamps) - 1)
    return {"epoch_s": seconds, "bytes": per_epoch_bytes, "evaluations": len(stamps)}


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--rows", type=int, default=None, help="rows (default 100,000; 20,000 with --quick)")
    p.add_argument("--features", type=int, nargs="+", default=None, help="total features (default 30 330; 30 with --quick)")
    p.add_argument("--evaluations", type=int, default=3)
    args = p.parse_args()
    rows = args.rows or (20_000 if args.quick else 100_000)
    shapes = args.features or ([30] if args.quick else [30, 330])
    workers = os.cpu_count() or 1
    figures = {"rows": rows, "machine": machine(), "workers": workers, "shapes": {}}
    for features in shapes:
        enc = epoch(rows, features, "paillier", args.evaluations, workers)
        mock = epoch(rows, features, "mock", args.evaluations, workers)
        ct_bytes = 512
        shape = {
            "features": features, "epoch_s": round(enc["epoch_s"], 2), "mock_epoch_s": round(mock["epoch_s"], 3),
            "core_seconds_per_epoch": round(enc["epoch_s"] * workers, 1),
            "ciphertexts_per_epoch": int(enc["bytes"] // ct_bytes), "bytes_per_epoch": int(enc["bytes"]),
            "fate_core_seconds": FATE_CORE_SECONDS,
        }
        figures["shapes"][str(features)] = shape
        print(f"{rows:,} rows × {features} features: epoch {enc['epoch_s']:.1f} s encrypted vs {mock['epoch_s']:.2f} s mock "
              f"({enc['epoch_s'] / mock['epoch_s']:.0f}×); {shape['core_seconds_per_epoch']} core-s per epoch "
              f"(FATE {FATE_CORE_SECONDS}); {enc['bytes'] / 2**20:.1f} MiB per epoch", flush=True)
    last = figures["shapes"][str(shapes[-1])]
    figures.update({k: last[k] for k in ("features", "epoch_s", "mock_epoch_s", "core_seconds_per_epoch",
                                         "ciphertexts_per_epoch", "bytes_per_epoch")})
    emit(figures, args.json)


if __name__ == "__main__":
    main()
