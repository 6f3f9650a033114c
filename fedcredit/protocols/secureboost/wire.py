"""Payload encodings of vertical SecureBoost: packed (g, h) per sample, histograms, row lists, masks.

Packed gradient pair: one plaintext per training row, ``P = g·2^S + h`` with g and h the
fixed-point integers ``round(v·2^scale_bits)``. The hessian h ≥ 0 sits in the low slot,
so sums never borrow: ``H = P mod 2^S`` and ``G = P >> S`` (floor division) as long as
the summed hessians stay below 2^S — ``S = scale_bits + bit_length(rows)`` guarantees it.
No offset on g is needed, so the bank never needs per-bin instance counts to undo one.

Histograms (one packed pair per bin, valid bins only) are compressed before they are
sent with the crypto layer's ``Packer`` (Horner packing of whole bins into
two's-complement slots sized from the vector's magnitude bound): about
``key_bits / slot_bits`` bins per decryption instead of one.
"""

from __future__ import annotations

import numpy as np

from fedcredit.crypto import EncryptedVector, PackedVector, Packer
from fedcredit.common.errors import ProtocolError
from fedcredit.common.wire import Message


def gh_slot_bits(scale_bits: int, rows: int) -> int:
    """Width of the hessian slot: the sum of every row's h (each ≤ 2^(scale_bits−2)) fits."""
    return scale_bits + max(int(rows), 1).bit_length()


def pack_gh(g: np.ndarray, h: np.ndarray, slot_bits: int) -> list[int]:
    """Per row ``g·2^S + h`` as Python ints (exact for any size)."""
    return [(int(a) << slot_bits) + int(b) for a, b in zip(g.tolist(), h.tolist())]


def unpack_gh(values: list[int], slot_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of ``pack_gh`` for sums of packed pairs: (G, H) as int64 arrays."""
    mask = (1 << slot_bits) - 1
    return (np.array([v >> slot_bits for v in values], dtype=np.int64),
            np.array([v & mask for v in values], dtype=np.int64))


def valid_bins(n_bins: list[int]) -> list[int]:
    """Flat positions of the real bins in a (features, max bins) grouped sum."""
    width = max(n_bins, default=1)
    return [j * width + b for j, nb in enumerate(n_bins) for b in range(nb)]


def concat(vectors: list[EncryptedVector]) -> EncryptedVector:
    first = vectors[0]
    data = [c for v in vectors for c in v.data]
    return EncryptedVector(first.key, data, first.scale_bits, max(v.bound for v in vectors))


def compress(vector: EncryptedVector, pool=None) -> PackedVector:
    """Pack whole histogram bins into as few ciphertexts as their bound allows."""
    return Packer(vector.key, max(vector.bound.bit_length() + 1, 2)).pack(vector, pool=pool)


def rows_to_bytes(rows: np.ndarray) -> bytes:
    return np.asarray(rows, dtype=">u4").tobytes()


def rows_from_bytes(data: bytes, limit: int, msg: Message, what: str) -> np.ndarray:
    """Strictly increasing row indices in [0, limit)."""
    if len(data) % 4:
        raise ProtocolError(f"{msg.describe()}: {what}: {len(data)} bytes is not a list of 4-byte row indices")
    rows = np.frombuffer(data, dtype=">u4").astype(np.int64)
    if rows.size and (rows[-1] >= limit or np.any(np.diff(rows) <= 0)):
        raise ProtocolError(f"{msg.describe()}: {what}: row indices must be strictly increasing and below {limit}")
    return rows


def mask_to_bytes(mask: np.ndarray) -> bytes:
    return np.packbits(np.asarray(mask, dtype=bool)).tobytes()


def mask_from_bytes(data: bytes, count: int, msg: Message, what: str) -> np.ndarray:
    """``count`` booleans packed big-endian, unused trailing bits zero."""
    if len(data) != (count + 7) // 8:
        raise ProtocolError(f"{msg.describe()}: {what}: {len(data)} bytes for a mask of {count} rows")
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
    if bits[count:].any():
        raise ProtocolError(f"{msg.describe()}: {what}: nonzero padding bits")
    return bits[:count].astype(bool)
