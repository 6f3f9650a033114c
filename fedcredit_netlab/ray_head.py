"""A throw-away Ray cluster on loopback for tests and benchmarks of the Ray worker pool.

``LocalRayHead`` runs ``ray start --head --block`` in a session of its own, bound to
127.0.0.1 with a given number of CPUs, its own temp folder (so that no other process's
``ray.init()`` on this machine finds and joins it through ``/tmp/ray/ray_current_cluster``)
and this checkout of fedcredit on its workers' path. Leaving the ``with`` block stops
every process of that session (GCS, raylet, workers, agents), never anyone else's Ray.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import fedcredit

STARTED = "Ray runtime started"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalRayHead:
    """``with LocalRayHead(cpus=2) as head: RayPool(head.address)``; the cluster is gone afterwards."""

    def __init__(self, cpus: int = 2, timeout: float = 90.0) -> None:
        self.cpus, self.timeout = cpus, timeout
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "LocalRayHead":
        self.temp = Path(tempfile.mkdtemp(prefix="fc-ray-", dir="/tmp"))  # short: Ray's socket paths live under it
        self.log = self.temp / "ray-start.log"
        ray = Path(sys.executable).with_name("ray")
        repo = str(Path(fedcredit.__file__).resolve().parents[1])
        env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # bind 127.0.0.1 (fedcredit.common.ray_address)
               "PYTHONPATH": os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p)}
        env.pop("RAY_ADDRESS", None)
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [str(ray), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(self.port),
                 "--num-cpus", str(self.cpus), "--include-dashboard=false", "--disable-usage-stats",
                 "--temp-dir", str(self.temp)],
                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.temp)
        deadline = time.monotonic() + self.timeout
        try:
            while STARTED not in self.log.read_text(errors="replace"):
                if self.proc.poll() is not None:
                    raise RuntimeError(f"ray start exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"ray start did not finish within {self.timeout:.0f} s:\n{self.log.read_text()[-3000:]}")
                time.sleep(0.2)
        except BaseException:
            self.stop()
            raise
        return self

    def pids(self) -> list[int]:
        """The live processes of the cluster's session (``ray start`` and everything it started)."""
        if self.proc is None:
            return []
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.getpgid(int(entry)) == self.proc.pid and "Z" not in _state(int(entry)):
                        found.append(int(entry))
                except (OSError, ProcessLookupError):
                    pass
        return found

    def stop(self) -> None:
        """``ray start --block`` stops its processes on SIGTERM; whatever is left of its session gets SIGKILL."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + 10
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.2)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.poll() is None:
            self.proc.wait(10)

    def __exit__(self, exc_type, *exc) -> None:
        self.stop()
        if exc_type is None:  # the session's logs stay for a failed run
            shutil.rmtree(self.temp, ignore_errors=True)


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0]
