"""Two banks' data beside shared hosts: one synthetic population, two lenders with different customers and labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fedcredit.data import synth

LABEL = "default_12m"


def two_banks(rows: int, seed: int, out: Path, share: float = 0.8) -> dict[str, Path]:
    """Files for ``bank-a``, ``bank-b``, ``tax`` and ``utilities``: each bank holds its own ``share`` of the
    population's bank rows; bank-b's labels differ (a quarter of its outcomes redrawn), so the two banks'
    jobs train different models on the same hosts."""
    tables = synth.generate(rows, seed)
    paths = synth.write_nodes({k: tables[k] for k in ("tax", "utilities")}, out)
    bank = tables["bank"]
    rng = np.random.default_rng(seed + 1)
    for name, flip in (("bank-a", 0.0), ("bank-b", 0.25)):
        rows_kept = np.sort(rng.choice(bank.num_rows, int(share * bank.num_rows), replace=False))
        table = bank.take(pa.array(rows_kept))
        labels = table.column(LABEL).to_numpy().copy()
        redraw = rng.random(len(labels)) < flip
        labels[redraw] = rng.random(redraw.sum()) < labels.mean()
        table = table.set_column(table.schema.get_field_index(LABEL), LABEL,
                                 pa.array(labels.astype(table.schema.field(LABEL).type.to_pandas_dtype())))
        paths[name] = Path(out) / f"{name}.parquet"
        pq.write_table(table, paths[name])
    return paths
