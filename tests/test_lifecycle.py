"""A model's life on one federation: train, re-score as the nodes' data changes, monitor, answer online queries.

Every party in its own network namespace (as root; else on 127.0.0.1), TLS and node
authentication on, jobs signed by the platform operator and sent with the CLI a bank's
risk team uses (``fedcredit train --federation``, ``fedcredit score --federation``).
Between training and scoring every node's data file is replaced by a later month of the
same enterprises with drift (``synth.generate(month=2)``), and the tax node is restarted:
it finds its saved model part again by the training run's id. The first scoring run's
limits are version 2 of the model and chain to the training publication; each node's CSI
arrives at the coordinator, and ``fedcredit monitor`` turns the two publications into
red/amber/green warnings (the enterprises the month put in distress are red). A second
scoring run (version 3) chains to the first, and the nodes find the distribution they
last published. Then ``fedcredit serve`` answers online queries on the same federation:
``fedcredit query`` gets, for the same enterprises and data, exactly the limits the last
scoring run published; an enterprise nobody knows gets the policy's answer for missing
data; a malformed ID and a wrong token are refused (400, 401); every node's audit log
lists the IDs it was asked about.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
from typer.testing import CliRunner

from fedcredit.cli import app
from fedcredit.data import synth, uscc
from fedcredit.deploy.processes import free_port
from fedcredit.scoring.publish import verify_limits

from lab_federation import lab_federation
from test_deployment import pytestmark  # noqa: F401 — slow, needs Flower

NAMES = ("bank", "tax", "utilities")
ROWS = 2000
SEED = 5
NODE_POLICY = """[policy]
allowed_banks = ["bank"]
allowed_tasks = ["train", "score", "query"]
min_key_bits = 1024
min_population = 100
"""
JOB = """[job]
bank = "bank"
[model]
key_bits = 1024
max_iter = 2
bank_only_baseline = false
[nodes.bank]
data = "x"
[nodes.tax]
data = "x"
[nodes.utilities]
data = "x"
"""

runner = CliRunner()
QUERY_PORT = free_port()


def queried_ids(node_out: Path) -> set[str]:
    """Every ID a node's audit logs record as asked about in an online query."""
    found = set()
    for log in node_out.glob("run-*/audit/*.jsonl"):
        for line in log.read_text().splitlines():
            record = json.loads(line)
            if record.get("type") == "query":
                found.update(record["ids"])
    return found


