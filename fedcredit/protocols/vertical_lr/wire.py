"""Payload encodings of vertical LR: slot widths of packed vectors and masked-integer parts
(ciphertext parts: ``fedcredit.protocols.parts``)."""

from __future__ import annotations

from fedcredit.common.errors import ProtocolError
from fedcredit.common.wire import Message
from fedcredit.crypto import masking

Z_SLOT_BITS = 48  # packed partial predictions: |z|·2^scale < 2^46 with room for the sum over parties
MASKED_SLOT_BITS = 104  # masked values: |value| < 2^56 plus a 2^40-times larger mask, signed


def masked_ints(part: tuple[bytes, dict], count: int, msg: Message) -> list[int]:
    """Decrypted masked integers as the coordinator returns them (fixed width, signed)."""
    data, meta = part
    try:
        return masking.ints_from_bytes(data, int(meta["width"]), count)
    except Exception as exc:
        raise ProtocolError(f"{msg.describe()}: malformed masked values ({exc})") from None


def meta_first(pair: tuple[bytes, dict]) -> tuple[dict, bytes]:
    return pair[1], pair[0]
