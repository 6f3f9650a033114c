"""Statistical masks: hide a value from the key holder who decrypts it for its owner.

A party adds a uniformly random integer ``m`` of ``bits(bound) + STAT_BITS`` bits to
an encrypted value ``v`` (|v| ≤ bound) before the coordinator decrypts ``v + m``;
the coordinator's view is then statistically close (2^-STAT_BITS) to uniform, and the
owner subtracts ``m`` to get ``v`` exactly.
"""

from __future__ import annotations

import secrets

STAT_BITS = 40


def mask_bits(bound: int) -> int:
    """Bit length of masks for values bounded by ``bound``."""
    return max(int(bound), 1).bit_length() + STAT_BITS


def slot_bits_for(bound: int) -> int:
    """Packing slot width that holds a masked value (mask + value, signed, one spare bit)."""
    return mask_bits(bound) + 2


def random_masks(count: int, bound: int) -> list[int]:
    """``count`` uniform masks in [0, 2^mask_bits(bound)) from the OS CSPRNG."""
    bits = mask_bits(bound)
    return [secrets.randbits(bits) for _ in range(count)]


def ints_to_bytes(ints: list[int], width: int) -> bytes:
    """Signed big-endian, ``width`` bytes per int (for exact big integers in payloads)."""
    return b"".join(int(v).to_bytes(width, "big", signed=True) for v in ints)


def ints_from_bytes(data: bytes, width: int, count: int) -> list[int]:
    from fedcredit.crypto.errors import SerializationError

    if width <= 0 or len(data) != width * count:
        raise SerializationError(f"expected {count} ints of {width} bytes ({width * count} bytes), got {len(data)}")
    return [int.from_bytes(data[i : i + width], "big", signed=True) for i in range(0, len(data), width)]


def int_width(bits: int) -> int:
    """Bytes for a signed int of ``bits`` magnitude bits."""
    return bits // 8 + 1
