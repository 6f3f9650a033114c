"""`fedcredit audit ...`: offline checks of a run's exchange logs.

An auditor needs only the logs (``DIR/audit/<party>.jsonl``) and, to pin the run's keys,
the coordinator's public identity. Every command answers with one line; exit status 0
means every check holds, 1 names the file, record and problem.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from fedcredit.cli.console import verdict_failed
from fedcredit.common.errors import FedCreditError
from fedcredit.audit.verify import DEFAULT_MIN_KEY_BITS

audit_app = typer.Typer(name="audit", help="Exchange logs: verify, report, export.", no_args_is_help=True,
                        add_completion=False)


_DIR = typer.Argument(..., help="Run folder (logs in DIR/audit/) or the audit folder itself.")
_KEY = typer.Option(None, "--key", help="The coordinator's public identity file (JSON), to pin the run's keys.")
_MIN_KEY_BITS = typer.Option(DEFAULT_MIN_KEY_BITS, "--min-key-bits",
                             help="Smallest Paillier key size to accept (1024 for runs with test keys, "
                                  "e.g. `fedcredit demo --key-bits 1024`).")


@audit_app.callback()
def _audit() -> None:
    """Exchange logs of a run: one signed, hash-chained JSON Lines file per party."""


@audit_app.command("verify")
def verify(
    folder: Path = _DIR,
    key: Optional[Path] = _KEY,
    min_key_bits: int = _MIN_KEY_BITS,
) -> None:
    """Exit 0 if every chain, signature, send/receive pair, protection class and checkpoint holds;
    exit 1 if any fails, or if the logs are intact but record an aborted run ("aborted at step N: reason")."""
    from fedcredit.audit.verify import verify_audit

    try:
        verdict = verify_audit(folder, key, min_key_bits=min_key_bits)
    except FedCreditError as exc:
        verdict_failed(exc)
    typer.echo(verdict.summary())
    for note in verdict.notes:
        typer.echo(f"note: {note}")
    if verdict.aborted is not None:
        raise typer.Exit(1)


@audit_app.command("report")
def report(
    folder: Path = _DIR,
    out: Path = typer.Option(..., "--out", help="HTML file to write."),
    key: Optional[Path] = _KEY,
    min_key_bits: int = _MIN_KEY_BITS,
) -> None:
    """Write a self-contained HTML report (verdict, protection glossary, messages per kind, timeline, flow per step);
    exit 1 if verify fails or the logs record an aborted run."""
    from fedcredit.audit.report import render_audit_report
    from fedcredit.audit.verify import verify_audit

    try:
        path = render_audit_report(folder, out, key, min_key_bits=min_key_bits)
        verdict = verify_audit(folder, key, min_key_bits=min_key_bits)
    except FedCreditError as exc:
        if out.exists():
            typer.echo(f"report written to {out}")
        verdict_failed(exc)
    typer.echo(f"{verdict.summary()}; report written to {path}")
    if verdict.aborted is not None:
        raise typer.Exit(1)


@audit_app.command("export")
def export(
    folder: Path = _DIR,
    out: Path = typer.Option(..., "--out", help="Parquet file to write (one row per record)."),
) -> None:
    """Export every record of every log to Parquet (logs are chain-checked, not cross-verified)."""
    from fedcredit.audit.verify import export_parquet

    try:
        path = export_parquet(folder, out)
    except FedCreditError as exc:
        verdict_failed(exc)
    import pyarrow.parquet as pq

    typer.echo(f"OK: {pq.read_metadata(path).num_rows} records exported to {path}")
