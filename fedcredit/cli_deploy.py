"""Commands for a real federation on Flower's deployment engine (TLS and SuperNode authentication).

Three Typer apps, mounted by ``fedcredit.cli``:

* ``certs_app``        ``fedcredit certs make``: test CA, SuperLink certificate, node keys;
* ``coordinator_app``  ``fedcredit coordinator start``: the SuperLink, node keys registered;
* ``node_app``         ``fedcredit node start``: a SuperNode with its role and data;

and ``submit_app`` (``fedcredit federation train``) submits a job to a
running federation and fails when the run fails. See docs/deployment.md.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from fedcredit.errors import FedCreditError

console = Console()
certs_app = typer.Typer(help="Test certificates and node keys for a federation.", no_args_is_help=True)
coordinator_app = typer.Typer(help="The coordinator's Flower SuperLink.", no_args_is_help=True)
node_app = typer.Typer(help="A data holder's Flower SuperNode.", no_args_is_help=True)
submit_app = typer.Typer(help="Submit a job to a running federation.", no_args_is_help=True)


for _app in (certs_app, coordinator_app, node_app, submit_app):  # keep each a command group, mounted or not
    _app.callback()(lambda: None)


def _fail(exc: Exception) -> None:
    console.print(f"[red]error:[/red] {exc}")
    raise typer.Exit(1)


@certs_app.command("make")
def certs_make(
    out: Path = typer.Option(..., "--out", help="Folder to write the CA, SuperLink certificate and node keys into."),
    host: str = typer.Option("127.0.0.1", "--host", help="The SuperLink's host name or IP (certificate SAN)."),
    nodes: str = typer.Option("bank,tax,utilities", "--nodes", help="Comma-separated node names (roles)."),
    days: int = typer.Option(365, "--days", help="Validity of the certificates."),
) -> None:
    """Make a test CA, the SuperLink's TLS certificate and one authentication key pair per node."""
    from fedcredit.deploy.certs import make_certs

    try:
        paths = make_certs(out, host, [n.strip() for n in nodes.split(",") if n.strip()], days=days)
    except FedCreditError as exc:
        _fail(exc)
    console.print(f"[green]✓[/green] CA {paths['ca']}, SuperLink certificate {paths['superlink']} (SAN {host})")
    for name in [n.strip() for n in nodes.split(",") if n.strip()]:
        console.print(f"  node {name}: private key {paths[name + '_key']} (0600, copy to that node only), "
                      f"public key {paths[name + '_pub']}")
    console.print(f"Keep {paths['ca_key']} off the nodes; each node needs ca.pem and its own nodes/<role>.key.")


def _wait_for_signal(procs, check) -> None:
    """Block until SIGINT/SIGTERM or until a process dies; then stop every process."""
    stop = {"sig": None}

    def handler(signum, _frame):
        stop["sig"] = signum

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while stop["sig"] is None:
            dead = [p for p in procs if not p.alive()]
            if dead:
                console.print(f"[red]{dead[0].name} exited with code {dead[0].popen.returncode}[/red]\n{dead[0].tail()}")
                break
            check()
            time.sleep(0.5)
    finally:
        for p in reversed(procs):
            p.stop()
        for s, h in old.items():
            signal.signal(s, h)
    if stop["sig"] is None:
        raise typer.Exit(1)
    console.print("stopped")


