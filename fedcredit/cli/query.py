"""``fedcredit serve``, ``fedcredit query`` and ``fedcredit coordinator query-token``: online limit queries.

The coordinator serves one bank's model on an HTTPS endpoint while a serving run lasts
(``serve``); a bank asks it for the current limits of a few enterprises (``query``),
checks the coordinator's signature on the answer and prints it. See docs/query.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from fedcredit.cli.console import console, error_exit
from fedcredit.common.errors import FedCreditError

PUBLIC_KEY = "coordinator.pub.json"


def query_token(
    bank: str = typer.Argument(..., help="The bank (its node name) the token is for."),
    state: Path = typer.Option(..., "--state", help="The coordinator's state folder (its query-tokens.json)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Where to write the token, once (0600; default "
                                       "STATE/query-tokens/BANK.token). Hand it to the bank, then delete it here."),
) -> None:
    """Make a query token for BANK: written once to a 0600 file; the coordinator keeps only its SHA-256."""
    from fedcredit.serving.tokens import new_token

    try:
        _, path, digests = new_token(bank, state, out)
    except FedCreditError as exc:
        error_exit(exc)
    console.print(f"[green]✓[/green] query token for bank {bank} written to {path} (0600); its digest is in "
                  f"{digests}. Give the file to {bank} (fedcredit federation add ... --query-token FILE) and "
                  "delete it here.", soft_wrap=True)


def serve(
    federation: str = typer.Option(..., "--federation", help="The running federation (fedcredit federation add)."),
    bank: str = typer.Option(..., "--bank", help="The bank whose model answers (its node name)."),
    model: str = typer.Option(..., "--model", help="The training run whose saved model parts answer (its run id)."),
    listen: Optional[str] = typer.Option(None, "--listen", help="HOST:PORT the endpoint binds on the coordinator's "
                                         "machine (default: the federation's query URL)."),
    purpose: str = typer.Option("credit-scoring", "--purpose", help="The purpose the hosts' consent lists name."),
    policy: Optional[Path] = typer.Option(None, "--policy", help="Limit policy (TOML; default: the federation's)."),
    out: Path = typer.Option(Path("serving"), "--out", help="Local folder of the submission record (the coordinator "
                             "writes serving.log and requests.jsonl under the federation's out)."),
    timeout: float = typer.Option(600.0, "--timeout", help="Seconds a query waits for a silent node."),
) -> None:
    """Serve BANK's online limit queries on the federation until Ctrl-C (or flwr stop)."""
    from fedcredit.deploy import federations
    from fedcredit.jobs import serving

    try:
        fed = federations.resolve(federation)
        sub = serving.plan(fed, model, bank, out, listen=listen, purpose=purpose, policy=policy, timeout=timeout)
        console.print(f"Federation {fed.name}: serving bank {bank}'s model {model} on "
                      f"{sub.run_config['query-listen']}; coordinator log in {sub.coordinator_out}",
                      markup=False, highlight=False)
        status = serving.serve(sub, out, echo=lambda line: console.print(line, markup=False, highlight=False))
    except FedCreditError as exc:
        if str(exc).startswith("interrupted;"):  # Ctrl-C: the run was stopped at the coordinator too
            console.print(f"serving stopped ({exc})", markup=False)
            return
        error_exit(exc)
    console.print(f"serving stopped: {status.get('requests_answered', 0)} query(ies) answered")


def _public_key(fed, key: Path | None) -> Path:
    if key is not None:
        return key
    if fed.keys and (Path(fed.keys) / PUBLIC_KEY).is_file():
        return Path(fed.keys) / PUBLIC_KEY
    raise FedCreditError(f"no coordinator public key: give --key {PUBLIC_KEY} (the federation's 'keys' folder "
                         f"{fed.keys or '(not set)'} holds none here)")


def query(
    uscc: list[str] = typer.Argument(..., help="The enterprises' USCCs (1 to 10,000)."),
    federation: str = typer.Option(..., "--federation", help="The federation (with --query and --query-token)."),
    bank: str = typer.Option(..., "--bank", help="Your bank's node name (the answer must be for it)."),
    token: Optional[Path] = typer.Option(None, "--token", help="Your query token file (default: the federation's)."),
    key: Optional[Path] = typer.Option(None, "--key", help=f"The coordinator's {PUBLIC_KEY} (default: in the "
                                       "federation's keys folder)."),
    as_json: bool = typer.Option(False, "--json", help="Print the signed answer as JSON."),
    timeout: float = typer.Option(120.0, "--timeout", help="Seconds to wait for the answer."),
) -> None:
    """Ask the coordinator for the current limits of USCC...; the answer's signature is checked before it is shown."""
    from fedcredit.crypto import PublicIdentity
    from fedcredit.deploy import federations
    from fedcredit.protocols import verify_answer
    from fedcredit.serving.client import post_limits
    from fedcredit.serving.requests import check_ids
    from fedcredit.serving.tokens import read_token

    try:
        ids = check_ids(list(uscc), where="USCC argument")  # refused here, before any request
        fed = federations.resolve(federation)
        if not fed.query:
            raise FedCreditError(f"federation {fed.name} has no query URL (fedcredit federation add ... --query URL)")
        token_file = token or (Path(fed.query_token) if fed.query_token else None)
        if token_file is None:
            raise FedCreditError(f"federation {fed.name} has no query token file: give --token FILE")
        public = PublicIdentity.load(_public_key(fed, key))
        doc = post_limits(fed.query, read_token(token_file), ids, fed.ca(), timeout=timeout)
        verify_answer(doc, public)
        if doc.get("bank") != bank:
            raise FedCreditError(f"the answer is for bank {doc.get('bank')!r}, not {bank!r}")
    except FedCreditError as exc:
        error_exit(exc)
    if as_json:
        console.print_json(json.dumps(doc))
        return
    table = Table(title=f"Limits of model {doc.get('model')} for bank {doc.get('bank')} (query {doc.get('query_id')}, "
                        f"signed by {str(doc.get('signer'))[:16]} at {doc.get('signed_at')})")
    for col in ("uscc", "status", "grade", "pd", "limit"):
        table.add_column(col, justify="right" if col in ("pd", "limit") else "left", no_wrap=True)
    table.add_column("reasons", overflow="fold")
    for row in doc.get("rows", []):
        pd_ = row.get("pd")
        limit = row.get("limit")
        codes = row.get("reason_codes") or ""
        reasons = (", ".join(codes) if isinstance(codes, list) else codes.replace(";", ", ")) or (row.get("why") or "")
        table.add_row(str(row.get("uscc")), str(row.get("status")), str(row.get("grade") or "-"),
                      f"{pd_:.4f}" if isinstance(pd_, (int, float)) else "-",
                      f"{limit:,.0f}" if isinstance(limit, (int, float)) else "-", reasons)
    console.print(table)
    console.print(f"[green]✓[/green] signature verified ({len(doc.get('rows', []))} row(s))")
