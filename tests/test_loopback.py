"""Local engines listen on loopback only: every socket the simulated job's process tree listens on
(Ray's GCS, raylet, object manager, workers; Flower's in-process runtime) is bound to 127.0.0.1 or ::1.

The test lists the listening sockets of a small local ``fedcredit train`` (the demo's engine) and
all its descendants while it runs on Flower's simulation engine; any listener on another address (0.0.0.0, the machine's
own address) fails the test with the process and address named.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys

import pytest
import time
from pathlib import Path

import psutil

from fedcredit.data import synth


def listeners(root: int) -> set[tuple[str, str, int, str]]:
    """(process name, ip, port, tcp|udp) of every listening TCP socket and bound UDP socket of ``root``'s tree."""
    try:
        procs = [psutil.Process(root)]
        procs += procs[0].children(recursive=True)
    except psutil.NoSuchProcess:
        return set()
    found = set()
    for proc in procs:
        try:
            name = proc.name()
            conns = proc.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        for c in conns:
            listening = c.status == psutil.CONN_LISTEN or (c.type == 2 and not c.raddr)  # SOCK_DGRAM, unconnected
            if listening and c.laddr:
                found.add((name, c.laddr.ip, c.laddr.port, "udp" if c.type == 2 else "tcp"))
    return found


def is_loopback(ip: str) -> bool:
    """127.0.0.0/8, ::1, and IPv4 loopback seen through an IPv6 socket (::ffff:127.0.0.1)."""
    address = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def non_loopback(found: set[tuple[str, str, int, str]]) -> list[str]:
    """The listeners not bound to a loopback address, as "process tcp ip:port" lines."""
    return sorted(f"{name} {kind} {ip}:{port}" for name, ip, port, kind in found if not is_loopback(ip))


def test_non_loopback_detects_wildcard_and_host_addresses():
    found = {("raylet", "0.0.0.0", 1, "tcp"), ("gcs", "10.1.2.3", 2, "tcp"), ("w", "::", 3, "tcp"),
             ("ok", "127.0.0.1", 4, "tcp"), ("ok6", "::1", 5, "udp"),
             ("mapped", "::ffff:127.0.0.1", 6, "tcp"), ("mapped-host", "::ffff:10.1.2.3", 7, "tcp")}
    assert non_loopback(found) == ["gcs tcp 10.1.2.3:2", "mapped-host tcp ::ffff:10.1.2.3:7", "raylet tcp 0.0.0.0:1",
                                  "w tcp :::3"]


def test_ray_takes_the_loopback_address_even_when_imported_first(tmp_path):
    """A notebook may import Ray before fedcredit: the switch must still hold (a fresh process, Ray imported first)."""
    script = ("import ray\n"
              "from ray._private import ray_constants, services\n"
              "assert ray_constants.ENABLE_RAY_CLUSTER, 'this machine runs Ray in single-machine mode already'\n"
              "before = services.get_node_ip_address()\n"
              "from fedcredit.flower.simulation import _ray_on_loopback\n"
              "_ray_on_loopback()\n"
              "print(before, services.get_node_ip_address())\n")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    run = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[1], env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    before, after = run.stdout.split()
    assert is_loopback(after), f"Ray's node address stayed {after} (was {before})"


JOB = """
[model]
max_iter = 4
key_bits = 1024
bank_only_baseline = false

[nodes.bank]
data = "data/bank.parquet"
[nodes.tax]
data = "data/tax.parquet"
[nodes.utilities]
data = "data/utilities.parquet"
"""


@pytest.mark.slow
def test_local_job_listens_on_loopback_only(tmp_path):
    """``fedcredit train`` on the demo's engine (Flower's simulation engine on Ray), a small job, its process
    tree sampled from outside every 0.5 s until it exits."""
    synth.write_nodes(synth.generate(800, 5), tmp_path / "data")
    (tmp_path / "job.toml").write_text(JOB)
    repo = Path(__file__).resolve().parents[1]
    job = subprocess.Popen([sys.executable, "-c", "from fedcredit.cli import main; main()", "train",
                            "--job", str(tmp_path / "job.toml"), "--out", str(tmp_path / "out")],
                           cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    found, samples = set(), 0
    try:
        while job.poll() is None:
            found |= listeners(job.pid)
            samples += 1
            time.sleep(0.5)
        log = job.stdout.read()
    finally:
        if job.poll() is None:
            job.kill()
        job.wait()
    assert job.returncode == 0, log
    print("\n".join(f"{name} {kind} {ip}:{port}" for name, ip, port, kind in sorted(found)))
    ray = sorted(f for f in found if f[0] in ("gcs_server", "raylet"))
    assert ray, f"in {samples} samples no Ray listener was seen ({sorted(found)}): the test cannot judge"
    assert non_loopback(found) == [], f"listening beyond loopback: {non_loopback(found)}"
