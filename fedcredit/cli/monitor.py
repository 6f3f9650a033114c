"""``fedcredit monitor``: a publication compared with the previous one — early warnings, migration, drift."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from fedcredit.cli.console import console
from fedcredit.scoring.monitor import WARNINGS, feature_name, monitor as compare
from fedcredit.scoring.policy import LimitPolicy

_STYLE = {"red": "red", "amber": "yellow", "green": "green", "stable": "green", "watch": "yellow", "shifted": "red"}


def monitor(
    old: Path = typer.Argument(..., help="The previous publication's run folder (limits, signature, keys/)."),
    new: Path = typer.Argument(..., help="The new publication's run folder (a later scoring run)."),
    out: Path = typer.Option(..., "--out", help="Where to write warnings.parquet, monitoring.json and monitoring.html."),
    policy: Optional[Path] = typer.Option(None, "--policy", help="Limit policy (TOML) whose [monitoring] table holds the "
                                          "thresholds and whose bands order the grades; default: built-in."),
) -> None:
    """Compare NEW's signed limits with OLD's: red/amber/green warnings with reasons, grade migration, score PSI and
    each node's feature CSI (docs/monitoring.md)."""
    limit_policy = LimitPolicy.load(policy) if policy is not None else LimitPolicy()
    summary = compare(old, new, out, limit_policy)
    n = summary["enterprises"]
    table = Table(title=f"Early warnings: {n['both']:,} enterprises in both publications")
    table.add_column("warning")
    table.add_column("enterprises", justify="right")
    table.add_column("share", justify="right")
    for w in WARNINGS:
        count = summary["warnings"][w]
        table.add_row(f"[{_STYLE[w]}]{w}[/]", f"{count:,}", f"{100 * count / max(n['both'], 1):.1f}%")
    console.print(table)
    psi = summary["psi"]
    console.print(f"score PSI {psi['value']:.4f} ([{_STYLE[psi['verdict']]}]{psi['verdict']}[/]); only in OLD "
                  f"{n['only_old']:,}, only in NEW {n['only_new']:,}", highlight=False)
    shifted = [f"{feature_name(role, label)} {doc['csi']:.3f}" for role, feats in sorted(summary["csi"].items())
               for label, doc in feats.items() if doc["verdict"] != "stable"]
    if shifted:
        console.print(f"features to watch or shifted (CSI): {escape('; '.join(shifted))}", soft_wrap=True, highlight=False)
    for line in summary["notes"]:
        console.print(f"note: {escape(line)}", soft_wrap=True, highlight=False)
    console.print(f"Outputs in {escape(str(out))}: warnings.parquet, monitoring.json, monitoring.html", soft_wrap=True)
