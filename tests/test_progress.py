"""A job's progress wherever it runs: plain lines at least every heartbeat without a terminal, rich's
display on one, one block updated in place in a notebook; the notebook API leaves no temporary folder."""

from __future__ import annotations

import gc
import io
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from rich.console import Console

from fedcredit.api import Federation
from fedcredit.jobs.display import JobProgress, LineDisplay, RichDisplay, job_display
from fedcredit.protocols.job import ModelSettings

REPO = Path(__file__).resolve().parents[1]
SMALL = "rows=800, seed=3, key_bits=1024, max_iter=4, bank_only_baseline=False"


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def step(i: int, model: str = "r/main") -> dict:
    return {"model": model, "iteration": i, "loss": 0.5 / (i + 1), "val_auc": 0.7 + i / 100}


def test_status_line_and_eta_from_the_rate_of_steps():
    clock = Clock()
    p = JobProgress(steps=11, clock=clock)
    assert p.status == "starting the nodes, which validate their data"
    assert p.update("validated", {"bank": {"rows": 800}, "tax": {"rows": 700}}) == \
        ("ok", "node data valid (bank 800 rows, tax 700 rows)")
    assert p.status == "aligning enterprises (PSI)"
    p.update("aligned", {"intersection": 600, "hosts_common": 600})
    p.update("iteration", step(1))
    assert "ETA" not in p.status  # one step gives no rate
    clock.now += 4
    p.update("iteration", step(3))  # 2 s a step, 8 steps to go
    assert p.status == "federated model: iteration 3/11, loss 0.12500, validation AUC 0.7300, ETA 16 s"
    clock.now += 100
    p.update("iteration", step(1, "r/main-bank"))  # the baseline: a new rate
    assert p.status.startswith("bank-only baseline: iteration 1/11") and "ETA" not in p.status
    clock.now += 30
    p.update("iteration", step(2, "r/main-bank"))
    assert p.status.endswith("ETA 4 min 30 s")
    assert p.update("node_lost", {"node": "tax", "round": 9, "reason": "timeout", "return_timeout": 60.0})[0] == "warn"
    assert p.status == "waiting for node tax to return"
    p.update("node_back", {"node": "tax", "round": 9, "waited_s": 3})
    assert p.status.startswith("bank-only baseline: iteration 2/11")


class TimedLines(io.StringIO):
    """A log file that notes when each line arrived."""

    def __init__(self):
        super().__init__()
        self.lines: list[tuple[float, str]] = []

    def write(self, text: str) -> int:
        self.lines += [(time.monotonic(), line) for line in text.splitlines() if line]
        return super().write(text)


def test_log_gets_a_line_at_least_every_heartbeat_without_events():
    log = TimedLines()
    console = Console(file=log)  # not a terminal
    started = time.monotonic()
    with job_display(console, ModelSettings(max_iter=5), heartbeat=0.25) as display:
        assert isinstance(display, LineDisplay)
        time.sleep(1.0)  # a long validation: no event at all
        display("validated", {"bank": {"rows": 800}, "tax": {"rows": 700}})
        time.sleep(0.5)  # a long PSI
        display("aligned", {"intersection": 600, "hosts_common": 600})
        for i in range(4):
            time.sleep(0.05)
            display("iteration", step(i))
        time.sleep(0.5)  # a long step
    text = log.getvalue()
    assert "\x1b[" not in text
    times = [started] + [t for t, _ in log.lines]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert max(gaps) < 0.25 + 0.45, f"a gap of {max(gaps):.2f} s in:\n{text}"  # slack for a busy machine
    quiet = [line for _, line in log.lines if "still running" in line]
    assert len(quiet) >= 5, text
    assert any(line.startswith("starting the nodes") for line in map(_untimed, quiet))
    assert any(line.startswith("aligning enterprises (PSI)") for line in map(_untimed, quiet))
    assert "node data valid (bank 800 rows, tax 700 rows)" in text
    assert "600 enterprises known to every node (PSI)" in text
    assert "federated model: iteration 3/6, loss 0.12500, validation AUC 0.7300, ETA" in text
    assert all(line[:1] == "[" and line[6:8] == "] " for _, line in log.lines), text


