"""The ``fedcredit`` command: one typer app, a module per command group.

=================  ==========================================================
module             commands
=================  ==========================================================
``data``           ``synth``, ``validate``
``train``          ``demo``, ``train``, ``score``
``federation``     ``certs``, ``coordinator``, ``node``, ``federation``, ``app``
``audit``          ``audit verify|report|export``
``limits``         ``limits verify``
``monitor``        ``monitor`` (a publication vs the previous one)
``query``          ``serve``, ``query``, ``coordinator query-token``
=================  ==========================================================

Commands stay thin: parse the options, call the layer below (data, jobs, deploy, audit,
scoring), print. Errors meant for the user (FedCreditError) are printed without a
traceback and the command exits with status 1.
"""

from __future__ import annotations

import typer
from rich.markup import escape
from typer.core import TyperGroup

from fedcredit import __version__
from fedcredit.cli import data, monitor, query, train
from fedcredit.cli.audit import audit_app
from fedcredit.cli.console import console, err_console
from fedcredit.cli.federation import app_app, certs_app, coordinator_app, federation_app, node_app
from fedcredit.cli.limits import limits_app
from fedcredit.common.errors import FedCreditError


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

app.command("synth")(data.synth)
app.command("validate")(data.validate)
app.command("demo")(train.demo)
app.command("train")(train.train)
app.command("score")(train.score)
app.command("monitor")(monitor.monitor)
app.command("serve")(query.serve)
app.command("query")(query.query)
coordinator_app.command("query-token")(query.query_token)
app.add_typer(limits_app, name="limits")
app.add_typer(audit_app, name="audit")
app.add_typer(certs_app, name="certs")
app.add_typer(coordinator_app, name="coordinator")
app.add_typer(node_app, name="node")
app.add_typer(federation_app, name="federation")
app.add_typer(app_app, name="app")


@app.callback(invoke_without_command=True)
def _root(version: bool = typer.Option(False, "--version", help="Print the version and exit.")) -> None:
    if version:
        console.print(f"fedcredit {__version__}")
        raise typer.Exit()


def main() -> None:
    """Console-script entry point."""
    app()
