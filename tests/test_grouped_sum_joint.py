"""Joint-cell (feature tuple) grouped sums: exact, equal to the per-feature algorithm, and cheaper."""

import numpy as np
import pytest

from fedcredit.crypto import CapacityError, EncryptedVector, WorkerPool, generate_keypair, kernels
from fedcredit.crypto.mock_arith import MockArith

INLINE = WorkerPool(workers=1)


@pytest.fixture(scope="module")
def keys():
    return {"paillier": generate_keypair(1024), "mock": generate_keypair(1024, backend="mock")}


@pytest.fixture(scope="module")
def pool():
    with WorkerPool(workers=2, min_work=0) as p:
        yield p


def expected(d: np.ndarray, bins: np.ndarray, nb: list[int]) -> np.ndarray:
    out = np.zeros((bins.shape[1], max(nb)), dtype=np.int64)
    for j in range(bins.shape[1]):
        out[j, : nb[j]] = np.bincount(bins[:, j], weights=d, minlength=nb[j]).astype(np.int64)
    return out


def random_case(rng, rows: int, feats: int):
    nb = rng.choice([1, 2, 11, 33], feats).tolist()
    cols = []
    for m in nb:
        present = rng.choice(m, max(1, m // 2), replace=False)  # about half the bins stay empty
        p = rng.dirichlet(np.full(len(present), 0.3))  # skewed: some bins dominate
        cols.append(rng.choice(present, rows, p=p))
    bins = np.stack(cols, axis=1) if rows else np.zeros((0, feats), dtype=np.int64)
    return rng.integers(-(2**20), 2**20, rows), bins.astype(np.int64), nb


def cases(seed: int):
    rng = np.random.default_rng(seed)
    for rows in (0, 1, 2, 17, 300, 3000):
        for feats in (1, 2, 3, 4, 5, 7):
            if rows < 3000 or feats in (5, 7):
                yield random_case(rng, rows, feats)


@pytest.mark.parametrize("backend", ["mock", "paillier"])
def test_equals_numpy_and_per_feature_inline(keys, backend):
    kp = keys[backend]
    for d, bins, nb in cases(1):
        v = EncryptedVector.encrypt_ints(kp.public_key, d.tolist(), pool=INLINE)
        old = v._grouped_sum(bins, nb, pool=INLINE, tuple_size=1)
        want = expected(d, bins, nb).ravel().tolist()
        assert kp.decrypt_ints(old, pool=INLINE) == want
        for size in (None, 2, 3, 4):
            new = v._grouped_sum(bins, nb, pool=INLINE, tuple_size=size)
            assert new.shape == old.shape and new.bound == old.bound
            assert kp.decrypt_ints(new, pool=INLINE) == want, (bins.shape, nb, size)
            # same products of the same ciphertexts: identical wherever a bin is non-empty
            for a, b, w in zip(old.data, new.data, expected(np.ones_like(d), bins, nb).ravel()):
                assert w == 0 or a == b


@pytest.mark.parametrize("backend", ["mock", "paillier"])
def test_equals_numpy_with_pool(keys, pool, backend):
    kp = keys[backend]
    rng = np.random.default_rng(2)
    for rows, feats in [(0, 3), (1, 4), (5, 7), (400, 5), (3000, 7)]:
        d, bins, nb = random_case(rng, rows, feats)
        v = EncryptedVector.encrypt_ints(kp.public_key, d.tolist(), pool=INLINE)
        want = expected(d, bins, nb).ravel().tolist()
        for size in (1, None, 3):
            g = v._grouped_sum(bins, nb, pool=pool, tuple_size=size)
            assert kp.decrypt_ints(g, pool=INLINE) == want
    assert pool._executor is not None  # the row chunks really ran in worker processes


def test_uniform_and_default_n_bins(keys):
    kp = keys["mock"]
    rng = np.random.default_rng(3)
    d = rng.integers(-1000, 1000, 2000)
    bins = rng.integers(0, 11, (2000, 7))
    v = EncryptedVector.encrypt_ints(kp.public_key, d.tolist(), pool=INLINE)
    g = v.grouped_sum(bins, pool=INLINE)
    assert g.shape == (7, 11)
    assert kp.decrypt_ints(g, pool=INLINE) == expected(d, bins, [11] * 7).ravel().tolist()
    one_d = v.grouped_sum(bins[:, 0], 12, pool=INLINE)
    assert one_d.shape == (1, 12)


def test_skipped_cells_are_derived_from_the_total(keys):
    kp = keys["paillier"]
    rng = np.random.default_rng(4)
    rows, feats = 3000, 9
    bins = np.where(rng.random((rows, feats)) < 0.9, 3, rng.integers(0, 11, (rows, feats)))
    counts = [np.bincount(bins[:, j], minlength=11) for j in range(feats)]
    plan = kernels.choose_plan(bins.T.copy(), [11] * feats, counts, 1, 3)
    assert any(s >= 0 for s in plan["skip_cells"]) and -1 in plan["skip_cells"] and plan["total_from"] >= 0
    d = rng.integers(-(2**20), 2**20, rows)
    v = EncryptedVector.encrypt_ints(kp.public_key, d.tolist(), pool=INLINE)
    g = v._grouped_sum(bins, 11, pool=INLINE, tuple_size=3)
    assert kp.decrypt_ints(g, pool=INLINE) == expected(d, bins, [11] * feats).ravel().tolist()


def test_capacity_check_unchanged(keys):
    pk = keys["paillier"].public_key
    v = EncryptedVector.encrypt_ints(pk, [pk.capacity // 4] * 8, pool=INLINE)
    for size in (None, 1, 3):
        with pytest.raises(CapacityError, match="grouped_sum"):
            v._grouped_sum(np.zeros((8, 3), dtype=int), pool=INLINE, tuple_size=size)
        ok = v._grouped_sum(np.array([[0, 1, 0]] * 4 + [[1, 0, 1]] * 4), 3, pool=INLINE, tuple_size=size)
        assert keys["paillier"].decrypt_ints(ok, pool=INLINE) == ([4 * (pk.capacity // 4)] * 2 + [0]) * 3


class CountingMock(MockArith):
    """MockArith that counts group multiplications."""

    calls = 0

    def mul(self, a, b):
        CountingMock.calls += 1
        return super().mul(a, b)


def test_large_node_uses_tuples_and_halves_multiplications():
    kp = generate_keypair(1024, backend="mock")
    pk = kp.public_key
    pk._arith = CountingMock(pk.n)
    rng = np.random.default_rng(5)
    rows, feats, nb = 20_000, 30, 11
    d = rng.integers(-1000, 1000, rows)
    bins = rng.integers(0, nb, (rows, feats))
    counts = [np.bincount(bins[:, j], minlength=nb) for j in range(feats)]
    assert kernels.choose_plan(bins.T.copy(), [nb] * feats, counts, 1)["k"] > 1
    v = EncryptedVector.encrypt_ints(pk, d.tolist(), pool=INLINE)
    calls = {}
    for size in (1, None):
        CountingMock.calls = 0
        g = v._grouped_sum(bins, nb, pool=INLINE, tuple_size=size)
        calls[size] = CountingMock.calls
        assert kp.decrypt_ints(g, pool=INLINE) == expected(d, bins, [nb] * feats).ravel().tolist()
    assert calls[1] >= 2 * calls[None], calls


def test_small_node_falls_back_to_small_tuples():
    rng = np.random.default_rng(6)
    for rows in (1, 5, 40):
        bins = rng.integers(0, 11, (rows, 30))
        counts = [np.bincount(bins[:, j], minlength=11) for j in range(30)]
        assert kernels.choose_plan(bins.T.copy(), [11] * 30, counts, 1)["k"] <= 2
    assert kernels.choose_plan(np.zeros((4, 0), dtype=np.int64), [3] * 4, [np.zeros(3, int)] * 4, 1)["k"] == 1


def test_feature_tuples_respect_cell_cap():
    assert kernels.feature_tuples([11] * 7, 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert kernels.feature_tuples([300, 300, 2, 2], 4) == [[0], [1, 2, 3]]
    assert kernels.feature_tuples([], 3) == []
