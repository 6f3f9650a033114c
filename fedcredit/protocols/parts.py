"""Ciphertext vectors as named parts of a bundled payload (``fedcredit.common.wire.bundle``).

Every protocol sends encrypted and packed vectors the same way, so it decodes them the
same strict way: a part that does not parse, has the wrong count, the wrong fixed-point
scale or another key is a ``ProtocolError`` naming the message, never a vector to use.
"""

from __future__ import annotations

from fedcredit.common.errors import ProtocolError
from fedcredit.common.wire import Message
from fedcredit.crypto import EncryptedVector, PackedVector


def to_part(vector) -> tuple[bytes, dict]:
    """An ``EncryptedVector`` or ``PackedVector`` as (bytes, metadata) for ``bundle``."""
    return vector.to_bytes(), vector.meta()


def vector_part(key, part: tuple[bytes, dict], count: int, msg: Message, scale_bits: int | None = None) -> EncryptedVector:
    """``count`` ciphertexts under ``key`` (at ``scale_bits`` when given)."""
    try:
        vec = EncryptedVector.from_message(key, part[0], part[1])
    except Exception as exc:
        raise ProtocolError(f"{msg.describe()}: malformed ciphertexts ({exc})") from None
    if len(vec) != count or (scale_bits is not None and vec.scale_bits != scale_bits):
        want = f"{count}" if scale_bits is None else f"{count} at scale 2^{scale_bits}"
        raise ProtocolError(f"{msg.describe()}: {len(vec)} ciphertexts at scale 2^{vec.scale_bits}, expected {want}")
    return vec


def packed_part(key, part: tuple[bytes, dict], count: int, msg: Message, key_owner: str | None = None) -> PackedVector:
    """A packed vector of ``count`` values under ``key`` (``key_owner`` names that key in the error)."""
    data, meta = part
    try:
        vec = PackedVector.from_bytes(key, data, scale_bits=int(meta["scale_bits"]), slot_bits=int(meta["slot_bits"]),
                                      count=int(meta["count"]), slot_bound=int(meta["slot_bound"], 16),
                                      shape=meta["shape"])
    except Exception as exc:
        raise ProtocolError(f"{msg.describe()}: malformed packed ciphertexts ({exc})") from None
    if meta.get("key") != key.fingerprint or vec.count != count:
        under = f" under {key_owner}" if key_owner else ""
        raise ProtocolError(f"{msg.describe()}: packed vector of {vec.count} values under key {meta.get('key')}, "
                            f"expected {count}{under}")
    return vec
