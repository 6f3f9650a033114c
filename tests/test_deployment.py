"""A real federation on Flower's deployment engine: TLS, SuperNode authentication, refusal, and the wire.

One SuperLink and three SuperNodes (bank, tax, utilities) run as separate processes; a
fifth party holds a node key that was never registered and must not join. As root (and
where namespaces work) every party runs in its own network namespace on a bridge
(``fedcredit_netlab.namespaces``) and every party's link is captured during the job: the
capture must show TLS from first byte to last, and none of the canaries (enterprise IDs
and raw feature values from the nodes' files, the run's settings) in clear, while a
canary sent in clear over the same link *is* found. Elsewhere (or with
``FEDCREDIT_TEST_NETNS=0``) everything runs on 127.0.0.1 without the wire checks. The
metrics and the model must equal those of the same job on the in-process engine (same data
and seed), although the tax node is killed (SIGKILL) mid-training and restarted: the
coordinator names it, waits, and the job resumes from the node's checkpoint.
Every process and namespace the test starts is removed in the fixture teardown.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from fedcredit.deploy import processes as P
from fedcredit_netlab.capture import Capture, find_canaries, tcp_streams, tls_framing
from fedcredit.deploy.certs import make_node_key
from fedcredit.scoring.outputs import read_model_part

from lab_federation import NEEDS_FLOWER, lab_federation

ROLES = ("bank", "tax", "utilities")
JOB = {"key-bits": 1024, "max-iter": 1, "bank-only-baseline": False, "seed": 42}
pytestmark = [pytest.mark.slow, NEEDS_FLOWER]


@pytest.fixture
def federation(tmp_path):
    """The running federation; ``start_node(role)`` (re)starts a node with its original settings (10 s heartbeat)."""
    from fedcredit.data import synth

    with lab_federation(tmp_path, ROLES, extra=("rogue",)) as fed:
        make_node_key(tmp_path / "rogue-certs", "tax")  # a key nobody registered, claiming to be tax
        shutil.copy(fed.certs / "ca.pem", tmp_path / "rogue-certs" / "ca.pem")
        paths = synth.write_nodes(synth.generate(1500, 3), tmp_path / "data")

        def start_node(role: str) -> P.Proc:
            return fed.start_node(role, paths[role])

        for role in ROLES:
            start_node(role)
        fed.start_node("tax", paths["tax"], party="rogue", certs=tmp_path / "rogue-certs", max_retries=2)
        yield {"tmp": tmp_path, "certs": fed.certs, "superlink": fed.superlink, "port": fed.port,
               "registry": fed.registry, "procs": fed.procs, "start_node": start_node, "state": fed.state,
               "paths": paths, "lab": fed.lab, "why_not": fed.why_not, "submitter_key": fed.submitter_key}


class JobThread:
    """``submit`` on a thread, so the test can act while the job runs (e.g. stop and restart a node).

    ``wait_for(text)`` blocks until a progress line containing ``text`` was streamed
    (lines look like "federated model: iteration 1/1, loss ..."); ``result()`` joins and
    returns the coordinator's status or re-raises the job's error.
    """

    def __init__(self, superlink, certs, out, run_config, timeout):  # signed by the fixture's submitter
        from fedcredit.flower.submit import submit

        self.lines: list[str] = []
        self._box: dict = {}
        self._new_line = threading.Condition()

        def echo(line: str) -> None:
            with self._new_line:
                self.lines.append(line)
                self._new_line.notify_all()

        def run() -> None:
            try:
                self._box["status"] = submit(superlink, certs, out, run_config, echo=echo, timeout=timeout,
                                             submitter_key=Path(certs) / "submitters" / "operator.key")
            except BaseException as exc:  # handed to result()
                self._box["error"] = exc
            with self._new_line:
                self._new_line.notify_all()

        self.started = time.perf_counter()
        self._thread = threading.Thread(target=run, name="submit", daemon=True)
        self._thread.start()

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        with self._new_line:
            while True:
                hit = next((line for line in self.lines if text in line), None)
                if hit is not None:
                    return hit
                if not self._thread.is_alive() or time.monotonic() > deadline:
                    raise AssertionError(f"no progress line with {text!r}; last lines:\n" + "\n".join(self.lines[-15:]))
                self._new_line.wait(timeout=1.0)

    def result(self, timeout: float) -> dict:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the job did not finish"
        self.seconds = time.perf_counter() - self.started
        if "error" in self._box:
            raise self._box["error"]
        return self._box["status"]


def _canaries(paths: dict, per_node: int = 10) -> dict[str, bytes]:
    """Values that must not cross any link in clear: sampled IDs, and distinctive raw values as text and binary."""
    import pyarrow.parquet as pq

    found: dict[str, bytes] = {}
    for role, path in paths.items():
        frame = pq.read_table(path).to_pandas().sample(per_node, random_state=7)
        for uscc in frame["uscc"]:
            found[f"{role} uscc {uscc}"] = uscc.encode()
        for col in frame.columns:
            kind = frame[col].dtype.kind
            for v in frame[col].dropna()[:3]:  # distinctive ones only: ≥ 6 characters, ≥ 3 non-zero bytes
                text = repr(float(v)) if kind == "f" else str(int(v)) if kind in "iu" else ""
                packed = struct.pack("<d", float(v)) if kind == "f" else struct.pack("<q", int(v)) if text else b""
                if len(text) >= 6:
                    found[f"{role} {col} {text} text"] = text.encode()
                if sum(b != 0 for b in packed) >= 3:
                    found[f"{role} {col} {text} {'float64' if kind == 'f' else 'int64'}"] = packed
    for role in paths:
        assert sum(k.startswith(f"{role} ") and " uscc " not in k for k in found) >= 10, (role, sorted(found))
    return found


def _check_wire(fed: dict, captured: dict, canaries: dict[str, bytes], controls: dict[str, bytes]) -> dict:
    """Every party's link: all traffic to the SuperLink is TLS end to end, no canary in clear, the controls found."""
    lab, port = fed["lab"], fed["port"]
    coordinator = lab.address("coordinator")
    bytes_per_party = {}
    for party, seen in captured.items():
        assert seen.kernel_drops == 0 and seen.bytes_not_kept == 0, (party, seen.kernel_drops, seen.bytes_not_kept)
        hits = find_canaries(seen.frames, {"control": controls[party]})
        assert "control" in hits, f"the plain-TCP control sent across {party}'s link was not found: search is blind"
        leaks = find_canaries(seen.frames, canaries)
        assert leaks == {}, f"in clear on {party}'s link: {leaks}"
        tls_bytes = 0
        for (src, sport, dst, dport), stream in tcp_streams(seen.frames).items():
            if controls[party] in stream:
                continue
            # nodes talk to nothing but the SuperLink; the coordinator's link also carries flwr CLI and health checks
            assert port in (sport, dport) and coordinator in (src, dst), (party, src, sport, dst, dport)
            framing = tls_framing(stream)
            assert framing["ok"], (party, src, sport, dst, dport, framing, stream[:16])
            tls_bytes += len(stream)
        if party in ROLES:
            assert tls_bytes > 100_000, (party, tls_bytes)
        bytes_per_party[party] = seen.bytes_total
    return bytes_per_party


