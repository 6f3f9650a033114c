"""Distributed L-BFGS: parameters are split across parties, only small Gram matrices are pooled.

Each party keeps its block of the recent steps ``s``, gradient changes ``y`` and the
current gradient ``g`` (the basis). The two-loop recursion needs nothing but inner
products among basis vectors, so every party sends the Gram matrix of its blocks,
the coordinator adds them, runs the recursion on coefficients (vector-free L-BFGS,
Chen et al. 2014) and sends back the coefficients of the search direction; each
party forms its own block of the direction. One reduction per iteration.
"""

from __future__ import annotations

import numpy as np


class LbfgsBlock:
    """One party's block of the optimizer state (in its preconditioned coordinates)."""

    def __init__(self, memory: int):
        self.memory = memory
        self.s: list[np.ndarray] = []
        self.y: list[np.ndarray] = []
        self.g: np.ndarray | None = None
        self.direction: np.ndarray | None = None

    def basis(self) -> list[np.ndarray]:
        return [*self.s, *self.y, self.g]

    def gram(self) -> np.ndarray:
        b = np.array(self.basis())
        return b @ b.T

    def accept(self, step: np.ndarray, gradient: np.ndarray) -> None:
        """Record an accepted step and the new gradient.

        The L2-regularized logistic loss is strictly convex, so every accepted pair
        has positive curvature ``s·y`` and is kept.
        """
        if self.g is not None:
            self.s.append(step)
            self.y.append(gradient - self.g)
            if len(self.s) > self.memory:
                self.s.pop(0), self.y.pop(0)
        self.g = gradient

    def set_direction(self, coeffs) -> np.ndarray:
        basis = self.basis()
        if len(coeffs) != len(basis):
            raise ValueError(f"{len(coeffs)} direction coefficients for a basis of {len(basis)} vectors")
        self.direction = np.tensordot(np.asarray(coeffs, dtype=float), np.array(basis), axes=1)
        return self.direction


def two_loop(gram: np.ndarray, pairs: int) -> np.ndarray:
    """Coefficients (over basis ``[s_1..s_k, y_1..y_k, g]``) of the L-BFGS direction ``-H g``."""
    size = 2 * pairs + 1
    if gram.shape != (size, size):
        raise ValueError(f"Gram matrix {gram.shape} does not match {pairs} pairs")
    s_idx, y_idx, g_idx = list(range(pairs)), list(range(pairs, 2 * pairs)), 2 * pairs
    q = np.zeros(size)
    q[g_idx] = 1.0
    alphas = np.zeros(pairs)
    rho = [1.0 / gram[s_idx[i], y_idx[i]] for i in range(pairs)]
    for i in reversed(range(pairs)):
        alphas[i] = rho[i] * (gram[s_idx[i]] @ q)
        q[y_idx[i]] -= alphas[i]
    gamma = gram[s_idx[-1], y_idx[-1]] / gram[y_idx[-1], y_idx[-1]] if pairs else 1.0
    r = gamma * q
    for i in range(pairs):
        beta = rho[i] * (gram[y_idx[i]] @ r)
        r[s_idx[i]] += alphas[i] - beta
    return -r


def directional_derivative(gram: np.ndarray, coeffs: np.ndarray) -> float:
    """``g·p`` for a direction given by its basis coefficients (g is the last basis vector)."""
    return float(gram[-1] @ coeffs)
