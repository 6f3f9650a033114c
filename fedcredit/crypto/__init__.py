"""Crypto layer: fast Paillier vectors (phe-compatible), sealed envelopes, signing identities.

Protocols use only the names exported here. Raw big-integer arithmetic (gmpy2) lives in
``paillier_arith`` behind the group interface used by ``kernels``.
"""

from fedcredit.crypto.backend import BACKENDS, Backend, get_backend
from fedcredit.crypto.errors import (
    CapacityError,
    CryptoError,
    EnvelopeError,
    KeyFileError,
    KeyMismatchError,
    MockBackendRefused,
    ReplayError,
    SerializationError,
    SignatureError,
)
from fedcredit.crypto.envelope import Mailbox, Opened, Outbox, ReplayGuard, seal
from fedcredit.crypto.fixedpoint import FixedPoint
from fedcredit.crypto.identity import Identity, PublicIdentity
from fedcredit.crypto.keys import PaillierKeypair, PaillierPublicKey, generate_keypair
from fedcredit.crypto.packing import PackedVector, Packer
from fedcredit.crypto.parallel import WorkerPool, configure as configure_workers, shutdown as shutdown_workers
from fedcredit.crypto.ray_pool import RayPool, make_pool
from fedcredit.crypto.vector import EncryptedVector

__all__ = [
    "BACKENDS", "Backend", "get_backend",
    "CapacityError", "CryptoError", "EnvelopeError", "KeyFileError", "KeyMismatchError",
    "MockBackendRefused", "ReplayError", "SerializationError", "SignatureError",
    "Mailbox", "Opened", "Outbox", "ReplayGuard", "seal", "Identity", "PublicIdentity",
    "FixedPoint", "PaillierKeypair", "PaillierPublicKey", "generate_keypair",
    "PackedVector", "Packer", "WorkerPool", "RayPool", "make_pool", "configure_workers", "shutdown_workers", "EncryptedVector",
]
