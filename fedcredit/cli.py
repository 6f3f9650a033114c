"""The ``fedcredit`` command line: synthetic data, validation and the embedded demo.

Errors meant for the user (FedCreditError) are printed without a traceback and
the command exits with status 1.
"""

from __future__ import annotations

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
from fedcredit.data.validate import validate_file
from fedcredit import runner
from fedcredit.cli_audit import audit_app
from fedcredit.cli_deploy import certs_app, coordinator_app, node_app, submit_app
from fedcredit.cli_limits import limits_app
from fedcredit.common.errors import FedCreditError
from fedcredit.jobfile import load_job, read_job
from fedcredit.protocols.job import ModelSettings, NodeConfig
from fedcredit.scoring.policy import LimitPolicy

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


app.add_typer(limits_app, name="limits")
app.add_typer(audit_app, name="audit")
app.add_typer(certs_app, name="certs")
app.add_typer(coordinator_app, name="coordinator")
app.add_typer(node_app, name="node")
app.add_typer(submit_app, name="federation")


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
    out: Path = typer.Option(Path("fedcredit-demo"), "--out", help="Output directory (data, model parts, scores, metrics)."),
    rows: int = typer.Option(20_000, "--rows", help="Enterprises in the synthetic population."),
    seed: int = typer.Option(42, "--seed", help="Random seed for data, split and model."),
    engine: str = typer.Option("simulation", "--engine", help="simulation (Flower) or in-process."),
    key_bits: int = typer.Option(2048, "--key-bits", help="Paillier key size."),
    policy: Optional[Path] = typer.Option(None, "--policy", help="Limit policy (TOML, see docs/limits.md); default: built-in."),
    model: str = typer.Option("scorecard_lr", "--model", help="scorecard_lr (vertical logistic regression) or "
                              "secureboost (vertical gradient-boosted trees)."),
) -> None:
    """Embedded demo: synthetic data for three nodes, the whole federated job on Flower's simulation engine, signed limits and a report."""
    settings = ModelSettings(seed=seed, key_bits=key_bits, model=model)
    paths, seconds = _generate(out / "data", rows, seed, "parquet")
    console.print(f"Generated {rows:,} synthetic enterprises for bank, tax and utilities in {seconds:.1f} s → {out / 'data'}")
    nodes = [NodeConfig(role, str(paths[role][0])) for role in NODE_ROLES]
    _train(nodes, settings, out, engine, centralized=True, policy=policy)


@app.command("train")
def train_cmd(
    job: Path = typer.Option(..., "--job", help="Job file (TOML), see docs/job.md."),
    out: Path = typer.Option(..., "--out", help="Output directory."),
    engine: Optional[str] = typer.Option(None, "--engine", help="simulation (Flower, default) or in-process."),
    centralized: bool = typer.Option(False, "--centralized", help="Also fit the centralized reference (needs every node's file here)."),
    policy: Optional[Path] = typer.Option(None, "--policy", help="Limit policy (TOML, see docs/limits.md); default: built-in."),
    federation: Optional[str] = typer.Option(None, "--federation", help="Submit to this running federation (job file "
                                             "[federations.NAME] or 'fedcredit federation add'), see docs/deployment.md."),
    timeout: float = typer.Option(3600.0, "--timeout", help="With --federation: give up after this many seconds."),
) -> None:
    """Train the model a job file describes (scorecard LR or SecureBoost), publish signed limits and the report."""
    if federation is None:
        nodes, settings = load_job(job)
        _train(nodes, settings, out, engine or "simulation", centralized, policy)
        return
    for flag, given in (("--engine", engine is not None), ("--centralized", centralized)):
        if given:
            raise FedCreditError(f"{flag} is for local runs; with --federation the job runs on the federation's nodes")
    _train_on_federation(job, federation, out, policy, timeout)


