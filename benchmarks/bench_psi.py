"""Multi-party ECDH-PSI throughput: bank × one host, 80 % overlap, measured end to end in one process.

    python benchmarks/bench_psi.py [--quick] [--json PATH] [--n N] [--workers W]

Target (issue #4): 1,000,000 × 1,000,000 IDs in under 120 s on 2 cores, under 4 GiB.
Reference: SecretFlow ECDH-PSI, 10 M IDs in 42 s on 32 cores ≈ 7,400 IDs per core-second.
Messages are encoded, decoded and node-to-node sets sealed as on the wire.
The run is compared side by side with the arithmetic floor: raw X25519 scalar
multiplications per second on one core (every ID needs one per party).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, machine, parser, peak_rss_mb  # noqa: E402

import numpy as np  # noqa: E402

from fedcredit.crypto.blinding import BlindingKey, hash_ids  # noqa: E402
from fedcredit.crypto.parallel import WorkerPool  # noqa: E402
from fedcredit.data import uscc  # noqa: E402
from fedcredit.crypto.identity import Identity  # noqa: E402
from fedcredit.protocols.loop import drive  # noqa: E402
from fedcredit.protocols.psi import PsiCoordinator, PsiParty  # noqa: E402
from fedcredit.protocols.relay import SealedRelay  # noqa: E402

SECRETFLOW_IDS_PER_CORE_S = 10_000_000 / 42 / 32


def raw_blind_per_s(n: int = 20_000) -> float:
    points = hash_ids([str(i) for i in range(n)], b"bench")
    key = BlindingKey()
    start = time.perf_counter()
    key.blind(points)
    return n / (time.perf_counter() - start)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--n", type=int, default=None, help="IDs per party (default 1,000,000; 100,000 with --quick)")
    p.add_argument("--workers", type=int, default=os.cpu_count(), help="worker processes for blinding")
    args = p.parse_args()
    n = args.n or (100_000 if args.quick else 1_000_000)
    overlap = int(n * 0.8)
    ids = uscc.generate(2 * n - overlap, np.random.default_rng(0))
    bank_ids, host_ids = list(ids[:n]), list(ids[n - overlap :])
    raw = raw_blind_per_s()
    with WorkerPool(args.workers) as pool:
        start = time.perf_counter()
        parties = {"bank": PsiParty("bank", bank_ids, pool=pool), "tax": PsiParty("tax", host_ids, pool=pool)}
        coord = PsiCoordinator("bench", ["bank", "tax"])
        bank, tax = Identity.generate("bank"), Identity.generate("tax")
        relays = {"bank": SealedRelay(bank, [tax.public]), "tax": SealedRelay(tax, [bank.public])}
        rounds = drive(coord, parties, relays)
        seconds = time.perf_counter() - start
    if coord.size != overlap:
        raise SystemExit(f"wrong intersection: {coord.size} != {overlap}")
    ids_per_s = 2 * n / seconds
    floor_s = 4 * n / (raw * args.workers)  # each ID is blinded by both parties
    figures = {
        "ids_per_s": round(ids_per_s),
        "seconds": round(seconds, 1),
        "n_bank": n,
        "n_host": n,
        "intersection": coord.size,
        "peak_rss_mb": round(peak_rss_mb()),
        "rounds": rounds,
        "workers": args.workers,
        "ids_per_core_s": round(ids_per_s / args.workers),
        "secretflow_ids_per_core_s": round(SECRETFLOW_IDS_PER_CORE_S),
        "raw_x25519_per_s_1core": round(raw),
        "floor_s": round(floor_s, 1),
        "share_of_floor": round(floor_s / seconds, 2),
        "target_s": 120,
        "machine": machine(),
    }
    print(f"PSI {n:,} × {n:,} (80 % overlap): {seconds:.1f} s, {ids_per_s:,.0f} IDs/s "
          f"({ids_per_s / args.workers:,.0f} per core-second vs SecretFlow ≈ {SECRETFLOW_IDS_PER_CORE_S:,.0f}); "
          f"arithmetic floor {floor_s:.1f} s ({floor_s / seconds:.0%} of the run); peak RSS {figures['peak_rss_mb']} MB")
    emit(figures, args.json)


if __name__ == "__main__":
    main()
