"""``fedcredit synth`` and ``fedcredit validate``: a node's data, before any job."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from fedcredit.cli.console import console, err_console, progress
from fedcredit.common.errors import FedCreditError
from fedcredit.data import synth as synthetic
from fedcredit.data.schema import NODE_ROLES, parse_extra, schema_for
from fedcredit.data.validate import validate_file


def synth(
    out: Path = typer.Option(..., "--out", help="Directory to write bank.*, tax.* and utilities.* into."),
    rows: int = typer.Option(10_000, "--rows", help="Number of enterprises in the synthetic population."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same files."),
    fmt: str = typer.Option("parquet", "--format", help="parquet or csv."),
) -> None:
    """Generate realistic synthetic SME data for the bank, tax and utilities nodes."""
    paths, seconds = generate(out, rows, seed, fmt)
    table = Table(title=f"Synthetic SME data: {rows:,} enterprises, seed {seed} ({seconds:.1f} s)")
    for col in ("node", "file", "rows", "columns"):
        table.add_column(col, justify="right" if col in ("rows", "columns") else "left")
    for role, (path, n_rows, n_cols) in paths.items():
        table.add_row(role, str(path), f"{n_rows:,}", str(n_cols))
    console.print(table)


def generate(out: Path, rows: int, seed: int, fmt: str) -> tuple[dict, float]:
    """Write one synthetic file per node role with progress; returns role -> (path, rows, columns) and seconds."""
    if fmt not in ("parquet", "csv"):
        raise FedCreditError(f"--format must be parquet or csv, got {fmt!r}")
    start = time.perf_counter()
    with progress() as bar:
        task = bar.add_task(f"generating {rows:,} enterprises", total=1 + len(NODE_ROLES))
        tables = synthetic.generate(rows, seed)
        bar.advance(task)
        written = {}
        for role, tab in tables.items():
            bar.update(task, description=f"writing {role}.{fmt}")
            written[role] = (synthetic.write_nodes({role: tab}, out, fmt)[role], tab.num_rows, tab.num_columns)
            bar.advance(task)
    return written, time.perf_counter() - start


def validate(
    file: Path = typer.Argument(..., help="The node's Parquet or CSV file."),
    role: str = typer.Option(..., "--role", help="bank, tax, utilities or host."),
    id_column: Optional[str] = typer.Option(None, "--id-column", help="Name of the ID column (default uscc)."),
    id_kind: Optional[str] = typer.Option(None, "--id-kind", help="uscc (validated codes, default) or string."),
    extra: list[str] = typer.Option([], "--extra", help="Declare an extra column as NAME:float|int|category (repeatable)."),
) -> None:
    """Check one node's file against its role's schema and report every problem found."""
    schema = schema_for(role).with_options(id_column, id_kind, parse_extra(extra))
    table, problems = validate_file(file, schema)
    if problems:
        err_console.print(f"[red]{file}: {len(problems)} problem(s) found[/red]")
        for p in problems:
            err_console.print(f"  - {p}", markup=False, highlight=False)
        raise typer.Exit(1)
    console.print(f"[green]{file}: valid {role} data[/green] — {table.num_rows:,} rows, {len(schema.feature_columns)} feature columns")
