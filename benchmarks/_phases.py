"""Seconds, peak memory and CPU time per phase of a run, for this process and every process it starts.

A sampling thread reads, every ``interval`` seconds, the resident memory and CPU time of this
process and all its descendants (crypto pool workers, Ray's raylet and workers). This process's
own peak comes from the kernel instead (``VmHWM``), reset at every phase start by writing 5 to
``/proc/self/clear_refs``, so a spike between two samples is not missed. Phases are entered by
name; the same name may be entered again (each stretch is a segment), and ``relabel_last`` moves
the current segment to another phase once it is known what it was (the stretch after the last
training iteration is the scoring).

RSS sums over processes overcount pages they share (forked workers); each process's own peak
does not.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

MIB = 1024.0 * 1024.0


def _own_peak_mb() -> float | None:
    """This process's peak resident memory since the last reset (VmHWM), MiB; None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def _reset_own_peak() -> bool:
    """Start this process's VmHWM afresh (Linux ≥ 4.0); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


@dataclass
class Segment:
    """One stretch of a phase."""

    phase: str
    started: float
    ended: float = 0.0
    own_peak_mb: float = 0.0     # this process (VmHWM, or samples where the kernel cannot tell)
    tree_peak_mb: float = 0.0    # sum over the process tree, largest sample
    process_peak_mb: dict[int, float] = field(default_factory=dict)  # pid -> largest sample
    cpu_start: float = 0.0
    cpu_end: float = 0.0


class PhaseMeter:
    """Per-phase wall time, peak RSS (own, whole tree, per process) and core-seconds of the process tree."""

    def __init__(self, interval: float = 0.2):
        self.interval = interval
        self.root = psutil.Process()
        self.segments: list[Segment] = []
        self.names: dict[int, str] = {}
        self._cpu: dict[int, float] = {}   # pid -> latest CPU seconds seen (a process that exited keeps its last)
        self.kernel_peaks = _reset_own_peak()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="phase-meter", daemon=True)

    # -- sampling
    def _processes(self) -> list[psutil.Process]:
        try:
            return [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return [self.root]

    def _sample(self) -> None:
        rss: dict[int, float] = {}
        for proc in self._processes():
            try:
                with proc.oneshot():
                    mem = proc.memory_info().rss / MIB
                    cpu = proc.cpu_times()
                    if proc.pid not in self.names:
                        self.names[proc.pid] = _describe(proc)
            except psutil.Error:  # exited between listing and reading
                continue
            rss[proc.pid] = mem
            self._cpu[proc.pid] = cpu.user + cpu.system
        with self._lock:
            if not self.segments:
                return
            seg = self.segments[-1]
            seg.tree_peak_mb = max(seg.tree_peak_mb, sum(rss.values()))
            for pid, mb in rss.items():
                seg.process_peak_mb[pid] = max(seg.process_peak_mb.get(pid, 0.0), mb)
            if not self.kernel_peaks:
                seg.own_peak_mb = max(seg.own_peak_mb, rss.get(self.root.pid, 0.0))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def cpu_seconds(self) -> float:
        """CPU time (user + system) of every process of the tree seen so far, seconds."""
        return sum(self._cpu.values())

    # -- phases
    def enter(self, phase: str) -> None:
        """End the current segment and start one of ``phase``."""
        self._sample()
        now = time.perf_counter()
        with self._lock:
            self._close(now)
            self.segments.append(Segment(phase, now, cpu_start=self.cpu_seconds()))
        if not self._thread.is_alive() and not self._stop.is_set():
            self._thread.start()

    def _close(self, now: float) -> None:
        if not self.segments:
            return
        seg = self.segments[-1]
        seg.ended, seg.cpu_end = now, self.cpu_seconds()
        if self.kernel_peaks:
            seg.own_peak_mb = max(seg.own_peak_mb, _own_peak_mb() or 0.0)
            _reset_own_peak()

    def relabel_last(self, phase: str) -> None:
        """The current segment belongs to ``phase`` after all."""
        with self._lock:
            self.segments[-1].phase = phase

    def stop(self) -> None:
        self._sample()
        with self._lock:
            self._close(time.perf_counter())
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def phases(self) -> dict[str, dict]:
        """Per phase (in order of first appearance): seconds, core-seconds, peak RSS of this process, of the
        whole tree and of the largest other process, MiB."""
        out: dict[str, dict] = {}
        for seg in self.segments:
            ph = out.setdefault(seg.phase, {"seconds": 0.0, "core_seconds": 0.0, "own_peak_mb": 0.0,
                                            "tree_peak_mb": 0.0, "processes": {}})
            ph["seconds"] += seg.ended - seg.started
            ph["core_seconds"] += seg.cpu_end - seg.cpu_start
            ph["own_peak_mb"] = max(ph["own_peak_mb"], seg.own_peak_mb)
            ph["tree_peak_mb"] = max(ph["tree_peak_mb"], seg.tree_peak_mb)
            for pid, mb in seg.process_peak_mb.items():
                ph["processes"][pid] = max(ph["processes"].get(pid, 0.0), mb)
        return out

    def process_peaks(self) -> dict[int, float]:
        """Each process's largest sample over the whole run (this process: its kernel peak), MiB."""
        peaks: dict[int, float] = {}
        for seg in self.segments:
            for pid, mb in seg.process_peak_mb.items():
                peaks[pid] = max(peaks.get(pid, 0.0), mb)
            peaks[self.root.pid] = max(peaks.get(self.root.pid, 0.0), seg.own_peak_mb)
        return peaks


