"""A running federation for the deployment tests: every party in its own network namespace when it can be.

``lab_federation(tmp_path, names)`` builds a network lab (``fedcredit_netlab.namespaces``)
for the coordinator and ``names`` (plus ``extra`` parties that get a namespace but no
registered key), makes the test CA, the SuperLink's certificate, one node key per name and
the platform operator's submitter key, and starts the SuperLink. Nodes are started with
``start_node``. On leaving, every process it started is stopped, the lab is removed, and
no Flower process of this test may be left. ``JobThread`` submits a job on a thread (the
test acts while it runs); ``crash`` and ``crash_node`` play a power cut (SIGKILL). As root and where namespaces work the parties
are apart; elsewhere (or with ``FEDCREDIT_TEST_NETNS=0``) all run on 127.0.0.1 and
``why_not`` says why.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fedcredit.deploy import processes as P
from fedcredit.deploy.certs import make_certs
from fedcredit.flower.trust import make_key
from fedcredit_netlab import namespaces as netlab


NEEDS_FLOWER = pytest.mark.skipif(
    not all((P.BIN / b).exists() or shutil.which(b) for b in ("flower-superlink", "flower-supernode", "flwr")),
    reason="Flower deployment binaries (flower-superlink, flower-supernode, flwr) are not installed")


def flower_pids(marker: str) -> list[str]:
    """Flower and fedcredit deployment processes whose command line holds ``marker`` (a test's tmp folder)."""
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if marker in line and ("flower-" in line or "flwr" in line
                                                                     or "fedcredit.deploy" in line)]


def use_namespaces() -> str | None:
    """None when the federation runs in namespaces, else why not."""
    if os.environ.get("FEDCREDIT_TEST_NETNS", "1") == "0":
        return "FEDCREDIT_TEST_NETNS=0"
    return netlab.unavailable_reason()


@dataclass
class LabFederation:
    tmp: Path
    lab: netlab.Lab | None
    certs: Path
    port: int
    why_not: str | None
    procs: dict[str, P.Proc] = field(default_factory=dict)
    registry: dict | None = None

    @property
    def host(self) -> str:
        return self.lab.address("coordinator") if self.lab else "127.0.0.1"

    @property
    def superlink(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def state(self) -> Path:
        return self.tmp / "state"

    @property
    def submitter_key(self) -> Path:
        return self.certs / "submitters" / "operator.key"

    def netns(self, party: str) -> str | None:
        return self.lab.ns(party) if self.lab else None

    def start_coordinator(self) -> dict:
        """(Re)start the SuperLink on the same state folder; the test process may use its Control API."""
        self.procs["coordinator"], self.registry = P.start_coordinator(
            self.certs, self.host, self.port, self.state, netns=self.netns("coordinator"),
            control_from=[self.lab.root_address] if self.lab else None)
        return self.registry

    def start_node(self, name: str, data: Path, *, party: str | None = None, certs: Path | None = None,
                   **options) -> P.Proc:
        """(Re)start node ``name`` (in the namespace of ``party``, default its name) with its own work and out folders."""
        party = party or name
        if party in self.procs:
            self.procs[party].stop()
        options.setdefault("idle_poll", 0.1)
        self.procs[party] = P.start_node(name, data, self.superlink, certs or self.certs, self.tmp / "work" / party,
                                         out=self.tmp / "nodes-out" / party, netns=self.netns(party), **options)
        return self.procs[party]


@contextmanager
def lab_federation(tmp_path: Path, names, extra: tuple[str, ...] = (), namespaces: bool | None = None):
    """The coordinator running, keys made for ``names``; ``namespaces=True`` requires the lab."""
    why_not = use_namespaces()
    lab = None if why_not and not namespaces else netlab.Lab(["coordinator", *names, *extra])
    fed = LabFederation(tmp_path, lab, tmp_path / "certs", P.free_port(), why_not if lab is None else None)
    try:
        if lab is not None:
            lab.build()
        make_certs(fed.certs, fed.host, list(names))
        make_key(fed.certs / "submitters", "operator")  # signs the jobs: the coordinator and the nodes check it
        fed.start_coordinator()
        yield fed
    finally:
        for proc in reversed(list(fed.procs.values())):
            proc.stop()
        if lab is not None:
            lab.close()
        assert flower_pids(str(tmp_path)) == [], "Flower processes left running"


class JobThread:
    """``submit`` on a thread, so the test can act while the job runs (e.g. stop and restart a node).

    ``wait_for(text)`` blocks until a progress line containing ``text`` was streamed
    (lines look like "federated model: iteration 1/1, loss ..."); ``result()`` joins and
    returns the coordinator's status or re-raises the job's error.
    """

    def __init__(self, superlink, certs, out, run_config, timeout):  # signed by the fixture's submitter
        from fedcredit.flower.submit import submit

        self.lines: list[str] = []
        self._box: dict = {}
        self._new_line = threading.Condition()

        def echo(line: str) -> None:
            with self._new_line:
                self.lines.append(line)
                self._new_line.notify_all()

        def run() -> None:
            try:
                self._box["status"] = submit(superlink, certs, out, run_config, echo=echo, timeout=timeout,
                                             submitter_key=Path(certs) / "submitters" / "operator.key")
            except BaseException as exc:  # handed to result()
                self._box["error"] = exc
            with self._new_line:
                self._new_line.notify_all()

        self.started = time.perf_counter()
        self._thread = threading.Thread(target=run, name="submit", daemon=True)
        self._thread.start()

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        with self._new_line:
            while True:
                hit = next((line for line in self.lines if text in line), None)
                if hit is not None:
                    return hit
                if not self._thread.is_alive() or time.monotonic() > deadline:
                    raise AssertionError(f"no progress line with {text!r}; last lines:\n" + "\n".join(self.lines[-15:]))
                self._new_line.wait(timeout=1.0)

    def result(self, timeout: float) -> dict:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the job did not finish"
        self.seconds = time.perf_counter() - self.started
        if "error" in self._box:
            raise self._box["error"]
        return self._box["status"]


def crash(proc: P.Proc) -> None:
    """SIGKILL a process's whole tree, as a power cut would: no clean shutdown, no deactivation."""
    pids = [proc.popen.pid, *P.descendants(proc.popen.pid)]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.popen.wait(timeout=10)


def crash_node(node: P.NodeProc) -> None:
    """A node loses power: its SuperNode and its node service die at once."""
    crash(node.service)
    crash(node)
