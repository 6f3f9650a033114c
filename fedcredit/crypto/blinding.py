"""Commutative blinding of hashed IDs on Curve25519 (the ECDH-PSI primitive).

An ID is hashed (SHA-256, domain-separated per run) to a 32-byte X25519
u-coordinate ``P``; a party blinds it with its secret scalar ``k`` as
``X25519(k, P)``. Scalar multiplication commutes, so ``a·(b·P) == b·(a·P)``: two
parties that each apply their key to both sets obtain comparable values without
either seeing the other's IDs. A hash lands on the curve or on its quadratic twist;
both have a large prime-order subgroup and the clamped scalar clears the small
cofactors, so the values stay unlinkable without the keys (DDH assumption).

A point set is one ``bytes`` buffer of ``n × 32`` bytes: cheap to send and to sort.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from fedcredit.crypto.errors import CryptoError

POINT_BYTES = 32


def hash_ids(ids, domain: bytes) -> bytes:
    """SHA-256 of ``domain || 0x00 || id`` for every ID, as one n×32-byte buffer."""
    if not isinstance(domain, (bytes, bytearray)) or not domain:
        raise CryptoError("hash domain must be non-empty bytes (e.g. the run id)")
    prefix = hashlib.sha256(bytes(domain) + b"\x00")
    out = bytearray(POINT_BYTES * len(ids))
    for i, value in enumerate(ids):
        h = prefix.copy()
        h.update(value.encode("utf-8"))
        out[i * POINT_BYTES : (i + 1) * POINT_BYTES] = h.digest()
    return bytes(out)


def check_points(buf, what: str) -> bytes:
    """``buf`` as bytes if it is a whole number of 32-byte points, else a clear error."""
    if not isinstance(buf, (bytes, bytearray, memoryview)):
        raise CryptoError(f"{what}: expected bytes of 32-byte points, got {type(buf).__name__}")
    if len(buf) % POINT_BYTES:
        raise CryptoError(f"{what}: {len(buf)} bytes is not a whole number of {POINT_BYTES}-byte points")
    return bytes(buf)


def count(buf: bytes) -> int:
    return len(buf) // POINT_BYTES


def as_array(buf: bytes) -> np.ndarray:
    """The points as a numpy ``S32`` array (sortable, searchable; raw bytes unchanged)."""
    return np.frombuffer(check_points(buf, "points"), dtype=f"S{POINT_BYTES}")


def sorted_points(buf: bytes) -> bytes:
    """The same points in sorted order: hides the order the sender stored them in."""
    return np.sort(as_array(buf)).tobytes()


def locate(needles: bytes, haystack: bytes) -> np.ndarray:
    """For each needle point, its index in ``haystack``, or -1 when absent."""
    hay, wanted = as_array(haystack), as_array(needles)
    if len(hay) == 0:
        return np.full(len(wanted), -1, dtype=np.int64)
    order = np.argsort(hay, kind="stable")
    sorted_hay = hay[order]
    pos = np.minimum(np.searchsorted(sorted_hay, wanted), len(hay) - 1)
    return np.where(sorted_hay[pos] == wanted, order[pos], -1)


class BlindingKey:
    """A party's secret X25519 scalar for one PSI run; never serialized to other parties."""

    def __init__(self, secret: bytes | None = None) -> None:
        secret = os.urandom(32) if secret is None else secret
        if len(secret) != 32:
            raise CryptoError("a blinding key is 32 bytes")
        self._secret = bytes(secret)
        self._key = X25519PrivateKey.from_private_bytes(self._secret)

    def __reduce__(self):
        return (BlindingKey, (self._secret,))

    def spec(self) -> tuple:
        """Picklable description for worker processes of the same party."""
        return ("x25519-blind", self._secret)

    def blind(self, points: bytes, what: str = "points") -> bytes:
        """Apply this key to every point; a point of small order is rejected as malformed."""
        buf = check_points(points, what)
        exchange = self._key.exchange
        from_bytes = X25519PublicKey.from_public_bytes
        out = bytearray(len(buf))
        for off in range(0, len(buf), POINT_BYTES):
            try:
                out[off : off + POINT_BYTES] = exchange(from_bytes(buf[off : off + POINT_BYTES]))
            except ValueError:
                raise CryptoError(f"{what}: point {off // POINT_BYTES} has small order; malformed or malicious input") from None
        return bytes(out)


# One X25519 multiplication costs about as much as 150 Paillier mulmods: the pool's
# work estimate is in mulmods.
_MULMODS_PER_BLIND = 150


def blind(key: BlindingKey, points: bytes, pool=None, what: str = "points") -> bytes:
    """``key.blind(points)``, split over ``pool``'s worker processes when the set is large."""
    buf = check_points(points, what)
    n = count(buf)
    parts = 1 if pool is None else pool.chunks(n * _MULMODS_PER_BLIND)
    if parts == 1:
        return key.blind(buf, what)
    bounds = [n * i // parts * POINT_BYTES for i in range(parts + 1)]
    chunks = [(buf[bounds[i] : bounds[i + 1]],) for i in range(parts)]
    return b"".join(pool.run(key, "blind", chunks))
