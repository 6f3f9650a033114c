"""Backend selection: real Paillier (default) or the plaintext mock, never mock in deployment."""

from __future__ import annotations

import os

from fedcredit.crypto.errors import CryptoError, MockBackendRefused

BACKENDS = ("paillier", "mock")
DEPLOYMENT_ENV = "FEDCREDIT_DEPLOYMENT"


def deployment_from_env() -> bool:
    """True when the environment says this process is a deployed node."""
    return os.environ.get(DEPLOYMENT_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def check_backend(name: str, deployment: bool | None = None) -> str:
    """Validate a backend name; refuse ``mock`` in deployment mode (flag or environment)."""
    if name not in BACKENDS:
        raise CryptoError(f"unknown crypto backend {name!r}; expected one of {', '.join(BACKENDS)}")
    if deployment is None:
        deployment = deployment_from_env()
    if name == "mock" and deployment:
        raise MockBackendRefused(
            "the 'mock' crypto backend does not encrypt anything and is refused in deployment mode; "
            "use backend 'paillier'"
        )
    return name


def arith_from_spec(spec: tuple):
    """Rebuild an arithmetic or decryptor object from its ``spec()`` (used by worker processes)."""
    from fedcredit.crypto import mock_arith, paillier_arith

    kind = spec[0]
    if kind == "paillier":
        return paillier_arith.PaillierArith(spec[1], spec[2], spec[3])
    if kind == "paillier-crt":
        return paillier_arith.PaillierCrtArith(*spec[1:])
    if kind == "paillier-private":
        return paillier_arith.PaillierDecryptor(*spec[1:])
    if kind == "mock":
        return mock_arith.MockArith(spec[1])
    if kind == "mock-private":
        return mock_arith.MockDecryptor(spec[1])
    if kind == "x25519-blind":
        from fedcredit.crypto.blinding import BlindingKey

        return BlindingKey(spec[1])
    raise CryptoError(f"unknown arithmetic spec {kind!r}")


class Backend:
    """Entry point for one backend: generate, wrap and load keys."""

    def __init__(self, name: str) -> None:
        self.name = name

    def generate_keypair(self, bits: int = 2048):
        from fedcredit.crypto.keys import PaillierKeypair

        return PaillierKeypair.generate(bits, backend=self.name)

    def public_key(self, n: int):
        from fedcredit.crypto.keys import PaillierPublicKey

        return PaillierPublicKey(n, backend=self.name)

    def __repr__(self) -> str:
        return f"Backend({self.name!r})"


def get_backend(name: str = "paillier", *, deployment: bool | None = None) -> Backend:
    """The backend called ``name``; ``deployment=None`` reads FEDCREDIT_DEPLOYMENT."""
    return Backend(check_backend(name, deployment))
