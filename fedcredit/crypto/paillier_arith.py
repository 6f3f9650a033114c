"""Raw Paillier arithmetic on gmpy2 integers: the only module that touches gmpy2.

Everything here works on lists of ciphertext integers under one public key; bounds,
scales and key checks live in ``vector.py``. The encryption path follows
Damgård-Jurik-Nielsen: ``g = n + 1`` so ``g^m = 1 + m*n (mod n^2)``, and the random
factor ``r^n`` is replaced by ``h_s^a`` with ``h_s = (-x^2)^n mod n^2`` fixed per
instance and a short random exponent ``a`` (see docs/crypto.md, "Randomness"). A
fixed-base table makes ``h_s^a`` cost one modular multiplication per 8-bit window.
"""

from __future__ import annotations

import os

import gmpy2
from gmpy2 import mpz

WINDOW_BITS = 8
DEFAULT_EXPONENT_BITS = 256
# The key holder's half-size tables: 11-bit windows, 24 instead of 32 multiplications per half
# (2 × 24 windows × 2,048 entries of 2048-bit numbers ≈ 28 MB per process, built in ~0.2 s).
CRT_WINDOW_BITS = 11


def to_mpz(values) -> list:
    """Convert Python ints to gmpy2 integers."""
    return [mpz(v) for v in values]


