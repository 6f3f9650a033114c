"""Payload encodings of vertical LR: the slot width of packed masked gradients and masked-integer parts
(ciphertext parts: ``fedcredit.protocols.parts``)."""

from __future__ import annotations

from fedcredit.common.errors import ProtocolError
from fedcredit.common.wire import Message
from fedcredit.crypto import masking

MASKED_SLOT_BITS = 104  # masked values: |value| < 2^56 plus a 2^40-times larger mask, signed


def masked_ints(part: tuple[bytes, dict], count: int, msg: Message) -> list[int]:
    """Decrypted masked integers as the coordinator returns them (fixed width, signed)."""
    data, meta = part
    try:
        return masking.ints_from_bytes(data, int(meta["width"]), count)
    except Exception as exc:
        raise ProtocolError(f"{msg.describe()}: malformed masked values ({exc})") from None
