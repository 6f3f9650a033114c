"""A job's live progress wherever it runs: a rich display on a terminal, plain lines in a log, one
updating block in a notebook.

``job_display(console, settings)`` picks the form and yields the ``on_event`` callable the engines
call with the coordinator's events (validated, aligned, iteration, finished) and the delivery
layer's (node_lost, node_back). A log gets a line at least every ``heartbeat`` seconds even when no
event arrives (a long PSI, a slow SecureBoost tree), so a silent log means a stuck job, not a busy
one; no line carries terminal control codes. A notebook gets one block updated in place (an
IPython display handle; rich's live display there needs ipywidgets and warns without them).
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from contextlib import contextmanager
from typing import Callable, Iterator, TextIO

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from fedcredit.protocols.job import ModelSettings
from fedcredit.protocols.progress import step_line

HEARTBEAT_S = 10.0  # a log line at least this often
NOTEBOOK_REFRESH_S = 1.0  # the notebook block's elapsed time is redrawn this often

# What the job does after each event, until the next one arrives.
PHASE_AFTER = {"start": "starting the nodes, which validate their data", "validated": "aligning enterprises (PSI)",
               "aligned": "preparing the model (split, bins, keys)",
               "finished": "checking the audit logs and writing the outputs"}


def _duration(seconds: float) -> str:
    """"42 s", "3 min 05 s"."""
    seconds = int(round(seconds))
    return f"{seconds} s" if seconds < 60 else f"{seconds // 60} min {seconds % 60:02d} s"


def _milestone(kind: str, info: dict) -> tuple[str, str] | None:
    """(ok|warn, text) of an event worth keeping on screen, or None."""
    if kind == "validated":
        return "ok", "node data valid (" + ", ".join(f"{r} {v['rows']:,} rows" for r, v in info.items()) + ")"
    if kind == "aligned":
        return "ok", f"{info['intersection']:,} enterprises known to every node (PSI)"
    if kind == "node_lost":
        return "warn", (f"node {info['node']} lost in round {info['round']} ({info['reason']}); "
                        f"waiting up to {info['return_timeout']:.0f} s for it to return")
    if kind == "node_back":
        return "ok", f"node {info['node']} is back after {info['waited_s']} s; round {info['round']} delivered again"
    if kind == "finished":
        return "ok", "job finished on every node"
    return None


class JobProgress:
    """What the job is doing, from its events: a status line (phase, or model step with loss, validation
    AUC and an ETA from the rate of steps) and the milestones worth keeping."""

    def __init__(self, steps: int, clock: Callable[[], float] = time.monotonic):
        self.steps, self.clock = steps, clock
        self.started = self.updated = clock()
        self.status = PHASE_AFTER["start"]
        self.iteration: int | None = None
        self.last_kind = "start"
        self.model: str | None = None  # the model the last step was of
        self._first: tuple[int, float] = (0, 0.0)  # (step, time) of the current model's first progress event
        self._before_loss = self.status

    def update(self, kind: str, info: dict) -> tuple[str, str] | None:
        """Take one event; returns the milestone to keep on screen, if any."""
        now = self.updated = self.clock()
        self.last_kind = kind
        if kind == "iteration":
            self.iteration = info["iteration"]
            self.status = step_line(info, self.steps) + self._eta(info, now)
        elif kind in PHASE_AFTER:
            self.status = PHASE_AFTER[kind]
        elif kind == "node_lost":
            self._before_loss, self.status = self.status, f"waiting for node {info['node']} to return"
        elif kind == "node_back":
            self.status = self._before_loss
        return _milestone(kind, info)

    def _eta(self, info: dict, now: float) -> str:
        step = info["iteration"]
        if info.get("model") != self.model:  # a new model (the bank-only baseline follows the joint one)
            self.model, self._first = info.get("model"), (step, now)
            return ""
        first, at = self._first
        if step <= first or step >= self.steps:
            return ""
        return f", ETA {_duration((now - at) / (step - first) * (self.steps - step))}"

    def elapsed(self) -> str:
        """"[02:41]": time since the job started."""
        seconds = int(self.clock() - self.started)
        return f"[{seconds // 60:02d}:{seconds % 60:02d}]"

    def quiet(self) -> float:
        """Seconds since the last event."""
        return self.clock() - self.updated


class _Heartbeat(ABC):
    """Shows a JobProgress on every event, and again whenever nothing was shown for ``interval`` s."""

    def __init__(self, progress: JobProgress, interval: float):
        self.progress, self.interval = progress, interval
        self.lock = threading.RLock()
        self.shown = progress.clock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="fedcredit-progress", daemon=True)

    def __call__(self, kind: str, info: dict) -> None:
        with self.lock:
            before = self.progress.status
            milestone = self.progress.update(kind, info)
            self.show(milestone, self.progress.status != before)
            self.shown = self.progress.clock()

    def start(self) -> None:
        with self.lock:
            self.show(None, True)
        self.thread.start()

    def _beat(self) -> None:
        while True:
            with self.lock:
                wait = self.shown + self.interval - self.progress.clock()
                if wait <= 0:
                    try:
                        self.beat()
                    except (OSError, ValueError):  # the output is gone (a closed pipe or file): nothing to show on
                        return
                    self.shown = self.progress.clock()
                    continue
            if self.stopped.wait(wait):
                return

    def close(self, failed: bool) -> None:
        self.stopped.set()
        self.thread.join()
        with self.lock:
            self.end(failed)

    @abstractmethod
    def show(self, milestone: tuple[str, str] | None, status_changed: bool) -> None:
        """After an event: the milestone it brought (if any); whether the status line changed."""

    @abstractmethod
    def beat(self) -> None:
        """Nothing was shown for ``interval`` seconds: show the status again."""

    @abstractmethod
    def end(self, failed: bool) -> None:
        """The job is over (or stopped by an error)."""


class LineDisplay(_Heartbeat):
    """Plain timestamped lines for logs and pipes: every milestone, every new status, and the status
    again (with the time since the last event) whenever the log was quiet for ``interval`` s."""

    def __init__(self, progress: JobProgress, file: TextIO, interval: float = HEARTBEAT_S):
        super().__init__(progress, interval)
        self.file = file

    def _line(self, text: str) -> None:
        print(f"{self.progress.elapsed()} {text}", file=self.file, flush=True)

    def show(self, milestone, status_changed) -> None:
        if milestone is not None:
            self._line(("warning: " if milestone[0] == "warn" else "") + milestone[1])
        if status_changed:
            self._line(self.progress.status)

    def beat(self) -> None:
        self._line(f"{self.progress.status}; still running, {_duration(self.progress.quiet())} since the last update")

    def end(self, failed: bool) -> None:
        if failed:
            self._line(f"stopped while {self.progress.status}")


class NotebookDisplay(_Heartbeat):
    """One plain-text block in the notebook's output, updated in place: the milestones so far, one line
    per model with its latest step, and the current phase with the elapsed time."""

    def __init__(self, progress: JobProgress, interval: float = NOTEBOOK_REFRESH_S):
        from IPython.display import display

        super().__init__(progress, interval)
        self.rows: dict[str, str] = {}  # in order of appearance; a model's row is replaced by its next step
        self.handle = display({"text/plain": self._text(self.progress.status)}, raw=True, display_id=True)

    def _text(self, last: str | None) -> str:
        rows = list(self.rows.values()) + ([f"{self.progress.elapsed()} {last}"] if last else [])
        return "\n".join(rows)

    def _draw(self, last: str | None) -> None:
        self.handle.update({"text/plain": self._text(last)}, raw=True)

    def _current(self) -> str | None:
        """The phase line under the rows, unless the status is a model's step (already a row)."""
        return None if self.progress.last_kind == "iteration" else self.progress.status

    def show(self, milestone, status_changed) -> None:
        p = self.progress
        if p.last_kind == "iteration":
            self.rows[f"model {p.model}"] = f"{p.elapsed()} {p.status}"
        if milestone is not None:
            self.rows[f"event {len(self.rows)}"] = f"{p.elapsed()} {'! ' if milestone[0] == 'warn' else '✓ '}{milestone[1]}"
        self._draw(self._current())

    def beat(self) -> None:
        self._draw(self._current())

    def end(self, failed: bool) -> None:
        self._draw(f"stopped while {self.progress.status}" if failed else "done")


