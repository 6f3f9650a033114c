"""`fedcredit limits ...`: checks on published pre-credit limits.

A bank or auditor runs ``fedcredit limits verify`` before acting on a limits file: it
needs only the file, the detached signature and the coordinator's public identity, and
it answers with one line either way (exit status 0 = intact).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from fedcredit.cli.console import verdict_failed
from fedcredit.common.errors import FedCreditError
from fedcredit.scoring.publish import verify_limits

limits_app = typer.Typer(name="limits", help="Published pre-credit limits: verify their signature.",
                         no_args_is_help=True, add_completion=False)


@limits_app.callback()
def _limits() -> None:
    """Published pre-credit limits (limits.parquet / limits.csv with limits.sig.json)."""


@limits_app.command("verify")
def verify(
    file: Path = typer.Argument(..., help="limits.parquet or limits.csv."),
    key: Path = typer.Option(..., "--key", help="The coordinator's public identity file (JSON)."),
    signature: Optional[Path] = typer.Option(
        None, "--signature", help="Detached signature (default: <stem>.sig.json beside FILE)."),
) -> None:
    """Exit 0 if FILE is exactly what the key's owner signed; otherwise name the problem and exit 1."""
    try:
        report = verify_limits(file, key, signature)
    except FedCreditError as exc:
        verdict_failed(exc)
    typer.echo(f"OK: {report.rows} limits, signed by {report.signer} {report.fingerprint[:16]}")
