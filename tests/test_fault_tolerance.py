"""Nodes that crash mid-job: the coordinator names them, waits, redelivers, and the job ends with the same model.

A stand-in for Flower's Grid runs every node in this process through the real
checkpointing (``fedcredit.node.runs.NodeRuns``: agents cached in memory, checkpointed per delivery) and the real coordinator loop
(``server_app.run_job`` with ``Deliveries``). A crash is played as Flower shows it: the
node's reply never comes, the SuperLink answers ``NODE_UNAVAILABLE`` and the node is
offline for a while. Two kinds: the node died before its checkpoint was saved (its
audit log already had the new records), or after (only the reply was lost). The real
deployment engine with a killed SuperNode is in tests/test_deployment.py.
"""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from flwr.app import ConfigRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedcredit.audit.verify import verify_audit
from fedcredit.crypto import Identity, WorkerPool
from fedcredit.data import synth
from fedcredit.common.errors import FedCreditError
from fedcredit.flower.codec import from_record, to_record
from fedcredit.flower.delivery import Deliveries, delivery_seq
from fedcredit.flower.server_app import run_job
from fedcredit.node.runs import NodeRuns
from fedcredit.protocols.job import ModelSettings, NodeAgent, NodeConfig
from fedcredit.scoring.outputs import read_model_part, read_tree_part

ROLES = ("bank", "tax", "utilities")
SETTINGS = ModelSettings(key_bits=1024, max_iter=4, bank_only_baseline=False)
TREES = ModelSettings(key_bits=1024, model="secureboost", trees=2, max_depth=3, bank_only_baseline=False)
NODE_UNAVAILABLE = 5


def _reply(mid: str, nid: int, content=None, code: int | None = None, reason: str = ""):
    error = SimpleNamespace(code=code, reason=reason) if code is not None else None
    return SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=mid, src_node_id=nid), content=content,
                           error=error, has_error=lambda: error is not None)