def serve_and_query(fed, tmp: Path, env: dict, model: str, published: Path) -> dict:
    """``fedcredit serve`` (a process, stopped with Ctrl-C as its user would), then ``fedcredit query`` for five
    published enterprises and one nobody knows, and refused requests: a malformed ID (400), a wrong token (401)."""
    limits = pd.read_parquet(published / "limits.parquet")
    ids = list(limits["uscc"].iloc[:5])
    unknown = next(u for u in uscc.generate(50, np.random.default_rng(99)) if u not in set(limits["uscc"]))
    cmd = [sys.executable, "-c", "from fedcredit.cli import main; main()", "serve", "--federation", "lab",
           "--bank", "bank", "--model", model, "--out", str(tmp / "serving")]
    # Ctrl-C must reach it as a user's would: a test worker (pytest-xdist) may ignore SIGINT, which a child inherits
    proc = subprocess.Popen(cmd, env={**os.environ, **env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(line.rstrip() for line in proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 300
        while not any("serving bank bank's limit queries" in line for line in lines):
            assert proc.poll() is None and time.monotonic() < deadline, "\n".join(lines)
            time.sleep(0.2)
        answer = json.loads(cli("query", "--federation", "lab", "--bank", "bank", *ids, unknown, "--json", env=env))
        url = f"https://{fed.host}:{QUERY_PORT}/v1/limits"
        token = (tmp / "bank.token").read_text().strip()
        with httpx.Client(verify=ssl.create_default_context(cafile=str(fed.certs / "ca.pem")), timeout=60) as client:
            bad = client.post(url, json={"uscc": [ids[0][:-1] + "?"]}, headers={"Authorization": f"Bearer {token}"})
            assert bad.status_code == 400 and "uscc" in bad.text.lower(), bad.text
            wrong = client.post(url, json={"uscc": ids[:1]}, headers={"Authorization": "Bearer not-a-token"})
            assert wrong.status_code == 401, wrong.text
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: fedcredit serve stops the serving run at the coordinator
        proc.wait(timeout=180)
        reader.join(10)
    assert proc.returncode == 0 and any("serving stopped" in line for line in lines), "\n".join(lines[-20:])
    rows = {row["uscc"]: row for row in answer["rows"]}
    return {"ok": [rows[i] for i in ids], "unknown": rows[unknown], "asked": ids + [unknown]}


def month(data: Path, number: int) -> dict[str, Path]:
    """Write month ``number`` of the same enterprises into ``data`` (the nodes' files, replaced in place)."""
    return synth.write_nodes(synth.generate(ROWS, seed=SEED, month=number), data, "parquet")


def cli(*args: str, env: dict) -> str:
    res = runner.invoke(app, list(args), env=env)
    assert res.exit_code == 0, res.output
    return res.output


def test_train_rescore_drifted_data_monitor_and_query(tmp_path):
    with lab_federation(tmp_path, NAMES) as fed:
        paths = month(tmp_path / "data", 1)
        policy = tmp_path / "node-policy.toml"
        policy.write_text(NODE_POLICY)
        for name in NAMES:
            fed.start_node(name, paths[name], node_config={"policy": str(policy),
                                                           **({"label": "default_12m"} if name == "bank" else {})})
        env = {"FEDCREDIT_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
        coordinator_out = tmp_path / "coordinator-out"
        cli("coordinator", "query-token", "bank", "--state", str(fed.state), "--out", str(tmp_path / "bank.token"),
            env=env)
        cli("federation", "add", "lab", "--superlink", fed.superlink, "--certs", str(fed.certs),
            "--registry", str(fed.state / "registry.json"), "--out", str(coordinator_out),
            "--keys", str(tmp_path / "coordinator-keys"), "--submitter-key", str(fed.submitter_key),
            "--query", f"https://{fed.host}:{QUERY_PORT}", "--query-token", str(tmp_path / "bank.token"),
            "--query-tokens", str(fed.state / "query-tokens.json"), env=env)
        (tmp_path / "job.toml").write_text(JOB)
        cli("train", "--job", str(tmp_path / "job.toml"), "--federation", "lab", "--out", str(tmp_path / "may"), env=env)
        trained = coordinator_out / "bank" / "may"
        model = json.loads((trained / "run.json").read_text())["run_id"]
        key = tmp_path / "coordinator-keys" / "coordinator.pub.json"

        month(tmp_path / "data", 2)  # the nodes' data change in place
        fed.start_node("tax", paths["tax"], node_config={"policy": str(policy)})  # restarted: finds its part again
        out = cli("score", "--federation", "lab", "--model", model, "--out", str(tmp_path / "june"), env=env)
        assert "scoring run finished" in out, out
        june = coordinator_out / "bank" / "june"
        report = verify_limits(june / "limits.parquet", key)
        pub = report.metadata["publication"]
        assert pub["model"] == model and pub["version"] == 2 and report.model_version == model
        assert pub["previous"]["run_id"] == model
        assert pub["previous"]["digest"] == verify_limits(trained / "limits.parquet", key).digest
        run = json.loads((june / "run.json").read_text())
        assert run["task"] == "score" and run["settings"]["key_bits"] == 1024
        old = pd.read_parquet(trained / "limits.parquet").set_index("uscc")
        new = pd.read_parquet(june / "limits.parquet").set_index("uscc")
        assert len(new) > 0.5 * ROWS and set(new.index) <= set(old.index)
        assert not new["pd"].equals(old["pd"].reindex(new.index))  # the drifted month scores differently
        csi = json.loads((june / "metrics.json").read_text())["csi"]  # each node's index, computed where its data is
        assert set(csi) == set(NAMES) and all(v >= 0 for node in csi.values() for v in node.values())
        assert max(csi["tax"].values()) > max(csi["bank"].values())  # the downturn shows in the tax data

        cli("monitor", str(trained), str(june), "--out", str(tmp_path / "monitoring"), env=env)
        warnings = pd.read_parquet(tmp_path / "monitoring" / "warnings.parquet")
        assert list(warnings.columns) == ["uscc", "old_grade", "new_grade", "warning", "reasons"]
        distressed = set(synth.drift_hits(ROWS, SEED, month=2)["distressed"]) & set(warnings["uscc"])
        red = set(warnings.loc[warnings["warning"] == "red", "uscc"])
        assert distressed and len(distressed & red) >= 0.5 * len(distressed), (len(distressed), len(distressed & red))
        assert (tmp_path / "monitoring" / "monitoring.html").exists()

        month(tmp_path / "data", 3)
        cli("score", "--federation", "lab", "--model", model, "--out", str(tmp_path / "july"), env=env)
        july = verify_limits(coordinator_out / "bank" / "july" / "limits.parquet", key).metadata["publication"]
        assert july["version"] == 3 and july["previous"]["run_id"] == pub["run_id"]
        assert july["previous"]["digest"] == report.digest
        bank_runs = sorted((tmp_path / "nodes-out" / "bank").glob("run-*/scores.parquet"))
        assert len(bank_runs) == 3, bank_runs  # the bank's scores of every run stay at the bank
        assert not list((tmp_path / "nodes-out" / "tax").glob("run-*/scores.parquet"))
        assert os.listdir(coordinator_out) == ["bank"]

        answers = serve_and_query(fed, tmp_path, env, model, coordinator_out / "bank" / "july")
        published = pd.read_parquet(coordinator_out / "bank" / "july" / "limits.parquet").set_index("uscc")
        for row in answers["ok"]:  # the same enterprises and data: the online answer is the publication's
            want = published.loc[row["uscc"]]
            assert (row["score"], row["pd"], row["grade"], row["limit"]) == (
                want["score"], want["pd"], want["grade"], want["limit"]), row
        assert answers["unknown"]["status"] == "missing" and answers["unknown"]["limit"] is None
        for name in NAMES:  # every node's own log lists the IDs it was asked about
            assert set(answers["asked"]) <= queried_ids(tmp_path / "nodes-out" / name), name
