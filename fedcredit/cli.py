"""The ``fedcredit`` command line: synthetic data, validation and the embedded demo.

Errors meant for the user (FedCreditError) are printed without a traceback and
the command exits with status 1.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedcredit import __version__
from fedcredit.data import synth
from fedcredit.data.schema import NODE_ROLES, parse_extra, schema_for
from fedcredit.data.summary import common_ids, default_rate_on, node_figures, overlaps
from fedcredit.data.validate import load_node, validate_file
from fedcredit.errors import FedCreditError

console = Console()
err_console = Console(stderr=True, soft_wrap=True)


class _UserErrors(TyperGroup):
    """Shows a FedCreditError as one red line on stderr and exits 1: users see no traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except FedCreditError as exc:
            err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=_UserErrors,
    help="fedcredit: federated credit modeling for SMEs across tax, utilities and bank nodes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _progress() -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console, transient=True)


@app.callback(invoke_without_command=True)
def _root(version: bool = typer.Option(False, "--version", help="Print the version and exit.")) -> None:
    if version:
        console.print(f"fedcredit {__version__}")
        raise typer.Exit()


@app.command("synth")
def synth_cmd(
    out: Path = typer.Option(..., "--out", help="Directory to write bank.*, tax.* and utilities.* into."),
    rows: int = typer.Option(10_000, "--rows", help="Number of enterprises in the synthetic population."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same files."),
    fmt: str = typer.Option("parquet", "--format", help="parquet or csv."),
) -> None:
    """Generate realistic synthetic SME data for the bank, tax and utilities nodes."""
    paths, seconds = _generate(out, rows, seed, fmt)
    table = Table(title=f"Synthetic SME data: {rows:,} enterprises, seed {seed} ({seconds:.1f} s)")
    for col in ("node", "file", "rows", "columns"):
        table.add_column(col, justify="right" if col in ("rows", "columns") else "left")
    for role, (path, n_rows, n_cols) in paths.items():
        table.add_row(role, str(path), f"{n_rows:,}", str(n_cols))
    console.print(table)


def _generate(out: Path, rows: int, seed: int, fmt: str) -> tuple[dict, float]:
    if fmt not in ("parquet", "csv"):
        raise FedCreditError(f"--format must be parquet or csv, got {fmt!r}")
    start = time.perf_counter()
    with _progress() as progress:
        task = progress.add_task(f"generating {rows:,} enterprises", total=1 + len(NODE_ROLES))
        tables = synth.generate(rows, seed)
        progress.advance(task)
        written = {}
        for role, tab in tables.items():
            progress.update(task, description=f"writing {role}.{fmt}")
            written[role] = (synth.write_nodes({role: tab}, out, fmt)[role], tab.num_rows, tab.num_columns)
            progress.advance(task)
    return written, time.perf_counter() - start


@app.command("validate")
def validate_cmd(
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


@app.command("demo")
def demo_cmd(
    rows: int = typer.Option(20_000, "--rows", help="Enterprises in the synthetic population."),
    seed: int = typer.Option(42, "--seed", help="Random seed."),
    out: Optional[Path] = typer.Option(None, "--out", help="Keep the generated node files here (default: a temporary directory)."),
) -> None:
    """Embedded demo: generate the three nodes' data, validate it and summarize it."""
    if out is None:
        with tempfile.TemporaryDirectory(prefix="fedcredit-demo-") as tmp:
            _demo(Path(tmp), rows, seed)
        console.print("[dim]Node files were temporary; pass --out DIR to keep them.[/dim]")
    else:
        _demo(out, rows, seed)


def _demo(out: Path, rows: int, seed: int) -> None:
    paths, seconds = _generate(out, rows, seed, "parquet")
    console.print(f"Generated {rows:,} synthetic enterprises in {seconds:.1f} s → {out}")
    nodes = {}
    for role, (path, _, _) in paths.items():
        nodes[role] = load_node(path, schema_for(role))
        console.print(f"  [green]✓[/green] {path.name}: valid {role} data")
    figures = Table(title="Nodes")
    for col in ("node", "rows", "features", "missing values", "default rate"):
        figures.add_column(col, justify="left" if col == "node" else "right")
    for role, node in nodes.items():
        f = node_figures(node)
        rate = f"{f.default_rate:.2%}" if f.default_rate is not None else "—"
        figures.add_row(role, f"{f.rows:,}", str(f.features), f"{f.missing_share:.1%}", rate)
    console.print(figures)
    overlap = Table(title="Overlap of enterprises (synthetic data, computed in one process; a federation uses PSI)")
    overlap.add_column("nodes")
    overlap.add_column("enterprises", justify="right")
    overlap.add_column("share of population", justify="right")
    for group, count in overlaps(nodes).items():
        overlap.add_row(" ∩ ".join(group), f"{count:,}", f"{count / rows:.1%}")
    console.print(overlap)
    common = common_ids(nodes)
    console.print(f"Default rate among the {len(common):,} enterprises known to every node: {default_rate_on(nodes['bank'], common):.2%}")
    console.print(
        "[yellow]This release stops here: the data is generated, validated and summarized. "
        "Federated training is not part of this version yet.[/yellow]"
    )


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
