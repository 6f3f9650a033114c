"""Plaintext stand-in for ``paillier_arith``: "ciphertexts" are the encoded integers mod n.

Same method names and the same serialized size as the Paillier backend, so a protocol
runs unchanged; used to debug protocols and to measure their overhead without
cryptography. It provides no secrecy at all and is refused in deployment mode.
"""

from __future__ import annotations


class MockGroup:
    """Integers mod n under addition, exposed with the Paillier group's method names."""

    def __init__(self, n) -> None:
        self.n = int(n)
        self.n2 = self.n * self.n
        self.one = 0

    def mul(self, a, b):
        return (a + b) % self.n

    def inv(self, a):
        return -a % self.n

    def pow2k(self, a, k: int):
        return (a << k) % self.n

    def add_vec(self, a: list, b: list) -> list:
        n = self.n
        return [(x + y) % n for x, y in zip(a, b)]

    def plain(self, m: int):
        return int(m) % self.n

    def add_plain_vec(self, a: list, ints: list) -> list:
        n = self.n
        return [(c + int(m)) % n for c, m in zip(a, ints)]

    def mul_scalar_vec(self, a: list, ints: list) -> list:
        n = self.n
        return [c * int(s) % n for c, s in zip(a, ints)]

    def is_valid(self, c) -> bool:
        return 0 <= c < self.n

    @staticmethod
    def parse(value: int):
        return int(value)


class MockArith(MockGroup):
    backend = "mock"

    def spec(self) -> tuple:
        return ("mock", self.n)

    def encrypt(self, ints: list) -> list:
        n = self.n
        return [int(m) % n for m in ints]

    def rerandomize(self, cts: list) -> list:
        return list(cts)


class MockDecryptor:
    backend = "mock"

    def __init__(self, n, p=None, q=None) -> None:
        self.n = int(n)
        self.half = (self.n - 1) // 2

    def spec(self) -> tuple:
        return ("mock-private", self.n)

    def decrypt(self, cts: list) -> list[int]:
        n, half = self.n, self.half
        return [int(c) - n if c > half else int(c) for c in cts]
