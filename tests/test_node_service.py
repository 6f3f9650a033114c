"""The node service and the thin relay ClientApp: a job through real service processes, a service killed
between messages and restarted, the channel's access rules, and checkpoints only a node's own secret opens."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fedcredit.node.channel as channel
from fedcredit.common.errors import FedCreditError
from fedcredit.common.wire import Message, join_messages, split_messages
from fedcredit.data import synth
from fedcredit.deploy import processes as P
from fedcredit.deploy.clientapp import hand_to_service, task_spec, write_shim
from fedcredit.node.checkpoint import Checkpoint, CheckpointStore
from fedcredit.node.runs import run_folder
from fedcredit.protocols.job import JobCoordinator, ModelSettings
from fedcredit.protocols.loop import drive_bundles
from fedcredit.scoring.outputs import read_model_part

ROLES = ("bank", "tax", "utilities")
SETTINGS = ModelSettings(key_bits=1024, max_iter=4, bank_only_baseline=False, backend="mock")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return synth.write_nodes(synth.generate(1200, 5), tmp_path_factory.mktemp("data"))


class Services:
    """One node service process per role (``python -m fedcredit.node``), stopped at the end."""

    def __init__(self, root: Path, data):
        self.root, self.data = root, data
        self.procs: dict[str, P.Proc] = {}

    def work(self, role: str) -> Path:
        return self.root / "work" / role

    def start(self, role: str) -> None:
        cfg = {"role": role, "data": str(self.data[role]), "work-dir": str(self.work(role)),
               "out-dir": str(self.root / "out" / role)}
        proc = P.spawn(f"service-{role}", P.service_command(P.node_config_text(cfg), workers=1), dict(os.environ),
                       self.root / f"{role}.log")
        P.wait_service(self.work(role), proc, timeout=60)
        self.procs[role] = proc

    def kill(self, role: str) -> None:
        os.killpg(self.procs[role].popen.pid, signal.SIGKILL)
        self.procs[role].popen.wait(timeout=10)

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop()


def _drive(services: Services, run: str, kill_at: tuple[str, int] | None = None) -> int:
    """The coordinator in this process; every node is its service, reached as the relay reaches it."""
    seqs = {r: 0 for r in ROLES}

    def deliver(role: str, msgs: list[Message]) -> list[Message]:
        seqs[role] += 1
        if kill_at == (role, seqs[role]):  # killed between messages, started again: it resumes
            services.kill(role)
            services.start(role)
        data, sizes = join_messages(msgs)
        status, headers, body = channel.call(services.work(role), "POST", "/deliver", data,
                                             {channel.RUN: run, channel.SEQ: str(seqs[role]),
                                              channel.SIZES: json.dumps(sizes)})
        assert status == 200, channel.error_text(body)
        return split_messages(body, json.loads(headers[channel.SIZES.lower()]))

    return drive_bundles(JobCoordinator("svc-job", list(ROLES), SETTINGS), deliver)


def _weights(root: Path, run: str) -> dict[str, np.ndarray]:
    return {r: read_model_part(root / "out" / r / f"run-{run}" / "model" / r, r)[1] for r in ROLES}


@pytest.mark.slow
def test_a_killed_service_restarted_between_messages_resumes_with_identical_weights(tmp_path, data):
    services = Services(tmp_path, data)
    try:
        for role in ROLES:
            services.start(role)
        clean = _drive(services, "11")
        resumed = _drive(services, "12", kill_at=("tax", 9))
        assert resumed == clean
        first, second = _weights(tmp_path, "11"), _weights(tmp_path, "12")
        for role in ROLES:
            assert np.array_equal(first[role], second[role]), role
        # the restarted service answered a repeated delivery from its checkpoint, not by working twice
        assert "(replayed)" not in (tmp_path / "tax.log").read_text()
    finally:
        services.stop()


def test_the_service_refuses_strangers_and_names_its_role_in_errors(tmp_path, data):
    services = Services(tmp_path, data)
    try:
        services.start("tax")
        work = services.work("tax")
        sock = channel.socket_path(work)
        assert oct(sock.stat().st_mode & 0o777) == "0o600" and oct(work.stat().st_mode & 0o777) == "0o700"
        secret = (work / channel.SECRET).read_text()
        (work / channel.SECRET).write_text("0" * 64)  # a client without the node's secret
        status, _, body = channel.call(work, "GET", "/role")
        assert status == 401 and "secret" in channel.error_text(body)
        (work / channel.SECRET).write_text(secret)
        status, _, body = channel.call(work, "POST", "/deliver", b"junk", {channel.RUN: "5", channel.SEQ: "1",
                                                                          channel.SIZES: "[4]"})
        assert status == 422 and channel.error_text(body).startswith("[tax] ")
        status, _, body = channel.call(work, "POST", "/deliver", b"", {channel.RUN: "5", channel.SEQ: "x"})
        assert status == 400 and "X-Fedcredit-Seq" in channel.error_text(body)
        # a Flower task handed over by the node's flwr-clientapp launcher is checked before anything runs
        status, _, body = channel.call(work, "POST", "/task", b"[1]")
        assert status == 400 and "JSON object" in channel.error_text(body)
        bad = {"runtime_api_address": "127.0.0.1:9", "token": "not-hex", "insecure": True, "root_certificates": None}
        status, _, body = channel.call(work, "POST", "/task", json.dumps(bad).encode())
        assert status == 400 and channel.error_text(body).startswith("[tax] ") and "token" in channel.error_text(body)
        assert hand_to_service(str(work), bad) == 1  # the service took it and failed it: no second runner
    finally:
        services.stop()
    with pytest.raises(channel.ServiceDown, match="not answering.*fedcredit node start"):
        channel.call(services.work("tax"), "GET", "/role", wait=0.3)
    assert hand_to_service(str(services.work("tax")), bad) is None  # no service: Flower's own runner takes the task


def test_the_launcher_reads_the_superexec_arguments_and_leaves_others_to_flower(tmp_path):
    spec = task_spec(["--runtime-api-address", "127.0.0.1:9094", "--token", "ab" * 16, "--insecure",
                      "--parent-pid", "42"])
    assert spec == {"runtime_api_address": "127.0.0.1:9094", "token": "ab" * 16, "insecure": True,
                    "root_certificates": None}
    assert task_spec(["--runtime-api-address", "x:1", "--token-stdin"]) is None  # a form it does not know
    assert task_spec(["--token", "ab"]) is None
    shim = write_shim(tmp_path / "bin", tmp_path / "work dir")
    text = shim.read_text()
    assert os.access(shim, os.X_OK) and "--fedcredit-node-work '" in text and text.rstrip().endswith('"$@"')


def test_the_relay_imports_no_protocol_code_or_data_libraries():
    code = ("import sys, fedcredit.flower.relay_app; "
            "print([m for m in ('pandas', 'sklearn', 'pyarrow', 'fedcredit.protocols', 'fedcredit.node.service', "
            "'fedcredit.crypto', 'fedcredit.data') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_checkpoint_opens_only_with_the_secret_that_wrote_it(tmp_path):
    big = np.arange(50_000, dtype=np.int64)
    state = {"rows": big, "step": 3}
    store = CheckpointStore(run_folder(tmp_path, "9"), b"a" * 64)
    first = store.save(Checkpoint(state, 1, [b"reply"]))
    assert first.blobs_written == 1 and first.blob_bytes > big.nbytes
    second = store.save(Checkpoint(state, 2, [b"reply 2"]))  # the array is referenced, not written again
    assert second.blobs_written == 0 and second.state_bytes < 2_000
    with pytest.raises(ValueError, match="read-only"):
        big[0] = 1  # a stored array cannot change behind its blob
    loaded = CheckpointStore(run_folder(tmp_path, "9"), b"a" * 64).load()
    assert loaded.seq == 2 and np.array_equal(loaded.agent["rows"], np.arange(50_000)) and loaded.replies == [b"reply 2"]
    with pytest.raises(FedCreditError, match="not written by this node"):
        CheckpointStore(run_folder(tmp_path, "9"), b"b" * 64).load()
    raw = store.path.read_bytes()
    store.path.write_bytes(raw[:-1] + bytes([raw[-1] ^ 1]))
    with pytest.raises(FedCreditError, match="not written by this node"):
        store.load()
    store.path.write_bytes(raw.replace(b"\x00\x00\x00\x02", b"\x00\x00\x00\x01", 1))
    with pytest.raises(FedCreditError, match="format 1"):
        store.load()
    store.path.write_bytes(raw)
    blob = next(store.blobs.glob("*"))
    blob.write_bytes(blob.read_bytes()[:-1] + b"\x00")
    with pytest.raises(FedCreditError, match="damaged"):
        CheckpointStore(run_folder(tmp_path, "9"), b"a" * 64).load()


def test_views_and_their_bases_are_frozen_and_every_named_blob_survives_the_prune(tmp_path):
    """Regression: a simulated node served by two processes in turn lost a blob its checkpoint named."""
    base = np.arange(40_000, dtype=np.float64)
    state = {"base": base, "view": base[: 30_000], "again": base}
    first, second = (CheckpointStore(run_folder(tmp_path, "3"), b"k" * 64) for _ in range(2))
    first.save(Checkpoint(state, 1, []))
    with pytest.raises(ValueError, match="read-only"):
        base[0] = 7.0  # through the base, too: a cached view cannot go stale
    loaded = second.load()  # another process takes over the node
    second.save(Checkpoint({**loaded.agent, "new": np.ones(20_000)}, 2, [b"x" * 40_000]))
    assert loaded.agent["base"] is loaded.agent["again"]  # one object referenced twice stays one object
    again = first.load()  # and the first process, its cache stale, reads what the second wrote
    assert again.seq == 2 and np.array_equal(again.agent["view"], np.arange(30_000)) and again.replies == [b"x" * 40_000]
