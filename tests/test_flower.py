"""The Flower adapters: codec, a simulated job on Flower's engine, node errors surfacing with the role."""

import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from flwr.app import RecordDict

from fedcredit.data import synth
from fedcredit.data.io import write_table
from fedcredit.common.errors import FedCreditError
from fedcredit.flower.codec import from_record, to_record
from fedcredit.flower.simulation import run_simulated_job
from fedcredit.common.errors import ProtocolError
from fedcredit.protocols.job import ModelSettings, NodeConfig
from fedcredit.common.wire import Message

FAST = ModelSettings(key_bits=1024, max_iter=10, bank_only_baseline=False)
TREES = ModelSettings(key_bits=1024, model="secureboost", trees=3, max_depth=3, bank_only_baseline=False)


def test_codec_round_trip_and_rejects_garbage():
    msgs = [Message("psi.blind", "bank", "tax", "r", 1, {"n": 1}, b"\x00" * 32, sealed=False),
            Message("job.info", "tax", "coordinator", "r", 2, {"rows": 3})]
    assert from_record(to_record(msgs)) == msgs
    assert from_record(to_record([])) == []
    with pytest.raises(ProtocolError):
        from_record(RecordDict())
    bad = to_record(msgs)
    bad["index"]["sizes"] = [5, 5]
    with pytest.raises(ProtocolError, match="do not add up"):
        from_record(bad)


def _processes() -> list[tuple[int, int, str]]:
    out = subprocess.run(["ps", "-eo", "pid,ppid,args"], capture_output=True, text=True).stdout
    rows = [line.split(None, 2) for line in out.splitlines()[1:]]
    return [(int(r[0]), int(r[1]), r[2]) for r in rows if len(r) == 3]


MARK = "FEDCREDIT_TEST_PROCESS_MARK"


@dataclass
class Before:
    """The processes that existed before the test (another run's are not ours to judge), and the mark in the
    environment of every process the test starts (inherited by Ray's GCS, raylet, workers and their forkservers)."""
    pids: set[int]
    mark: str


@pytest.fixture
def before(monkeypatch) -> Before:
    mark = uuid.uuid4().hex
    monkeypatch.setenv(MARK, mark)
    return Before({pid for pid, _, _ in _processes()}, mark)


def _carries(pid: int, mark: str) -> bool:
    """Whether ``pid`` was started with ``MARK=mark`` in its environment (it may have been reparented since)."""
    try:
        return f"{MARK}={mark}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:  # gone already, or not ours to read
        return False


def _flower_processes(before: Before) -> str:
    """Ray, Flower and worker-pool forkserver processes the test left: new ones that are its descendants or carry
    its mark (a leak reparented to init; another test's processes, e.g. on the other xdist worker, carry none)."""
    rows = _processes()
    parent = {pid: ppid for pid, ppid, _ in rows}

    def ours(pid: int) -> bool:
        if _carries(pid, before.mark):
            return True
        while pid in parent and pid > 1:
            if pid == os.getpid():
                return True
            pid = parent[pid]
        return False

    def flower(pid: int, args: str) -> bool:
        if "forkserver" in args:  # the test process's own pool lives until it exits; a leaked one is an orphan
            return parent.get(pid) == 1
        return "raylet" in args or "gcs_server" in args or "flwr-" in args

    return "\n".join(f"{pid} {args}" for pid, _, args in rows
                     if pid not in before.pids and flower(pid, args) and ours(pid))


@pytest.mark.parametrize("settings", [FAST, TREES], ids=["scorecard_lr", "secureboost"])
def test_simulated_job_on_flower(tmp_path, before, settings):
    paths = synth.write_nodes(synth.generate(2500, 3), tmp_path / "data")
    nodes = [NodeConfig(r, str(paths[r]), out_dir=str(tmp_path / "out")) for r in ("bank", "tax", "utilities")]
    events = []
    from fedcredit.audit.verify import verify_audit
    from fedcredit.crypto import Identity

    coordinator = Identity.generate("coordinator")
    result = run_simulated_job(nodes, settings, tmp_path / "work", on_event=lambda k, i: events.append(k),
                               audit=(tmp_path / "out" / "audit", coordinator))
    verdict = verify_audit(tmp_path / "out", coordinator.public, min_key_bits=1024)
    assert verdict.ok and set(verdict.parties) == {"bank", "tax", "utilities", "coordinator"}
    assert result["metrics"]["auc"] > 0.7 and result["rounds"] > 20
    assert (tmp_path / "out" / "scores.parquet").exists()
    assert {"validated", "aligned", "iteration", "finished"} <= set(events)
    # every node kept its state in its own work directory
    assert all(list((tmp_path / "work" / r).glob("run-*/checkpoint")) for r in ("bank", "tax", "utilities"))
    assert _flower_processes(before) == ""
    if settings.model == "secureboost":  # trees do not depend on the transport: the in-process engine agrees
        from fedcredit.jobs.in_process import run_job

        local = run_job([NodeConfig(r, str(paths[r])) for r in ("bank", "tax", "utilities")], settings)
        assert local["metrics"] == result["metrics"] and local["rounds"] == result["rounds"]


def test_node_error_is_shown_at_the_coordinator_with_the_role(tmp_path, before):
    paths = synth.write_nodes(synth.generate(300, 3), tmp_path / "data")
    write_table(synth.generate(300, 3)["utilities"].drop_columns(["uscc"]), paths["utilities"])
    nodes = [NodeConfig(r, str(paths[r])) for r in ("bank", "tax", "utilities")]
    with pytest.raises(FedCreditError, match=r"(?s)node utilities failed: \[utilities\].*uscc"):
        run_simulated_job(nodes, FAST, tmp_path / "work")
    assert _flower_processes(before) == ""
