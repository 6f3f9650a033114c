"""Two banks on one federation, training at the same time over shared hosts, each in its own network namespace.

A coordinator (SuperLink) and four nodes: ``bank-a`` and ``bank-b`` (each with its own
customers and labels, tests/bank_helpers.py), ``tax`` and ``utilities``. Both banks submit
a job at once; each job names its bank and the two hosts, and the coordinator (with its
registry) addresses only those three nodes. Both jobs succeed; each bank's model part,
scores and report exist only at that bank's node and its coordinator outputs only under
that bank's folder; the other bank's node has no trace of the job (no run folder, no
audit log, no delivery in its service log). Whether the SuperLink really ran the two
ServerApps at the same time is measured (their PSI-to-finish windows overlap) and
printed. bank-b's job names only ``tax`` (a subset of the hosts). The utilities node's own
policy allows only bank-a: a later job of bank-b naming it is refused by that node before
it reads its data, the coordinator shows the node and the rule, and the refusal closes
the node's audit log. Every process and namespace is removed at the end.
"""

from __future__ import annotations

import json
import time

import pytest

from fedcredit.audit.verify import read_log

from bank_helpers import two_banks
from lab_federation import NEEDS_FLOWER, JobThread, lab_federation

NAMES = ("bank-a", "bank-b", "tax", "utilities")
BANKS = ("bank-a", "bank-b")
JOB = {"key-bits": 1024, "max-iter": 1, "bank-only-baseline": False, "seed": 42, "timeout": 300.0}
pytestmark = [pytest.mark.slow, NEEDS_FLOWER]


@pytest.fixture
def two_bank_federation(tmp_path):
    with lab_federation(tmp_path, NAMES) as fed:  # both banks' jobs are signed by the platform's operator
        paths = two_banks(2500, 11, tmp_path / "data")
        policy = tmp_path / "utilities-policy.toml"  # utilities works for bank-a only
        policy.write_text('[policy]\nallowed_banks = ["bank-a"]\nmin_key_bits = 1024\nmin_population = 100\n')
        for name in NAMES:
            config = {"label": "default_12m"} if name in BANKS else {"policy": str(policy)} if name == "utilities" else {}
            fed.start_node(name, paths[name], node_config=config)
        yield {"tmp": tmp_path, "certs": fed.certs, "superlink": fed.superlink, "registry": fed.registry,
               "state": fed.state, "why_not": fed.why_not}


