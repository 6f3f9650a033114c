"""Paillier engine: correctness against phe and plaintext, bounds, mock backend parity."""

import numpy as np
import pytest
from phe import paillier

from fedcredit.crypto import (
    CapacityError,
    CryptoError,
    EncryptedVector,
    KeyMismatchError,
    MockBackendRefused,
    generate_keypair,
    get_backend,
)
from fedcredit.crypto.paillier_arith import PaillierArith, PaillierDecryptor


@pytest.fixture(scope="module")
def kp():
    return generate_keypair(1024)


@pytest.fixture(scope="module")
def kp2048():
    return generate_keypair(2048)


@pytest.fixture(scope="module")
def mock():
    return generate_keypair(1024, backend="mock")


def rand_values(rng, size=40):
    x = rng.normal(0, 1000, size)
    x[:4] = [0.0, -0.0, 1e-5, -123456.75]
    return x


def test_encrypt_decrypt_roundtrip_with_negatives(kp):
    rng = np.random.default_rng(1)
    x = rand_values(rng)
    v = kp.public_key.encrypt(x, scale_bits=20)
    np.testing.assert_allclose(kp.decrypt(v), np.rint(x * 2**20) / 2**20, rtol=0, atol=0)


def test_ciphertexts_are_randomized(kp):
    v = kp.public_key.encrypt(np.zeros(3))
    assert len(set(int(c) for c in v.data)) == 3


def test_capacity_edge_values_exact(kp):
    pk = kp.public_key
    ints = [0, 1, -1, pk.capacity, -pk.capacity]
    v = EncryptedVector.encrypt_ints(pk, ints)
    assert kp.decrypt_ints(v) == ints
    with pytest.raises(CapacityError, match="capacity"):
        EncryptedVector.encrypt_ints(pk, [pk.capacity + 1])


def test_engine_ciphertext_decrypts_with_phe_and_back(kp):
    pk = kp.public_key
    ints = [0, 7, -7, 2**200, -(2**200)]
    v = EncryptedVector.encrypt_ints(pk, ints)
    assert [kp.phe.decrypt(e) for e in v.to_phe()] == ints
    phe_pub, phe_priv = pk.phe, kp.phe
    numbers = [phe_pub.encrypt(i) for i in ints]
    w = EncryptedVector.from_phe(pk, numbers, bound=2**200)
    assert kp.decrypt_ints(w) == ints
    assert [phe_priv.decrypt(e) for e in (w + w).to_phe()] == [2 * i for i in ints]


def test_fixed_point_interop_with_phe_base16(kp):
    pk = kp.public_key
    x = np.array([1.5, -2.25, 1000.0625])
    v = pk.encrypt(x, scale_bits=16)
    assert [kp.phe.decrypt(e) for e in v.to_phe()] == pytest.approx(x.tolist(), abs=0)
    with pytest.raises(CryptoError, match="power of 16"):
        pk.encrypt(x, scale_bits=10).to_phe()


def test_raw_arith_matches_phe_primitives(kp):
    """The gmpy2 fast path equals phe's raw encryption/decryption arithmetic."""
    pk = kp.public_key
    arith = PaillierArith(pk.n)
    dec = PaillierDecryptor(pk.n, kp.p, kp.q)
    ms = [0, 1, 12345, pk.n - 1]
    cts = arith.encrypt(ms)
    assert [kp.phe.raw_decrypt(int(c)) for c in cts] == ms
    phe_cts = [pk.phe.raw_encrypt(m) for m in ms]
    assert dec.decrypt(phe_cts) == [0, 1, 12345, -1]
    # h_s is an n-th power: its ciphertexts decrypt to zero
    assert kp.phe.raw_decrypt(int(arith.h_s)) == 0


def test_homomorphic_ops_match_plaintext(kp):
    rng = np.random.default_rng(2)
    a_int = rng.integers(-(10**9), 10**9, 30)
    b_int = rng.integers(-(10**9), 10**9, 30)
    s_int = rng.integers(-1000, 1000, 30)
    pk = kp.public_key
    a = pk.encrypt(a_int, scale_bits=0)
    b = pk.encrypt(b_int, scale_bits=0)
    assert kp.decrypt_ints(a + b) == (a_int + b_int).tolist()
    assert kp.decrypt_ints(a - b) == (a_int - b_int).tolist()
    assert kp.decrypt_ints(a.add_plain(b_int)) == (a_int + b_int).tolist()
    assert kp.decrypt_ints(a.add_plain(5)) == (a_int + 5).tolist()
    assert kp.decrypt_ints(a.mul_scalar(s_int)) == (a_int * s_int).tolist()
    assert kp.decrypt_ints(a.mul_scalar(-3)) == (a_int * -3).tolist()
    assert kp.decrypt_ints(a.sum()) == [int(a_int.sum())]
    assert kp.decrypt_ints(a.rerandomize()) == a_int.tolist()


