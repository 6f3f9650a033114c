"""Masked shares of vertical LR: what each party sends so that the coordinator learns only sums.

Every party sends its fixed-point partial scores as 64-bit words plus pair masks
(``fedcredit.crypto.pairwise``) that cancel when the coordinator adds every party's
share; rows the coordinator must not see even in total (validation rows, final
scores) carry in addition the bank's private mask (pair-mask words from a seed only
the bank holds), which only the bank removes.
A host's part of ``yᵀz`` is a Paillier ciphertext (it does not know ``y``) whose
plaintext is the host's masked word plus a multiple of 2^64 drawn at random, so its
decryption reveals the word modulo 2^64 and nothing about carries.
"""

from __future__ import annotations

import secrets

import numpy as np

from fedcredit.common.errors import ProtocolError
from fedcredit.common.wire import Message
from fedcredit.crypto import masking, pairwise

WORD = 1 << 64
WORD_BYTES = 8
YZ_SCALE_EXTRA = 16  # yᵀz travels at 2^(scale_bits + 16): a host's term is its weights at that scale × label sums per bin


def fixed(values: np.ndarray, scale_bits: int) -> np.ndarray:
    """Reals as signed fixed-point int64 at ``2^scale_bits``."""
    return np.rint(np.ldexp(np.asarray(values, dtype=float), scale_bits)).astype(np.int64)


def carry_mask() -> int:
    """A random multiple of 2^64 with ``STAT_BITS`` bits to spare: hides carries of a word added under encryption."""
    return secrets.randbits(64 + masking.STAT_BITS) * WORD


def share(values: np.ndarray, me: str, seeds: dict[str, bytes], label: str, private: np.ndarray | None = None) -> np.ndarray:
    """``values`` (int64) plus this party's pair masks (and its ``private`` mask) modulo 2^64."""
    words = pairwise.masked_words(values, me, seeds, label)
    return words if private is None else words + private


def word_part(words: np.ndarray) -> tuple[bytes, dict]:
    """64-bit words as a bundle part (audit class ``masked``: the metadata names only the width)."""
    return np.asarray(words, dtype=np.uint64).astype(">u8").tobytes(), {"width": WORD_BYTES}


def words_of(part: tuple[bytes, dict], msg: Message, count: int | None = None) -> np.ndarray:
    """The 64-bit words of a part, checked against ``count`` when given."""
    data, meta = part
    if meta.get("width") != WORD_BYTES or len(data) % WORD_BYTES or (count is not None and len(data) != WORD_BYTES * count):
        want = "" if count is None else f" ({count} words)"
        raise ProtocolError(f"{msg.describe()}: malformed masked words{want}: {len(data)} bytes of width {meta.get('width')}")
    return np.frombuffer(data, dtype=">u8").astype(np.uint64)


def unmask(words: np.ndarray, private: np.ndarray, scale_bits: int) -> np.ndarray:
    """The bank's own totals: the coordinator's sum minus its private mask, as reals."""
    if len(words) != len(private):
        raise ProtocolError(f"{len(words)} masked totals for {len(private)} masks")
    return np.ldexp((np.asarray(words, dtype=np.uint64) - private).astype(np.int64).astype(float), -scale_bits)