def test_two_banks_train_at_once_on_shared_hosts_and_keep_their_outputs_apart(two_bank_federation):
    fed = two_bank_federation
    tmp = fed["tmp"]
    assert set(fed["registry"]) == set(NAMES)
    if fed["why_not"]:
        print(f"federation on 127.0.0.1 without namespaces: {fed['why_not']}")
    registry = str(fed["state"] / "registry.json")
    coordinator_out = {bank: tmp / "coordinator-out" / bank / "run-1" for bank in BANKS}
    started = time.monotonic()
    roles = {"bank-a": "bank,tax,utilities", "bank-b": "bank,tax"}
    jobs = {bank: JobThread(fed["superlink"], fed["certs"], coordinator_out[bank],
                            {**JOB, "bank": bank, "roles": roles[bank], "registry": registry}, timeout=900)
            for bank in BANKS}
    seen: dict[str, dict[str, float]] = {bank: {} for bank in BANKS}
    deadline = time.monotonic() + 900
    while any(len(seen[b]) < 2 for b in BANKS) and time.monotonic() < deadline:
        for bank, job in jobs.items():
            for text in ("PSI:", "done:"):
                if text not in seen[bank] and any(text in line for line in job.lines):
                    seen[bank][text] = time.monotonic() - started
        time.sleep(0.2)
    status = {bank: job.result(timeout=60) for bank, job in jobs.items()}
    for bank in BANKS:
        assert status[bank]["ok"], (bank, status[bank], jobs[bank].lines[-20:])
        hosts = roles[bank].split(",", 1)[1]
        assert any(f"bank {bank}, hosts {hosts}" in line for line in jobs[bank].lines), jobs[bank].lines[:5]
    run_of = {bank: status[bank]["flower_run_id"] for bank in BANKS}
    assert run_of["bank-a"] != run_of["bank-b"]
    (a_psi, a_done), (b_psi, b_done) = (
        (seen[b].get("PSI:", float("nan")), seen[b].get("done:", float("nan"))) for b in BANKS)
    overlap = min(a_done, b_done) - max(a_psi, b_psi)
    print(f"two banks' jobs: bank-a PSI at {a_psi:.1f} s, done at {a_done:.1f} s; bank-b PSI at {b_psi:.1f} s, "
          f"done at {b_done:.1f} s; both training at once for {max(overlap, 0):.1f} s")
    assert overlap > 0, "the SuperLink ran the two banks' ServerApps one after the other"

    out = tmp / "nodes-out"
    for bank, other in (("bank-a", "bank-b"), ("bank-b", "bank-a")):
        mine = out / bank / f"run-{run_of[bank]}"
        for name in ("scores.parquet", "report.html", "model/bank", "audit/bank.jsonl"):
            assert (mine / name).exists(), (bank, name)
        # the other bank's node kept nothing of this job, and its service never handled a delivery of it
        for folder in (out / other, tmp / "work" / other / "state"):
            assert not list(folder.glob(f"run-{run_of[bank]}*")), (other, folder, sorted(folder.iterdir()))
        log = (tmp / "work" / other / "node-service.log").read_text()
        assert f"run {run_of[bank]} " not in log and f"run {run_of[other]} delivery 1:" in log
        # the coordinator's outputs of this job are under this bank's folder only
        coord = coordinator_out[bank]
        for name in ("metrics.json", "run.json", "limits.parquet", "limits.sig.json", "audit/coordinator.jsonl"):
            assert (coord / name).exists(), (bank, name)
        assert json.loads((coord / "run.json").read_text())["bank"] == bank
        assert json.loads((coord / "metrics.json").read_text())["bank"] == bank
    for host, banks in (("tax", BANKS), ("utilities", ("bank-a",))):  # shared hosts: each run in its own folder
        for bank in banks:
            assert (out / host / f"run-{run_of[bank]}" / "audit" / f"{host}.jsonl").exists(), (host, bank)
            assert not (out / host / f"run-{run_of[bank]}" / "scores.parquet").exists()
    assert not list((out / "utilities").glob(f"run-{run_of['bank-b']}*"))  # not in bank-b's job: nothing of it
    metrics = {bank: json.loads((coordinator_out[bank] / "metrics.json").read_text()) for bank in BANKS}
    assert metrics["bank-a"]["test_auc"] != metrics["bank-b"]["test_auc"]  # their own labels, their own models
    print("two banks: " + ", ".join(f"{b} test AUC {m['test_auc']:.4f}, {m['rounds']} rounds, {m['seconds']} s"
                                    for b, m in metrics.items()))

    # bank-b asks utilities, whose own policy allows bank-a only: that node refuses before it reads its data
    refused = JobThread(fed["superlink"], fed["certs"], tmp / "coordinator-out" / "bank-b" / "run-2",
                        {**JOB, "bank": "bank-b", "roles": "bank,tax,utilities", "registry": registry}, timeout=600)
    with pytest.raises(Exception, match="node utilities refused the job: policy rule allowed_banks: the job's bank is "
                                        "'bank-b'; this node allows 'bank-a'"):
        refused.result(timeout=300)
    verdict = json.loads((tmp / "coordinator-out" / "bank-b" / "run-2" / "status.json").read_text())
    assert verdict["ok"] is False and "policy rule allowed_banks" in verdict["error"]
    run = verdict["flower_run_id"]
    log = read_log(out / "utilities" / f"run-{run}" / "audit" / "utilities.jsonl")
    assert log.records[-1]["type"] == "aborted" and "policy rule allowed_banks" in log.records[-1]["reason"]
    assert not (out / "bank-b" / f"run-{run}" / "scores.parquet").exists()