class CrashingGrid:
    """Nodes in this process; ``crashes`` maps (role, delivery) to "before-save", "after-save" or "gone"."""

    def __init__(self, nodes: dict[str, NodeConfig], work: Path, pool, crashes: dict | None = None,
                 offline_polls: int = 3):
        self.ids = {role: 101 + i for i, role in enumerate(nodes)}
        self.nodes, self.work, self.pool = nodes, work, pool
        self.crashes = dict(crashes or {})
        self.offline: dict[int, float] = {}
        self.offline_polls = offline_polls
        self.replies: dict[str, object] = {}
        self.counter = itertools.count()
        self.runs = {role: NodeRuns(work / role, lambda run, n=node: NodeAgent(n), pool) for role, node in nodes.items()}
        self.crashed: list[tuple[str, int, str]] = []

    def role(self, nid: int) -> str:
        return next(r for r, i in self.ids.items() if i == nid)

    def get_node_ids(self):
        for nid in list(self.offline):
            self.offline[nid] -= 1
            if self.offline[nid] < 0:
                del self.offline[nid]
        return [nid for nid in self.ids.values() if nid not in self.offline]

    def push_messages(self, msgs):
        ids = []
        for msg in msgs:
            mid = f"m{next(self.counter)}"
            ids.append(mid)
            self.replies[mid] = self._serve(mid, msg.metadata.dst_node_id, msg.metadata.message_type, msg.content)
        return ids

    def pull_messages(self, ids):
        return [self.replies.pop(mid) for mid in list(ids) if mid in self.replies]

    def _serve(self, mid: str, nid: int, kind: str, content: RecordDict):
        role = self.role(nid)
        if nid in self.offline:
            return _reply(mid, nid, code=NODE_UNAVAILABLE, reason="offline")
        if kind == "query.role":
            return _reply(mid, nid, RecordDict({"node": ConfigRecord({"role": role})}))
        seq = delivery_seq(content)
        state = self.work / role / "run-1"
        crash = self.crashes.pop((role, seq), None)
        before = {p.relative_to(state): p.read_bytes() for p in state.rglob("*") if p.is_file()} if crash else None
        outcome = self.runs[role].deliver("1", seq, from_record(content))
        if crash is None:
            record = to_record(outcome.replies)
            if outcome.head is not None:
                record["audit"] = ConfigRecord({"final_head": json.dumps(outcome.head)})
            return _reply(mid, nid, record)
        self.crashed.append((role, seq, crash))
        self.runs[role].forget()  # the process died: what it held in memory is gone
        if crash == "before-save":  # the process died after its audit records, before its checkpoint
            shutil.rmtree(state)
            for name, blob in before.items():
                (state / name).parent.mkdir(parents=True, exist_ok=True)
                (state / name).write_bytes(blob)
        self.offline[nid] = float("inf") if crash == "gone" else self.offline_polls
        return _reply(mid, nid, code=NODE_UNAVAILABLE, reason="Node Unavailable")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return synth.write_nodes(synth.generate(1200, 5), tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def pool():
    with WorkerPool(1) as p:
        yield p


@pytest.fixture(autouse=True)
def _task_identity(monkeypatch):
    # Flower messages need the sending task's identity; the real ServerApp process has one
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


def _run(tmp: Path, data, pool, crashes=None, settings=SETTINGS, **kw):
    nodes = {r: NodeConfig(r, str(data[r]), out_dir=str(tmp / "out" / r)) for r in ROLES}
    grid = CrashingGrid(nodes, tmp / "work", pool, crashes)
    signer = Identity.generate("coordinator")
    events: list[tuple[str, dict]] = []
    result: dict = {}
    run_job(grid, settings, list(ROLES), result, run_id="ft-run", on_event=lambda k, i: events.append((k, i)),
            audit=(tmp / "out" / "audit", signer), timeout=30, **kw)
    return result, events, grid, signer


def _weights(tmp: Path) -> dict[str, np.ndarray]:
    return {r: read_model_part(tmp / "out" / r / "model" / r, r)[1] for r in ROLES}


def test_crashed_nodes_are_named_waited_for_and_the_model_is_unchanged(tmp_path, data, pool):
    clean, _, _, _ = _run(tmp_path / "clean", data, pool)
    assert "error" not in clean, clean.get("error")
    # tax dies mid-training before saving (its log had new records), utilities after saving, bank twice
    crashes = {("tax", 9): "before-save", ("utilities", 12): "after-save", ("bank", 6): "before-save",
               ("bank", 15): "after-save"}
    result, events, grid, signer = _run(tmp_path / "crash", data, pool, crashes)
    assert "error" not in result, result.get("error")
    assert sorted(c[:2] for c in grid.crashed) == sorted(crashes)
    lost = [i for k, i in events if k == "node_lost"]
    back = [i for k, i in events if k == "node_back"]
    assert sorted(i["node"].split()[0] for i in lost) == ["bank", "bank", "tax", "utilities"]
    assert all("Flower node" in i["node"] and i["reason"] for i in lost) and len(back) == len(lost)
    # the same model as the uninterrupted run, to the last bit, and the same test metrics
    assert result["rounds"] == clean["rounds"]
    assert result["metrics"] == clean["metrics"]
    for role, w in _weights(tmp_path / "clean").items():
        assert np.array_equal(_weights(tmp_path / "crash")[role], w), role
    # every log verifies: the crashed attempts' records were cut, the redelivered ones match the coordinator's
    out = tmp_path / "crash" / "out"
    for role in ROLES:
        (out / "audit" / f"{role}.jsonl").write_bytes((out / role / "audit" / f"{role}.jsonl").read_bytes())
    verdict = verify_audit(out, signer.public, min_key_bits=1024)
    assert verdict.ok and set(verdict.parties) == {*ROLES, "coordinator"}


def test_a_node_that_never_returns_fails_the_job_with_its_name(tmp_path, data, pool):
    result, events, _, _ = _run(tmp_path, data, pool, {("utilities", 7): "gone"}, return_timeout=1.5)
    assert "utilities (Flower node" in result["error"] and "did not come back within 2 s" in result["error"]
    assert [k for k, _ in events].count("node_lost") == 1
    # the nodes wrote no model part, the bank no scores or report: nothing half-published
    assert not list((tmp_path / "out").glob("*/model")) and not list((tmp_path / "out").glob("*/scores.parquet"))


def test_deliveries_out_of_order_or_without_checkpoint_are_refused(tmp_path, data, pool):
    node = NodeConfig("tax", str(data["tax"]))
    runs = NodeRuns(tmp_path, lambda run: NodeAgent(node), pool)
    with pytest.raises(FedCreditError, match="delivery 3 is out of order.*completed delivery 0.*checkpoint is missing"):
        runs.deliver("7", 3, [])
    (tmp_path / "run-7").mkdir()
    (tmp_path / "run-7" / "checkpoint").write_bytes(b"not a checkpoint")
    with pytest.raises(FedCreditError, match="unreadable"):
        runs.deliver("7", 1, [])
    with pytest.raises(FedCreditError, match="malformed delivery number"):
        delivery_seq(RecordDict({"delivery": ConfigRecord({"seq": -2})}))


def test_secureboost_nodes_crashing_mid_tree_grow_the_same_trees(tmp_path, data, pool):
    """The bank dies while it waits for hosts' histograms, a host after building them: same trees, same scores."""
    clean, _, grid, _ = _run(tmp_path / "clean", data, pool, settings=TREES)
    assert "error" not in clean, clean.get("error")
    crashes = {("bank", 9): "before-save", ("tax", 8): "after-save", ("utilities", 11): "before-save"}
    result, events, grid, _ = _run(tmp_path / "crash", data, pool, crashes, settings=TREES)
    assert "error" not in result, result.get("error")
    assert sorted(c[:2] for c in grid.crashed) == sorted(crashes)
    assert len([i for k, i in events if k == "node_lost"]) == 3
    assert result["metrics"] == clean["metrics"] and result["rounds"] == clean["rounds"]
    for role in ROLES:
        part = lambda run: read_tree_part(tmp_path / run / "out" / role / "model" / role, role)[1]  # noqa: E731
        assert part("crash") == part("clean"), role


def test_a_node_served_by_two_processes_cuts_the_records_of_the_others_failed_attempt(tmp_path, data, pool,
                                                                                        monkeypatch):
    """Ray may serve one simulated node from two worker processes. When a delivery fails in one, the
    other's cached agent is still current (no checkpoint was saved): it must cut the records the failed
    attempt appended to the node's audit log, both to handle the delivery again and to close the log
    as aborted."""
    from fedcredit.audit.verify import read_log
    from fedcredit.protocols.job import JobCoordinator

    nodes = {r: NodeConfig(r, str(data[r]), out_dir=str(tmp_path / "out" / r)) for r in ROLES}
    first = {r: NodeRuns(tmp_path / "work" / r, lambda run, n=n: NodeAgent(n), pool) for r, n in nodes.items()}
    other = NodeRuns(tmp_path / "work" / "tax", lambda run: NodeAgent(nodes["tax"]), pool)
    coordinator = JobCoordinator("two-workers", list(ROLES), SETTINGS, pool=pool)
    seqs = dict.fromkeys(ROLES, 0)
    log = tmp_path / "out" / "tax" / "audit" / "tax.jsonl"

    def fail_in_the_other_process(messages):
        size = log.stat().st_size
        with monkeypatch.context() as m:
            m.setattr(NodeAgent, "_dispatch", lambda self, msg: (_ for _ in ()).throw(RuntimeError("worker died")))
            with pytest.raises(RuntimeError, match="worker died"):
                other.deliver("1", seqs["tax"] + 1, messages)
        assert log.stat().st_size > size  # the failed attempt audited the message it received

    outgoing, failed = coordinator.start(), 0
    while outgoing and failed < 2:
        per_role: dict[str, list] = {}
        for msg in outgoing:
            per_role.setdefault(msg.receiver, []).append(msg)
        replies = []
        for role, messages in per_role.items():
            if role == "tax" and seqs["tax"] in (3, 5):
                fail_in_the_other_process(messages)
                failed += 1
                if failed == 2:
                    break
            seqs[role] += 1
            replies += first[role].deliver("1", seqs[role], messages).replies  # handled again, by the cached agent
        else:
            outgoing = coordinator.advance(replies)
    assert failed == 2
    abort = coordinator.abort_messages(RuntimeError("worker died"))
    assert first["tax"].abort("1", next(m for m in abort if m.receiver == "tax")) is not None
    records = read_log(log).records
    assert records[-1]["type"] == "aborted"
    received = [r for r in records if r["type"] == "message" and r.get("direction") == "received"]
    assert len(received) > 5 and len(received) == len({r["digest"] for r in received})  # none from a failed attempt


def test_an_abort_keeps_the_replies_that_came_when_one_node_stays_silent():
    """A failed job's abort waits a bounded time; the nodes that answered still hand over their final heads."""

    class HalfSilentGrid:
        def push_messages(self, msgs):
            return [f"m{m.metadata.dst_node_id}" for m in msgs]

        def pull_messages(self, ids):
            return [_reply("m101", 101, RecordDict())] if "m101" in ids else []

    got = Deliveries(HalfSilentGrid()).once({101: RecordDict(), 102: RecordDict()}, "query.abort", timeout=0.3)
    assert list(got) == [101]
