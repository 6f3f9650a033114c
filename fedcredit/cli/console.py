"""Where the commands print: one console for results, one for errors, one progress style."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

console = Console()
err_console = Console(stderr=True, soft_wrap=True)


def progress() -> Progress:
    """A transient progress line (spinner, description, bar, elapsed time) on the results console."""
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console,
                    transient=True)


def error_exit(exc: Exception) -> None:
    """``error: <message>`` on the results console, exit 1 (messages name [sections]: escaped)."""
    console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
    raise typer.Exit(1)


def verdict_failed(exc: Exception) -> None:
    """``FAILED: <message>`` on stderr, exit 1: the one-line negative verdict of a check command."""
    typer.secho(f"FAILED: {exc}", err=True, fg=typer.colors.RED)
    raise typer.Exit(1)
