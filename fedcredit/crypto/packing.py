"""Slot packing: several fixed-point values in one Paillier plaintext, fewer decryptions.

A packed plaintext is P = sum_j v_j * 2^(slot_bits*j) with |v_j| < 2^(slot_bits-1)
(two's-complement slots, borrow-corrected on unpacking). Packing encrypted values
costs slot_bits squarings per value (Horner), far less than one decryption; slot
bounds are tracked so that additions of packed vectors cannot spill into a neighbour.
"""

from __future__ import annotations

import math

import numpy as np

from fedcredit.crypto import kernels, serialize
from fedcredit.crypto.errors import CapacityError, CryptoError, KeyMismatchError
from fedcredit.crypto.fixedpoint import FixedPoint, max_abs
from fedcredit.crypto.parallel import default_pool, split
from fedcredit.crypto.vector import ENCRYPT_COST, EncryptedVector


class Packer:
    """Slot layout for one key: ``slots`` slots of ``slot_bits`` bits per plaintext."""

    def __init__(self, key, slot_bits: int = 64) -> None:
        if not isinstance(slot_bits, int) or slot_bits < 2:
            raise CryptoError(f"slot_bits must be an int >= 2, got {slot_bits!r}")
        self.key = key
        self.slot_bits = slot_bits
        self.slots = (key.bits - 2) // slot_bits
        if self.slots < 1:
            raise CryptoError(f"slot_bits {slot_bits} leaves no slot in a {key.bits}-bit key")
        self.slot_max = (1 << (slot_bits - 1)) - 1

    def __repr__(self) -> str:
        return f"Packer(slot_bits={self.slot_bits}, slots={self.slots})"

    def check_slot_bound(self, bound: int, what: str) -> None:
        if bound > self.slot_max:
            raise CapacityError(
                f"{what}: magnitude bound {bound} (about 2^{bound.bit_length()}) does not fit a "
                f"{self.slot_bits}-bit slot (max {self.slot_max}); use wider slots or a smaller scale"
            )

    def packed_bound(self, slot_bound: int) -> int:
        """Bound on |P| for slots bounded by ``slot_bound`` (a geometric sum)."""
        s = self.slot_bits
        return slot_bound * (((1 << (s * self.slots)) - 1) // ((1 << s) - 1))

    def pack_ints(self, ints: list[int]) -> list[int]:
        """Plaintext packing: groups of ``slots`` signed ints -> one signed int each."""
        self.check_slot_bound(max_abs(ints), "pack")
        s, k = self.slot_bits, self.slots
        out = []
        for i in range(0, len(ints), k):
            acc = 0
            for v in reversed(ints[i : i + k]):
                acc = (acc << s) + v
            out.append(acc)
        return out

    def unpack_ints(self, packed: list[int], count: int) -> list[int]:
        """Inverse of ``pack_ints``: the first ``count`` slot values, sign-corrected."""
        s, k = self.slot_bits, self.slots
        mask, half, full = (1 << s) - 1, 1 << (s - 1), 1 << s
        out = []
        for p in packed:
            for _ in range(k):
                r = p & mask
                if r >= half:
                    r -= full
                out.append(r)
                p = (p - r) >> s
        if len(out) < count:
            raise CryptoError(f"unpack: {len(packed)} packed values hold {len(out)} slots, {count} requested")
        return out[:count]

    def encrypt(self, values, scale_bits: int = 16, pool=None) -> "PackedVector":
        """Encode reals, pack them in plaintext and encrypt (BatchCrypt-style)."""
        arr = np.asarray(values)
        return self.encrypt_ints(FixedPoint(scale_bits).encode(arr), scale_bits, arr.shape, pool)

    def encrypt_ints(self, ints: list[int], scale_bits: int, shape=None, pool=None) -> "PackedVector":
        """Pack already-encoded ints (at scale 2^scale_bits) in plaintext and encrypt them."""
        ints = [int(v) for v in ints]
        slot_bound = max_abs(ints)
        inner = EncryptedVector.encrypt_ints(self.key, self.pack_ints(ints), scale_bits, pool=pool)
        return PackedVector(self, inner, len(ints), slot_bound, shape)

    def pack(self, vector: EncryptedVector, pool=None) -> PackedVector:
        """Pack an encrypted vector homomorphically (slot_bits squarings per value)."""
        if vector.key != self.key:
            raise KeyMismatchError("pack: vector is encrypted under a different key than this packer")
        self.check_slot_bound(vector.bound, "pack")
        k, cts = self.slots, vector.data
        groups = -(-len(cts) // k)
        pool = pool or default_pool()
        parts = split(groups, pool.chunks(len(cts) * self.slot_bits // 2 + groups * ENCRYPT_COST))
        chunks = [(cts[p.start * k : p.stop * k], self.slot_bits, k) for p in parts]
        packed = [c for part in pool.run(self.key.arith, "pack", chunks) for c in part]
        inner = EncryptedVector(self.key, packed, vector.scale_bits, self.packed_bound(vector.bound))
        return PackedVector(self, inner, len(cts), vector.bound, vector.shape)


class PackedVector:
    """Packed ciphertexts plus their layout: ``count`` values of bound ``slot_bound``."""

    __slots__ = ("packer", "inner", "count", "slot_bound", "shape")

    def __init__(self, packer: Packer, inner: EncryptedVector, count: int, slot_bound: int, shape=None) -> None:
        packer.check_slot_bound(slot_bound, "packed vector")
        if len(inner) != -(-count // packer.slots):
            raise CryptoError(f"{len(inner)} packed ciphertexts cannot hold exactly {count} values")
        self.packer, self.inner, self.count, self.slot_bound = packer, inner, count, slot_bound
        self.shape = (count,) if shape is None else tuple(shape)
        if math.prod(self.shape) != count:
            raise CryptoError(f"shape {self.shape} does not hold {count} values")

    @property
    def key(self):
        return self.inner.key

    @property
    def data(self) -> list:
        return self.inner.data

    def __len__(self) -> int:
        return self.count

    def add(self, other: "PackedVector") -> "PackedVector":
        """Slot-wise addition; refuses if a slot could overflow into its neighbour."""
        if not isinstance(other, PackedVector) or other.packer.slot_bits != self.packer.slot_bits:
            raise CryptoError("add: both operands must be PackedVectors with the same slot layout")
        if other.count != self.count:
            raise CryptoError(f"add: packed vectors hold {self.count} and {other.count} values")
        bound = self.slot_bound + other.slot_bound
        self.packer.check_slot_bound(bound, "packed add")
        inner = self.inner.add(other.inner)
        return PackedVector(self.packer, inner, self.count, bound, self.shape)

    __add__ = add

    def decode(self, ints: list[int]) -> np.ndarray:
        """Decrypted packed ints -> float64 values of this vector's shape."""
        values = self.packer.unpack_ints(ints, self.count)
        return FixedPoint(self.inner.scale_bits).decode(values, self.shape)

    def values_per_ciphertext(self) -> float:
        return self.count / max(len(self.inner), 1)

    def to_bytes(self) -> bytes:
        return self.inner.to_bytes()

    def meta(self) -> dict:
        return {**self.inner.meta(), "slot_bits": self.packer.slot_bits, "count": self.count,
                "slot_bound": format(self.slot_bound, "x"), "shape": list(self.shape)}

    @classmethod
    def from_bytes(cls, key, data, *, scale_bits: int, slot_bits: int, count: int, slot_bound: int,
                   shape=None) -> "PackedVector":
        packer = Packer(key, slot_bits)
        cts = serialize.from_bytes(data, key.ciphertext_bytes, key.arith, -(-count // packer.slots))
        inner = EncryptedVector(key, cts, scale_bits, packer.packed_bound(slot_bound))
        return cls(packer, inner, count, slot_bound, shape)


def pack_ciphertexts(group, cts: list, slot_bits: int, per_pack: int) -> list:
    """Exposed for benchmarks: the raw Horner packing kernel."""
    return kernels.pack_groups(group, cts, slot_bits, per_pack)
