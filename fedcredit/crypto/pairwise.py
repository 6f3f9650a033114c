"""Pairwise masks that cancel in a sum: several parties send one combiner masked shares, the combiner learns only the total.

Every pair of parties holds a shared 32-byte seed (exchanged once per run over the
sealed node-to-node relay). From a seed and a label naming what is masked (run,
step, purpose) both ends of the pair expand the same pseudo-random stream (AES-256-CTR
keyed by HKDF-SHA256 of the seed and label). One end adds it, the other subtracts it
(integers modulo 2^64) or both XOR it (bits), so the masks of every pair cancel when
all shares are combined, while any strict subset of shares is uniformly random to
whoever receives it. This is the masking of secure aggregation; it replaces an extra
relay round through a key holder wherever only a sum (or one party's bits) must reach
the receiver.
"""

from __future__ import annotations

import secrets

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedcredit.crypto.errors import CryptoError

SEED_BYTES = 32


def new_seed() -> bytes:
    """A fresh pair seed from the OS CSPRNG."""
    return secrets.token_bytes(SEED_BYTES)


def stream(seed: bytes, label: str, nbytes: int) -> bytes:
    """``nbytes`` pseudo-random bytes that only holders of ``seed`` can reproduce, distinct per ``label``."""
    if not isinstance(seed, bytes) or len(seed) != SEED_BYTES:
        raise CryptoError(f"a pair seed must be {SEED_BYTES} bytes, got {type(seed).__name__} of "
                          f"{len(seed) if isinstance(seed, (bytes, bytearray)) else '?'}")
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label.encode()).derive(seed)
    encryptor = Cipher(algorithms.AES(key), modes.CTR(b"\0" * 16)).encryptor()
    return encryptor.update(b"\0" * nbytes) + encryptor.finalize()


def word_mask(seed: bytes, label: str, count: int) -> np.ndarray:
    """``count`` uniform 64-bit words (uint64) for masking integers modulo 2^64."""
    return np.frombuffer(stream(seed, label, 8 * count), dtype="<u8").astype(np.uint64)


def bit_mask(seed: bytes, label: str, count: int) -> np.ndarray:
    """``count`` uniform bits (bool) for masking a membership bitmask by XOR."""
    raw = np.frombuffer(stream(seed, label, (count + 7) // 8), dtype=np.uint8)
    return np.unpackbits(raw, count=count).astype(bool)


def pair_sign(me: str, other: str) -> int:
    """+1 for the end of a pair whose name sorts first, -1 for the other: their word masks cancel."""
    if me == other:
        raise CryptoError(f"a party cannot pair with itself ({me!r})")
    return 1 if me < other else -1


def masked_words(values: np.ndarray, me: str, seeds: dict[str, bytes], label: str) -> np.ndarray:
    """``values`` (int64) plus this party's pair masks, modulo 2^64: one share of a masked sum.

    ``seeds`` maps every other contributing party to the seed shared with it; the sum of
    every contributor's share is the sum of their ``values`` modulo 2^64.
    """
    out = np.asarray(values, dtype=np.int64).astype(np.uint64)
    for other, seed in sorted(seeds.items()):
        mask = word_mask(seed, label, out.size).reshape(out.shape)
        out = out + mask if pair_sign(me, other) > 0 else out - mask
    return out


def unmask_sum(shares: list[np.ndarray]) -> np.ndarray:
    """The total of every contributor's share, as signed 64-bit integers (masks cancelled)."""
    if not shares:
        raise CryptoError("no shares to combine")
    total = np.zeros(np.shape(shares[0]), dtype=np.uint64)
    for share in shares:
        if np.shape(share) != total.shape:
            raise CryptoError(f"shares of different shapes: {np.shape(share)} and {total.shape}")
        total = total + np.asarray(share, dtype=np.uint64)
    return total.astype(np.int64)


def masked_bits(bits: np.ndarray, seeds: dict[str, bytes], label: str) -> np.ndarray:
    """``bits`` XOR this party's pair masks: XOR-ing every contributor's share gives the XOR of their bits."""
    out = np.asarray(bits, dtype=bool).copy()
    for seed in seeds.values():
        out ^= bit_mask(seed, label, out.size).reshape(out.shape)
    return out
