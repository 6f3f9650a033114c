"""Node identities: an Ed25519 signing key and an X25519 envelope key under a role name.

The public half (name + two raw 32-byte keys) is shared with every party; its
fingerprint is what operators compare out of band. Private files are 0600 and atomic.
"""

from __future__ import annotations

import base64
import hashlib
import re

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from fedcredit.crypto import keyfiles
from fedcredit.crypto.errors import CryptoError, KeyFileError, SignatureError

PUBLIC_FORMAT = "fedcredit-identity-public"
PRIVATE_FORMAT = "fedcredit-identity-private"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_RAW = serialization.Encoding.Raw


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise CryptoError(
            f"identity name must be 1-63 chars of a-z, 0-9, '_', '.', '-' (starting alphanumeric), got {name!r}"
        )
    return name


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(doc: dict, name: str, path) -> bytes:
    try:
        raw = base64.b64decode(keyfiles.field(doc, name, str, path), validate=True)
    except ValueError as exc:
        raise KeyFileError(f"key file {path}: field {name!r} is not base64") from exc
    if len(raw) != 32:
        raise KeyFileError(f"key file {path}: field {name!r} must hold 32 bytes, got {len(raw)}")
    return raw


class PublicIdentity:
    """What others know about a node: its name, verify key and envelope key."""

    def __init__(self, name: str, sign_key: bytes, box_key: bytes) -> None:
        self.name = check_name(name)
        if len(sign_key) != 32 or len(box_key) != 32:
            raise CryptoError("identity public keys must be 32 raw bytes each")
        self.sign_key, self.box_key = bytes(sign_key), bytes(box_key)

    @property
    def fingerprint(self) -> str:
        """SHA-256 (hex) over name and both public keys."""
        h = hashlib.sha256(b"fedcredit/identity/v1\0" + self.name.encode() + b"\0" + self.sign_key + self.box_key)
        return h.hexdigest()

    def __eq__(self, other) -> bool:
        return isinstance(other, PublicIdentity) and (self.name, self.sign_key, self.box_key) == (
            other.name, other.sign_key, other.box_key)

    def __hash__(self) -> int:
        return hash((self.name, self.sign_key))

    def __repr__(self) -> str:
        return f"PublicIdentity({self.name!r}, fingerprint={self.fingerprint[:16]}…)"

    def verify(self, data: bytes, signature: bytes, what: str = "message") -> None:
        """Raise SignatureError unless ``signature`` is this identity's signature on ``data``."""
        if not isinstance(signature, (bytes, bytearray)) or len(signature) != 64:
            raise SignatureError(f"signature on {what} from {self.name!r} is malformed (expected 64 bytes)")
        try:
            Ed25519PublicKey.from_public_bytes(self.sign_key).verify(bytes(signature), data)
        except InvalidSignature:
            raise SignatureError(
                f"signature on {what} does not verify for {self.name!r} (fingerprint {self.fingerprint[:16]}…): "
                f"the data was altered or signed by another key"
            ) from None

    def to_dict(self) -> dict:
        return {"format": PUBLIC_FORMAT, "version": 1, "name": self.name, "ed25519": _b64(self.sign_key),
                "x25519": _b64(self.box_key), "fingerprint": self.fingerprint}

    @classmethod
    def from_dict(cls, doc: dict, path="<dict>") -> "PublicIdentity":
        if doc.get("format") != PUBLIC_FORMAT or doc.get("version") != 1:
            raise KeyFileError(f"{path}: not a version-1 {PUBLIC_FORMAT} document")
        ident = cls(keyfiles.field(doc, "name", str, path), _unb64(doc, "ed25519", path), _unb64(doc, "x25519", path))
        if doc.get("fingerprint") not in (None, ident.fingerprint):
            raise KeyFileError(f"{path}: fingerprint does not match the keys (file corrupted?)")
        return ident

    def save(self, path):
        return keyfiles.write_json(path, self.to_dict(), private=False)

    @classmethod
    def load(cls, path) -> "PublicIdentity":
        return cls.from_dict(keyfiles.read_json(path, PUBLIC_FORMAT, private=False), path)


class Identity:
    """A node's (or the coordinator's) private identity."""

    def __init__(self, name: str, sign_key: Ed25519PrivateKey, box_key: X25519PrivateKey) -> None:
        self.name = check_name(name)
        self._sign, self._box = sign_key, box_key
        self.public = PublicIdentity(
            name, sign_key.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw),
            box_key.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw))

    @classmethod
    def generate(cls, name: str) -> "Identity":
        return cls(name, Ed25519PrivateKey.generate(), X25519PrivateKey.generate())

    @property
    def fingerprint(self) -> str:
        return self.public.fingerprint

    def __repr__(self) -> str:
        return f"Identity({self.name!r}, fingerprint={self.fingerprint[:16]}…)"

    def sign(self, data: bytes) -> bytes:
        """64-byte Ed25519 signature."""
        return self._sign.sign(data)

    def exchange(self, peer_box_key: bytes) -> bytes:
        """X25519 shared secret with a peer's public envelope key."""
        return self._box.exchange(X25519PublicKey.from_public_bytes(peer_box_key))

    def __reduce__(self):
        """Picklable for the owner's own state files (a node's work directory, 0600)."""
        priv, none = serialization.PrivateFormat.Raw, serialization.NoEncryption()
        return (_identity_from_raw, (self.name, self._sign.private_bytes(_RAW, priv, none),
                                     self._box.private_bytes(_RAW, priv, none)))

    def to_dict(self) -> dict:
        priv = serialization.PrivateFormat.Raw
        none = serialization.NoEncryption()
        return {"format": PRIVATE_FORMAT, "version": 1, "name": self.name,
                "ed25519": _b64(self._sign.private_bytes(_RAW, priv, none)),
                "x25519": _b64(self._box.private_bytes(_RAW, priv, none)),
                "fingerprint": self.fingerprint}

    def save(self, path, public_path=None):
        """Private identity file (0600, atomic) and optionally the shareable public one."""
        if public_path is not None:
            self.public.save(public_path)
        return keyfiles.write_json(path, self.to_dict(), private=True)

    @classmethod
    def load(cls, path) -> "Identity":
        doc = keyfiles.read_json(path, PRIVATE_FORMAT, private=True)
        ident = cls(keyfiles.field(doc, "name", str, path),
                    Ed25519PrivateKey.from_private_bytes(_unb64(doc, "ed25519", path)),
                    X25519PrivateKey.from_private_bytes(_unb64(doc, "x25519", path)))
        if doc.get("fingerprint") not in (None, ident.fingerprint):
            raise KeyFileError(f"key file {path}: fingerprint does not match the keys (file corrupted?)")
        return ident


def _identity_from_raw(name: str, sign: bytes, box: bytes) -> Identity:
    return Identity(name, Ed25519PrivateKey.from_private_bytes(sign), X25519PrivateKey.from_private_bytes(box))
