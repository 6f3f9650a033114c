"""``fedcredit demo``, ``train`` and ``score``: run a job (locally, or on a named federation) and show its figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from fedcredit.audit.verify import verify_command
from fedcredit.cli.console import console, err_console
from fedcredit.cli.data import generate
from fedcredit.common.errors import FedCreditError
from fedcredit.data.schema import NODE_ROLES
from fedcredit.jobs import outdir, runner
from fedcredit.jobs.outdir import previous_run
from fedcredit.jobs.jobfile import read_job
from fedcredit.protocols.job import ModelSettings, NodeConfig
from fedcredit.scoring.policy import LimitPolicy


def demo(
    out: Path = typer.Option(Path("fedcredit-demo"), "--out", help="Output directory (data, model parts, scores, metrics)."),
    rows: int = typer.Option(20_000, "--rows", help="Enterprises in the synthetic population."),
    seed: int = typer.Option(42, "--seed", help="Random seed for data, split and model."),
    engine: str = typer.Option("simulation", "--engine", help="simulation (Flower) or in-process."),
    key_bits: int = typer.Option(2048, "--key-bits", help="Paillier key size."),
    policy: Optional[Path] = typer.Option(None, "--policy", help="Limit policy (TOML, see docs/limits.md); default: built-in."),
    model: str = typer.Option("scorecard_lr", "--model", help="scorecard_lr (vertical logistic regression) or "
                              "secureboost (vertical gradient-boosted trees)."),
    allow_weak_model: bool = typer.Option(False, "--allow-weak-model", help="Publish even if the model fails the "
                                          "policy's quality gate (recorded in run.json, the limits signature, the report)."),
    features: str = typer.Option("binned", "--features", help="binned (one-hot bins), woe (the classic WoE "
                                 "scorecard: one coefficient per feature) or standardized."),
    binning: str = typer.Option("quantile", "--binning", help="quantile, or monotone (bins merged until WoE is monotone)."),
    rescore: bool = typer.Option(True, "--rescore/--no-rescore", help="Then re-rate the same enterprises a month "
                                 "later (drifted data): a scoring run with the saved model and its early warnings."),
) -> None:
    """Embedded demo: synthetic data for three nodes, the whole federated job on Flower's simulation engine, signed
    limits and a report; then the same enterprises a month later: re-scored, monitored, red/amber/green warnings."""
    settings = ModelSettings(seed=seed, key_bits=key_bits, model=model, mode=features, binning=binning)
    own = ("data", LATER)
    previous_run(out, own=own)  # refuse a folder that is not a run's before writing data into it
    paths, seconds = generate(out / "data", rows, seed, "parquet")
    console.print(f"Generated {rows:,} synthetic enterprises for bank, tax and utilities in {seconds:.1f} s → {out / 'data'}")
    nodes = [NodeConfig(role, str(paths[role][0]), policy=str(_demo_node_policy(out / "data", role, key_bits)))
             for role in NODE_ROLES]
    _train(nodes, settings, out, engine, centralized=True, policy=policy, own=own,
           allow_weak_model=allow_weak_model)
    if rescore:
        _demo_month_later(out, rows, seed, settings, engine, policy)


LATER = "month-2"  # the demo's re-rating run, inside the training run's folder


def _demo_month_later(out: Path, rows: int, seed: int, settings: ModelSettings, engine: str,
                      policy: Path | None) -> None:
    """The model's second publication: the same enterprises a month later, scored by every node with its saved
    part and signed by the same coordinator key; then the early warnings against the first publication."""
    from fedcredit.cli.monitor import monitor

    later = out / LATER
    previous_run(later, own=("data",))
    paths, seconds = generate(later / "data", rows, seed, "parquet", month=2)
    console.print(f"\nA month later: the same {rows:,} enterprises with drifted data (a sector downturn, slowing "
                  f"activity, a few in distress) in {seconds:.1f} s → {later / 'data'}; re-scoring with the saved model")
    nodes = [NodeConfig(role, str(paths[role][0]), policy=str(_demo_node_policy(later / "data", role, settings.key_bits)))
             for role in NODE_ROLES]
    _train(nodes, settings, later, engine, False, policy, model=out, own=("data",), keys=out / "keys")
    console.print(f"\nEarly warnings: the month-2 publication against the first ({out} → {later})")
    monitor(out, later, later / "monitoring", policy)


DEMO_NODE_POLICY = """# {role}'s own policy for the demo (docs/governance.md); its budget is counted beside this file
[policy]
allowed_banks = ["bank"]
allowed_models = ["scorecard_lr", "secureboost"]
allowed_tasks = ["train", "score"]
min_key_bits = {key_bits}
min_population = 100
max_jobs_per_day = 1000
max_scored_per_day = 10000000
"""


def _demo_node_policy(folder: Path, role: str, key_bits: int) -> Path:
    """The demo's nodes carry explicit policies: the demo's bank, both models, the keys the demo asks for."""
    path = folder / f"{role}_policy.toml"
    path.write_text(DEMO_NODE_POLICY.format(role=role, key_bits=min(key_bits, 2048)))
    return path


def train(
    job: Optional[Path] = typer.Option(None, "--job", help="Job file (TOML), see docs/job.md."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output directory."),
    engine: Optional[str] = typer.Option(None, "--engine", help="simulation (Flower, default) or in-process."),
    centralized: bool = typer.Option(False, "--centralized", help="Also fit the centralized reference (needs every node's file here)."),
    policy: Optional[Path] = typer.Option(None, "--policy", help="Limit policy (TOML, see docs/limits.md); default: built-in."),
    federation: Optional[str] = typer.Option(None, "--federation", help="Submit to this running federation (job file "
                                             "[federations.NAME] or 'fedcredit federation add'), see docs/deployment.md."),
    timeout: float = typer.Option(3600.0, "--timeout", help="With --federation: give up after this many seconds."),
    allow_weak_model: bool = typer.Option(False, "--allow-weak-model", help="Publish even if the model fails the "
                                          "policy's quality gate (recorded in run.json, the limits signature, the report)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue a job on a federation whose coordinator "
                                          "stopped mid-run: the --out folder it was submitted with."),
) -> None:
    """Train the model a job file describes (scorecard LR or SecureBoost), publish signed limits and the report."""
    if resume is not None:
        _resume_on_federation(resume, timeout)
        return
    if job is None or out is None:
        raise FedCreditError("--job and --out are required (or --resume RUN alone, to continue a federated job)")
    if federation is None:
        job_file = read_job(job)
        _train(job_file.node_configs(), job_file.settings, out, engine or "simulation", centralized, policy,
               allow_weak_model=allow_weak_model, purpose=job_file.purpose, ray_address=job_file.ray_address)
        return
    for flag, given in (("--engine", engine is not None), ("--centralized", centralized),
                        ("--allow-weak-model", allow_weak_model)):
        if given:
            raise FedCreditError(f"{flag} is for local runs; with --federation the job runs on the federation's nodes")
    _train_on_federation(job, federation, out, policy, timeout)


def _train_on_federation(job_path: Path, name: str, out: Path, policy: Path | None, timeout: float) -> None:
    from fedcredit.deploy import federations
    from fedcredit.jobs import submission

    job = read_job(job_path)
    fed = federations.resolve(name, job.federations)
    sub = submission.plan(job, fed, out, policy)
    console.print(f"Federation {fed.name} ({fed.source}): SuperLink {fed.superlink}, bank {job.bank}, "
                  f"hosts {', '.join(job.roles[1:])}; "
                  f"coordinator outputs in {sub.coordinator_out}", markup=False, highlight=False)
    ignored = job.local_settings()
    if ignored:
        console.print("Not sent (each node reads its own data and columns from its node config): "
                      + "; ".join(f"[nodes.{r}] {', '.join(keys)}" for r, keys in ignored.items()),
                      markup=False, highlight=False)
    if not fed.registry:
        console.print("[yellow]warning:[/yellow] this federation has no registry: any registered node may claim any role "
                      "(add --registry STATE/registry.json of 'fedcredit coordinator start')")
    status = submission.run(sub, out, timeout=timeout,
                            echo=lambda line: console.print(line, markup=False, highlight=False))
    m = status.get("metrics") or {}
    summary = (f"test AUC {m['test_auc']:.4f}, {m.get('rounds')} rounds" if "test_auc" in m
               else f"Flower reports the run {status.get('flower_status', 'completed')}")
    console.print(f"[green]✓[/green] run finished on {fed.name}: {summary}, {status.get('submit_seconds')} s")
    console.print(f"Coordinator outputs: {sub.coordinator_out} (metrics.json, run.json, signed limits, audit/coordinator.jsonl); "
                  "each node keeps its model part, audit log and (bank) scores and report in its own out folder")
    console.print(f"Submission record: {Path(out).resolve() / submission.RECORD}")


def _resume_on_federation(folder: Path, timeout: float) -> None:
    from fedcredit.jobs import submission

    status = submission.resume(folder, timeout=timeout,
                               echo=lambda line: console.print(line, markup=False, highlight=False))
    m = status.get("metrics") or {}
    console.print(f"[green]✓[/green] resumed run finished: test AUC {m.get('test_auc', float('nan')):.4f}, "
                  f"{m.get('rounds')} rounds; submission record: {Path(folder).resolve() / submission.RECORD}")


def score(
    model: str = typer.Option(..., "--model", help="The saved model: the output folder of a training run; with "
                              "--federation, the training run's id (its run.json run_id, the limits' model_version)."),
    out: Path = typer.Option(..., "--out", help="Output directory for scores, limits and the report."),
    job: Optional[Path] = typer.Option(None, "--job", help="Job file naming each node's (new) data, see docs/job.md "
                                       "(local runs; with --federation each node scores the data it holds now)."),
    engine: Optional[str] = typer.Option(None, "--engine", help="simulation (Flower, default) or in-process."),
    policy: Optional[Path] = typer.Option(None, "--policy", help="Limit policy (TOML, see docs/limits.md); default: built-in."),
    previous: Optional[Path] = typer.Option(None, "--previous", help="Local runs: the run folder of the publication "
                                            "these limits follow, whose per-node bin shares each feature's CSI "
                                            "compares with (default: the model's training run)."),
    federation: Optional[str] = typer.Option(None, "--federation", help="Score on this running federation "
                                             "(docs/deployment.md): every node applies its saved part of the model."),
    bank: str = typer.Option("bank", "--bank", help="With --federation: the bank whose model it is."),
    purpose: str = typer.Option("credit-scoring", "--purpose", help="With --federation: the purpose the hosts' "
                                "consent lists must name."),
    timeout: float = typer.Option(3600.0, "--timeout", help="With --federation: give up after this many seconds."),
) -> None:
    """Score a population with a trained model (each node applies its own saved part) and publish signed limits
    that follow the model's previous publication."""
    if federation is not None:
        for flag, given in (("--job", job is not None), ("--engine", engine is not None), ("--previous", previous is not None)):
            if given:
                raise FedCreditError(f"{flag} is for local runs; with --federation the nodes score the data they hold "
                                     "and the coordinator chains the limits to the model's newest publication")
        _score_on_federation(federation, model, bank, purpose, out, policy, timeout)
        return
    if job is None:
        raise FedCreditError("--job is required for a local scoring run (or give --federation NAME)")
    if previous is not None and not previous.is_dir():
        raise FedCreditError(f"--previous {previous}: no such folder; expected the previous publication's run folder")
    job_file = read_job(job)
    _train(job_file.node_configs(), job_file.settings, out, engine or "simulation", False, policy, model=Path(model),
           purpose=job_file.purpose, previous=previous, ray_address=job_file.ray_address)


