"""How fast `fedcredit synth` makes a population: generation, writing and validation timed apart.

    python benchmarks/bench_synth.py [--quick] [--json PATH] [--rows N] [--format parquet|csv]

Target (issue #2): 1,000,000 enterprises generated and written in under 60 s on 2 cores.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, machine, parser, peak_rss_mb  # noqa: E402

from fedcredit.data import synth  # noqa: E402
from fedcredit.data.schema import schema_for  # noqa: E402
from fedcredit.data.validate import load_node  # noqa: E402


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--rows", type=int, default=None, help="enterprises (default 1,000,000; 200,000 with --quick)")
    p.add_argument("--format", default="parquet", choices=["parquet", "csv"])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rows = args.rows or (200_000 if args.quick else 1_000_000)
    with tempfile.TemporaryDirectory(prefix="bench-synth-") as out:
        t0 = time.perf_counter()
        tables = synth.generate(rows, args.seed)
        t1 = time.perf_counter()
        paths = synth.write_nodes(tables, out, args.format)
        t2 = time.perf_counter()
        for role, path in paths.items():
            load_node(path, schema_for(role))
        t3 = time.perf_counter()
        size_mb = sum(Path(p).stat().st_size for p in paths.values()) / 2**20
    seconds = t2 - t0
    figures = {
        "rows": rows,
        "seconds": round(seconds, 2),
        "generate_s": round(t1 - t0, 2),
        "write_s": round(t2 - t1, 2),
        "validate_s": round(t3 - t2, 2),
        "rows_per_s": round(rows / seconds),
        "format": args.format,
        "files_mb": round(size_mb, 1),
        "peak_rss_mb": round(peak_rss_mb()),
        "node_rows": {role: t.num_rows for role, t in tables.items()},
        "target_s": 60,
        "machine": machine(),
    }
    print(f"synth {rows:,} enterprises: {seconds:.1f} s (generate {t1 - t0:.1f} s + write {t2 - t1:.1f} s); "
          f"validate {t3 - t2:.1f} s; {seconds / 60:.2f}× of the 60 s budget")
    emit(figures, args.json)


if __name__ == "__main__":
    main()