def _train_on_federation(job_path: Path, name: str, out: Path, policy: Path | None, timeout: float) -> None:
    from fedcredit.deploy import federations, submit_job

    job = read_job(job_path)
    fed = federations.resolve(name, job.federations)
    sub = submit_job.plan(job, fed, out, policy)
    console.print(f"Federation {fed.name} ({fed.source}): SuperLink {fed.superlink}, roles {', '.join(job.roles)}; "
                  f"coordinator outputs in {sub.coordinator_out}", markup=False, highlight=False)
    ignored = job.local_settings()
    if ignored:
        console.print("Not sent (each node reads its own data and columns from its node config): "
                      + "; ".join(f"[nodes.{r}] {', '.join(keys)}" for r, keys in ignored.items()),
                      markup=False, highlight=False)
    if not fed.registry:
        console.print("[yellow]warning:[/yellow] this federation has no registry: any registered node may claim any role "
                      "(add --registry STATE/registry.json of 'fedcredit coordinator start')")
    status = submit_job.run(sub, out, timeout=timeout,
                            echo=lambda line: console.print(line, markup=False, highlight=False))
    m = status.get("metrics") or {}
    summary = (f"test AUC {m['test_auc']:.4f}, {m.get('rounds')} rounds" if "test_auc" in m
               else f"Flower reports the run {status.get('flower_status', 'completed')}")
    console.print(f"[green]✓[/green] run finished on {fed.name}: {summary}, {status.get('submit_seconds')} s")
    console.print(f"Coordinator outputs: {sub.coordinator_out} (metrics.json, run.json, signed limits, audit/coordinator.jsonl); "
                  "each node keeps its model part, audit log and (bank) scores and report in its own out folder")
    console.print(f"Submission record: {Path(out).resolve() / submit_job.RECORD}")


@app.command("score")
def score_cmd(
    job: Path = typer.Option(..., "--job", help="Job file naming each node's (new) data, see docs/job.md."),
    model: Path = typer.Option(..., "--model", help="Output folder of a training run (its model/<role>/ parts)."),
    out: Path = typer.Option(..., "--out", help="Output directory for scores, limits and the report."),
    engine: str = typer.Option("simulation", "--engine", help="simulation (Flower) or in-process."),
    policy: Optional[Path] = typer.Option(None, "--policy", help="Limit policy (TOML, see docs/limits.md); default: built-in."),
) -> None:
    """Score a population with a trained model (each node applies its own saved part) and publish signed limits."""
    nodes, settings = load_job(job)
    _train(nodes, settings, out, engine, False, policy, model=model)


def _train(nodes, settings, out: Path, engine: str, centralized: bool, policy: Path | None = None, model: Path | None = None) -> None:
    limit_policy = LimitPolicy.load(policy) if policy is not None else LimitPolicy()
    metrics = runner.run(nodes, settings, out, engine=engine, console=console, centralized=centralized, policy=limit_policy,
                         model=model)
    what = "scored with a saved model" if model is not None else "aligned enterprises"
    name = "SecureBoost" if settings.model == "secureboost" else "scorecard LR"
    table = Table(title=f"Federated {name} ({metrics['intersection']:,} {what})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("test_auc", "test_ks", "test_gini", "bank_only_auc", "centralized_auc"):
        if metrics.get(key) is not None:
            table.add_row(key, f"{metrics[key]:.4f}")
    table.add_row("message rounds", str(metrics["rounds"]))
    if metrics.get("trees") is not None:
        table.add_row("trees in the model", str(metrics["trees"]))
    else:
        table.add_row("model evaluations", str(metrics["evaluations"]))
    table.add_row("seconds", f"{metrics['seconds']:.1f}")
    console.print(table)
    parts = "" if model is not None else ", model/<role>/ (each node's own part)"
    console.print(f"Outputs in {out}: metrics.json, run.json, scores.parquet (bank){parts}")
    console.print(f"Signed limits: {out / 'limits.parquet'} and {out / 'limits.csv'} (signature {out / 'limits.sig.json'}; "
                  f"verify: fedcredit limits verify {out / 'limits.parquet'} --key {out / 'keys' / 'coordinator.pub.json'})")
    console.print(f"Report: {out / 'report.html'}")
    console.print(f"Audit logs: {out / 'audit'} ({metrics['audit_records']:,} signed records verified; "
                  f"check: fedcredit audit verify {out} --key {out / 'keys' / 'coordinator.pub.json'})")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
