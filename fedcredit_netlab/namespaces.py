"""A network lab for integration tests and benchmarks: one network namespace per party, joined by a bridge.

Each party (``coordinator``, ``bank``, ...) gets its own namespace with loopback up and
one veth pair: ``eth0`` inside the namespace, the other end on a bridge in the root
namespace. The bridge has an address too, so the process that built the lab (the test,
``flwr run``, health checks) reaches every party; capturing on a party's root-side end
(``Lab.link``) sees every frame that party sends or receives. Addresses come from an
unused ``10.213.X.0/24``; every name starts with a per-run prefix; ``close()`` (also on
``__exit__``) kills what still runs in the namespaces and deletes them and the bridge.

Link impairment (``Lab.impair``) uses ``tc ... netem`` when the kernel has it. Kernels
without ``sch_netem`` (this project's CI VMs) get a real but different mechanism:
loss = random drop by nftables (``numgen random``) or iptables (``-m statistic``) on
the receiving side of both directions; delay = a userspace TCP relay
(``fedcredit_netlab.delay_relay``) in the upstream party's namespace that holds every
chunk for the delay in each direction; the impaired party then connects to the relay's
address. The returned ``Impairment`` says which mechanism was used. Needs root.
"""

from __future__ import annotations

import atexit
import ctypes
import fcntl
import ipaddress
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from fedcredit.common.errors import FedCreditError

_OPEN: dict = {}  # id -> lab: labs built and not yet closed in this process (dataclasses are not hashable)


def _close_open_labs() -> None:
    for lab in list(_OPEN.values()):
        try:
            lab.close()
        except Exception as exc:  # at exit: report, never raise
            print(f"fedcredit netlab: cleanup at exit: {exc}", file=sys.stderr)


atexit.register(_close_open_labs)

SUBNET_PREFIX = "10.213"  # an unusual private range; the third octet is chosen per lab
LOCK = Path("/run/fedcredit-netlab.lock")
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _ip_bin() -> str:
    path = shutil.which("ip") or ("/usr/sbin/ip" if Path("/usr/sbin/ip").exists() else None)
    if path is None:
        raise FedCreditError("the 'ip' command (iproute2) is not installed")
    return path


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(list(args), capture_output=True, text=True, timeout=30)
    if check and res.returncode != 0:
        raise FedCreditError(f"{' '.join(args)} failed ({res.returncode}): {(res.stderr or res.stdout).strip()}")
    return res