def _untimed(line: str) -> str:
    return line[8:]


def test_log_names_the_phase_a_failed_job_stopped_in():
    log = io.StringIO()
    with pytest.raises(RuntimeError):
        with job_display(Console(file=log), ModelSettings(), heartbeat=5) as display:
            display("validated", {"bank": {"rows": 10}})
            raise RuntimeError("boom")
    assert log.getvalue().splitlines()[-1].endswith("stopped while aligning enterprises (PSI)")


def test_terminal_keeps_the_rich_display():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    with job_display(console, ModelSettings(max_iter=5)) as display:
        assert isinstance(display, RichDisplay)
        display("aligned", {"intersection": 600, "hosts_common": 600})
        display("iteration", step(2))
    assert "\x1b[" in out.getvalue()  # a terminal: colours and the live bar
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
    assert "✓ 600 enterprises known to every node (PSI)" in shown


def test_notebook_api_without_a_terminal_prints_plain_lines_and_leaves_no_temporary_folder(tmp_path):
    """The notebook API as a script with its output in a pipe (CI, a log): plain progress lines, no
    control codes; its temporary folder is the only one while it lives, and gone after close()."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    script = textwrap.dedent(f"""
        import os, tempfile
        tempfile.tempdir = {str(scratch)!r}
        from fedcredit.api import Federation
        fed = Federation.synthetic({SMALL}).fit(centralized=False)
        print("AUC", round(fed.evaluate()["test_auc"], 3), "limits", len(fed.limits()))
        print("LIVING", os.listdir(tempfile.tempdir) == [fed.out.name])
        fed.close()
        print("AFTER", os.listdir(tempfile.tempdir))
    """)
    run = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")})
    assert run.returncode == 0, run.stdout + run.stderr
    assert "\x1b[" not in run.stdout + run.stderr
    lines = run.stdout.splitlines()
    for wanted in ("starting the nodes, which validate their data", "node data valid (bank", "enterprises known to every node (PSI)",
                   "federated model: iteration 4/5, loss", "job finished on every node"):
        assert any(wanted in line for line in lines), f"no {wanted!r} in:\n{run.stdout}"
    assert "LIVING True" in lines and "AFTER []" in lines, run.stdout
    assert list(scratch.iterdir()) == []


def test_temporary_folder_goes_with_the_federation(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with Federation.synthetic(rows=200, seed=1) as fed:
        assert (fed.out / "data").is_dir()
        other = fed.with_engine("simulation")
    assert list(tmp_path.iterdir()) == [] and not other.out.exists()
    fed = Federation.synthetic(rows=200, seed=1)
    other = fed.with_engine("simulation")
    del fed
    gc.collect()
    assert other.out.exists()  # still in use by the federation on the other engine
    del other
    gc.collect()
    assert list(tmp_path.iterdir()) == []
    kept = Federation.synthetic(rows=200, seed=1, out=tmp_path / "mine")
    kept.close()
    assert (tmp_path / "mine" / "data").is_dir()  # the user's folder stays


def test_notebook_shows_one_plain_block_without_widget_warnings(tmp_path):
    """Executes a notebook cell that fits a federation in a real Jupyter kernel (about 12 s)."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(f"from fedcredit.api import Federation\n"
                                          f"fed = Federation.synthetic({SMALL})\n"
                                          f"fed.fit(centralized=False).evaluate()['test_auc']")]
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    outputs = nb.cells[0].outputs
    shown = [o for o in outputs if o["output_type"] in ("display_data", "stream")]
    everything = repr(outputs)
    assert "ipywidgets" not in everything and "\\x1b[" not in everything and "\x1b[" not in everything
    assert len(shown) == 1 and shown[0]["output_type"] == "display_data", everything
    block = shown[0]["data"]["text/plain"].splitlines()
    assert "✓ node data valid (bank" in block[0] and "enterprises known to every node (PSI)" in block[1]
    assert "federated model: iteration 4/5" in block[2] and block[-1].endswith("done"), block
