"""Shared benchmark plumbing: the --quick/--json convention, machine description, peak memory."""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
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

