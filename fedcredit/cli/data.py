"""``fedcredit synth`` and ``fedcredit validate``: a node's data, before any job."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from fedcredit.cli.console import console, err_console, progress
from fedcredit.common.errors import FedCreditError
from fedcredit.data import synth as synthetic
from fedcredit.data.schema import NODE_ROLES
from fedcredit.data.validate import column_warnings, uninformative_columns, validate_file
from fedcredit.jobs.jobfile import read_job
from fedcredit.jobs.preflight import check_job
from fedcredit.protocols.job import NodeConfig


def synth(
    out: Path = typer.Option(..., "--out", help="Directory to write bank.*, tax.* and utilities.* into."),
    rows: int = typer.Option(10_000, "--rows", help="Number of enterprises in the synthetic population."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same files."),
    fmt: str = typer.Option("parquet", "--format", help="parquet or csv."),
    with_court: bool = typer.Option(False, "--with-court", help="Also write court.*: a fourth node with its own "
                                    "column names (examples/job_four_nodes.toml, docs/add-a-data-holder.md)."),
    month: int = typer.Option(1, "--month", help="2, 3, …: the same enterprises (same seed and rows) that many months "
                              "later, with drift: a sector downturn, slowing activity, some firms in distress "
                              "(docs/monitoring.md)."),
) -> None:
    """Generate realistic synthetic SME data for the bank, tax and utilities nodes (and a court with --with-court)."""
    paths, seconds = generate(out, rows, seed, fmt, court=with_court, month=month)
    when = f", month {month}" if month != 1 else ""
    table = Table(title=f"Synthetic SME data: {rows:,} enterprises, seed {seed}{when} ({seconds:.1f} s)")
    for col in ("node", "file", "rows", "columns"):
        table.add_column(col, justify="right" if col in ("rows", "columns") else "left")
    for role, (path, n_rows, n_cols) in paths.items():
        table.add_row(role, str(path), f"{n_rows:,}", str(n_cols))
    console.print(table)


def generate(out: Path, rows: int, seed: int, fmt: str, court: bool = False, month: int = 1) -> tuple[dict, float]:
    """Write one synthetic file per node role with progress; returns role -> (path, rows, columns) and seconds."""
    if fmt not in ("parquet", "csv"):
        raise FedCreditError(f"--format must be parquet or csv, got {fmt!r}")
    start = time.perf_counter()
    with progress() as bar:
        task = bar.add_task(f"generating {rows:,} enterprises", total=1 + len(NODE_ROLES) + court)
        tables = synthetic.generate(rows, seed, court=court, month=month)
        bar.advance(task)
        written = {}
        for role, tab in tables.items():
            bar.update(task, description=f"writing {role}.{fmt}")
            written[role] = (synthetic.write_nodes({role: tab}, out, fmt)[role], tab.num_rows, tab.num_columns)
            bar.advance(task)
    return written, time.perf_counter() - start


def validate(
    file: Optional[Path] = typer.Argument(None, help="The node's Parquet or CSV file (or use --job and --node)."),
    role: Optional[str] = typer.Option(None, "--role", help="bank, tax, utilities, or another host's role name (court, ...)."),
    layout: str = typer.Option("standard", "--layout", help="standard (the role's built-in columns) or custom "
                               "(only the ID, the bank's --label and the --extra columns)."),
    label: Optional[str] = typer.Option(None, "--label", help="The bank's label column (default default_12m)."),
    id_column: Optional[str] = typer.Option(None, "--id-column", help="Name of the ID column (default uscc)."),
    id_kind: Optional[str] = typer.Option(None, "--id-kind", help="uscc (validated codes, default) or string."),
    extra: list[str] = typer.Option([], "--extra", help="Declare an extra column as NAME:float|int|category (repeatable)."),
    job: Optional[Path] = typer.Option(None, "--job", help="Check the nodes of this job file with its settings "
                                       "(every node and their overlap, or only --node)."),
    node: Optional[str] = typer.Option(None, "--node", help="With --job: check only this node's file."),
) -> None:
    """Check a node's file with the settings a job would use, and report every problem found.

    Columns that carry nothing (every value missing, or one value in every row) are named:
    a job leaves them out.
    """
    if job is not None:
        given = [flag for flag, value in (("FILE", file), ("--role", role), ("--label", label), ("--id-column", id_column),
                                          ("--id-kind", id_kind), ("--extra", extra or None)) if value is not None]
        if given or layout != "standard":
            raise FedCreditError(f"--job takes each node's settings from the job file; drop {', '.join(given) or '--layout'}")
        _validate_job(job, node)
        return
    if node is not None:
        raise FedCreditError("--node names a node of a job file: use it with --job FILE")
    if file is None or role is None:
        raise FedCreditError("give the node's FILE and --role (or --job FILE [--node NAME])")
    cfg = NodeConfig(role=role, data=str(file), id_column=id_column or "uscc", id_kind=id_kind or "uscc", label=label,
                     extra=list(extra), layout=layout)
    _validate_node(cfg)


def _validate_node(cfg: NodeConfig) -> None:
    """One node's file: every problem on stderr (exit 1), or a summary and the columns a job leaves out."""
    schema = cfg.schema()
    table, problems = validate_file(cfg.data, schema)
    if problems:
        err_console.print(f"[red]{escape(cfg.data)}: {len(problems)} problem(s) found[/red]")
        for p in problems:
            err_console.print(f"  - {p}", markup=False, highlight=False)
        raise typer.Exit(1)
    dropped = uninformative_columns(table, schema)
    for line in column_warnings(cfg.data, dropped):
        console.print(f"[yellow]warning:[/yellow] {escape(line)}", soft_wrap=True)
    used = len(schema.feature_columns) - len(dropped)
    console.print(f"[green]{escape(cfg.data)}: valid {escape(cfg.role)} data[/green] — {table.num_rows:,} rows, "
                  f"{used} feature columns", soft_wrap=True)


def _validate_job(job: Path, node: str | None) -> None:
    """A job's nodes as a local run checks them: every file, and (all nodes) their overlap."""
    configs = read_job(job).node_configs()
    if node is not None:
        chosen = [c for c in configs if c.role == node]
        if not chosen:
            raise FedCreditError(f"{job}: no [nodes.{node}] section; the job's nodes are {', '.join(c.role for c in configs)}")
        _validate_node(chosen[0])
        return
    checked = check_job(configs, read_job(job).settings)
    for line in checked.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(line)}", soft_wrap=True)
    rows = ", ".join(f"{r} {n:,}" for r, n in checked.rows.items())
    console.print(f"[green]{escape(str(job))}: every node's data is valid[/green] ({rows} rows); "
                  f"{checked.intersection:,} enterprises known to every node", soft_wrap=True)
