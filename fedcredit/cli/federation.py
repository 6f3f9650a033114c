"""``fedcredit certs``, ``coordinator``, ``node`` and ``federation``: a real federation on Flower's deployment engine.

* ``certs make``: test CA, SuperLink certificate, node keys, submitter keys;
* ``app key`` / ``app sign``: a publisher's (or submitter's) key; a signed app folder;
* ``coordinator start``: the SuperLink (TLS, SuperNode authentication), node keys registered;
* ``node start``: a SuperNode with its role and data;

(both read their kit's config file with ``--config``, see nodes/*/README.md) and
``federation train|add|list|remove``: submit a job to a running federation, failing when the
run fails, and keep named federations for ``fedcredit train --federation NAME``.
See docs/deployment.md.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Optional

import typer

from fedcredit.cli.console import console, error_exit
from fedcredit.common.errors import FedCreditError

certs_app = typer.Typer(help="Test certificates and node keys for a federation.", no_args_is_help=True)
coordinator_app = typer.Typer(help="The coordinator's Flower SuperLink.", no_args_is_help=True)
node_app = typer.Typer(help="A data holder's Flower SuperNode.", no_args_is_help=True)
federation_app = typer.Typer(help="Submit a job to a running federation.", no_args_is_help=True)
app_app = typer.Typer(help="Keys and signatures for the Flower app that nodes accept.", no_args_is_help=True)


for _app in (certs_app, coordinator_app, node_app, federation_app, app_app):  # keep each a command group, mounted or not
    _app.callback()(lambda: None)


@certs_app.command("make")
def certs_make(
    out: Path = typer.Option(..., "--out", help="Folder to write the CA, SuperLink certificate and node keys into."),
    host: str = typer.Option("127.0.0.1", "--host", help="The SuperLink's host name or IP (certificate SAN)."),
    nodes: str = typer.Option("bank,tax,utilities", "--nodes", help="Comma-separated node names, e.g. "
                              "bank-a,bank-b,tax,utilities for a federation of two banks (docs/add-a-bank.md)."),
    days: int = typer.Option(365, "--days", help="Validity of the certificates."),
    submitters: str = typer.Option("operator", "--submitters", help="Comma-separated names of those who may "
                                   "submit jobs (an Ed25519 key pair each in OUT/submitters/)."),
) -> None:
    """Make a test CA, the SuperLink's TLS certificate, one authentication key pair per node and one signing key
    pair per submitter."""
    from fedcredit.deploy.certs import make_certs
    from fedcredit.flower.trust import make_key

    try:
        paths = make_certs(out, host, [n.strip() for n in nodes.split(",") if n.strip()], days=days)
        signers = {n: make_key(Path(out) / "submitters", n) for n in (s.strip() for s in submitters.split(",")) if n}
    except FedCreditError as exc:
        error_exit(exc)
    console.print(f"[green]✓[/green] CA {paths['ca']}, SuperLink certificate {paths['superlink']} (SAN {host})")
    for name in [n.strip() for n in nodes.split(",") if n.strip()]:
        console.print(f"  node {name}: private key {paths[name + '_key']} (0600, copy to that node only), "
                      f"public key {paths[name + '_pub']}")
    for name, (private, public) in signers.items():
        console.print(f"  submitter {name}: signing key {private} (0600, for whoever submits as {name}), "
                      f"public key {public} (coordinator and every node)")
    console.print(f"Keep {paths['ca_key']} off the nodes; each node needs ca.pem, its own nodes/<role>.key and "
                  "submitters/*.pub.")


@app_app.command("key")
def app_key(
    name: str = typer.Argument(..., help="The key's name (a publisher, or a submitter such as a bank)."),
    out: Path = typer.Option(..., "--out", help="Folder for NAME.key (0600) and NAME.pub (e.g. CERTS/submitters)."),
) -> None:
    """Make an Ed25519 signing key pair: a publisher's (nodes pin NAME.pub in [trust] publishers) or a submitter's."""
    from fedcredit.flower.trust import make_key

    try:
        private, public = make_key(out, name)
    except FedCreditError as exc:
        error_exit(exc)
    console.print(f"[green]✓[/green] private key {private} (0600), public key {public}")


@app_app.command("sign")
def app_sign(
    app: Path = typer.Argument(..., help="The Flower app folder (pyproject.toml with [tool.flwr.app])."),
    key: Path = typer.Option(..., "--key", help="The publisher's private key (fedcredit app key)."),
) -> None:
    """Sign every file of the app bundle 'flwr run APP' sends (APP/fedcredit-app.sig.json; re-sign after changes)."""
    from fedcredit.crypto import CryptoError, Identity
    from fedcredit.flower.trust import sign_app

    try:
        path = sign_app(app, Identity.load(key))
    except CryptoError as exc:
        error_exit(FedCreditError(f"publisher key {key}: {exc}"))
    except FedCreditError as exc:
        error_exit(exc)
    console.print(f"[green]✓[/green] signed: {path}; nodes that pin this publisher's key accept the bundle")


@certs_app.command("add")
def certs_add(
    out: Path = typer.Option(..., "--out", help="The federation's certificate folder (from 'certs make')."),
    nodes: str = typer.Option(..., "--nodes", help="Comma-separated names of the joining nodes, e.g. bank-b."),
) -> None:
    """Add key pairs for nodes joining a federation (a second bank, a new host); the coordinator registers them
    when it starts again on its state folder (docs/add-a-bank.md)."""
    from fedcredit.deploy.certs import add_node_keys

    names = [n.strip() for n in nodes.split(",") if n.strip()]
    try:
        paths = add_node_keys(out, names)
    except FedCreditError as exc:
        error_exit(exc)
    for name in names:
        console.print(f"  node {name}: private key {paths[name + '_key']} (0600, copy to that node only), "
                      f"public key {paths[name + '_pub']}")
    console.print("Restart 'fedcredit coordinator start' on the same --state to register the new key(s).")


def _run_until_stopped(proc) -> None:
    """Serve in the foreground until Ctrl-C/SIGTERM (exit 0) or until the process exits on its own (exit 1)."""
    from fedcredit.deploy.processes import supervise

    dead = supervise([proc])
    if dead is not None:
        console.print(f"[red]{dead.name} exited with code {dead.popen.returncode}[/red]\n{dead.tail()}")
        raise typer.Exit(1)
    console.print("stopped")


@coordinator_app.command("start")
def coordinator_start(
    config: Optional[Path] = typer.Option(None, "--config", help="coordinator.toml of the kit (nodes/coordinator/); "
                                          "options given here override it."),
    certs: Optional[Path] = typer.Option(None, "--certs", help="Folder from 'fedcredit certs make' (ca.pem, superlink.*, nodes/*.pub)."),
    port: Optional[int] = typer.Option(None, "--port", help="The SuperLink's one port (Fleet, Control and Runtime APIs; default 9092)."),
    state: Optional[Path] = typer.Option(None, "--state", help="State folder: database (node ids survive restarts), logs, FLWR_HOME."),
    host: Optional[str] = typer.Option(None, "--host", help="Address to bind (default 127.0.0.1); firewall the port "
                                       "(see docs/deployment.md)."),
    nodes: Optional[str] = typer.Option(None, "--nodes", help="Register only these nodes (default: every nodes/*.pub)."),
    control_from: Optional[str] = typer.Option(None, "--control-from", help="Comma-separated addresses/networks "
                                               "(CIDR) besides loopback and --host that may reach the Control and "
                                               "Runtime APIs (submit jobs); nodes reach only /v1/fleet."),
    submitter_key: Optional[Path] = typer.Option(None, "--submitter-key", help="A registered submitter's key (e.g. "
                                                 "the platform operator's) that signs the resubmission of unfinished "
                                                 "jobs found in the state folder (without it they are only listed)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check the settings and print the SuperLink command; start nothing."),
) -> None:
    """Run the SuperLink with TLS and SuperNode authentication in the foreground (Ctrl-C stops it)."""
    from fedcredit.deploy import kitconfig
    from fedcredit.deploy import processes as P

    try:
        opts = kitconfig.coordinator_settings(config, {
            "certs": certs, "port": port, "state": state, "host": host,
            "nodes": [n.strip() for n in nodes.split(",") if n.strip()] if nodes else None,
            "control_from": [c.strip() for c in control_from.split(",") if c.strip()] if control_from else None})
        host, port = opts["host"], opts["port"]
        if dry_run:
            console.print(shlex.join(P.superlink_command(opts["certs"], host, port, opts["state"])), markup=False,
                          highlight=False, soft_wrap=True)
            console.print(f"registers: {', '.join(opts.get('nodes') or ['every nodes/*.pub'])}", markup=False)
            return
        proc, registry = P.start_coordinator(opts["certs"], host, port, opts["state"], nodes=opts.get("nodes"),
                                             control_from=opts.get("control_from"), publishers=opts.get("publishers"))
    except FedCreditError as exc:
        error_exit(exc)
    state = Path(opts["state"]).resolve()
    console.print(f"[green]✓[/green] SuperLink on {host}:{port} (TLS, SuperNode authentication, "
                  f"database {state / 'superlink.db'}), log {proc.log}")
    for role, nid in registry.items():
        console.print(f"  registered {role}: node id {nid}")
    console.print(f"Role binding for jobs: {state / 'registry.json'}. Jobs must be signed by a key in "
                  f"{Path(opts['certs']).resolve() / 'submitters'}; Control API from loopback, {host}"
                  f"{''.join(', ' + c for c in opts.get('control_from') or [])} only. Ctrl-C to stop.")
    from fedcredit.flower.submit import resume_unfinished

    connect = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    resume_unfinished(state, f"{connect}:{port}", Path(opts["certs"]), submitter_key=submitter_key,
                      echo=lambda line: console.print(line, markup=False, highlight=False))
    _run_until_stopped(proc)


@node_app.command("start")
def node_start(
    config: Optional[Path] = typer.Option(None, "--config", help="node.toml of the kit (nodes/<role>/); options given "
                                          "here override it."),
    role: Optional[str] = typer.Option(None, "--role", help="This node's role (bank, tax, utilities, ...)."),
    data: Optional[Path] = typer.Option(None, "--data", help="This node's Parquet or CSV file (never leaves the node)."),
    superlink: Optional[str] = typer.Option(None, "--superlink", help="The coordinator's SuperLink, HOST:PORT."),
    certs: Optional[Path] = typer.Option(None, "--certs", help="Folder with ca.pem and nodes/<role>.key."),
    work: Optional[Path] = typer.Option(None, "--work", help="Work folder: protocol state, log, FLWR_HOME."),
    out: Optional[Path] = typer.Option(None, "--out", help="Where this node writes its outputs (model part, audit log)."),
    key: Optional[Path] = typer.Option(None, "--key", help="Authentication private key (default CERTS/nodes/ROLE.key)."),
    port: Optional[int] = typer.Option(None, "--port", help="Local port of the SuperNode's Runtime API (default: free)."),
    idle_poll: Optional[float] = typer.Option(None, "--idle-poll", help="Seconds the SuperNode sleeps when idle "
                                              "(default 0.1; Flower's own 3; flwr 1.41 only, others run unchanged)."),
    heartbeat: Optional[float] = typer.Option(None, "--heartbeat", help="Heartbeat interval in seconds (default 10, "
                                              "Flower's minimum; its own default is 30). The coordinator notices a "
                                              "crashed node after two intervals."),
    coordinator_timeout: Optional[float] = typer.Option(
        None, "--coordinator-timeout", help="Seconds this node waits for a coordinator that stopped mid-job (default "
        "3600); then it closes the job's audit log as aborted and deletes its state."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check the settings and print the SuperNode command; start nothing."),
) -> None:
    """Run this node's service and SuperNode (TLS, authentication key, role and data from the node config) in the
    foreground; a node service that dies is started again."""
    from fedcredit.deploy import kitconfig
    from fedcredit.deploy import processes as P

    try:
        o, columns = kitconfig.node_settings(config, {
            "role": role, "data": data, "superlink": superlink, "certs": certs, "work": work, "out": out, "key": key,
            "port": port, "idle_poll": idle_poll, "heartbeat": heartbeat, "coordinator_timeout": coordinator_timeout})
        if dry_run:
            cmd = P.supernode_command(o["role"], o["data"], o["superlink"], o["certs"], o["work"],
                                      o.get("port") or P.free_port(), out=o.get("out"), key=o.get("key"), node_config=columns)
            env = "".join(f"{k}={v} " for k, v in P.supernode_env(o.get("idle_poll") or P.DEFAULT_IDLE_POLL, o.get("heartbeat")).items())
            service = P.service_command(cmd[cmd.index("--node-config") + 1])
            console.print(shlex.join(service) + " &", markup=False, highlight=False, soft_wrap=True)
            console.print(env + shlex.join(cmd), markup=False, highlight=False, soft_wrap=True)
            return
        proc = P.start_node(o["role"], o["data"], o["superlink"], o["certs"], o["work"], out=o.get("out"), key=o.get("key"),
                            port=o.get("port"), idle_poll=o.get("idle_poll") or P.DEFAULT_IDLE_POLL,
                            heartbeat=o.get("heartbeat") or P.DEFAULT_HEARTBEAT, node_config=columns)
    except FedCreditError as exc:
        error_exit(exc)
    console.print(f"[green]✓[/green] SuperNode {o['role']} → {o['superlink']} (TLS), data {Path(o['data']).resolve()} "
                  f"stays here; log {proc.log}; node service log {proc.service.log}. Ctrl-C to stop.")
    _run_until_stopped(proc)


@federation_app.command("train")
def submit_train(
    superlink: str = typer.Option(..., "--superlink", help="The coordinator's SuperLink, HOST:PORT."),
    certs: Path = typer.Option(..., "--certs", help="Folder with ca.pem (verifies the SuperLink)."),
    out: Path = typer.Option(..., "--out", help="The coordinator's output folder (on the SuperLink's machine)."),
    seed: Optional[int] = typer.Option(None, "--seed"),
    key_bits: Optional[int] = typer.Option(None, "--key-bits"),
    max_iter: Optional[int] = typer.Option(None, "--max-iter"),
    roles: Optional[str] = typer.Option(None, "--roles", help="Comma-separated roles, bank first (default bank,tax,utilities)."),
    bank: Optional[str] = typer.Option(None, "--bank", help="The name of the node that plays the job's bank "
                                       "(default bank); the other roles are its hosts' names."),
    policy: Optional[Path] = typer.Option(None, "--policy", help="Limit policy TOML (on the SuperLink's machine)."),
    registry: Optional[Path] = typer.Option(None, "--registry", help="STATE/registry.json of 'fedcredit coordinator start': "
                                            "each role may only be played by its registered key."),
    baseline: Optional[bool] = typer.Option(None, "--baseline/--no-baseline", help="Also train the bank-only model."),
    timeout: float = typer.Option(3600.0, "--timeout", help="Give up after this many seconds."),
    submitter_key: Optional[Path] = typer.Option(None, "--submitter-key", help="Your submitter key "
                                                 "(CERTS/submitters/NAME.key): unsigned jobs are refused."),
    node_return_timeout: Optional[float] = typer.Option(None, "--node-return-timeout", help="How long the job waits "
                                                        "for a lost node to come back (default 600 s)."),
) -> None:
    """Submit a training job with `flwr run`, stream its progress, exit non-zero when it fails."""
    from fedcredit.flower.submit import submit

    cfg = {k: v for k, v in {"seed": seed, "key-bits": key_bits, "max-iter": max_iter, "roles": roles, "bank": bank,
                             "policy": str(Path(policy).resolve()) if policy else None,
                             "registry": str(Path(registry).resolve()) if registry else None,
                             "bank-only-baseline": baseline, "node-return-timeout": node_return_timeout}.items()
           if v is not None}
    try:
        status = submit(superlink, certs, out, cfg, timeout=timeout, submitter_key=submitter_key, echo=lambda line: console.print(line, markup=False,
                                                                                                    highlight=False))
    except FedCreditError as exc:
        error_exit(exc)
    m = status.get("metrics", {})
    console.print(f"[green]✓[/green] run finished: test AUC {m.get('test_auc', float('nan')):.4f}, {m.get('rounds')} rounds, "
                  f"{status.get('submit_seconds')} s; outputs in {Path(out).resolve()}")


@federation_app.command("add")
def federation_add(
    name: str = typer.Argument(..., help="A name for the federation (letters, digits, '.', '_', '-')."),
    superlink: str = typer.Option(..., "--superlink", help="The coordinator's SuperLink, HOST:PORT."),
    certs: Path = typer.Option(..., "--certs", help="Folder with ca.pem (verifies the SuperLink); must exist here."),
    registry: Optional[Path] = typer.Option(None, "--registry", help="On the coordinator's machine: STATE/registry.json "
                                            "of 'fedcredit coordinator start' (role binding)."),
    out: Optional[Path] = typer.Option(None, "--out", help="On the coordinator's machine: base folder of run outputs "
                                       "(a run with --out DIR writes into OUT/<name of DIR>)."),
    policy: Optional[Path] = typer.Option(None, "--policy", help="On the coordinator's machine: the default limit policy."),
    keys: Optional[Path] = typer.Option(None, "--keys", help="On the coordinator's machine: folder of its signing key "
                                        "(the same key signs every run's limits)."),
    submitter_key: Optional[Path] = typer.Option(None, "--submitter-key", help="Here: your submitter key "
                                                 "(CERTS/submitters/NAME.key) that signs every job you send."),
    query: Optional[str] = typer.Option(None, "--query", help="https://HOST:PORT of the coordinator's query "
                                        "endpoint (fedcredit serve; docs/query.md)."),
    query_token: Optional[Path] = typer.Option(None, "--query-token", help="Here: your bank's query token file "
                                               "(fedcredit coordinator query-token)."),
    query_tokens: Optional[Path] = typer.Option(None, "--query-tokens", help="On the coordinator's machine: its "
                                                "token digests (default STATE/query-tokens.json)."),
    replace: bool = typer.Option(False, "--replace", help="Overwrite a federation of the same name."),
) -> None:
    """Save a named federation in the user's federations file (for 'fedcredit train --federation NAME')."""
    from fedcredit.deploy import federations as F

    table = {"superlink": superlink, "certs": str(certs), **{k: str(v) for k, v in
             {"registry": registry, "out": out, "policy": policy, "keys": keys, "submitter": submitter_key,
              "query": query, "query_token": query_token, "query_tokens": query_tokens}.items()
             if v is not None}}
    try:
        fed = F.parse(name, table, "fedcredit federation add", Path.cwd())
        fed.ca()
        path = F.add(fed, replace=replace)
    except FedCreditError as exc:
        error_exit(exc)
    console.print(f"[green]✓[/green] federation {name} → {fed.superlink} saved in {path}")
    if not fed.registry:
        console.print("[yellow]warning:[/yellow] no --registry: without role binding any registered node may claim any role")
    if not fed.submitter:
        console.print("[yellow]warning:[/yellow] no --submitter-key: jobs sent unsigned are refused")


