"""The crypto worker pool on a Ray cluster gives the process pool's results bit for bit, and stops cleanly.

One local Ray cluster (``ray start --head`` on 127.0.0.1 with 2 CPUs, its own session) serves
the whole module; afterwards none of its processes is left. Deterministic tasks (grouped and
joint sums, X^T[[d]], packing, decryption, PSI blinding) must give the same integers as the
process pool on the same ciphertexts; encryption is randomized by design, so its ciphertexts
must decrypt to the same values. A small whole job on the in-process engine gives the same
model parts and scores with either pool.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from fedcredit.common.errors import FedCreditError
from fedcredit.crypto import Packer, RayPool, WorkerPool, generate_keypair, make_pool
from fedcredit.crypto import ray_pool
from fedcredit.crypto.blinding import BlindingKey, blind, hash_ids
from fedcredit.data import synth
from fedcredit.jobs.in_process import run_job
from fedcredit.protocols.job import ModelSettings, NodeConfig
from fedcredit.node.config import pool_settings
from fedcredit_netlab.ray_head import LocalRayHead, free_port


@pytest.fixture(scope="module")
def head():
    with LocalRayHead(cpus=2) as cluster:
        yield cluster
    assert cluster.pids() == [], "processes of the test's Ray cluster outlived it"


@pytest.fixture(scope="module")
def kp():
    return generate_keypair(1024)


def _inputs(n: int = 400):
    """Values, bin codes with every bin filled (an empty bin's sum is a fresh random zero) and a matrix
    without zero columns: every result below is then a deterministic function of the ciphertexts."""
    rng = np.random.default_rng(3)
    d = rng.integers(-1000, 1000, n)
    bins = np.stack([rng.permutation(np.arange(n) % 7) for _ in range(3)], axis=1)
    X = rng.integers(1, 300, (n, 2))
    return d, bins, X


def _results(kp, v, bins, X, pool) -> dict:
    points = hash_ids([f"9131{i:014d}" for i in range(300)], b"test")
    return {"grouped_sum": v.grouped_sum(bins, pool=pool).data,
            "joint_sum": v._grouped_sum(bins, None, pool, tuple_size=2).data,
            "dot": v.dot(X, pool=pool).data,
            "pack": Packer(kp.public_key, 32).pack(v, pool=pool).inner.data,
            "decrypt": kp.decrypt_ints(v, pool=pool),
            "blind": blind(BlindingKey(b"\x07" * 32), points, pool)}


@pytest.mark.slow
def test_ray_pool_results_are_the_process_pools(head, kp):
    d, bins, X = _inputs()
    with WorkerPool(2, min_work=0) as local:
        v = kp.public_key.encrypt(d, scale_bits=0, pool=local)
        expected = _results(kp, v, bins, X, local)
    with RayPool(head.address, min_work=0, private_tasks_on_cluster=True) as pool:
        assert pool.cpus() == 2 and pool.chunks(10**9) == 2 and pool.chunks(0) == 2
        got = _results(kp, v, bins, X, pool)
        assert pool.submitted == 2 * len(got)  # every task went to the cluster, in 2 chunks
        encrypted = kp.public_key.encrypt(d, scale_bits=0, pool=pool)
        by_holder = kp.encrypt(d, scale_bits=0, pool=pool)  # the key holder's CRT arithmetic
        rerandomized = v.rerandomize(pool=pool)
    for task, values in expected.items():
        assert got[task] == values, f"{task}: the Ray pool's result differs from the process pool's"
    assert got["decrypt"] == d.tolist()
    assert kp.decrypt_ints(encrypted) == d.tolist() and encrypted.data != v.data
    assert kp.decrypt_ints(rerandomized) == d.tolist() and rerandomized.data != v.data
    assert kp.decrypt_ints(by_holder) == d.tolist()


@pytest.mark.slow
def test_private_key_tasks_stay_local_by_default(head, kp):
    """Decryption, the key holder's own (CRT) encryption and PSI blinding need a secret: they stay here."""
    d, _, _ = _inputs(300)
    with RayPool(head.address, min_work=0, workers=2) as pool:
        v = kp.public_key.encrypt(d, scale_bits=0, pool=pool)
        assert pool.submitted == 2  # public-key work goes to the cluster
        assert kp.decrypt_ints(v, pool=pool) == d.tolist()
        assert kp.decrypt_ints(kp.encrypt(d, scale_bits=0, pool=pool), pool=pool) == d.tolist()
        blind(BlindingKey(b"\x07" * 32), hash_ids([f"9131{i:014d}" for i in range(300)], b"test"), pool)
        assert pool.submitted == 2, "a private key was sent to the cluster"
        assert pool._local._executor is not None  # they ran in this machine's worker processes


@pytest.mark.slow
def test_job_on_the_ray_pool_equals_the_process_pool(head, tmp_path, monkeypatch):
    paths = synth.write_nodes(synth.generate(1500, 5), tmp_path / "data")
    settings = ModelSettings(key_bits=1024, max_iter=4, bank_only_baseline=False)

    def job(out, **pool):
        nodes = [NodeConfig(r, str(paths[r]), out_dir=str(tmp_path / out)) for r in ("bank", "tax", "utilities")]
        return run_job(nodes, settings, run_id="same", **pool)

    reference = job("local", workers=2)
    monkeypatch.setattr(ray_pool, "MIN_PARALLEL_WORK", 0)  # so that a job this small still runs on the cluster
    pools = []
    monkeypatch.setattr(RayPool, "run", lambda self, *a, _run=RayPool.run: (pools.append(self), _run(self, *a))[1])
    on_ray = job("ray", ray_address=head.address)
    assert pools and max(p.submitted for p in pools) > 0, "the job never used the Ray cluster"
    assert on_ray["metrics"] == reference["metrics"] and on_ray["intersection"] == reference["intersection"]
    for role in ("bank", "tax", "utilities"):
        assert (tmp_path / "ray" / "model" / role / "weights.json").read_bytes() == \
               (tmp_path / "local" / "model" / role / "weights.json").read_bytes()
    scores = [pq.read_table(tmp_path / out / "scores.parquet").to_pandas().sort_values("id", ignore_index=True)
              for out in ("ray", "local")]  # (rows come in the PSI's order, which its fresh blinding keys decide)
    assert scores[0].equals(scores[1])


def test_bad_and_unreachable_addresses_fail_before_any_work():
    for bad in ("", "nohost", "host:0", "host:port", "ray://"):
        with pytest.raises(FedCreditError, match="Ray address"):
            make_pool(ray_address=bad)
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(FedCreditError, match=f"no Ray cluster answers at {address}"):
        make_pool(ray_address=address)
    assert isinstance(make_pool(2), WorkerPool)


def test_node_config_selects_the_pool():
    assert pool_settings({}) == {"ray_address": None, "private_tasks_on_cluster": False}
    assert pool_settings({"ray-address": "10.0.0.5:6379", "ray-private-keys": "true"}) == \
        {"ray_address": "10.0.0.5:6379", "private_tasks_on_cluster": True}
    with pytest.raises(FedCreditError, match="node config ray-address: a Ray address must be"):
        pool_settings({"ray-address": "10.0.0.5"})
    with pytest.raises(FedCreditError, match="ray-private-keys must be true or false"):
        pool_settings({"ray-address": "local", "ray-private-keys": "yes"})


def test_node_service_refuses_to_start_without_its_ray_cluster(tmp_path, capsys):
    from fedcredit.node.__main__ import main

    address = f"127.0.0.1:{free_port()}"
    config = f"role='tax' data='{tmp_path / 'tax.parquet'}' work-dir='{tmp_path / 'work'}' ray-address='{address}'"
    assert main(["--node-config", config]) == 2
    assert f"no Ray cluster answers at {address}" in capsys.readouterr().err


def test_job_file_ray_address_is_checked_and_needs_the_in_process_engine(tmp_path):
    from fedcredit.jobs import runner
    from fedcredit.jobs.jobfile import read_job

    job = tmp_path / "job.toml"
    text = '[job]\nray_address = "{}"\n[nodes.bank]\ndata = "b.parquet"\n[nodes.tax]\ndata = "t.parquet"\n'
    job.write_text(text.format("127.0.0.1:6379"))
    assert read_job(job).ray_address == "127.0.0.1:6379"
    job.write_text(text.format("head"))
    with pytest.raises(FedCreditError, match=r"job.toml: \[job\] ray_address: a Ray address must be"):
        read_job(job)
    with pytest.raises(FedCreditError, match="needs the in-process engine"):
        runner.run([], ModelSettings(), tmp_path / "out", engine="simulation", ray_address="local")
    assert not (tmp_path / "out").exists()


def test_a_port_that_is_no_ray_head_fails_within_the_join_timeout(tmp_path):
    """(In a process of its own: the abandoned join stays behind in it.)"""
    script = ("import socket, sys, time\n"
              "from fedcredit.crypto import make_pool, ray_pool\n"
              "listener = socket.create_server(('127.0.0.1', 0))\n"
              "ray_pool.JOIN_TIMEOUT = 3\n"
              "t = time.monotonic()\n"
              "try:\n"
              "    make_pool(ray_address=f'127.0.0.1:{listener.getsockname()[1]}')\n"
              "except Exception as exc:\n"
              "    print(type(exc).__name__, exc, round(time.monotonic() - t))\n")
    run = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                         text=True, timeout=60)
    assert "CryptoError" in run.stdout and "did not answer within 3 s" in run.stdout, run.stdout + run.stderr[-2000:]