@coordinator_app.command("start")
def coordinator_start(
    certs: Path = typer.Option(..., "--certs", help="Folder from 'fedcredit certs make' (ca.pem, superlink.*, nodes/*.pub)."),
    port: int = typer.Option(9092, "--port", help="The SuperLink's one port (Fleet, Control and Runtime APIs)."),
    state: Path = typer.Option(..., "--state", help="State folder: database (node ids survive restarts), logs, FLWR_HOME."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; firewall the port (see docs/deployment.md)."),
    nodes: Optional[str] = typer.Option(None, "--nodes", help="Register only these nodes (default: every nodes/*.pub)."),
) -> None:
    """Run the SuperLink with TLS and SuperNode authentication in the foreground (Ctrl-C stops it)."""
    from fedcredit.deploy import processes as P

    try:
        proc, registry = P.start_coordinator(certs, host, port, state,
                                             nodes=[n.strip() for n in nodes.split(",")] if nodes else None)
    except FedCreditError as exc:
        _fail(exc)
    state = Path(state).resolve()
    console.print(f"[green]✓[/green] SuperLink on {host}:{port} (TLS, SuperNode authentication, "
                  f"database {state / 'superlink.db'}), log {proc.log}")
    for role, nid in registry.items():
        console.print(f"  registered {role}: node id {nid}")
    console.print(f"Role binding for jobs: {state / 'registry.json'}. Ctrl-C to stop.")
    _wait_for_signal([proc], lambda: None)


@node_app.command("start")
def node_start(
    role: str = typer.Option(..., "--role", help="This node's role (bank, tax, utilities, ...)."),
    data: Path = typer.Option(..., "--data", help="This node's Parquet or CSV file (never leaves the node)."),
    superlink: str = typer.Option(..., "--superlink", help="The coordinator's SuperLink, HOST:PORT."),
    certs: Path = typer.Option(..., "--certs", help="Folder with ca.pem and nodes/<role>.key."),
    work: Path = typer.Option(..., "--work", help="Work folder: protocol state, log, FLWR_HOME."),
    out: Optional[Path] = typer.Option(None, "--out", help="Where this node writes its outputs (model part, audit log)."),
    key: Optional[Path] = typer.Option(None, "--key", help="Authentication private key (default CERTS/nodes/ROLE.key)."),
    port: Optional[int] = typer.Option(None, "--port", help="Local port of the SuperNode's Runtime API (default: free)."),
    idle_poll: Optional[float] = typer.Option(None, "--idle-poll", help="Seconds the SuperNode sleeps when idle "
                                              "(Flower's default 3; e.g. 0.2 for faster rounds; flwr 1.41 only)."),
) -> None:
    """Run this node's SuperNode (TLS, authentication key, role and data from the node config) in the foreground."""
    from fedcredit.deploy import processes as P

    try:
        P.split_address(superlink)
        proc = P.start_node(role, data, superlink, certs, work, out=out, key=key, port=port, idle_poll=idle_poll)
    except FedCreditError as exc:
        _fail(exc)
    console.print(f"[green]✓[/green] SuperNode {role} → {superlink} (TLS), data {Path(data).resolve()} stays here; "
                  f"log {proc.log}. Ctrl-C to stop.")
    _wait_for_signal([proc], lambda: None)


@submit_app.command("train")
def submit_train(
    superlink: str = typer.Option(..., "--superlink", help="The coordinator's SuperLink, HOST:PORT."),
    certs: Path = typer.Option(..., "--certs", help="Folder with ca.pem (verifies the SuperLink)."),
    out: Path = typer.Option(..., "--out", help="The coordinator's output folder (on the SuperLink's machine)."),
    seed: Optional[int] = typer.Option(None, "--seed"),
    key_bits: Optional[int] = typer.Option(None, "--key-bits"),
    max_iter: Optional[int] = typer.Option(None, "--max-iter"),
    roles: Optional[str] = typer.Option(None, "--roles", help="Comma-separated roles, bank first (default bank,tax,utilities)."),
    policy: Optional[Path] = typer.Option(None, "--policy", help="Limit policy TOML (on the SuperLink's machine)."),
    registry: Optional[Path] = typer.Option(None, "--registry", help="STATE/registry.json of 'fedcredit coordinator start': "
                                            "each role may only be played by its registered key."),
    baseline: Optional[bool] = typer.Option(None, "--baseline/--no-baseline", help="Also train the bank-only model."),
    timeout: float = typer.Option(3600.0, "--timeout", help="Give up after this many seconds."),
) -> None:
    """Submit a training job with `flwr run`, stream its progress, exit non-zero when it fails."""
    from fedcredit.deploy.submit import submit

    cfg = {k: v for k, v in {"seed": seed, "key-bits": key_bits, "max-iter": max_iter, "roles": roles,
                             "policy": str(Path(policy).resolve()) if policy else None,
                             "registry": str(Path(registry).resolve()) if registry else None,
                             "bank-only-baseline": baseline}.items() if v is not None}
    try:
        status = submit(superlink, certs, out, cfg, timeout=timeout, echo=lambda line: console.print(line, markup=False,
                                                                                                    highlight=False))
    except FedCreditError as exc:
        _fail(exc)
    m = status.get("metrics", {})
    console.print(f"[green]✓[/green] run finished: test AUC {m.get('test_auc', float('nan')):.4f}, {m.get('rounds')} rounds, "
                  f"{status.get('submit_seconds')} s; outputs in {Path(out).resolve()}")
