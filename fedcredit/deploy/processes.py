"""Start and stop Flower's SuperLink and SuperNodes for fedcredit (TLS and SuperNode authentication on).

Every Flower process runs in its own process group with ``FLWR_HOME`` under the
fedcredit state or work folder (never the user's home), the Flower binaries of *this*
Python environment first on ``PATH`` (subprocess isolation execs ``flower-superexec`` and
``flwr-clientapp`` from PATH), and runtime dependency installation off: the apps run
with the packages installed here.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from fedcredit.common.atomic import atomic_write_json
from fedcredit.common.errors import FedCreditError

FEDERATION = "fedcredit"  # the connection name in $FLWR_HOME/config.toml
NODE_WORK_FLAG = "--fedcredit-node-work"  # the node's flwr-clientapp launcher: the node service's work directory
UNFINISHED_ENV, UNFINISHED = "FEDCREDIT_UNFINISHED", "unfinished"  # a coordinator's list of unfinished jobs (STATE/unfinished)
BIN = Path(sys.executable).parent


def flower_bin(name: str) -> str:
    """A Flower executable of this environment (beside the running Python), else from PATH."""
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if not found:
        raise FedCreditError(f"{name} not found: install flwr 1.41 in this environment (pip install 'flwr==1.41.0')")
    return found


def flower_env(flwr_home: Path, extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{Path(flower_bin('flower-superlink')).parent}{os.pathsep}{env.get('PATH', '')}"
    env["FLWR_HOME"] = str(flwr_home)
    env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
    env.setdefault("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", "0.05")
    env.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra or {})
    return env


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise FedCreditError(f"address must be HOST:PORT, got {address!r}")
    return host.strip("[]"), int(port)


def write_cli_config(flwr_home: Path, address: str, ca: Path) -> Path:
    """The ``flwr`` CLI's connection to the SuperLink: ``[superlink.fedcredit]`` in $FLWR_HOME/config.toml."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    path = flwr_home / "config.toml"
    path.write_text(f'[superlink]\ndefault = "{FEDERATION}"\n\n[superlink.{FEDERATION}]\n'
                    f'address = "{address}"\nroot-certificates = "{Path(ca).resolve()}"\n')
    return path


