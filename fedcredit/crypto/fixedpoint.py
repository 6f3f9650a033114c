"""Fixed-point codec: real numbers <-> signed integers with an explicit power-of-two scale.

Paillier works on integers mod n; a value v is carried as round(v * 2**scale_bits).
A power-of-two scale keeps the float conversion exact and makes the scale of a product
the sum of the scales.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedcredit.crypto.errors import CapacityError, CryptoError

_INT64_SAFE = 1 << 62


def _as_array(values, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype == object:
        if not all(isinstance(v, (int, np.integer)) for v in arr.flat):
            raise CryptoError(f"{what}: expected numbers (float or int), got an object array with non-integers")
    elif arr.dtype.kind not in "biuf":
        raise CryptoError(f"{what}: expected a numeric array, got dtype {arr.dtype}")
    return arr


def max_abs(ints) -> int:
    """Largest magnitude in a list of Python ints (0 for an empty list)."""
    return max((abs(v) for v in ints), default=0)


@dataclass(frozen=True)
class FixedPoint:
    """Encode reals as ``round(v * 2**scale_bits)``; ``scale_bits=0`` means plain integers."""

    scale_bits: int = 16

    def __post_init__(self) -> None:
        if not isinstance(self.scale_bits, int) or not 0 <= self.scale_bits <= 1024:
            raise CryptoError(f"scale_bits must be an int in [0, 1024], got {self.scale_bits!r}")

    def encode(self, values, what: str = "values") -> list[int]:
        """Return the flat list of signed Python ints for ``values`` (any shape, flattened)."""
        arr = _as_array(values, what)
        k = self.scale_bits
        if arr.dtype == object or arr.dtype.kind in "biu":
            return [int(v) << k for v in arr.ravel().tolist()]
        flat = arr.astype(np.float64).ravel()
        if not np.all(np.isfinite(flat)):
            raise CryptoError(f"{what}: NaN or infinite value cannot be encoded")
        scaled = np.rint(np.ldexp(flat, k))
        if flat.size and np.max(np.abs(scaled)) < _INT64_SAFE:
            return scaled.astype(np.int64).tolist()
        return [int(v) for v in scaled.tolist()]

    def decode(self, ints, shape=None) -> np.ndarray:
        """Float64 array of ``ints / 2**scale_bits`` (correctly rounded)."""
        denom = 1 << self.scale_bits
        if ints and max_abs(ints) < _INT64_SAFE:
            out = np.asarray(ints, dtype=np.int64).astype(np.float64) / float(denom)
        else:
            out = np.array([v / denom for v in ints], dtype=np.float64)
        return out.reshape(shape) if shape is not None else out


def check_capacity(bound: int, capacity: int, what: str) -> None:
    """Raise CapacityError if a magnitude bound exceeds the plaintext capacity."""
    if bound > capacity:
        raise CapacityError(
            f"{what}: magnitude bound {bound} (about 2^{bound.bit_length()}) exceeds the key's "
            f"plaintext capacity {capacity} (about 2^{capacity.bit_length()}); the result would wrap "
            f"mod n. Use a smaller fixed-point scale, smaller inputs or fewer summands"
        )
