"""Only trusted code runs at a node, only authenticated submitters start jobs, nodes cannot reach the Control API.

One federation (coordinator, bank, tax, utilities), each party in its own network
namespace, serves every check: (i) a copy of the app whose ClientApp module differs by
one line, submitted with a valid submitter signature, is refused by every node before
any task is answered, and the coordinator's error names each node and the file; (ii) the
genuine app submitted without a signature is refused before the job starts; (iii) from a
node's namespace the Control API answers 403 (raw HTTPS and the ``flwr`` CLI) while that
node's Fleet connection worked throughout; (iv) nothing is left running. Needs root
(network namespaces); small data, no training.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from fedcredit_netlab import namespaces as netlab
from fedcredit.common.errors import FedCreditError
from fedcredit.deploy import processes as P
from fedcredit.flower.submit import app_dir, submit

from lab_federation import lab_federation

ROLES = ("bank", "tax", "utilities")
JOB = {"key-bits": 1024, "max-iter": 1, "bank-only-baseline": False, "timeout": 120.0}
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(netlab.unavailable_reason() is not None,
                                 reason=f"network namespaces: {netlab.unavailable_reason()}")]


def _tampered_app(dest):
    """The app folder with one changed line in the ClientApp module."""
    dest.mkdir()
    shutil.copy(app_dir() / "pyproject.toml", dest / "pyproject.toml")
    shutil.copytree(app_dir() / "fedcredit", dest / "fedcredit", ignore=shutil.ignore_patterns("__pycache__"))
    relay = dest / "fedcredit" / "flower" / "relay_app.py"
    relay.write_text(relay.read_text().replace("SERVICE_WAIT_S = 60.0", "SERVICE_WAIT_S = 1.0"))
    return dest


def _control_request(lab, party: str, url: str, ca) -> str:
    """An HTTPS POST from ``party``'s namespace: the HTTP status, or the error."""
    code = ("import ssl, sys, urllib.request, urllib.error\n"
            f"ctx = ssl.create_default_context(cafile={str(ca)!r})\n"
            f"req = urllib.request.Request({url!r}, data=b'{{}}', method='POST', "
            "headers={'Content-Type': 'application/json'})\n"
            "try:\n    print(urllib.request.urlopen(req, context=ctx, timeout=10).status)\n"
            "except urllib.error.HTTPError as e:\n    print(e.code)\n")
    res = subprocess.run([*lab.exec_prefix(party), sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    return (res.stdout + res.stderr).strip()


def test_tampered_and_unsigned_jobs_are_refused_and_nodes_cannot_reach_the_control_api(tmp_path):
    from fedcredit.data import synth

    with lab_federation(tmp_path, ROLES, namespaces=True) as fed:
        lab, certs, host, port, superlink, key = fed.lab, fed.certs, fed.host, fed.port, fed.superlink, fed.submitter_key
        paths = synth.write_nodes(synth.generate(1500, 3), tmp_path / "data")
        nodes = {role: fed.start_node(role, paths[role]) for role in ROLES}

        # (i) ClientApp code changed by one line, signed by a registered submitter: every node refuses it
        with pytest.raises(FedCreditError) as refused:
            submit(superlink, certs, tmp_path / "tampered", JOB, submitter_key=key,
                   app=_tampered_app(tmp_path / "app"), timeout=150)
        text = str(refused.value)
        for role in ROLES:
            assert f"[{role}] app bundle refused: fedcredit/flower/relay_app.py differs from this node's fedcredit" \
                in text, text
            assert "app bundle refused: fedcredit/flower/relay_app.py differs" in \
                (tmp_path / "work" / role / "node-service.log").read_text()
        assert [p for role in ROLES for p in (tmp_path / "nodes-out" / role).glob("run-*/*")] == []  # no job at a node

        # (ii) the genuine app without a submitter signature: refused before the job starts
        with pytest.raises(FedCreditError, match="unauthenticated submission refused") as unsigned:
            submit(superlink, certs, tmp_path / "unsigned", JOB, timeout=150)
        assert "fedcredit refused this job" in str(unsigned.value)
        assert not (tmp_path / "unsigned" / "status.json").exists()  # the ServerApp never ran

        # (iii) from the tax node's namespace the Control API is closed, /health open; the test's own address
        # (--control-from) reaches it
        url = f"https://{host}:{port}"
        assert _control_request(lab, "tax", f"{url}/v1/control/list-runs", certs / "ca.pem") == "403"
        assert _control_request(lab, "tax", f"{url}/v1/runtime/pull-task-input", certs / "ca.pem") == "403"
        home = tmp_path / "tax-cli"
        P.write_cli_config(home, superlink, certs / "ca.pem")
        cli = subprocess.run([*lab.exec_prefix("tax"), P.flower_bin("flwr"), "ls", P.FEDERATION],
                             env=P.flower_env(home), capture_output=True, text=True, timeout=60)
        assert cli.returncode != 0, cli.stdout + cli.stderr
        assert P.flwr_cli(["ls", P.FEDERATION], tmp_path / "state" / "flwr-home").returncode == 0
        log = (tmp_path / "state" / "superlink.log").read_text()
        assert f"refused POST /v1/control/list-runs from {lab.address('tax')}" in log
        assert all(node.alive() for node in nodes.values())  # their Fleet connections kept working
    # (iv) nothing left running
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    assert [line for line in ps.splitlines() if str(tmp_path) in line] == []
    assert lab.ns("coordinator") not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
