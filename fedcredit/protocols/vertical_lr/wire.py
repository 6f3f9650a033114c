"""Payload encodings of vertical LR: slot widths of packed vectors, ciphertext and masked-integer parts."""

from __future__ import annotations

from fedcredit.common.errors import ProtocolError
from fedcredit.common.wire import Message
from fedcredit.crypto import EncryptedVector, PackedVector
from fedcredit.crypto import masking

Z_SLOT_BITS = 48  # packed partial predictions: |z|·2^scale < 2^46 with room for the sum over parties
MASKED_SLOT_BITS = 104  # masked values: |value| < 2^56 plus a 2^40-times larger mask, signed


def to_part(vector) -> tuple[bytes, dict]:
    return vector.to_bytes(), vector.meta()


def masked_ints(part: tuple[bytes, dict], count: int, msg: Message) -> list[int]:
    """Decrypted masked integers as the coordinator returns them (fixed width, signed)."""
    data, meta = part
    try:
        return masking.ints_from_bytes(data, int(meta["width"]), count)
    except Exception as exc:
        raise ProtocolError(f"{msg.describe()}: malformed masked values ({exc})") from None


def meta_first(pair: tuple[bytes, dict]) -> tuple[dict, bytes]:
    return pair[1], pair[0]


def vector_part(key, part: tuple[bytes, dict], count: int, msg: Message) -> EncryptedVector:
    try:
        vec = EncryptedVector.from_message(key, part[0], part[1])
    except Exception as exc:
        raise ProtocolError(f"{msg.describe()}: malformed ciphertexts ({exc})") from None
    if len(vec) != count:
        raise ProtocolError(f"{msg.describe()}: {len(vec)} ciphertexts, expected {count}")
    return vec


def packed_part(key, part: tuple[bytes, dict], count: int, msg: Message) -> PackedVector:
    data, meta = part
    try:
        vec = PackedVector.from_bytes(key, data, scale_bits=int(meta["scale_bits"]), slot_bits=int(meta["slot_bits"]),
                                      count=int(meta["count"]), slot_bound=int(meta["slot_bound"], 16), shape=meta["shape"])
    except Exception as exc:
        raise ProtocolError(f"{msg.describe()}: malformed packed ciphertexts ({exc})") from None
    if meta.get("key") != key.fingerprint or vec.count != count:
        raise ProtocolError(f"{msg.describe()}: packed vector of {vec.count} values under key {meta.get('key')}, expected {count}")
    return vec
