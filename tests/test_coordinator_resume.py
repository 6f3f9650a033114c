"""The coordinator killed mid-training on the deployment engine, restarted, and the job resumed: the same model.

A SuperLink and three nodes, each in its own network namespace when run as root
(docs/network-lab.md; else on 127.0.0.1). Mid-training the SuperLink's whole process tree
(its ServerApp included) gets SIGKILL. ``start_coordinator`` on the same state folder and
``resume_unfinished`` (what ``fedcredit coordinator start`` does) resubmit the job: the
new ServerApp replays its journal, the nodes continue from their checkpoints, and the
final model parts equal, bit for bit, the same job's on the in-process engine (equal to
an uninterrupted deployment run by construction: tests/test_deployment.py checks that).
The fast, in-process version of the same, and a coordinator that never returns, are in
tests/test_coordinator_journal.py.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from fedcredit.common.errors import FedCreditError
from lab_federation import NEEDS_FLOWER, lab_federation
from test_deployment import JobThread, _crash

ROLES = ("bank", "tax", "utilities")
JOB = {"key-bits": 1024, "max-iter": 2, "bank-only-baseline": False, "seed": 7}
pytestmark = [pytest.mark.slow, NEEDS_FLOWER]


@pytest.fixture
def federation(tmp_path, monkeypatch):
    from fedcredit.data import synth

    # a message of the killed run never completes at a node; waiting Flower's 500 tries for it (about 4 min)
    # would hold up the resumed run's first task that long (fedcredit.deploy.supernode.object_wait)
    monkeypatch.setenv("FEDCREDIT_OBJECT_WAIT_S", "20")

    with lab_federation(tmp_path, ROLES) as fed:
        paths = synth.write_nodes(synth.generate(2000, 11), tmp_path / "data")
        for role in ROLES:
            fed.start_node(role, paths[role])
        yield {"tmp": tmp_path, "certs": fed.certs, "superlink": fed.superlink, "state": fed.state, "paths": paths,
               "procs": fed.procs, "start_coordinator": fed.start_coordinator}


def _tails(tmp, lines: int = 25) -> str:
    """The end of every log of the federation (shown when the resumed job fails)."""
    logs = [tmp / "state" / "superlink.log"] + [tmp / "work" / role / name for role in ROLES
                                                for name in ("supernode.log", "node-service.log")]
    return "".join(f"\n--- {log}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
                   for log in logs if log.exists())


def test_a_coordinator_killed_mid_training_resumes_to_the_same_model(federation):
    from fedcredit.audit.verify import verify_audit
    from fedcredit.flower.submit import resume_unfinished
    from fedcredit.jobs import runner
    from fedcredit.protocols.job import ModelSettings, NodeConfig
    from fedcredit.scoring.outputs import read_model_part

    tmp, state, out = federation["tmp"], federation["state"], federation["tmp"] / "out"
    job = JobThread(federation["superlink"], federation["certs"], out,
                    {**JOB, "registry": str(state / "registry.json"), "timeout": 300.0}, timeout=900)
    job.wait_for("federated model: iteration 0/", timeout=600)
    replies = out / "journal" / "replies.bin"
    assert replies.exists() and (state / "unfinished").is_dir() and len(list((state / "unfinished").glob("*.json"))) == 1
    # mid-training the coordinator's machine loses power: SuperLink, SuperExec and ServerApp die at once
    _crash(federation["procs"]["coordinator"])
    with pytest.raises(FedCreditError, match="the federated run failed"):  # its stream ended without a verdict
        job.result(timeout=120)
    assert not (out / "status.json").exists() or not json.loads((out / "status.json").read_text())["ok"]
    origin = json.loads((out / "journal" / "run.json").read_text())["origin"]

    # the coordinator is started again on the same state folder and resumes the job it finds there
    federation["start_coordinator"]()
    lines: list[str] = []
    assert resume_unfinished(state, federation["superlink"], federation["certs"], echo=lines.append) == []
    assert "fedcredit train --resume" in lines[-1]  # without a submitter's key the job is only named
    threads = resume_unfinished(state, federation["superlink"], federation["certs"], echo=lines.append,
                                submitter_key=federation["certs"] / "submitters" / "operator.key")
    assert len(threads) == 1
    threads[0].join(timeout=900)
    assert not threads[0].is_alive(), lines[-20:]
    assert (out / "status.json").exists(), "\n".join(lines[-30:]) + _tails(tmp)
    status = json.loads((out / "status.json").read_text())
    assert status["ok"], f"{status}\n" + "\n".join(lines[-20:]) + _tails(tmp)
    assert any("resuming job" in line for line in lines), lines[-20:]
    assert str(status["flower_run_id"]) == origin and status["resumed_in_flower_run"] != status["flower_run_id"]
    assert not (out / "journal").exists() and not list((state / "unfinished").glob("*.json"))

    # the same job on the in-process engine, uninterrupted: the same model, bit for bit
    nodes = [NodeConfig(role, str(federation["paths"][role])) for role in ROLES]
    settings = ModelSettings(key_bits=JOB["key-bits"], max_iter=JOB["max-iter"], bank_only_baseline=False,
                             seed=JOB["seed"])
    reference = runner.run(nodes, settings, tmp / "in-process", engine="in-process")
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("test_auc", "intersection", "evaluations", "rounds"):
        assert metrics[key] == reference[key], (key, metrics[key], reference[key])
    node_out = lambda role: tmp / "nodes-out" / role / f"run-{origin}"  # noqa: E731
    for role in ROLES:
        ours = read_model_part(node_out(role) / "model" / role, role)[1]
        theirs = read_model_part(tmp / "in-process" / "model" / role, role)[1]
        assert np.array_equal(ours, theirs), (role, np.abs(ours - theirs).max())
        shutil.copy(node_out(role) / "audit" / f"{role}.jsonl", out / "audit" / f"{role}.jsonl")
    verdict = verify_audit(out, out / "keys" / "coordinator.pub.json", min_key_bits=1024)
    assert verdict.ok and set(verdict.parties) == {*ROLES, "coordinator"}
