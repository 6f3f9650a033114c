"""Slot packing: round trips with negatives, homomorphic packing, slot overflow guards."""

import numpy as np
import pytest

from fedcredit.crypto import CapacityError, CryptoError, EncryptedVector, Packer, PackedVector, generate_keypair


@pytest.fixture(scope="module")
def kp():
    return generate_keypair(1024)


def test_pack_unpack_ints_with_negatives(kp):
    packer = Packer(kp.public_key, slot_bits=20)
    rng = np.random.default_rng(0)
    ints = rng.integers(-(2**19) + 1, 2**19, 200).tolist() + [packer.slot_max, -packer.slot_max, 0]
    assert packer.unpack_ints(packer.pack_ints(ints), len(ints)) == ints
    with pytest.raises(CapacityError, match="slot"):
        packer.pack_ints([packer.slot_max + 1])


def test_homomorphic_packing_reduces_decryptions(kp):
    rng = np.random.default_rng(1)
    x = rng.normal(0, 100, 120)
    v = kp.public_key.encrypt(x, scale_bits=16)
    packer = Packer(kp.public_key, slot_bits=48)
    packed = packer.pack(v)
    assert packer.slots == 21 and len(packed.inner) == 6
    assert packed.values_per_ciphertext() >= 20
    np.testing.assert_array_equal(kp.decrypt(packed), kp.decrypt(v))


def test_2048_bit_keys_give_at_least_10_values_per_decryption():
    kp = generate_keypair(2048)
    packer = Packer(kp.public_key, slot_bits=64)
    assert packer.slots >= 10
    x = np.linspace(-5, 5, 3 * packer.slots)
    np.testing.assert_array_equal(kp.decrypt(packer.pack(kp.public_key.encrypt(x, 20))), np.rint(x * 2**20) / 2**20)


def test_plaintext_packed_vectors_add_slotwise(kp):
    packer = Packer(kp.public_key, slot_bits=32)
    a = np.array([1.5, -2.25, 0.0, 100.0, -0.5])
    b = np.array([-1.5, 2.0, -3.0, 1.0, -0.5])
    pa_, pb = packer.encrypt(a, 8), packer.encrypt(b, 8)
    np.testing.assert_array_equal(kp.decrypt(pa_ + pb), a + b)


def test_packed_add_refuses_slot_overflow(kp):
    packer = Packer(kp.public_key, slot_bits=16)
    big = packer.encrypt(np.array([packer.slot_max // 2 + 1, 0]), scale_bits=0)
    with pytest.raises(CapacityError, match="slot"):
        big + big
    v = EncryptedVector.encrypt_ints(kp.public_key, [packer.slot_max + 1])
    with pytest.raises(CapacityError, match="slot"):
        packer.pack(v)


def test_packed_serialization_roundtrip(kp):
    packer = Packer(kp.public_key, slot_bits=40)
    pv = packer.pack(kp.public_key.encrypt(np.arange(-30.0, 30.0)))
    m = pv.meta()
    back = PackedVector.from_bytes(kp.public_key, pv.to_bytes(), scale_bits=m["scale_bits"], slot_bits=40,
                                   count=m["count"], slot_bound=int(m["slot_bound"], 16))
    np.testing.assert_array_equal(kp.decrypt(back), np.arange(-30.0, 30.0))


def test_packer_validates_layout(kp):
    with pytest.raises(CryptoError, match="no slot"):
        Packer(kp.public_key, slot_bits=2000)
    with pytest.raises(CryptoError):
        Packer(kp.public_key, slot_bits=1)
