"""A coordinator killed mid-job and resumed from its journal ends with the uninterrupted run's model, bit for bit.

The real coordinator loop (``server_app.run_job``) and the real node checkpoints
(``NodeRuns``) in one process, over a stand-in for Flower's Grid. A kill is played as a
SIGKILL shows it: the loop stops at once (an exception no handler catches), nothing is
aborted, the nodes keep their checkpoints. A second grid — a new Flower run — then
resumes the job from the journal. The same over the deployment engine, with the
SuperLink's processes killed, is in tests/test_deployment.py.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ConfigRecord
from flwr.supercore.task_identity import TaskIdentity

from fedcredit.audit.verify import read_log, verify_audit
from fedcredit.common.errors import FedCreditError
from fedcredit.crypto import Identity
from fedcredit.flower.codec import from_record, to_record
from fedcredit.flower.delivery import delivery_run, delivery_seq
from fedcredit.flower.journal import CoordinatorJournal
from fedcredit.flower.server_app import run_job
from fedcredit.protocols.job import ModelSettings, NodeConfig
from fedcredit.scoring.outputs import read_model_part
from test_fault_tolerance import CrashingGrid, _reply, data, pool  # noqa: F401 — data, pool: fixtures

ROLES = ("bank", "tax", "utilities")
SETTINGS = ModelSettings(key_bits=1024, max_iter=4, bank_only_baseline=False)


class Killed(BaseException):
    """The coordinator's process died (SIGKILL): no handler runs."""


class NodesGrid(CrashingGrid):
    """Every node in this process; the Flower run is ``flower_run``; ``kill_at`` = (round, nodes served first)."""

    def __init__(self, nodes: dict[str, NodeConfig], work: Path, pool, flower_run: str, kill_at=None):
        super().__init__(nodes, work, pool)
        self.flower_run, self.kill_at, self.numbered = flower_run, kill_at, 0
        self.served: list[tuple[str, str, int]] = []  # (role, node state's run, delivery number)

    def push_messages(self, msgs):
        msgs = list(msgs)
        if msgs and delivery_seq(msgs[0].content) is not None:
            self.numbered += 1
        if self.kill_at is not None and self.numbered == self.kill_at[0]:
            super().push_messages(msgs[:self.kill_at[1]])
            raise Killed()
        return super().push_messages(msgs)

    def _serve(self, mid, nid, kind, content):
        role = next(r for r, i in self.ids.items() if i == nid)
        if kind == "query.role":
            return _reply(mid, nid, {"node": {"role": role}})
        run = delivery_run(content) or self.flower_run
        if kind == "query.abort":
            head = self.runs[role].abort(run, from_record(content)[0])
            return _reply(mid, nid, {"audit": ConfigRecord({"final_head": json.dumps(head)})} if head else {})
        seq = delivery_seq(content)
        self.served.append((role, run, seq))
        outcome = self.runs[role].deliver(run, seq, from_record(content))
        record = to_record(outcome.replies)
        if outcome.head is not None:
            record["audit"] = ConfigRecord({"final_head": json.dumps(outcome.head)})
        return _reply(mid, nid, record)


@pytest.fixture(scope="module")
def signer():
    return Identity.generate("coordinator")


@pytest.fixture(scope="module", autouse=True)
def _task_identity():
    # Flower messages need the sending task's identity; the real ServerApp process has one
    with pytest.MonkeyPatch.context() as m:
        m.setattr(TaskIdentity, "_run_id", 1)
        m.setattr(TaskIdentity, "_node_id", 0)
        m.setattr(TaskIdentity, "_task_id", 1)
        yield


def _job(tmp: Path, data, pool, signer, flower_run: str, *, kill_at=None, resume=False):
    nodes = {r: NodeConfig(r, str(data[r]), out_dir=str(tmp / "out" / r)) for r in ROLES}
    grid = NodesGrid(nodes, tmp / "work", pool, flower_run, kill_at)
    journal = CoordinatorJournal(tmp / "out" / "journal", flower_run, resume=resume)
    result: dict = {}
    try:
        run_job(grid, SETTINGS, list(ROLES), result, run_id="job-1", audit=(tmp / "out" / "audit", signer),
                timeout=30, journal=journal)
    except Killed:
        result["killed"] = True
    return result, grid, journal


