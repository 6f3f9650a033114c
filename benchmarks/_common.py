"""Shared benchmark plumbing: the --quick/--json convention, machine description, peak memory."""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="smaller run that finishes in under 60 s")
    p.add_argument("--json", type=Path, metavar="PATH", help="write the figures as one JSON object to PATH")
    return p


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def peak_rss_mb() -> float:
    """Peak resident memory of this process plus the largest finished child, MiB (an upper bound)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + kids) / 1024.0


def emit(figures: dict, path: Path | None) -> None:
    """Print the figures and, with --json, write them as one JSON object."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


def machine_cpu_seconds() -> float:
    """CPU time the whole machine has spent (user + system, all cores) since boot, seconds (/proc/stat).

    The difference across a run is its core-seconds when nothing else runs; it also counts
    processes a run starts in other namespaces or outside its process tree (Flower's).
    """
    with open("/proc/stat") as fh:
        fields = fh.readline().split()[1:]
    user, nice, system = (int(v) for v in fields[:3])
    return (user + nice + system) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and every live descendant, with what their reaped children
    used: the crypto pool's workers are children of the forkserver, not of this process, so ``getrusage``
    alone would miss them."""
    stats, children = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                rest = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry), int(rest[1])
        stats[pid] = sum(int(v) for v in rest[11:15])  # utime, stime, cutime, cstime
        children.setdefault(ppid, []).append(pid)
    total, todo = 0, [os.getpid()]
    while todo:
        pid = todo.pop()
        total += stats.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total / os.sysconf("SC_CLK_TCK")


class Clock:
    """Wall time, CPU seconds of this process tree and the 1-minute load average around a step."""

    def __enter__(self) -> "Clock":
        self.load0, self.cpu0, self.t0 = os.getloadavg()[0], tree_cpu_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self.t0
        self.cpu = tree_cpu_seconds() - self.cpu0
        self.load = (round(self.load0, 2), round(os.getloadavg()[0], 2))

    def text(self) -> str:
        return f"{self.wall:.1f} s wall, {self.cpu:.1f} core-s, load {self.load[0]} → {self.load[1]}"
