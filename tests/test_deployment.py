"""A real federation on Flower's deployment engine on 127.0.0.1: TLS, SuperNode authentication, refusal.

One SuperLink and three SuperNodes (bank, tax, utilities) run as separate processes with
free ports; a fourth SuperNode holds a key that was never registered and must not join.
Every process the test starts is stopped (with its descendants) in the fixture teardown.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest

from fedcredit.deploy import processes as P
from fedcredit.deploy.certs import make_certs, make_node_key

ROLES = ("bank", "tax", "utilities")
pytestmark = pytest.mark.skipif(
    not all((P.BIN / b).exists() or shutil.which(b) for b in ("flower-superlink", "flower-supernode", "flwr")),
    reason="Flower deployment binaries (flower-superlink, flower-supernode, flwr) are not installed")


def _flower_pids(marker: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if marker in line and ("flower-" in line or "flwr" in line
                                                                     or "fedcredit.deploy" in line)]


@pytest.fixture
def federation(tmp_path):
    from fedcredit.data import synth

    certs = tmp_path / "certs"
    make_certs(certs, "127.0.0.1", list(ROLES))
    make_node_key(tmp_path / "rogue-certs", "tax")  # a key nobody registered, claiming to be tax
    shutil.copy(certs / "ca.pem", tmp_path / "rogue-certs" / "ca.pem")
    paths = synth.write_nodes(synth.generate(1500, 3), tmp_path / "data")
    port = P.free_port()
    procs: list[P.Proc] = []
    try:
        link, registry = P.start_coordinator(certs, "127.0.0.1", port, tmp_path / "state")
        procs.append(link)
        superlink = f"127.0.0.1:{port}"
        for role in ROLES:
            procs.append(P.start_node(role, paths[role], superlink, certs, tmp_path / "work" / role,
                                      out=tmp_path / "nodes-out" / role, idle_poll=0.1))
        rogue = P.start_node("tax", paths["tax"], superlink, tmp_path / "rogue-certs", tmp_path / "work" / "rogue",
                             out=tmp_path / "nodes-out" / "rogue", idle_poll=0.1, max_retries=2)
        procs.append(rogue)
        yield {"tmp": tmp_path, "certs": certs, "superlink": superlink, "registry": registry, "procs": procs,
               "rogue": rogue, "link": link, "state": tmp_path / "state"}
    finally:
        for proc in reversed(procs):
            proc.stop()
        assert _flower_pids(str(tmp_path)) == [], "Flower processes left running"


def test_job_on_the_deployment_engine_with_tls_and_node_auth(federation):
    from fedcredit.audit.verify import verify_audit
    from fedcredit.deploy.submit import submit

    tmp, out = federation["tmp"], federation["tmp"] / "out"
    assert set(federation["registry"]) == set(ROLES)

    # a failing run (the job expects roles the federation does not have) exits non-zero with the coordinator's reason,
    # although `flwr run --stream` itself exits 0
    from typer.testing import CliRunner

    from fedcredit.cli_deploy import submit_app

    res = CliRunner().invoke(submit_app, ["train", "--superlink", federation["superlink"], "--certs",
                                          str(federation["certs"]), "--out", str(tmp / "failed"), "--roles", "bank,tax",
                                          "--key-bits", "1024", "--timeout", "120"])
    assert res.exit_code == 1, res.output
    assert "do not match" in res.output and json.loads((tmp / "failed" / "status.json").read_text())["ok"] is False
    lines: list[str] = []
    started = time.perf_counter()
    status = submit(federation["superlink"], federation["certs"], out,
                    {"key-bits": 1024, "max-iter": 1, "bank-only-baseline": False,
                     "registry": str(federation["state"] / "registry.json"), "timeout": 120.0},
                    echo=lines.append, timeout=170)
    wall = time.perf_counter() - started
    assert status["ok"], status
    assert any("PSI:" in line for line in lines) and any("iteration" in line for line in lines)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_auc"] > 0.7 and metrics["rounds"] >= 20
    for name in ("run.json", "limits.parquet", "limits.csv", "limits.sig.json", "audit/coordinator.jsonl"):
        assert (out / name).exists(), name
    assert json.loads((out / "run.json").read_text())["engine"] == "deployment"
    # each node wrote its own part into its own out-dir; an auditor collects the logs next to the coordinator's
    for role in ROLES:
        node_out = tmp / "nodes-out" / role
        assert (node_out / "audit" / f"{role}.jsonl").exists() and (node_out / "model" / role).is_dir()
        shutil.copy(node_out / "audit" / f"{role}.jsonl", out / "audit" / f"{role}.jsonl")
    assert (tmp / "nodes-out" / "bank" / "scores.parquet").exists()
    verdict = verify_audit(out, out / "keys" / "coordinator.pub.json", min_key_bits=1024)
    assert verdict.ok and set(verdict.parties) == {"bank", "tax", "utilities", "coordinator"}

    # the unregistered node never joined: it was refused and gave up, and no fourth node came online
    rogue = federation["rogue"]
    deadline = time.monotonic() + 30
    while rogue.alive() and time.monotonic() < deadline:
        time.sleep(0.5)
    log = rogue.tail(200)
    assert not rogue.alive() or "denied" in log.lower() or "unauthenticated" in log.lower(), log
    assert "query.step" not in log and "query.role" not in log
    listed = json.loads(P.registered_keys(federation["state"] / "flwr-home"))["nodes"]
    assert len(listed) == 3 and {int(n["node-id"]) for n in listed} == set(federation["registry"].values())
    print(f"deployment job: {wall:.1f} s wall, {metrics['rounds']} rounds, {metrics['seconds_per_round']:.2f} s/round")
