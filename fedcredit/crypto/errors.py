"""Crypto-layer errors: every failure a user or a protocol must see, named and explained."""

from __future__ import annotations

from fedcredit.common.errors import FedCreditError


class CryptoError(FedCreditError):
    """Base class for errors raised by fedcredit.crypto."""


class CapacityError(CryptoError):
    """A value or a homomorphic result would not fit the plaintext space (it would wrap mod n)."""


class KeyMismatchError(CryptoError):
    """Two operands were encrypted under different keys or with different fixed-point scales."""


class KeyFileError(CryptoError):
    """A key file is missing, malformed, inconsistent or too widely readable."""


class SerializationError(CryptoError):
    """Bytes or an Arrow array do not hold well-formed ciphertexts for the given key."""


class MockBackendRefused(CryptoError):
    """The plaintext mock backend was requested in deployment mode."""


class SignatureError(CryptoError):
    """A signature did not verify for the claimed signer."""


class EnvelopeError(CryptoError):
    """A sealed envelope could not be opened; the message names sender, step and cause."""


class ReplayError(EnvelopeError):
    """A sealed envelope was already accepted once."""