class RichDisplay:
    """A terminal's live display: milestones printed above a transient spinner, status line and bar."""

    def __init__(self, bar: Progress, progress: JobProgress):
        self.bar, self.progress = bar, progress
        self.task = bar.add_task(progress.status, total=None)

    def __call__(self, kind: str, info: dict) -> None:
        milestone = self.progress.update(kind, info)
        if milestone is not None:
            mark = "[yellow]![/yellow]" if milestone[0] == "warn" else "[green]✓[/green]"
            self.bar.console.print(f"{mark} {escape(milestone[1])}")
        step = self.progress.iteration
        self.bar.update(self.task, description=escape(self.progress.status),
                        **({"total": self.progress.steps, "completed": min(step, self.progress.steps)}
                           if kind == "iteration" and step is not None else {}))


def in_notebook() -> bool:
    """True inside a Jupyter kernel (IPython's ZMQ shell); IPython is optional."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


@contextmanager
def job_display(console: Console | None = None, settings: ModelSettings | None = None, *,
                heartbeat: float = HEARTBEAT_S, notebook: bool | None = None) -> Iterator[Callable[[str, dict], None]]:
    """The progress display for one job, as an ``on_event`` callable: in a notebook one updating block,
    on a terminal rich's live display, anywhere else (a log, a pipe, CI) plain lines at least every
    ``heartbeat`` seconds. ``notebook`` overrides the detection of a Jupyter kernel."""
    console = console or Console()
    progress = JobProgress((settings or ModelSettings()).progress_steps)
    if notebook is None:
        notebook = in_notebook()
    if notebook:
        display: _Heartbeat = NotebookDisplay(progress)
    elif console.is_terminal and not console.is_dumb_terminal:
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                      console=console, transient=True) as bar:
            yield RichDisplay(bar, progress)
        return
    else:
        display = LineDisplay(progress, console.file, heartbeat)
    display.start()
    try:
        yield display
    except BaseException:
        display.close(failed=True)
        raise
    display.close(failed=False)