@dataclass
class Proc:
    """A Flower process we started (its own process group) and its log file."""

    name: str
    popen: subprocess.Popen
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM the process group, wait, then SIGKILL what is left of it and of its descendants.

        Flower's SuperExec starts app processes in sessions of their own, so the
        descendants are collected first and signalled by pid as well.
        """
        family = descendants(self.popen.pid)
        if self.popen.poll() is None:
            _signal_group(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        _signal_group(self.popen.pid, signal.SIGKILL)
        for pid in family + descendants(self.popen.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        return self.popen.returncode

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def supervise(procs: list[Proc], poll: float = 0.5) -> Proc | None:
    """Block until SIGINT/SIGTERM or until one of ``procs`` exits; then stop every one (last started first).

    Returns the process that exited on its own, or None when a signal ended the wait: a
    foreground ``coordinator start``/``node start`` never leaves a Flower process behind.
    """
    stop = {"sig": None}

    def handler(signum, _frame):
        stop["sig"] = signum

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    dead = None
    try:
        while stop["sig"] is None and dead is None:
            for p in procs:  # a node's service that died is started again; its relay waits for it
                if getattr(p, "revive", None) is not None and p.revive():
                    print(f"fedcredit: {p.name}: the node service had exited; started it again", flush=True)
            dead = next((p for p in procs if not p.alive()), None)
            if dead is None:
                time.sleep(poll)
    finally:
        for p in reversed(procs):
            p.stop()
        for s, h in old.items():
            signal.signal(s, h)
    return dead


def descendants(pid: int) -> list[int]:
    """Pids of every living descendant of ``pid`` (from /proc; empty where /proc is missing)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def spawn(name: str, cmd: list[str], env: dict, log: Path, cwd: Path | None = None, netns: str | None = None) -> Proc:
    """Start ``cmd`` in a new session (its own process group), output appended to ``log``.

    With ``netns``, the command runs inside that network namespace (``ip netns exec``,
    which execs it in place: the pid and process group stay the command's own).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    if netns is not None:
        cmd = [shutil.which("ip") or "/usr/sbin/ip", "netns", "exec", netns, *cmd]
    with open(log, "ab") as fh:
        popen = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 cwd=cwd, start_new_session=True)
    return Proc(name, popen, log)


def superlink_command(certs: Path, host: str, port: int, state: Path) -> list[str]:
    """``flower-superlink`` through ``fedcredit.deploy.superlink`` (its Control and Runtime APIs gated by peer address)."""
    certs = Path(certs).resolve()
    flower_bin("flower-superlink")  # fails early with a clear message when Flower is missing
    return [sys.executable, "-m", "fedcredit.deploy.superlink",
            "--ssl-certfile", str(certs / "superlink.pem"), "--ssl-keyfile", str(certs / "superlink.key"),
            "--ssl-ca-certfile", str(certs / "ca.pem"),
            "--enable-supernode-auth", "--database", str(Path(state).resolve() / "superlink.db"),
            "--host", host, "--port", str(port), "--disable-runtime-dependency-installation"]


def supernode_command(role: str, data: Path, superlink: str, certs: Path, work: Path, port: int,
                      out: Path | None = None, key: Path | None = None, node_config: dict | None = None,
                      max_retries: int | None = None) -> list[str]:
    """``flower-supernode`` (through ``fedcredit.deploy.supernode``, see ``--idle-poll``) for one role."""
    certs = Path(certs).resolve()
    cfg = {"role": role, "data": str(Path(data).resolve()), "work-dir": str(Path(work).resolve() / "state")}
    if out is not None:
        cfg["out-dir"] = str(Path(out).resolve())
    # the submitters whose jobs this node takes (default: every CERTS/submitters/*.pub) and pinned publishers
    cfg["submitters"] = ",".join(str(p) for p in sorted((certs / "submitters").glob("*.pub")))
    cfg.update(node_config or {})
    config = node_config_text(cfg)
    flower_bin("flower-supernode")  # fails early with a clear message when Flower is missing
    retries = ["--max-retries", str(max_retries)] if max_retries is not None else []
    return [sys.executable, "-m", "fedcredit.deploy.supernode", *retries, "--root-certificates", str(certs / "ca.pem"), "--superlink", superlink,
            "--auth-supernode-private-key", str(Path(key).resolve() if key else certs / "nodes" / f"{role}.key"),
            "--host", "127.0.0.1", "--port", str(port), "--node-config", config]


def wait_https(host: str, port: int, ca: Path, timeout: float, proc: Proc | None = None) -> None:
    """Wait until the SuperLink answers ``GET /health`` over TLS (verified with the test CA)."""
    ctx = ssl.create_default_context(cafile=str(ca))
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise FedCreditError(f"{proc.name} exited with code {proc.popen.returncode}:\n{proc.tail()}")
        try:
            with urllib.request.urlopen(f"https://{host}:{port}/health", context=ctx, timeout=2) as r:
                if r.status == 200:
                    return
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(0.2)
    raise FedCreditError(f"the SuperLink at {host}:{port} did not answer within {timeout:.0f} s ({last})")


def flwr_cli(args: list[str], flwr_home: Path, timeout: float = 60.0, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([flower_bin("flwr"), *args], env=flower_env(flwr_home), capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def registered_keys(flwr_home: Path) -> str:
    """``flwr supernode list`` output (JSON) of the federation in ``flwr_home``."""
    res = flwr_cli(["supernode", "list", FEDERATION, "--format", "json"], flwr_home)
    return res.stdout


def register_nodes(flwr_home: Path, pubs: dict[str, Path], registry: Path | None = None) -> dict[str, int]:
    """Register each node's public key; returns (and saves to ``registry``) role -> Flower node id.

    With SuperNode authentication the node id is fixed when the key is registered, so
    the registry binds each role to its key: the ServerApp refuses a node that claims a
    role whose key it does not hold. A restarted coordinator (same state database) keeps
    its registrations, and the saved registry.
    """
    known = json.loads(registry.read_text()) if registry is not None and registry.exists() else {}
    for role, pub in pubs.items():
        if role in known:
            continue
        res = flwr_cli(["supernode", "register", str(Path(pub).resolve()), FEDERATION, "--name", role,
                        "--format", "json"], flwr_home)
        text = (res.stdout + res.stderr).strip()
        match = re.search(r'"node-id"\s*:\s*"?(\d+)', text)
        if res.returncode != 0 or match is None:
            raise FedCreditError(f"registering {role}'s key ({pub}) failed:\n{text}")
        known[role] = int(match.group(1))
    if registry is not None:
        atomic_write_json(registry, known)
    return known


def write_launcher(folder: Path, command: str, module: str, *args: str) -> Path:
    """An executable ``folder/command`` that runs ``python -m module ARGS "$@"`` with this Python."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / command
    path.write_text(f"#!/bin/sh\nexec {shlex.join([sys.executable, '-m', module, *args])} \"$@\"\n")
    path.chmod(0o755)
    return path