def _crash(proc: P.Proc) -> None:
    """SIGKILL a process's whole tree, as a power cut would: no clean shutdown, no deactivation."""
    pids = [proc.popen.pid, *P.descendants(proc.popen.pid)]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.popen.wait(timeout=10)


def _crash_node(node: P.NodeProc) -> None:
    """A node loses power: its SuperNode and its node service die at once."""
    _crash(node.service)
    _crash(node)


def test_job_on_the_deployment_engine_with_tls_and_node_auth(federation):
    from typer.testing import CliRunner

    from fedcredit.jobs import runner
    from fedcredit.audit.verify import verify_audit
    from fedcredit.cli.federation import federation_app
    from fedcredit.protocols.job import ModelSettings, NodeConfig

    tmp, out, lab = federation["tmp"], federation["tmp"] / "out", federation["lab"]
    assert set(federation["registry"]) == set(ROLES)
    if lab is None:
        print(f"federation on 127.0.0.1 without wire checks: {federation['why_not']}")
    captures = {party: Capture(lab.link(party)) for party in lab.parties} if lab else {}
    try:
        # a failing run (the job names the tax node, which holds no label, as its bank: tax refuses) exits non-zero
        # with the coordinator's reason, although `flwr run --stream` itself exits 0
        res = CliRunner().invoke(federation_app, ["train", "--superlink", federation["superlink"], "--certs",
                                              str(federation["certs"]), "--out", str(tmp / "failed"), "--roles",
                                              "bank,utilities", "--bank", "tax", "--key-bits", "1024", "--timeout", "120",
                                              "--submitter-key", str(federation["submitter_key"])])
        assert res.exit_code == 1, res.output
        assert "no label column" in res.output and json.loads((tmp / "failed" / "status.json").read_text())["ok"] is False

        job = JobThread(federation["superlink"], federation["certs"], out,
                        {**JOB, "registry": str(federation["state"] / "registry.json"), "timeout": 300.0}, timeout=900)
        job.wait_for("PSI:", timeout=900)
        # mid-training the tax node dies (SIGKILL of its whole process tree: no goodbye to the SuperLink) and is
        # started again at once with the same key and work folder; the SuperLink still lists it online for ~20 s
        # (10 s heartbeat), refuses it, and the node's wrapper keeps trying until it is let back in
        job.wait_for("federated model: iteration 0/", timeout=900)
        _crash_node(federation["procs"]["tax"])
        federation["start_node"]("tax")
        lost = job.wait_for("NODE LOST: tax", timeout=240)
        back = job.wait_for("is back after", timeout=300)
        # then only the utilities node's service dies (SIGKILL, maybe mid-message) and is started again beside its
        # living SuperNode: the relay ClientApp waits for it and the job goes on from the service's checkpoint
        _crash(federation["procs"]["utilities"].service)
        assert federation["procs"]["utilities"].revive()
        status = job.result(timeout=930)
        controls = {}
        for party in captures:
            controls[party] = f"fedcredit-plain-control-{party}-{uuid.uuid4().hex}".encode() + struct.pack("<d", 1234.5678)
            lab.send_plain(party, controls[party])
        time.sleep(0.3)
    finally:
        captured = {party: cap.stop() for party, cap in captures.items()}
    assert status["ok"], status
    assert any("PSI:" in line for line in job.lines) and any("iteration" in line for line in job.lines)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_auc"] > 0.7 and metrics["rounds"] >= 12  # 17 since #16 (3 rounds per L-BFGS point)
    for name in ("run.json", "limits.parquet", "limits.csv", "limits.sig.json", "audit/coordinator.jsonl"):
        assert (out / name).exists(), name
    assert json.loads((out / "run.json").read_text())["engine"] == "deployment"
    for role in ROLES:  # Flower's tasks ran inside each node's service, not in a flwr-clientapp process per message
        assert "Flower task query.step completed" in (tmp / "work" / role / "node-service.log").read_text(), role
    # each node wrote its own part into its out-dir's folder for this run; an auditor collects the logs next to the
    # coordinator's
    node_out = lambda role, run=status["flower_run_id"]: tmp / "nodes-out" / role / f"run-{run}"  # noqa: E731
    for role in ROLES:
        assert (node_out(role) / "audit" / f"{role}.jsonl").exists() and (node_out(role) / "model" / role).is_dir()
        shutil.copy(node_out(role) / "audit" / f"{role}.jsonl", out / "audit" / f"{role}.jsonl")
    assert (node_out("bank") / "scores.parquet").exists()
    verdict = verify_audit(out, out / "keys" / "coordinator.pub.json", min_key_bits=1024)
    assert verdict.ok and set(verdict.parties) == {"bank", "tax", "utilities", "coordinator"}

    # the crash was seen and named at the coordinator, the node came back, the job resumed
    assert "Flower node" in lost and "resumes from its checkpoint" in lost and "is back" in back, (lost, back)

    # the same job on the in-process engine (same files, same seed), uninterrupted: the same model
    nodes = [NodeConfig(role, str(federation["paths"][role])) for role in ROLES]  # runner.run: parts in OUT/model/
    settings = ModelSettings(key_bits=JOB["key-bits"], max_iter=JOB["max-iter"],
                             bank_only_baseline=JOB["bank-only-baseline"], seed=JOB["seed"])
    reference = runner.run(nodes, settings, tmp / "in-process", engine="in-process")
    for key in ("test_auc", "test_ks", "test_gini", "intersection", "evaluations", "rounds"):
        assert metrics[key] == reference[key], (key, metrics[key], reference[key])
    for role in ROLES:
        ours = read_model_part(node_out(role) / "model" / role, role)[1]
        theirs = read_model_part(tmp / "in-process" / "model" / role, role)[1]
        assert np.array_equal(ours, theirs), (role, np.abs(ours - theirs).max())  # bit for bit

    # the unregistered node never joined: it was refused and gave up, and no fourth node came online
    rogue = federation["procs"]["rogue"]
    deadline = time.monotonic() + 30
    while rogue.alive() and time.monotonic() < deadline:
        time.sleep(0.5)
    log = rogue.tail(200)
    assert not rogue.alive() or "denied" in log.lower() or "unauthenticated" in log.lower(), log
    assert "query.step" not in log and "query.role" not in log
    listed = json.loads(P.registered_keys(federation["state"] / "flwr-home"))["nodes"]
    assert len(listed) == 3 and {int(n["node-id"]) for n in listed} == set(federation["registry"].values())

    if lab is not None:
        canaries = _canaries(federation["paths"])
        canaries["run config (out folder), sent to every node"] = str(out).encode()
        wire = _check_wire(federation, captured, canaries, controls)
        print(f"on the wire (bytes per party's link): {wire}")
    print(f"deployment job: {job.seconds:.1f} s wall, {metrics['rounds']} rounds, "
          f"{metrics['seconds_per_round']:.2f} s/round")

    # the same federation serves a second job, SecureBoost (the run config names the model): its outputs go to
    # each node's folder for that run, and its trees equal the in-process run's
    sb_out = tmp / "out-sb"
    trees = {**JOB, "model": "secureboost", "trees": 1, "max-depth": 2}
    sb_job = JobThread(federation["superlink"], federation["certs"], sb_out,
                       {**trees, "registry": str(federation["state"] / "registry.json"), "timeout": 300.0}, timeout=900)
    sb_status = sb_job.result(timeout=930)
    assert sb_status["ok"], sb_status
    assert sb_status["flower_run_id"] != status["flower_run_id"]
    assert any("federated model: tree 1/1" in line for line in sb_job.lines), sb_job.lines[-20:]
    sb_metrics = json.loads((sb_out / "metrics.json").read_text())
    sb_settings = ModelSettings(key_bits=1024, model="secureboost", trees=1, max_depth=2, bank_only_baseline=False,
                                seed=JOB["seed"])
    sb_reference = runner.run(nodes, sb_settings, tmp / "in-process-sb", engine="in-process")
    for key in ("test_auc", "test_ks", "intersection", "rounds"):
        assert sb_metrics[key] == sb_reference[key], (key, sb_metrics[key], sb_reference[key])
    for role in ROLES:
        part = node_out(role, sb_status["flower_run_id"]) / "model" / role / "secureboost.json"
        ref_part = tmp / "in-process-sb" / "model" / role / "secureboost.json"
        ours, theirs = (json.loads(f.read_text()) for f in (part, ref_part))
        assert ours.pop("model_id") != theirs.pop("model_id")  # each training run names its own parts
        assert ours == theirs, role
    print(f"SecureBoost deployment job: {sb_job.seconds:.1f} s wall, {sb_metrics['rounds']} rounds")