def _score_on_federation(name: str, model_run: str, bank: str, purpose: str, out: Path, policy: Path | None,
                         timeout: float) -> None:
    from fedcredit.deploy import federations
    from fedcredit.jobs import submission

    fed = federations.resolve(name)
    sub = submission.plan_scoring(fed, model_run, bank, purpose, out, policy)
    console.print(f"Federation {fed.name} ({fed.source}): scoring with model {model_run} of bank {bank}; "
                  f"coordinator outputs in {sub.coordinator_out}", markup=False, highlight=False)
    status = submission.run(sub, out, timeout=timeout,
                            echo=lambda line: console.print(line, markup=False, highlight=False))
    m = status.get("metrics") or {}
    console.print(f"[green]✓[/green] scoring run finished on {fed.name}: {m.get('intersection', 0):,} enterprises scored, "
                  f"{m.get('rounds')} rounds, {status.get('submit_seconds')} s")
    console.print(f"Coordinator outputs: {sub.coordinator_out} (signed limits that follow the model's previous "
                  "publication, metrics.json with each node's CSI, run.json); the bank keeps its scores and report")
    console.print(f"Submission record: {Path(out).resolve() / submission.RECORD}")


def _show_failure(out: Path) -> None:
    """Where a failed run left its status and, when messages had flowed, how to verify its aborted logs."""
    status = out / outdir.STATUS
    try:
        doc = json.loads(status.read_text())
    except (OSError, ValueError):
        return
    err_console.print(f"Nothing was published; the run's status is in {status}", markup=False, highlight=False)
    if doc.get("verify"):
        err_console.print(f"Its audit logs were closed as aborted; check: {doc['verify']}", markup=False, highlight=False)