def unavailable_reason() -> str | None:
    """Why a lab cannot be built here (None when it can): needs root, iproute2, namespaces and veth."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    try:
        ip = _ip_bin()
    except FedCreditError as exc:
        return str(exc)
    probe = f"fcprobe{os.getpid() % 100000}"
    try:
        res = _run(ip, "netns", "add", probe, check=False)
        if res.returncode != 0:
            return f"ip netns add failed: {res.stderr.strip()}"
        res = _run(ip, "link", "add", f"{probe}a", "type", "veth", "peer", "name", f"{probe}b", "netns", probe,
                   check=False)
        if res.returncode != 0:
            return f"veth pairs are not available: {res.stderr.strip()}"
        return None
    finally:
        _run(ip, "link", "del", f"{probe}a", check=False)
        _run(ip, "netns", "del", probe, check=False)


def in_netns(ns: str, fn):
    """``fn()`` run on a short-lived thread switched into namespace ``ns``; sockets it makes stay in ``ns``.

    ``setns`` changes only the calling thread, so the caller's namespace is untouched.
    """
    box: dict = {}

    def work():
        try:
            with open(f"/var/run/netns/{ns}") as fh:
                if _libc.setns(fh.fileno(), CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns into {ns}: {os.strerror(err)}")
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    t = threading.Thread(target=work, name=f"netns-{ns}")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


@dataclass
class Impairment:
    """What ``Lab.impair`` did: where the impaired party must connect, and which mechanisms were used."""

    party: str
    delay_ms: float
    loss_pct: float
    address: str  # HOST:PORT the impaired party should use to reach the upstream service
    delay_mechanism: str
    loss_mechanism: str

    def describe(self) -> dict:
        return {"party": self.party, "delay_ms": self.delay_ms, "loss_pct": self.loss_pct,
                "delay_mechanism": self.delay_mechanism, "loss_mechanism": self.loss_mechanism}


@dataclass
class Lab:
    """Namespaces ``<prefix>-<party>`` on a bridge ``<prefix>br``; use as a context manager."""

    parties: list[str]
    prefix: str = field(default_factory=lambda: f"fc{random.randrange(16 ** 5):05x}")
    subnet: ipaddress.IPv4Network | None = None
    _relays: list[subprocess.Popen] = field(default_factory=list, repr=False)
    _built: list[tuple[str, str]] = field(default_factory=list, repr=False)  # ("netns"|"link", name), for close()

    def __post_init__(self) -> None:
        if len(set(self.parties)) != len(self.parties) or not self.parties:
            raise FedCreditError(f"lab parties must be unique and non-empty, got {self.parties}")
        if len(self.parties) > 200:
            raise FedCreditError("at most 200 parties per lab")
        if not re.fullmatch(r"[a-z0-9]{1,8}", self.prefix):
            raise FedCreditError(f"lab prefix must be 1-8 lower-case letters/digits, got {self.prefix!r}")

    # --- names and addresses -------------------------------------------------------------
    def ns(self, party: str) -> str:
        return f"{self.prefix}-{party}"

    def link(self, party: str) -> str:
        """The party's veth end in the root namespace (on the bridge): capture here."""
        return f"{self.prefix}h{self.parties.index(party)}"

    @property
    def bridge(self) -> str:
        return f"{self.prefix}br"

    def address(self, party: str) -> str:
        return str(self.subnet.network_address + 10 + self.parties.index(party))

    @property
    def root_address(self) -> str:
        return str(self.subnet.network_address + 1)

    def exec_prefix(self, party: str) -> list[str]:
        """Prepend to a command to run it inside the party's namespace."""
        return [_ip_bin(), "netns", "exec", self.ns(party)]

    # --- build and tear down -------------------------------------------------------------
    def __enter__(self) -> "Lab":
        try:
            self.build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def build(self) -> None:
        ip = _ip_bin()
        _OPEN[id(self)] = self  # closed at interpreter exit if the owner never got to (e.g. a test run interrupted)
        LOCK.parent.mkdir(parents=True, exist_ok=True)
        with open(LOCK, "a") as lock:  # two labs built at once must not pick the same subnet
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.subnet = self._free_subnet()
            self._built.append(("link", self.bridge))
            _run(ip, "link", "add", self.bridge, "type", "bridge")
            _run(ip, "addr", "add", f"{self.root_address}/24", "dev", self.bridge)
            _run(ip, "link", "set", self.bridge, "up")
        for i, party in enumerate(self.parties):
            ns, host_end, ns_end = self.ns(party), self.link(party), f"{self.prefix}n{i}"
            self._built.append(("netns", ns))
            _run(ip, "netns", "add", ns)
            self._built.append(("link", host_end))
            _run(ip, "link", "add", host_end, "type", "veth", "peer", "name", ns_end, "netns", ns)
            _run(ip, "link", "set", host_end, "master", self.bridge)
            _run(ip, "link", "set", host_end, "up")
            _run(ip, "-n", ns, "link", "set", ns_end, "name", "eth0")
            _run(ip, "-n", ns, "addr", "add", f"{self.address(party)}/24", "dev", "eth0")
            _run(ip, "-n", ns, "link", "set", "eth0", "up")
            _run(ip, "-n", ns, "link", "set", "lo", "up")

    def _free_subnet(self) -> ipaddress.IPv4Network:
        used = _run(_ip_bin(), "-4", "-o", "addr", "show").stdout + _run(_ip_bin(), "-4", "route", "show").stdout
        candidates = [x for x in range(1, 255) if f"{SUBNET_PREFIX}.{x}." not in used]
        if not candidates:
            raise FedCreditError(f"no free {SUBNET_PREFIX}.X.0/24 subnet left in the root namespace")
        return ipaddress.ip_network(f"{SUBNET_PREFIX}.{random.choice(candidates)}.0/24")

    def pids(self, party: str) -> list[int]:
        """Processes running in the party's namespace."""
        return self._ns_pids(self.ns(party))

    def close(self) -> None:
        """Stop relays and every process left in the namespaces, then delete namespaces, links and bridge."""
        ip = _ip_bin()
        for relay in self._relays:
            if relay.poll() is None:
                relay.kill()
            relay.wait(timeout=10)
        self._relays.clear()
        namespaces = [name for kind, name in self._built if kind == "netns"]
        for _ in range(3):
            left = [pid for ns in namespaces for pid in self._ns_pids(ns)]
            if not left:
                break
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.3)
        errors = []
        for kind, name in reversed(self._built):
            res = _run(ip, "netns" if kind == "netns" else "link", "del", name, check=False)
            gone = "No such" in res.stderr or "Cannot find" in res.stderr or "does not exist" in res.stderr
            if res.returncode != 0 and not gone:
                errors.append(f"{kind} {name}: {res.stderr.strip()}")
        self._built.clear()
        _OPEN.pop(id(self), None)
        if errors:
            raise FedCreditError("lab cleanup left something behind: " + "; ".join(errors))

    @staticmethod
    def _ns_pids(ns: str) -> list[int]:
        res = _run(_ip_bin(), "netns", "pids", ns, check=False)
        return [int(p) for p in res.stdout.split() if p.isdigit()]

    # --- helpers ---------------------------------------------------------------------------
    def send_plain(self, party: str, payload: bytes, pieces: int = 3) -> None:
        """Send ``payload`` in clear over TCP from the root namespace to a listener in the party's namespace.

        A positive control for wire captures: it is sent in ``pieces`` separate segments
        (TCP_NODELAY) so that a search must reassemble the stream to find it.
        """
        def listen():
            s = socket.socket()
            s.bind((self.address(party), 0))
            s.listen(1)
            return s

        server = in_netns(self.ns(party), listen)
        got = bytearray()
        with server:
            port = server.getsockname()[1]
            with socket.create_connection((self.address(party), port), timeout=5) as client:
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                server.settimeout(5)
                conn, _ = server.accept()
                with conn:
                    conn.settimeout(5)
                    step = max(1, -(-len(payload) // pieces))
                    for i in range(0, len(payload), step):
                        client.sendall(payload[i:i + step])
                        time.sleep(0.02)
                    client.shutdown(socket.SHUT_WR)
                    while chunk := conn.recv(65536):
                        got += chunk
        if bytes(got) != payload:
            raise FedCreditError(f"plain TCP control to {party} delivered {len(got)} of {len(payload)} bytes")

    def impair(self, party: str, delay_ms: float, loss_pct: float, upstream: tuple[str, int]) -> Impairment:
        """Add ``delay_ms`` in each direction and ``loss_pct`` % random loss between ``party`` and its upstream.

        ``upstream`` is (upstream party, port) of the service ``party`` talks to (the
        SuperLink). Returns where ``party`` must now connect (the relay when delay falls
        back to userspace) and the mechanisms used.
        """
        up_party, port = upstream
        address = f"{self.address(up_party)}:{port}"
        if delay_ms < 0 or not 0 <= loss_pct < 100:
            raise FedCreditError(f"delay must be ≥ 0 ms and loss in [0, 100) %, got {delay_ms}, {loss_pct}")
        if self._try_netem(party, delay_ms, loss_pct):
            what = "tc netem on both ends of the party's link"
            return Impairment(party, delay_ms, loss_pct, address, what if delay_ms else "none",
                              what if loss_pct else "none")
        loss = self._drop_randomly(party, up_party, loss_pct) if loss_pct else "none"
        delay = "none"
        if delay_ms:
            address = self._start_relay(up_party, address, delay_ms)
            delay = (f"userspace TCP relay in {up_party}'s namespace ({address}), holding each chunk "
                     f"{delay_ms:g} ms per direction (kernel has no sch_netem)")
        return Impairment(party, delay_ms, loss_pct, address, delay, loss)

    def _try_netem(self, party: str, delay_ms: float, loss_pct: float) -> bool:
        args = ["delay", f"{delay_ms}ms", "loss", f"{loss_pct}%"]
        tc = shutil.which("tc") or "/usr/sbin/tc"
        res = _run(tc, "-n", self.ns(party), "qdisc", "add", "dev", "eth0", "root", "netem", *args, check=False)
        if res.returncode != 0:
            if "unknown" in res.stderr.lower() or "not supported" in res.stderr.lower() or "No such file" in res.stderr:
                return False
            raise FedCreditError(f"tc netem on {party}: {res.stderr.strip()}")
        _run(tc, "qdisc", "add", "dev", self.link(party), "root", "netem", *args)
        return True

    def _drop_randomly(self, party: str, up_party: str, loss_pct: float) -> str:
        """Drop incoming packets at random on both ends (INPUT, so TCP sees real loss, not a local send error)."""
        src = self.address(party)
        if shutil.which("nft"):
            per_10k = int(round(loss_pct * 100))
            for ns, match in ((self.ns(party), 'iifname "eth0"'), (self.ns(up_party), f"ip saddr {src}")):
                script = ("table inet fcimpair {\n chain input {\n  type filter hook input priority -10; policy accept;\n"
                          f"  {match} numgen random mod 10000 < {per_10k} drop\n }}\n}}\n")
                res = subprocess.run([_ip_bin(), "netns", "exec", ns, "nft", "-f", "-"], input=script, text=True,
                                     capture_output=True, timeout=30)
                if res.returncode != 0:
                    raise FedCreditError(f"nft in {ns}: {res.stderr.strip()}")
            return f"nftables random drop (numgen) of {loss_pct:g} % of packets entering {party} and entering {up_party} from {party}"
        if shutil.which("iptables"):
            p = f"{loss_pct / 100:.6f}"
            for ns, match in ((self.ns(party), ["-i", "eth0"]), (self.ns(up_party), ["-s", src])):
                _run(_ip_bin(), "netns", "exec", ns, "iptables", "-A", "INPUT", *match, "-m", "statistic",
                     "--mode", "random", "--probability", p, "-j", "DROP")
            return f"iptables statistic random drop of {loss_pct:g} % of packets entering {party} and entering {up_party} from {party}"
        raise FedCreditError("packet loss needs tc netem (not in this kernel), nft or iptables: "
                             "apt-get install nftables")

    def _start_relay(self, up_party: str, upstream: str, delay_ms: float) -> str:
        cmd = [*self.exec_prefix(up_party), sys.executable, "-m", "fedcredit_netlab.delay_relay",
               "--listen", f"{self.address(up_party)}:0", "--upstream", upstream, "--delay-ms", str(delay_ms)]
        relay = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 stdin=subprocess.DEVNULL)
        self._relays.append(relay)
        line = relay.stdout.readline().strip()  # "listening HOST:PORT"
        if not line.startswith("listening "):
            raise FedCreditError(f"the delay relay did not start: {line} {relay.stdout.read() if relay.poll() is not None else ''}")
        threading.Thread(target=lambda: [None for _ in relay.stdout], daemon=True).start()  # keep the pipe drained
        return line.split()[1]