def _addresses(host: str) -> list[str]:
    """The IP addresses of the host name the SuperLink binds (itself when it is an address)."""
    try:
        return sorted({info[4][0] for info in socket.getaddrinfo(host, None)})
    except OSError:
        raise FedCreditError(f"cannot resolve the SuperLink's host {host!r}") from None


def coordinator_env(certs: Path, host: str, state: Path, control_from: list[str] | None = None,
                    publishers: list[Path] | None = None) -> dict:
    """The SuperLink's environment: who may reach its Control and Runtime APIs (loopback, the address it binds,
    ``control_from``), the registered submitters (``CERTS/submitters/*.pub``) and pinned publishers its ServerApp
    gate checks, and that gate first on PATH as ``flwr-serverapp`` (``fedcredit.flower.serverapp_gate``)."""
    from fedcredit.deploy.superlink import ALLOW_ENV, parse_networks

    allowed = ["127.0.0.0/8", "::1", *_addresses(host), *(control_from or [])]
    try:
        parse_networks(",".join(allowed))
    except ValueError as exc:
        raise FedCreditError(f"--control-from: {exc}") from None
    env = flower_env(Path(state) / "flwr-home", {
        ALLOW_ENV: ",".join(allowed), "FEDCREDIT_SUBMITTERS": str(Path(certs).resolve() / "submitters"),
        "FEDCREDIT_CERTS": str(Path(certs).resolve()),  # the serving run's TLS certificate (fedcredit.flower.serving)
        "FEDCREDIT_PUBLISHERS": ",".join(str(Path(p).resolve()) for p in publishers or []),
        "FEDCREDIT_STATE": str(Path(state).resolve())})
    gate = write_launcher(Path(state) / "bin", "flwr-serverapp", "fedcredit.flower.serverapp_gate")
    env["PATH"] = f"{gate.parent}{os.pathsep}{env['PATH']}"
    return env


def start_coordinator(certs: Path, host: str, port: int, state: Path, *, nodes: list[str] | None = None,
                      timeout: float = 60.0, netns: str | None = None, control_from: list[str] | None = None,
                      publishers: list[Path] | None = None) -> tuple[Proc, dict[str, int]]:
    """Start the SuperLink (TLS, SuperNode auth, state database) and register the node keys in ``certs``.

    With ``netns`` the SuperLink runs in that network namespace; ``host`` must then be an
    address of the namespace that this process can reach (health check and registration
    run from here, so this process's address must be in ``control_from``). Only peers in
    ``control_from`` (CIDRs), loopback and ``host`` reach the Control and Runtime APIs.
    """
    from fedcredit.deploy.certs import node_public_keys

    state = Path(state).resolve()
    certs = Path(certs).resolve()
    for need in ("ca.pem", "superlink.pem", "superlink.key"):
        if not (certs / need).exists():
            raise FedCreditError(f"{certs / need} is missing (make it with: fedcredit certs make --out {certs})")
    pubs = node_public_keys(certs)
    if nodes is not None:
        missing = sorted(set(nodes) - set(pubs))
        if missing:
            raise FedCreditError(f"no public key for node(s) {missing} in {certs / 'nodes'}")
        pubs = {r: pubs[r] for r in nodes}
    if port_in_use(host, port):
        raise FedCreditError(f"{host}:{port} is already in use (another SuperLink?); choose another --port")
    home = state / "flwr-home"
    env = coordinator_env(certs, host, state, control_from, publishers)
    # the ServerApps it starts list their unfinished jobs there (fedcredit.flower.journal): a restart resumes them
    env[UNFINISHED_ENV] = str(state / UNFINISHED)
    proc = spawn("superlink", superlink_command(certs, host, port, state), env, state / "superlink.log", netns=netns)
    try:
        wait_https(host, port, certs / "ca.pem", timeout, proc)
        write_cli_config(home, f"{host}:{port}", certs / "ca.pem")
        registry = register_nodes(home, pubs, state / "registry.json")
    except BaseException:
        proc.stop()
        raise
    return proc, registry


DEFAULT_HEARTBEAT = 10.0
DEFAULT_IDLE_POLL = 0.1  # seconds an idle SuperNode sleeps between pulls (Flower 1.41's own: 3 s)


def supernode_env(idle_poll: float | None, heartbeat: float | None) -> dict:
    """The settings the SuperNode wrapper (``fedcredit.deploy.supernode``) reads from its environment."""
    env = {"FEDCREDIT_IDLE_POLL": f"{idle_poll:g}"} if idle_poll else {}
    env["FEDCREDIT_HEARTBEAT"] = f"{heartbeat or DEFAULT_HEARTBEAT:g}"
    return env


