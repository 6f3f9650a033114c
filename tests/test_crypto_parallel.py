"""Process-pool paths give the same results as inline runs and leave no worker behind."""

import os

import numpy as np
import pytest

from fedcredit.crypto import CryptoError, Packer, WorkerPool, generate_keypair


@pytest.fixture(scope="module")
def kp():
    return generate_keypair(512)


def test_pool_results_equal_inline_and_pool_shuts_down(kp):
    rng = np.random.default_rng(0)
    n = 400
    d = rng.integers(-1000, 1000, n)
    bins = rng.integers(0, 7, (n, 3))
    X = rng.integers(-300, 300, (n, 2))
    with WorkerPool(workers=2, min_work=0) as pool:
        v = kp.public_key.encrypt(d, scale_bits=0, pool=pool)
        assert pool._executor is not None  # really ran in worker processes
        g = v.grouped_sum(bins, pool=pool)
        r = v.dot(X, pool=pool)
        packed = Packer(kp.public_key, 32).pack(v, pool=pool)
        assert kp.decrypt_ints(v, pool=pool) == d.tolist()
        assert kp.decrypt(packed, pool=pool).tolist() == d.tolist()
        worker_pids = list(pool._executor._processes)
        assert len(worker_pids) == 2
    assert pool._executor is None
    for pid in worker_pids:  # workers are gone (or at most reaped zombies), not orphaned
        assert not os.path.exists(f"/proc/{pid}") or "Z" in open(f"/proc/{pid}/stat").read().split()[2]
    inline = WorkerPool(workers=1)
    expect = np.zeros((3, 7), dtype=np.int64)
    for j in range(3):
        np.add.at(expect[j], bins[:, j], d)
    assert kp.decrypt_ints(g, pool=inline) == expect.ravel().tolist()
    assert kp.decrypt_ints(r, pool=inline) == (X.T @ d).tolist()


def test_worker_count_validated():
    with pytest.raises(CryptoError, match="workers"):
        WorkerPool(workers=0)
    assert WorkerPool().workers >= 1