class FixedBaseTable:
    """Powers ``base^(j * 2^(w·i))`` so that ``base^a`` costs one mulmod per ``w``-bit window of ``a``.

    ``w = 8`` (the default) reads the exponent byte by byte; a wider window trades table memory
    (``2^w`` entries per window) for fewer multiplications per power.
    """

    def __init__(self, base, modulus, exponent_bits: int, window_bits: int = WINDOW_BITS) -> None:
        if exponent_bits % 8 or not 1 <= window_bits <= 16:
            raise ValueError(f"exponent_bits must be a multiple of 8 and the window 1..16 bits, got {exponent_bits}, {window_bits}")
        self.modulus, self.window_bits = modulus, window_bits
        self.n_windows = -(-exponent_bits // window_bits)
        rows = []
        step = mpz(base) % modulus
        for _ in range(self.n_windows):
            row = [mpz(1), step]
            for _ in range((1 << window_bits) - 2):
                row.append(row[-1] * step % modulus)
            rows.append(row)
            step = row[-1] * step % modulus
        self.rows = rows

    def power(self, exponent_bytes: bytes):
        """``base^a`` where ``a`` is the little-endian integer of ``exponent_bytes``."""
        rows, m = self.rows, self.modulus
        if self.window_bits == 8:
            acc = rows[0][exponent_bytes[0]]
            for i in range(1, self.n_windows):
                acc = acc * rows[i][exponent_bytes[i]] % m
            return acc
        a, w = int.from_bytes(exponent_bytes, "little"), self.window_bits
        mask = (1 << w) - 1
        acc = rows[0][a & mask]
        for i in range(1, self.n_windows):
            a >>= w
            acc = acc * rows[i][a & mask] % m
        return acc


class PaillierGroup:
    """Multiplicative group mod n^2 seen as an additive group of plaintexts."""

    def __init__(self, n) -> None:
        self.n = mpz(n)
        self.n2 = self.n * self.n
        self.one = mpz(1)

    def mul(self, a, b):
        """Homomorphic addition of two ciphertexts."""
        return a * b % self.n2

    def inv(self, a):
        """Homomorphic negation."""
        return gmpy2.invert(a, self.n2)

    def pow2k(self, a, k: int):
        """Homomorphic multiplication by 2^k."""
        return gmpy2.powmod(a, 1 << k, self.n2)

    def add_vec(self, a: list, b: list) -> list:
        n2 = self.n2
        return [x * y % n2 for x, y in zip(a, b)]

    def plain(self, m: int):
        """Deterministic encoding ``g^m = 1 + m*n`` (a valid but non-random ciphertext)."""
        return (1 + mpz(m) * self.n) % self.n2

    def add_plain_vec(self, a: list, ints: list) -> list:
        n, n2 = self.n, self.n2
        return [c * (1 + mpz(m) * n) % n2 for c, m in zip(a, ints)]

    def mul_scalar_vec(self, a: list, ints: list) -> list:
        n2 = self.n2
        return [gmpy2.powmod(c, s, n2) for c, s in zip(a, ints)]

    def is_valid(self, c) -> bool:
        return 0 < c < self.n2

    @staticmethod
    def parse(value: int):
        """A ciphertext integer in this backend's representation."""
        return mpz(value)


class PaillierArith(PaillierGroup):
    """Encryption under a public key with DJN randomness and a fixed-base table."""

    backend = "paillier"

    def __init__(self, n, h_s=None, exponent_bits: int = DEFAULT_EXPONENT_BITS) -> None:
        super().__init__(n)
        if h_s is None:
            x = mpz(int.from_bytes(os.urandom(self.n.bit_length() // 8 + 16), "big")) % self.n
            h_s = gmpy2.powmod(-(x * x) % self.n, self.n, self.n2)
        self.h_s = mpz(h_s)
        self.exponent_bits = exponent_bits
        self._table = None

    def spec(self) -> tuple:
        """Picklable description from which a worker process rebuilds this object."""
        return ("paillier", int(self.n), int(self.h_s), self.exponent_bits)

    @property
    def table(self) -> FixedBaseTable:
        if self._table is None:
            self._table = FixedBaseTable(self.h_s, self.n2, self.exponent_bits)
        return self._table

    def random_factors(self, count: int) -> list:
        """``count`` fresh values ``h_s^a`` with ``a`` uniform of ``exponent_bits`` bits."""
        return self.factors_from(os.urandom(self.exponent_bits // 8 * count))

    def factors_from(self, noise: bytes) -> list:
        """``h_s^a`` for each ``exponent_bits``-bit exponent ``a`` in ``noise`` (little-endian, back to back)."""
        width, power = self.exponent_bits // 8, self.table.power
        return [power(noise[i : i + width]) for i in range(0, len(noise), width)]

    def encrypt(self, ints: list) -> list:
        n, n2 = self.n, self.n2
        return [(1 + mpz(m) * n) * r % n2 for m, r in zip(ints, self.random_factors(len(ints)))]

    def rerandomize(self, cts: list) -> list:
        n2 = self.n2
        return [c * r % n2 for c, r in zip(cts, self.random_factors(len(cts)))]


class PaillierCrtArith(PaillierArith):
    """Encryption by the private key's holder: the same ciphertexts, about twice as fast.

    Whoever holds ``p`` and ``q`` can compute ``h_s^a`` and ``(1 + m·n)·h_s^a`` modulo ``p^2``
    and ``q^2`` (numbers half as long, so each multiplication costs a fraction) and join the
    two residues once (CRT). The coordinator encrypts every training row's ``σ(z)`` each
    scorecard iteration, and the SecureBoost and WoE banks their gradients and labels, all under
    their own keys: that is most of a large job's encryption work. Worker processes receive
    ``p`` and ``q`` in ``spec()``, so this object only goes to the key holder's own workers.
    """

    def __init__(self, n, p, q, h_s=None, exponent_bits: int = DEFAULT_EXPONENT_BITS) -> None:
        super().__init__(n, h_s, exponent_bits)
        p, q = mpz(p), mpz(q)
        if p * q != self.n:
            raise ValueError("p·q differs from the public modulus")
        self._primes = (int(p), int(q))
        self.p2, self.q2 = p * p, q * q
        self._join = gmpy2.invert(self.p2, self.q2)  # p^-2 mod q^2
        self._halves = None

    def spec(self) -> tuple:
        return ("paillier-crt", int(self.n), *self._primes, int(self.h_s), self.exponent_bits)

    @property
    def halves(self) -> tuple[FixedBaseTable, FixedBaseTable]:
        """Fixed-base tables of ``h_s`` modulo ``p^2`` and ``q^2``."""
        if self._halves is None:
            self._halves = (FixedBaseTable(self.h_s % self.p2, self.p2, self.exponent_bits, CRT_WINDOW_BITS),
                            FixedBaseTable(self.h_s % self.q2, self.q2, self.exponent_bits, CRT_WINDOW_BITS))
        return self._halves

    def _joined(self, xp, xq):
        """The number mod ``n^2`` that is ``xp`` mod ``p^2`` and ``xq`` mod ``q^2``."""
        return xp + self.p2 * ((xq - xp) * self._join % self.q2)

    def factors_from(self, noise: bytes) -> list:
        return [self._joined(xp, xq) for xp, xq in self._half_factors(noise)]

    def _half_factors(self, noise: bytes):
        width = self.exponent_bits // 8
        (tp, tq) = self.halves
        for i in range(0, len(noise), width):
            a = noise[i : i + width]
            yield tp.power(a), tq.power(a)

    def encrypt(self, ints: list) -> list:
        n, p2, q2 = self.n, self.p2, self.q2
        noise = os.urandom(self.exponent_bits // 8 * len(ints))
        out = []
        for m, (xp, xq) in zip(ints, self._half_factors(noise)):
            g_m = 1 + mpz(m) * n
            out.append(self._joined(g_m % p2 * xp % p2, g_m % q2 * xq % q2))
        return out


class PaillierDecryptor:
    """CRT decryption (mod p^2 and q^2, as phe does) returning signed ints in [-(n-1)/2, (n-1)/2]."""

    backend = "paillier"

    def __init__(self, n, p, q) -> None:
        p, q = (mpz(p), mpz(q)) if p < q else (mpz(q), mpz(p))
        self.n, self.p, self.q = mpz(n), p, q
        self.p2, self.q2 = p * p, q * q
        self.half = (self.n - 1) // 2
        self.p_inv = gmpy2.invert(p, q)
        self.hp = self._h(p, self.p2)
        self.hq = self._h(q, self.q2)

    def _h(self, x, x2):
        g_pow = gmpy2.powmod(self.n + 1, x - 1, x2)
        return gmpy2.invert((g_pow - 1) // x, x)

    def spec(self) -> tuple:
        return ("paillier-private", int(self.n), int(self.p), int(self.q))

    def decrypt(self, cts: list) -> list[int]:
        p, q, p2, q2, hp, hq = self.p, self.q, self.p2, self.q2, self.hp, self.hq
        pm1, qm1, p_inv, n, half = p - 1, q - 1, self.p_inv, self.n, self.half
        out = []
        for c in cts:
            mp = (gmpy2.powmod(c, pm1, p2) - 1) // p * hp % p
            mq = (gmpy2.powmod(c, qm1, q2) - 1) // q * hq % q
            m = mp + (mq - mp) * p_inv % q * p
            out.append(int(m - n) if m > half else int(m))
        return out
