"""Exact ciphertext serialization: bytes and Arrow round trips, malformed input rejected."""

import numpy as np
import pyarrow as pa
import pytest

from fedcredit.crypto import EncryptedVector, KeyMismatchError, SerializationError, generate_keypair


@pytest.fixture(scope="module", params=["paillier", "mock"])
def kp(request):
    return generate_keypair(1024, backend=request.param)


@pytest.fixture(scope="module")
def vec(kp):
    return kp.public_key.encrypt(np.array([-3.5, 0.0, 7.25, 1e9]))


def test_bytes_are_fixed_width_big_endian(kp, vec):
    width = kp.public_key.ciphertext_bytes
    assert width == 256
    data = vec.to_bytes()
    assert len(data) == 4 * width
    assert int.from_bytes(data[width : 2 * width], "big") == int(vec.data[1])


def test_bytes_roundtrip(kp, vec):
    back = EncryptedVector.from_bytes(kp.public_key, vec.to_bytes(), scale_bits=16, bound=vec.bound)
    assert [int(c) for c in back.data] == [int(c) for c in vec.data]
    np.testing.assert_array_equal(kp.decrypt(back), kp.decrypt(vec))


def test_message_roundtrip_keeps_shape_and_checks_key(kp):
    v = kp.public_key.encrypt(np.arange(6.0).reshape(2, 3))
    back = EncryptedVector.from_message(kp.public_key, v.to_bytes(), v.meta())
    assert back.shape == (2, 3)
    np.testing.assert_array_equal(kp.decrypt(back), np.arange(6.0).reshape(2, 3))
    other = generate_keypair(512).public_key
    with pytest.raises(KeyMismatchError):
        EncryptedVector.from_message(other, v.to_bytes(), v.meta())


def test_arrow_roundtrip_including_slices(kp, vec):
    arr = vec.to_arrow()
    assert arr.type == pa.binary(kp.public_key.ciphertext_bytes)
    back = EncryptedVector.from_arrow(kp.public_key, arr, scale_bits=16, bound=vec.bound)
    np.testing.assert_array_equal(kp.decrypt(back), kp.decrypt(vec))
    sliced = EncryptedVector.from_arrow(kp.public_key, arr.slice(1, 2), scale_bits=16, bound=vec.bound)
    np.testing.assert_array_equal(kp.decrypt(sliced), kp.decrypt(vec)[1:3])
    chunked = pa.chunked_array([arr.slice(0, 2), arr.slice(2)])
    assert EncryptedVector.from_arrow(kp.public_key, chunked, scale_bits=16, bound=vec.bound).to_bytes() == vec.to_bytes()


def test_malformed_bytes_rejected(kp, vec):
    pk = kp.public_key
    data = vec.to_bytes()
    with pytest.raises(SerializationError, match="multiple"):
        EncryptedVector.from_bytes(pk, data[:-1], scale_bits=16, bound=1)
    with pytest.raises(SerializationError, match="expected 3"):
        EncryptedVector.from_bytes(pk, data, scale_bits=16, bound=1, shape=(3,))
    too_big = (pk.n * pk.n).to_bytes(pk.ciphertext_bytes, "big")
    with pytest.raises(SerializationError, match="ciphertext 1 is out of range"):
        EncryptedVector.from_bytes(pk, data[: pk.ciphertext_bytes] + too_big, scale_bits=16, bound=1)
    with pytest.raises(SerializationError, match="bytes"):
        EncryptedVector.from_bytes(pk, "abc", scale_bits=16, bound=1)


def test_zero_ciphertext_rejected_for_paillier():
    pk = generate_keypair(512).public_key
    with pytest.raises(SerializationError, match="out of range"):
        EncryptedVector.from_bytes(pk, bytes(pk.ciphertext_bytes), scale_bits=0, bound=0)


def test_malformed_arrow_rejected(kp, vec):
    pk = kp.public_key
    with pytest.raises(SerializationError, match="fixed_size_binary"):
        EncryptedVector.from_arrow(pk, pa.array([b"x"]), scale_bits=16, bound=1)
    with pytest.raises(SerializationError, match="fixed_size_binary"):
        EncryptedVector.from_arrow(pk, pa.array([b"x" * 8], type=pa.binary(8)), scale_bits=16, bound=1)
    with_null = pa.array([vec.to_bytes()[: pk.ciphertext_bytes], None], type=pa.binary(pk.ciphertext_bytes))
    with pytest.raises(SerializationError, match="null"):
        EncryptedVector.from_arrow(pk, with_null, scale_bits=16, bound=1)
    with pytest.raises(SerializationError, match="pyarrow"):
        EncryptedVector.from_arrow(pk, [1, 2], scale_bits=16, bound=1)
