"""The SuperNode wrapper starts a refused node again only while it is rejoining a run (it holds a checkpoint)."""

from __future__ import annotations

import sys
import time

from fedcredit.deploy.supernode import supervise

# a stand-in SuperNode: refused (Flower's log line, exit 1) until its third start, then a clean exit; it leaves a
# child behind that keeps the output pipe open, as the SuperNode's SuperExec does
FAKE = """
import pathlib, subprocess, sys
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(6)"])  # like Flower's SuperExec: holds stdout
count = pathlib.Path(sys.argv[1])
n = int(count.read_text() or 0) + 1 if count.exists() else 1
count.write_text(str(n))
if n < 3:
    print("ERROR : Exit Code: 305\\nFailed to activate SuperNode.", flush=True)
    sys.exit(1)
print("connected", flush=True)
"""


def _argv(work, counter) -> list[str]:
    return [str(counter), "--node-config", f"role='tax' data='/x.parquet' work-dir='{work}'"]


def _run(tmp_path, monkeypatch, with_checkpoint: bool, window: str = "60") -> tuple[int, int]:
    work = tmp_path / "state"
    work.mkdir()
    if with_checkpoint:
        (work / "run-123").mkdir(parents=True, exist_ok=True)
        (work / "run-123" / "checkpoint").write_bytes(b"checkpoint")
    script = tmp_path / "fake_supernode.py"
    script.write_text(FAKE)
    monkeypatch.setenv("FEDCREDIT_REJOIN_S", window)
    counter = tmp_path / "starts"
    started = time.monotonic()
    code = supervise(_argv(work, counter), command=[sys.executable, str(script)], pause=0.01)
    assert time.monotonic() - started < 15, "waited for the pipe instead of the SuperNode"
    return code, int(counter.read_text())


def test_a_node_with_a_checkpoint_is_started_again_until_let_in(tmp_path, monkeypatch, capfd):
    assert _run(tmp_path, monkeypatch, with_checkpoint=True) == (0, 3)
    assert "tries again" in capfd.readouterr().err


def test_a_node_without_a_checkpoint_is_not_retried(tmp_path, monkeypatch):
    assert _run(tmp_path, monkeypatch, with_checkpoint=False) == (1, 1)


def test_retries_end_with_the_rejoin_window(tmp_path, monkeypatch):
    assert _run(tmp_path, monkeypatch, with_checkpoint=True, window="0") == (1, 1)
