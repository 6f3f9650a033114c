"""Sealed envelopes: node-to-node payloads that the relaying coordinator cannot read or alter.

Key agreement is HPKE-auth-like: X25519 between a fresh ephemeral key and the
receiver's key, plus between the sender's static key and the receiver's key, so only
the receiver can open and only the sender (or receiver) can have sealed. HKDF-SHA256
derives a one-message AES-256-GCM key; the whole header (sender, receiver, run id,
step, sequence number, ephemeral key, nonce) is associated data.

Byte format, version 1 (all integers big-endian)::

    b"FCEN" | u8 version=1 | u8 len + sender | u8 len + receiver | u8 len + run_id
    | u8 len + step | u64 seq | 32-byte ephemeral X25519 key | 12-byte nonce
    | AES-GCM ciphertext with 16-byte tag
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedcredit.crypto.errors import EnvelopeError, ReplayError
from fedcredit.crypto.identity import Identity, PublicIdentity, check_name

MAGIC = b"FCEN"
VERSION = 1
TAG_BYTES = 16
MAX_SEQ = 2**64 - 1
_INFO = b"fedcredit/envelope/v1"


@dataclass(frozen=True)
class Header:
    sender: str
    receiver: str
    run_id: str
    step: str
    seq: int
    ephemeral: bytes
    nonce: bytes

    def encode(self) -> bytes:
        parts = [MAGIC, bytes([VERSION])]
        for text in (self.sender, self.receiver, self.run_id, self.step):
            raw = text.encode()
            parts += [bytes([len(raw)]), raw]
        parts += [struct.pack(">Q", self.seq), self.ephemeral, self.nonce]
        return b"".join(parts)

    def where(self) -> str:
        return f"from {self.sender!r} to {self.receiver!r} (run {self.run_id!r}, step {self.step!r}, seq {self.seq})"


def _text_field(value: str, what: str) -> str:
    if not isinstance(value, str) or not 0 < len(value.encode()) <= 255:
        raise EnvelopeError(f"envelope {what} must be a non-empty string of at most 255 UTF-8 bytes, got {value!r}")
    return value


def parse(blob: bytes) -> tuple[Header, bytes, bytes]:
    """Strictly split an envelope into (header, header bytes, ciphertext)."""
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise EnvelopeError(f"malformed envelope: expected bytes, got {type(blob).__name__}")
    blob = bytes(blob)
    if blob[:4] != MAGIC:
        raise EnvelopeError("malformed envelope: missing FCEN magic bytes")
    if len(blob) < 5 or blob[4] != VERSION:
        raise EnvelopeError(f"malformed envelope: unsupported version {blob[4] if len(blob) > 4 else None} (expected 1)")
    pos, fields = 5, []
    for what in ("sender", "receiver", "run id", "step"):
        if pos >= len(blob):
            raise EnvelopeError(f"malformed envelope: truncated before the {what}")
        size = blob[pos]
        raw = blob[pos + 1 : pos + 1 + size]
        if size == 0 or len(raw) != size:
            raise EnvelopeError(f"malformed envelope: {what} is empty or truncated")
        try:
            fields.append(raw.decode())
        except UnicodeDecodeError:
            raise EnvelopeError(f"malformed envelope: {what} is not UTF-8") from None
        pos += 1 + size
    fixed = 8 + 32 + 12
    if len(blob) < pos + fixed + TAG_BYTES:
        raise EnvelopeError(f"malformed envelope: {len(blob)} bytes is too short for its header and tag")
    (seq,) = struct.unpack(">Q", blob[pos : pos + 8])
    header = Header(*fields, seq, blob[pos + 8 : pos + 40], blob[pos + 40 : pos + 52])
    try:
        check_name(header.sender), check_name(header.receiver)
    except Exception as exc:
        raise EnvelopeError(f"malformed envelope: {exc}") from None
    return header, blob[: pos + fixed], blob[pos + fixed :]


def _key(dh_ephemeral: bytes, dh_static: bytes, header: Header, sender_box: bytes, receiver_box: bytes) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=header.ephemeral,
                info=_INFO + sender_box + receiver_box)
    return hkdf.derive(dh_ephemeral + dh_static)


def seal(sender: Identity, receiver: PublicIdentity, payload: bytes, *, run_id: str, step: str, seq: int) -> bytes:
    """Encrypt ``payload`` so that only ``receiver`` can read it and can tell it came from ``sender``."""
    if not isinstance(payload, (bytes, bytearray)):
        raise EnvelopeError(f"envelope payload must be bytes, got {type(payload).__name__}")
    if not isinstance(seq, int) or not 0 <= seq <= MAX_SEQ:
        raise EnvelopeError(f"envelope seq must be an int in [0, 2^64), got {seq!r}")
    eph = X25519PrivateKey.generate()
    eph_pub = eph.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    header = Header(sender.name, receiver.name, _text_field(run_id, "run id"), _text_field(step, "step"),
                    seq, eph_pub, os.urandom(12))
    aad = header.encode()
    key = _key(eph.exchange(X25519PublicKey.from_public_bytes(receiver.box_key)), sender.exchange(receiver.box_key),
               header, sender.public.box_key, receiver.box_key)
    return aad + AESGCM(key).encrypt(header.nonce, bytes(payload), aad)


@dataclass(frozen=True)
class Opened:
    """An authenticated payload and where it came from."""

    sender: str
    run_id: str
    step: str
    seq: int
    payload: bytes


class ReplayGuard:
    """Remembers accepted (sender, run id, step, seq) tuples; a second acceptance is a replay."""

    def __init__(self) -> None:
        self._seen: set[tuple] = set()

    def check(self, header: Header) -> None:
        if self.key(header) in self._seen:
            raise ReplayError(f"envelope {header.where()} was already accepted once: replay rejected")

    def remember(self, header: Header) -> None:
        self._seen.add(self.key(header))

    @staticmethod
    def key(header: Header) -> tuple:
        return (header.sender, header.run_id, header.step, header.seq)

    def __len__(self) -> int:
        return len(self._seen)


class Mailbox:
    """The receiving side: opens envelopes addressed to ``identity`` from known senders."""

    def __init__(self, identity: Identity, senders: Mapping[str, PublicIdentity] | list[PublicIdentity],
                 guard: ReplayGuard | None = None) -> None:
        self.identity = identity
        if not isinstance(senders, Mapping):
            senders = {p.name: p for p in senders}
        self.senders = dict(senders)
        self.guard = guard if guard is not None else ReplayGuard()

    def open(self, blob: bytes, *, sender: str | None = None, run_id: str | None = None,
             step: str | None = None) -> Opened:
        """Authenticate and decrypt; optionally require a given sender, run id and step."""
        header, aad, ciphertext = parse(blob)
        where = header.where()
        if header.receiver != self.identity.name:
            raise EnvelopeError(f"envelope {where} is not addressed to {self.identity.name!r}: wrong receiver")
        for want, got, what in ((sender, header.sender, "sender"), (run_id, header.run_id, "run id"),
                                (step, header.step, "step")):
            if want is not None and want != got:
                raise EnvelopeError(f"envelope {where}: expected {what} {want!r}")
        peer = self.senders.get(header.sender)
        if peer is None:
            raise EnvelopeError(f"envelope {where}: sender {header.sender!r} is not a known identity")
        self.guard.check(header)
        try:
            dh_eph = self.identity.exchange(header.ephemeral)
            key = _key(dh_eph, self.identity.exchange(peer.box_key), header, peer.box_key,
                       self.identity.public.box_key)
            payload = AESGCM(key).decrypt(header.nonce, ciphertext, aad)
        except (InvalidTag, ValueError):
            raise EnvelopeError(
                f"envelope {where} failed authentication: it was tampered with, or not sealed by "
                f"{header.sender!r} for {self.identity.name!r}"
            ) from None
        self.guard.remember(header)
        return Opened(header.sender, header.run_id, header.step, header.seq, payload)


class Outbox:
    """The sending side: numbers envelopes per (receiver, run id) so receivers can detect replays."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self._next: dict[tuple[str, str], int] = {}

    def seal(self, receiver: PublicIdentity, payload: bytes, *, run_id: str, step: str) -> bytes:
        slot = (receiver.name, run_id)
        seq = self._next.get(slot, 0)
        self._next[slot] = seq + 1
        return seal(self.identity, receiver, payload, run_id=run_id, step=step, seq=seq)