def _weights(tmp: Path) -> dict[str, np.ndarray]:
    return {r: read_model_part(tmp / "out" / r / "model" / r, r)[1] for r in ROLES}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data, pool, signer):
    tmp = tmp_path_factory.mktemp("clean")
    result, grid, journal = _job(tmp, data, pool, signer, "1")
    assert "error" not in result, result.get("error")
    journal.finish()
    return tmp, result


def _resumed_equals(tmp: Path, uninterrupted, data, pool, signer) -> dict:
    result, grid, journal = _job(tmp, data, pool, signer, "2", resume=True)
    assert "error" not in result, result.get("error")
    clean_tmp, clean = uninterrupted
    assert result["metrics"] == clean["metrics"] and result["rounds"] == clean["rounds"]
    for role, w in _weights(clean_tmp).items():
        assert np.array_equal(_weights(tmp)[role], w), role
    assert {run for _, run, _ in grid.served} == {"1"}  # the nodes' state is the first run's
    out = tmp / "out"
    for role in ROLES:
        (out / "audit" / f"{role}.jsonl").write_bytes((out / role / "audit" / f"{role}.jsonl").read_bytes())
    verdict = verify_audit(out, signer.public, min_key_bits=1024)
    assert verdict.ok and set(verdict.parties) == {*ROLES, "coordinator"}
    journal.finish()
    return result


def test_killed_mid_round_resumes_to_the_same_model(tmp_path, data, pool, signer, uninterrupted):
    """Killed while delivering round 10: the bank had handled its bundle, the hosts had not."""
    killed, grid, _ = _job(tmp_path, data, pool, signer, "1", kill_at=(10, 1))
    assert killed == {"killed": True}
    folder = tmp_path / "out" / "journal"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    keys = list(folder.glob("paillier-*.json"))
    assert len(keys) == 1 and stat.S_IMODE(keys[0].stat().st_mode) == 0o600
    # the coordinator's log holds the sent records of round 10, which the resumed coordinator does not repeat
    log = tmp_path / "out" / "audit" / "coordinator.jsonl"
    before = log.read_bytes()
    _resumed_equals(tmp_path, uninterrupted, data, pool, signer)
    assert log.read_bytes().startswith(before) and read_log(log).records[-1]["type"] == "close"
    assert not folder.exists()  # the journal and the coordinator's private key are gone


def test_killed_after_journaling_a_rounds_replies_resumes_without_asking_again(tmp_path, data, pool, signer,
                                                                               uninterrupted, monkeypatch):
    """Killed once round 12's replies were journaled, before round 13 went out (part of the log cut)."""
    original = CoordinatorJournal.write_pending

    def die_at_13(self, round_no, *args):
        if round_no == 13:
            self.folder.joinpath("..", "audit", "coordinator.jsonl").resolve().open("ab").write(b'{"torn')
            raise Killed()
        return original(self, round_no, *args)

    with monkeypatch.context() as m:
        m.setattr(CoordinatorJournal, "write_pending", die_at_13)
        killed, grid, _ = _job(tmp_path, data, pool, signer, "1")
    assert killed == {"killed": True}
    _resumed_equals(tmp_path, uninterrupted, data, pool, signer)


def test_a_resume_is_refused_without_a_journal_or_with_other_settings(tmp_path, data, pool, signer):
    with pytest.raises(FedCreditError, match="nothing to resume"):
        CoordinatorJournal(tmp_path / "journal", "2", resume=True)
    killed, _, _ = _job(tmp_path, data, pool, signer, "1", kill_at=(3, 0))
    with pytest.raises(FedCreditError, match="holds an unfinished job"):
        CoordinatorJournal(tmp_path / "out" / "journal", "2")
    journal = CoordinatorJournal(tmp_path / "out" / "journal", "2", resume=True)
    with pytest.raises(FedCreditError, match="its settings differ"):
        journal.check(ModelSettings(key_bits=1024, max_iter=5, bank_only_baseline=False), list(ROLES), "train")