@federation_app.command("list")
def federation_list(
    job: Optional[Path] = typer.Option(None, "--job", help="Also list the job file's [federations.NAME]."),
) -> None:
    """List the known federations: the user's file and, with --job, the job file's (which win on a shared name)."""
    from rich.table import Table

    from fedcredit.deploy import federations as F
    from fedcredit.jobs.jobfile import read_job

    try:
        known = {**F.load_file(), **(read_job(job).federations if job else {})}
    except FedCreditError as exc:
        error_exit(exc)
    if not known:
        console.print(f"no federations yet ({F.user_file()}); add one with: fedcredit federation add NAME "
                      "--superlink HOST:PORT --certs DIR")
        return
    table = Table(title=f"Federations ({F.user_file()})")
    for col in ("name", "superlink", "certs", "registry", "out", "policy", "keys", "defined in"):
        table.add_column(col, overflow="fold")
    for name, fed in sorted(known.items()):
        table.add_row(name, fed.superlink, str(fed.certs), *(getattr(fed, k) or "-" for k in F.COORDINATOR_PATHS),
                      fed.source)
    console.print(table)


@federation_app.command("remove")
def federation_remove(name: str = typer.Argument(..., help="The federation to forget.")) -> None:
    """Remove a federation from the user's federations file."""
    from fedcredit.deploy import federations as F

    try:
        path = F.remove(name)
    except FedCreditError as exc:
        error_exit(exc)
    console.print(f"removed {name} from {path}")