def _train(nodes, settings, out: Path, engine: str, centralized: bool, policy: Path | None = None,
           model: Path | None = None, own: tuple[str, ...] = (), allow_weak_model: bool = False,
           purpose: str = "credit-scoring", previous: Path | None = None, keys: Path | None = None,
           ray_address: str | None = None) -> None:
    limit_policy = LimitPolicy.load(policy) if policy is not None else LimitPolicy()
    try:
        metrics = runner.run(nodes, settings, out, engine=engine, console=console, centralized=centralized,
                             policy=limit_policy, model=model, own=own, allow_weak_model=allow_weak_model,
                             purpose=purpose, previous=previous, keys=keys, ray_address=ray_address)
    except FedCreditError:
        _show_failure(out)
        raise
    what = "scored with a saved model" if model is not None else "aligned enterprises"
    name = "SecureBoost" if settings.model == "secureboost" else "scorecard LR"
    table = Table(title=f"Federated {name} ({metrics['intersection']:,} {what})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, label in _figure_rows(metrics, scoring=model is not None):
        if metrics.get(key) is not None:
            table.add_row(label, f"{metrics[key]:.4f}")
    table.add_row("message rounds", str(metrics["rounds"]))
    if metrics.get("trees") is not None:
        table.add_row("trees in the model", str(metrics["trees"]))
    else:
        table.add_row("model evaluations", str(metrics["evaluations"]))
    table.add_row("seconds", f"{metrics['seconds']:.1f}")
    console.print(table)
    _quality_lines(metrics)
    if model is not None:
        _scored_lines(metrics)
    parts = "" if model is not None else ", model/<role>/ (each node's own part)"
    console.print(f"Outputs in {out}: metrics.json, run.json, scores.parquet (bank){parts}")
    public = (keys or out / "keys") / "coordinator.pub.json"
    console.print(f"Signed limits: {out / 'limits.parquet'} and {out / 'limits.csv'} (signature {out / 'limits.sig.json'}; "
                  f"verify: fedcredit limits verify {out / 'limits.parquet'} --key {public})")
    console.print(f"Report: {out / 'report.html'}")
    console.print(f"Audit logs: {out / 'audit'} ({metrics['audit_records']:,} signed records verified); check:")
    console.print(f"  {verify_command(out, settings.key_bits, public if keys else None)}", soft_wrap=True, markup=False,
                  highlight=False)


def _figure_rows(metrics: dict, scoring: bool) -> list[tuple[str, str]]:
    """(metrics.json key, table label); a scoring run's AUC over the scored population may be in-sample."""
    if not scoring:
        return [(k, k) for k in ("test_auc", "test_ks", "test_gini", "bank_only_auc", "centralized_auc")]
    scope = "in-sample" if metrics.get("in_sample_rows") else "scored"
    return [("scored_auc", f"AUC ({scope})"), ("scored_ks", f"KS ({scope})"), ("test_auc", "test AUC"),
            ("test_ks", "test KS")]


def _scored_lines(metrics: dict) -> None:
    """What a scoring run's AUCs cover: the saved model may have trained on part of the scored population."""
    n, auc, test = metrics.get("in_sample_rows"), metrics.get("scored_auc"), metrics.get("test_auc")
    where = ("the saved model's split is unknown (no scores.parquet beside its model/ folder)" if n is None else
             f"in-sample: {n:,} of its rows were training/validation rows of the saved model" if n else
             "none of its rows were training/validation rows of the saved model")
    if auc is not None:
        console.print(f"AUC on the scored population ({where}): {auc:.4f}", highlight=False)
    if test is not None:
        console.print(f"test AUC over the other {metrics['test_rows']:,} rows (the saved model's test rows and "
                      f"enterprises it never saw): {test:.4f}", highlight=False)


def _quality_lines(metrics: dict) -> None:
    """The quality gate's verdict as the console shows it (training runs only)."""
    gate = metrics.get("quality_gate")
    if gate is None:
        return
    auc = metrics.get("heldout_auc")
    figure = f"{metrics.get('heldout_rows')} AUC {auc:.4f}" if auc is not None else f"no {metrics.get('heldout_rows')} AUC"
    if gate == "overridden":
        console.print(f"[red]![/red] quality gate FAILED ({figure}); published anyway because of --allow-weak-model "
                      "(recorded in run.json, limits.sig.json and the report)")
    else:
        console.print(f"[green]✓[/green] quality gate passed ({figure})")
    for warning in metrics.get("grade_order_warnings") or []:
        console.print(f"[yellow]warning:[/yellow] {warning}", markup=True, highlight=False)