def node_config_text(cfg: dict) -> str:
    """The node config string (``key='value' ...``) that the SuperNode and the node service both read."""
    for k, v in cfg.items():
        if "'" in str(v) or "\\" in str(v):
            raise FedCreditError(f"node config value of {k!r} may not contain quotes or backslashes: {v!r}")
    return " ".join(f"{k}='{v}'" for k, v in cfg.items())


def service_command(config: str, workers: int | None = None) -> list[str]:
    """The node service (``python -m fedcredit.node``) for the node config ``config``."""
    return [sys.executable, "-m", "fedcredit.node", "--node-config", config,
            *(["--workers", str(workers)] if workers else [])]


class NodeProc(Proc):
    """A node: its SuperNode (this Proc) and, beside it, its fedcredit node service (``service``).

    ``revive()`` starts the service again when it died (the relay ClientApp waits for it);
    ``stop()`` stops both.
    """

    def __init__(self, supernode: Proc, service: Proc, restart):
        super().__init__(supernode.name, supernode.popen, supernode.log)
        self.service = service
        self._restart = restart
        self.service_restarts = 0

    def revive(self) -> bool:
        """Start the node service again if it exited; True when it did."""
        if self.service.alive():
            return False
        self.service = self._restart()
        self.service_restarts += 1
        return True

    def stop(self, timeout: float = 15.0) -> int | None:
        code = super().stop(timeout)
        self.service.stop(timeout)
        return code


def wait_service(work: Path, proc: Proc, timeout: float = 60.0) -> None:
    """Wait until the node service answers on its socket (or fail with its log)."""
    import fedcredit.node.channel as channel

    deadline = time.monotonic() + timeout
    while True:
        try:
            status, _, _ = channel.call(work, "GET", "/health", timeout=5)
            if status == 200:
                return
        except channel.ServiceDown:
            pass
        if not proc.alive():
            raise FedCreditError(f"the node service exited with code {proc.popen.returncode}:\n{proc.tail()}")
        if time.monotonic() > deadline:
            raise FedCreditError(f"the node service did not answer within {timeout:.0f} s:\n{proc.tail()}")
        time.sleep(0.1)


def start_node(role: str, data: Path, superlink: str, certs: Path, work: Path, *, out: Path | None = None,
               port: int | None = None, key: Path | None = None, idle_poll: float | None = DEFAULT_IDLE_POLL,
               heartbeat: float = DEFAULT_HEARTBEAT, max_retries: int | None = None, node_config: dict | None = None,
               netns: str | None = None, workers: int | None = None) -> NodeProc:
    """Start ``role``'s node service, then its SuperNode (Runtime API on 127.0.0.1, FLWR_HOME under ``work``),
    in ``netns`` if given.

    The service holds the node's data and agents and listens on a Unix socket in the work
    folder; the SuperNode's ClientApp is a thin relay to it. ``heartbeat`` (seconds,
    Flower's minimum 10; its own default 30): a crashed node is noticed by the coordinator
    after two intervals (``fedcredit.deploy.supernode``).
    """
    work = Path(work).resolve()
    if not Path(data).exists():
        raise FedCreditError(f"data file {data} does not exist")
    extra = supernode_env(idle_poll, heartbeat)
    cmd = supernode_command(role, Path(data), superlink, certs, work, port or free_port(), out=out, key=key,
                            node_config=node_config, max_retries=max_retries)
    config = cmd[cmd.index("--node-config") + 1]
    env = flower_env(work / "flwr-home", extra)
    # tasks go to the node service (Flower is loaded there once), or run in the launcher when it cannot take them;
    # never through Flower's own runner, which would run the app bundle's code (fedcredit.deploy.clientapp)
    shim = write_launcher(work / "bin", "flwr-clientapp", "fedcredit.deploy.clientapp", NODE_WORK_FLAG,
                          str(work / "state"))
    env["PATH"] = f"{shim.parent}{os.pathsep}{env['PATH']}"

    def start_service() -> Proc:
        proc = spawn(f"node-service-{role}", service_command(config, workers), env, work / "node-service.log",
                     netns=netns)
        try:
            wait_service(work / "state", proc)
        except BaseException:
            proc.stop()
            raise
        return proc

    service = start_service()
    try:
        supernode = spawn(f"supernode-{role}", cmd, env, work / "supernode.log", netns=netns)
    except BaseException:
        service.stop()
        raise
    return NodeProc(supernode, service, start_service)