def test_nodes_close_their_logs_as_aborted_when_the_coordinator_never_returns(tmp_path, data, pool, signer):
    import os

    from fedcredit.node.service import make_app

    killed, grid, _ = _job(tmp_path, data, pool, signer, "1", kill_at=(7, 0))
    assert killed == {"killed": True}
    with pytest.raises(FedCreditError, match="coordinator-timeout must be a number of seconds > 0"):
        make_app({"role": "tax", "data": str(data["tax"]), "work-dir": str(tmp_path / "work" / "tax"),
                  "coordinator-timeout": "soon"})
    for role in ROLES:
        app = make_app({"role": role, "data": str(data[role]), "work-dir": str(tmp_path / "work" / role),
                        "coordinator-timeout": "600"})
        checkpoint = tmp_path / "work" / role / "run-1" / "checkpoint"
        assert app.state.abandon_idle() == []  # silent for less than 600 s: the node keeps waiting
        os.utime(checkpoint, (checkpoint.stat().st_atime, checkpoint.stat().st_mtime - 601))
        assert app.state.abandon_idle() == ["1"]
        assert not (tmp_path / "work" / role / "run-1").exists()
        last = read_log(tmp_path / "out" / role / "audit" / f"{role}.jsonl").records[-1]  # the chain verifies
        assert last["type"] == "aborted" and last["reason"] == "the coordinator did not return within 600 s"
        assert last["step"] == max(seq for r, _, seq in grid.served if r == role)  # its last completed delivery


def test_a_refused_task_token_ends_the_task_not_the_node_service():
    """A node answering when its coordinator died holds a task whose token the SuperNode then refuses: Flower's
    retry invoker would interrupt the whole process (the node service); the warm task's gives up instead."""
    import httpx

    from fedcredit.flower.warm_task import _retry_invoker

    def refused(status: int):
        request = httpx.Request("POST", "http://127.0.0.1:1/v1/runtime/pull-task-input")
        return httpx.HTTPStatusError("refused", request=request, response=httpx.Response(status, request=request))

    invoker = _retry_invoker()
    assert invoker.should_giveup(refused(401)) is True
    assert invoker.should_giveup(refused(503)) is False  # a SuperNode being restarted is still waited for


def test_the_coordinators_list_of_unfinished_jobs_and_train_resume_refusals(tmp_path):
    from fedcredit.flower.journal import unfinished
    from fedcredit.jobs import submission

    index = tmp_path / "state" / "unfinished"
    journal = CoordinatorJournal(tmp_path / "out" / "journal", 17, index=index,
                                 run_config={"out": str(tmp_path / "out"), "max-iter": 4, "resume": False})
    journal.begin("job-9", SETTINGS, list(ROLES), "train")
    [entry] = unfinished(index)
    assert entry == {"out": str((tmp_path / "out").resolve()), "run_id": "job-9",
                     "run_config": {"out": str(tmp_path / "out"), "max-iter": 4}}
    assert CoordinatorJournal(tmp_path / "out" / "journal", 18, resume=True).origin == "17"
    journal.finish()
    assert unfinished(index) == [] and not (tmp_path / "out" / "journal").exists()

    with pytest.raises(FedCreditError, match="not the output folder of a submitted job"):
        submission.resume(tmp_path / "nowhere")
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / submission.RECORD).write_text(json.dumps(
        {"superlink": "127.0.0.1:1", "certs": str(tmp_path), "run_config": {}, "coordinator_out": "x",
         "status": {"ok": True}}))
    with pytest.raises(FedCreditError, match="that job finished"):
        submission.resume(tmp_path / "done")