def test_float_scalar_multiplication_adds_scales(kp):
    x = np.array([1.5, -2.0, 0.25])
    v = kp.public_key.encrypt(x, scale_bits=8).mul_scalar(np.array([0.5, -1.5, 4.0]), scale_bits=4)
    assert v.scale_bits == 12
    np.testing.assert_array_equal(kp.decrypt(v), [0.75, 3.0, 1.0])


def test_overflow_is_detected_before_wrapping(kp):
    pk = kp.public_key
    big = EncryptedVector.encrypt_ints(pk, [pk.capacity // 2 + 1, 1])
    with pytest.raises(CapacityError):
        big + big
    with pytest.raises(CapacityError):
        big.mul_scalar(3)
    with pytest.raises(CapacityError):
        big.add_plain(pk.capacity)
    with pytest.raises(CapacityError):
        EncryptedVector.encrypt_ints(pk, [pk.capacity // 3] * 4).sum()
    half = EncryptedVector.encrypt_ints(pk, [pk.capacity // 2])
    assert kp.decrypt_ints(half + half) == [2 * (pk.capacity // 2)]


def test_bound_tracks_grouped_sum_and_dot(kp):
    pk = kp.public_key
    v = EncryptedVector.encrypt_ints(pk, [pk.capacity // 4] * 8)
    with pytest.raises(CapacityError, match="grouped_sum"):
        v.grouped_sum(np.zeros(8, dtype=int))
    ok = v.grouped_sum(np.array([0, 1] * 4))  # 4 per bin fits exactly
    assert kp.decrypt_ints(ok) == [4 * (pk.capacity // 4)] * 2
    with pytest.raises(CapacityError, match="dot"):
        v.dot(np.full((8, 1), 2))


def test_nonfinite_and_bad_types_rejected(kp):
    with pytest.raises(CryptoError, match="NaN"):
        kp.public_key.encrypt(np.array([1.0, np.nan]))
    with pytest.raises(CryptoError, match="numeric"):
        kp.public_key.encrypt(np.array(["a"]))
    with pytest.raises(CryptoError, match="integer"):
        kp.public_key.encrypt(np.ones(3)).dot(np.ones((3, 2)))


def test_mixing_keys_or_scales_rejected(kp, mock):
    a = kp.public_key.encrypt(np.ones(2), scale_bits=8)
    with pytest.raises(KeyMismatchError, match="scales"):
        a + kp.public_key.encrypt(np.ones(2), scale_bits=16)
    with pytest.raises(KeyMismatchError, match="different keys"):
        a + mock.public_key.encrypt(np.ones(2), scale_bits=8)
    with pytest.raises(KeyMismatchError):
        mock.decrypt(a)


def test_grouped_sum_matches_numpy(kp):
    rng = np.random.default_rng(3)
    n, f, nb = 300, 4, 6
    d = rng.integers(-1000, 1000, n)
    bins = rng.integers(0, nb, (n, f))
    bins[:200, 1] = 2  # a dominant bin: exercises the total-minus-others path
    g = kp.public_key.encrypt(d, scale_bits=0).grouped_sum(bins, nb)
    expect = np.zeros((f, nb), dtype=np.int64)
    for j in range(f):
        np.add.at(expect[j], bins[:, j], d)
    assert g.shape == (f, nb)
    assert kp.decrypt_ints(g) == expect.ravel().tolist()


def test_grouped_sum_validates_bins(kp):
    v = kp.public_key.encrypt(np.ones(4))
    with pytest.raises(CryptoError, match=">= 0"):
        v.grouped_sum(np.array([0, -1, 0, 0]))
    with pytest.raises(CryptoError, match="n_bins"):
        v.grouped_sum(np.array([0, 5, 0, 0]), n_bins=3)
    with pytest.raises(CryptoError, match="rows"):
        v.grouped_sum(np.zeros(5, dtype=int))


def test_dot_matches_numpy_signed_int16(kp):
    rng = np.random.default_rng(4)
    n, f = 200, 5
    d = rng.integers(-(2**20), 2**20, n)
    X = rng.integers(-(2**15), 2**15, (n, f)).astype(np.int16)
    X[:, 2] = 0
    X[:, 3] = rng.integers(0, 2, n)  # one-hot-like column
    r = kp.public_key.encrypt(d, scale_bits=0).dot(X)
    assert kp.decrypt_ints(r) == (X.astype(np.int64).T @ d).tolist()


def test_dot_fixed_point_scales(kp):
    x = np.array([0.5, -0.25, 2.0])
    X = np.array([[3], [-4], [1]])
    r = kp.public_key.encrypt(x, scale_bits=8).dot(X, scale_bits=2)
    assert r.scale_bits == 10
    np.testing.assert_allclose(kp.decrypt(r), [(X[:, 0] @ x) / 4])


def test_2048_bit_keys(kp2048):
    pk = kp2048.public_key
    assert pk.bits == 2048 and pk.ciphertext_bytes == 512
    x = np.array([-1.0, 0.0, 2.5, 1e6])
    v = pk.encrypt(x)
    np.testing.assert_array_equal(kp2048.decrypt(v + v), 2 * x)
    assert [kp2048.phe.decrypt(e) for e in v.to_phe()] == x.tolist()
    assert len(v.to_bytes()) == 4 * 512


def test_mock_backend_matches_paillier(kp, mock):
    rng = np.random.default_rng(5)
    d = rng.normal(0, 10, 50)
    bins = rng.integers(0, 5, (50, 3))
    X = rng.integers(-50, 50, (50, 2))
    results = []
    for keys in (kp, mock):
        v = keys.public_key.encrypt(d, scale_bits=12)
        w = (v + v.mul_scalar(-2)).add_plain(1.0)
        results.append([keys.decrypt(w), keys.decrypt(v.grouped_sum(bins)), keys.decrypt(v.dot(X)), keys.decrypt(v.sum())])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
    assert mock.public_key.ciphertext_bytes == kp.public_key.ciphertext_bytes


def test_mock_refused_in_deployment_mode(monkeypatch):
    with pytest.raises(MockBackendRefused, match="deployment"):
        get_backend("mock", deployment=True)
    with pytest.raises(MockBackendRefused):
        generate_keypair(512, backend="mock", deployment=True)
    monkeypatch.setenv("FEDCREDIT_DEPLOYMENT", "1")
    with pytest.raises(MockBackendRefused):
        get_backend("mock")
    assert get_backend("paillier").name == "paillier"
    monkeypatch.delenv("FEDCREDIT_DEPLOYMENT")
    assert get_backend("mock").name == "mock"
    assert get_backend().name == "paillier"
    with pytest.raises(CryptoError, match="unknown"):
        get_backend("rot13")


def test_phe_interop_rejects_foreign_key(kp):
    other = paillier.generate_paillier_keypair(n_length=512)[0]
    with pytest.raises(KeyMismatchError):
        EncryptedVector.from_phe(kp.public_key, [other.encrypt(1)], bound=1)


def test_empty_bins_and_zero_columns_are_fresh_encryptions(kp):
    pk = kp.public_key
    v = pk.encrypt(np.array([1.0, 2.0, 3.0]))
    g = v.grouped_sum(np.array([0, 0, 2]), n_bins=4)
    r = v.dot(np.zeros((3, 2), dtype=np.int64))
    assert all(int(c) != 1 for c in g.data + r.data)
    assert len({int(c) for c in r.data}) == 2
    np.testing.assert_array_equal(kp.decrypt(g), [[3.0, 0.0, 3.0, 0.0]])
    np.testing.assert_array_equal(kp.decrypt(r), [0.0, 0.0])


def test_key_holder_crt_encryption_equals_public_encryption(kp):
    """The key holder's CRT path gives the very ciphertexts the public key's path gives for the same noise, and
    phe decrypts them; its worker spec rebuilds the same object."""
    import os

    from fedcredit.crypto.backend import arith_from_spec
    from fedcredit.crypto.paillier_arith import PaillierCrtArith

    pk = kp.public_key
    crt = kp.encryptor
    assert isinstance(crt, PaillierCrtArith)
    public = PaillierArith(pk.n, crt.h_s, crt.exponent_bits)
    noise = os.urandom(crt.exponent_bits // 8 * 5)
    assert crt.factors_from(noise) == public.factors_from(noise)
    ms = [0, 1, -1, 12345, pk.capacity, -pk.capacity]
    assert [kp.phe.raw_decrypt(int(c)) for c in crt.encrypt(ms)] == [m % pk.n for m in ms]
    rebuilt = arith_from_spec(crt.spec())
    assert rebuilt.factors_from(noise) == public.factors_from(noise)
    x = np.array([0.5, -3.25, 1e6, -7.0])
    v = kp.encrypt(x, scale_bits=20)
    assert v.key == pk and len(set(int(c) for c in v.data)) == len(x)
    np.testing.assert_array_equal(kp.decrypt(v), x)
    assert kp.decrypt_ints(kp.encrypt_ints([3, -4], 0)) == [3, -4]


def test_mock_keypair_encrypts_with_its_own_arithmetic(mock):
    assert mock.encryptor is mock.public_key.arith
    assert mock.decrypt_ints(mock.encrypt_ints([5, -6], 0)) == [5, -6]