def _describe(proc: psutil.Process) -> str:
    """A short name for a process: its title (Ray sets "ray::ClientAppActor...") or command."""
    try:
        cmd = proc.cmdline()
        name = proc.name()
    except psutil.Error:
        return "?"
    title = " ".join(cmd)[:80] if cmd else name
    return title if title.startswith("ray::") or not cmd else f"{name}: {' '.join(Path(c).name for c in cmd[:3])}"[:80]


def load_average() -> list[float]:
    """The machine's 1, 5 and 15 minute load averages."""
    return [round(v, 2) for v in os.getloadavg()]


class AllocationTrace:
    """Where a phase's memory is held (``tracemalloc``; slows the run several-fold): whenever the traced
    total is the segment's largest so far by ``step``, a snapshot's top allocation sites are kept; a phase
    keeps its largest segment's. Segments are entered and relabelled as a PhaseMeter's are."""

    def __init__(self, top: int = 12, step: float = 1.05, frames: int = 6):
        import tracemalloc

        self.tracemalloc, self.top, self.step = tracemalloc, top, step
        self.phase = ""
        self.segment: dict | None = None
        self.found: dict[str, dict] = {}
        tracemalloc.start(frames)

    def enter(self, phase: str) -> None:
        """End the current segment (kept if it is its phase's largest) and start one of ``phase``."""
        self.look()
        seg = self.segment
        if seg is not None and (self.phase not in self.found or seg["current_mb"] > self.found[self.phase]["current_mb"]):
            self.found[self.phase] = seg
        elif seg is not None:
            self.found[self.phase]["peak_mb"] = max(self.found[self.phase]["peak_mb"], seg["peak_mb"])
        self.phase, self.segment = phase, None
        self.tracemalloc.reset_peak()

    def relabel_last(self, phase: str) -> None:
        self.phase = phase

    def look(self, *_args) -> None:
        """Snapshot now if this is the segment's largest traced total so far (call it often: events, rounds)."""
        if not self.phase:
            return
        current, peak = self.tracemalloc.get_traced_memory()
        seg, best = self.segment, self.found.get(self.phase)
        if seg is not None:
            seg["peak_mb"] = max(seg["peak_mb"], round(peak / MIB, 1))
        known = max([s["current_mb"] for s in (seg, best) if s is not None], default=None)
        if known is not None and current <= known * MIB * self.step:  # snapshots are slow: only a new high
            return
        stats = self.tracemalloc.take_snapshot().statistics("traceback")[: self.top]
        self.segment = {
            "current_mb": round(current / MIB, 1), "peak_mb": max(round(peak / MIB, 1), seg["peak_mb"] if seg else 0),
            "sites": [{"mb": round(s.size / MIB, 1), "count": s.count, "where": [_frame(f) for f in s.traceback][-4:]}
                      for s in stats]}


def _frame(frame) -> str:
    """"fedcredit/data/io.py:42" rather than the full path."""
    name = frame.filename
    for cut in ("site-packages/", "/work/"):
        name = name.split(cut)[-1]
    return f"{name}:{frame.lineno}"
