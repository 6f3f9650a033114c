"""Paillier key wrappers around ``phe`` keys: generation, files, fingerprints, decryption."""

from __future__ import annotations

import hashlib

from phe import paillier

from fedcredit.crypto import keyfiles
from fedcredit.crypto.backend import check_backend
from fedcredit.crypto.errors import KeyFileError, KeyMismatchError
from fedcredit.crypto.parallel import default_pool, split

PUBLIC_FORMAT = "fedcredit-paillier-public-key"
PRIVATE_FORMAT = "fedcredit-paillier-private-key"
DECRYPT_COST = 1000  # one CRT decryption ~ this many 4096-bit mulmods


class PaillierPublicKey:
    """Public key: modulus ``n`` plus the backend that interprets ciphertexts under it."""

    def __init__(self, n: int, backend: str = "paillier") -> None:
        n = int(n)
        if n < 3 or n % 2 == 0:
            raise KeyMismatchError(f"Paillier modulus must be an odd integer > 2, got {n}")
        self.n = n
        self.backend = check_backend(backend, deployment=False)
        self.bits = n.bit_length()
        self.ciphertext_bytes = (2 * self.bits + 7) // 8
        self.capacity = (n - 1) // 2
        self._arith = None

    @classmethod
    def from_phe(cls, key: paillier.PaillierPublicKey) -> "PaillierPublicKey":
        return cls(key.n)

    @property
    def phe(self) -> paillier.PaillierPublicKey:
        return paillier.PaillierPublicKey(self.n)

    @property
    def arith(self):
        """The backend's arithmetic object (built once; holds the encryption table)."""
        if self._arith is None:
            from fedcredit.crypto.mock_arith import MockArith
            from fedcredit.crypto.paillier_arith import PaillierArith

            self._arith = PaillierArith(self.n) if self.backend == "paillier" else MockArith(self.n)
        return self._arith

    def canonical_bytes(self) -> bytes:
        return b"fedcredit/paillier-public-key/v1\0" + self.backend.encode() + b"\0" + self.n.to_bytes(
            (self.bits + 7) // 8, "big"
        )

    @property
    def fingerprint(self) -> str:
        """SHA-256 (hex) of the canonical key bytes; equal keys have equal fingerprints."""
        return hashlib.sha256(self.canonical_bytes()).hexdigest()

    def __eq__(self, other) -> bool:
        return isinstance(other, PaillierPublicKey) and (self.n, self.backend) == (other.n, other.backend)

    def __hash__(self) -> int:
        return hash((self.n, self.backend))

    def __repr__(self) -> str:
        return f"PaillierPublicKey(bits={self.bits}, backend={self.backend!r}, fingerprint={self.fingerprint[:16]}…)"

    def encrypt(self, values, scale_bits: int = 16, pool=None):
        """Encrypt reals (float array) as fixed point with scale 2^scale_bits."""
        from fedcredit.crypto.vector import EncryptedVector

        return EncryptedVector.encrypt(self, values, scale_bits, pool)

    def to_dict(self) -> dict:
        return {
            "format": PUBLIC_FORMAT,
            "version": 1,
            "backend": self.backend,
            "bits": self.bits,
            "n": format(self.n, "x"),
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_dict(cls, doc: dict, path="<dict>", deployment: bool | None = None) -> "PaillierPublicKey":
        backend = check_backend(keyfiles.field(doc, "backend", str, path), deployment)
        key = cls(keyfiles.hex_int(doc, "n", path), backend)
        if doc.get("fingerprint") not in (None, key.fingerprint):
            raise KeyFileError(f"key file {path}: fingerprint does not match the modulus (file corrupted?)")
        return key

    def save(self, path):
        return keyfiles.write_json(path, self.to_dict(), private=False)

    @classmethod
    def load(cls, path, deployment: bool | None = None) -> "PaillierPublicKey":
        return cls.from_dict(keyfiles.read_json(path, PUBLIC_FORMAT, private=False), path, deployment)


class PaillierKeypair:
    """Public key plus the primes p, q; decrypts with CRT (as phe does, on gmpy2)."""

    def __init__(self, public_key: PaillierPublicKey, p: int, q: int) -> None:
        if p * q != public_key.n or p == q:
            raise KeyMismatchError("private key primes p, q do not match the public modulus n")
        self.public_key = public_key
        self.p, self.q = int(min(p, q)), int(max(p, q))
        self._decryptor = None
        self._encryptor = None

    @classmethod
    def generate(cls, bits: int = 2048, backend: str = "paillier") -> "PaillierKeypair":
        if not isinstance(bits, int) or bits < 256 or bits % 8:
            raise KeyMismatchError(f"key size must be a multiple of 8 and at least 256 bits, got {bits!r}")
        pub, priv = paillier.generate_paillier_keypair(n_length=bits)
        return cls(PaillierPublicKey(pub.n, backend), priv.p, priv.q)

    @classmethod
    def from_phe(cls, private_key: paillier.PaillierPrivateKey) -> "PaillierKeypair":
        return cls(PaillierPublicKey(private_key.public_key.n), private_key.p, private_key.q)

    @property
    def phe(self) -> paillier.PaillierPrivateKey:
        return paillier.PaillierPrivateKey(self.public_key.phe, self.p, self.q)

    @property
    def decryptor(self):
        if self._decryptor is None:
            from fedcredit.crypto.backend import arith_from_spec

            kind = "paillier-private" if self.public_key.backend == "paillier" else "mock-private"
            self._decryptor = arith_from_spec((kind, self.public_key.n, self.p, self.q))
        return self._decryptor

    @property
    def encryptor(self):
        """The key holder's encryption arithmetic: CRT with ``p`` and ``q`` (the same ciphertexts as the public
        key's, about twice as fast); the mock backend's own arithmetic otherwise."""
        if self._encryptor is None:
            from fedcredit.crypto.backend import arith_from_spec

            pub = self.public_key
            self._encryptor = arith_from_spec(("paillier-crt", pub.n, self.p, self.q, int(pub.arith.h_s),
                                               pub.arith.exponent_bits)) if pub.backend == "paillier" else pub.arith
        return self._encryptor

    def encrypt(self, values, scale_bits: int = 16, pool=None):
        """``EncryptedVector.encrypt`` under this keypair's public key, computed with the private key."""
        from fedcredit.crypto.vector import EncryptedVector

        return EncryptedVector.encrypt(self.public_key, values, scale_bits, pool=pool, arith=self.encryptor)

    def encrypt_ints(self, ints, scale_bits: int = 0, pool=None):
        """``EncryptedVector.encrypt_ints`` under this keypair's public key, computed with the private key."""
        from fedcredit.crypto.vector import EncryptedVector

        return EncryptedVector.encrypt_ints(self.public_key, ints, scale_bits, pool=pool, arith=self.encryptor)

    def decrypt_ints(self, vector, pool=None) -> list[int]:
        """Exact signed plaintext integers (fixed-point scale not applied)."""
        if vector.key != self.public_key:
            raise KeyMismatchError(
                f"vector was encrypted under key {vector.key.fingerprint[:16]}…, "
                f"this keypair is {self.public_key.fingerprint[:16]}…"
            )
        pool = pool or default_pool()
        chunks = [(vector.data[s],) for s in split(vector.data, pool.chunks(len(vector.data) * DECRYPT_COST))]
        return [v for part in pool.run(self.decryptor, "decrypt", chunks) for v in part]

    def decrypt(self, vector, pool=None):
        """Decrypt an EncryptedVector to float64 (shaped like the vector) or a PackedVector."""
        return vector.decode(self.decrypt_ints(vector, pool))

    def to_dict(self) -> dict:
        return {
            "format": PRIVATE_FORMAT,
            "version": 1,
            "public": self.public_key.to_dict(),
            "p": format(self.p, "x"),
            "q": format(self.q, "x"),
        }

    def save(self, path, public_path=None):
        """Write the private key (0600, atomic) and optionally the shareable public key."""
        if public_path is not None:
            self.public_key.save(public_path)
        return keyfiles.write_json(path, self.to_dict(), private=True)

    @classmethod
    def load(cls, path, deployment: bool | None = None) -> "PaillierKeypair":
        doc = keyfiles.read_json(path, PRIVATE_FORMAT, private=True)
        public = keyfiles.field(doc, "public", dict, path)
        pub = PaillierPublicKey.from_dict(public, path, deployment)
        try:
            return cls(pub, keyfiles.hex_int(doc, "p", path), keyfiles.hex_int(doc, "q", path))
        except KeyMismatchError as exc:
            raise KeyFileError(f"key file {path}: {exc}") from exc


def generate_keypair(bits: int = 2048, backend: str = "paillier", deployment: bool | None = None) -> PaillierKeypair:
    """A fresh keypair; ``backend='mock'`` is refused when ``deployment`` is set."""
    return PaillierKeypair.generate(bits, check_backend(backend, deployment))
