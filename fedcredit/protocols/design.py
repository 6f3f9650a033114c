"""A party's local design matrix for the linear model, in plaintext and against encrypted residuals.

Binned features are one-hot columns (stored as bin indices: ``forward`` is a table
lookup, the encrypted backward pass a grouped sum); WoE features are one column per
feature holding its bin's WoE at a fixed-point scale (backward pass: the same grouped sum,
then a small dot product with the WoE values); standardized features are an integer
matrix at a fixed-point scale (backward pass: multi-exponentiation). The bank's design
also carries the intercept column.

Either binned kind gives every bin of a feature one effective weight (``bin_weights``):
the scores are sums of those, rounded to the protocol's fixed-point grid bin by bin
(``fixed_scores``), so a points-per-bin table adds up exactly to the published score.
"""

from __future__ import annotations

import numpy as np

from fedcredit.crypto import EncryptedVector
from fedcredit.data.binning import STANDARD_SCALE_BITS, WOE_SCALE_BITS, FeaturePrep


class Design:
    """Rows × parameters design of one party; parameters are this party's own."""

    def __init__(self, prep: FeaturePrep, frame, intercept: bool = False):
        self.prep = prep
        self.intercept = intercept
        if prep.mode in ("binned", "woe"):
            self.bins = prep.bins(frame)
            self.n_bins = [s.n_bins() for s in prep.specs]
            self.offsets = np.concatenate([[0], np.cumsum(self.n_bins)[:-1]]).astype(np.int64)
            self.width = int(sum(self.n_bins)) if prep.mode == "binned" else len(prep.specs)
            if prep.mode == "woe":
                self.woe_ints = [np.rint(np.ldexp(np.asarray(s.woe, dtype=float), WOE_SCALE_BITS)).astype(np.int64)
                                 for s in prep.specs]
                if any(len(w) != nb for w, nb in zip(self.woe_ints, self.n_bins)):
                    raise ValueError("WoE features need a WoE value per bin of every feature")
        else:
            self.matrix = prep.matrix(frame)
            self.width = self.matrix.shape[1]
        self.rows = len(frame)

    @property
    def n_params(self) -> int:
        return self.width + int(self.intercept)

    def labels(self) -> list[str]:
        return self.prep.column_labels() + (["intercept"] if self.intercept else [])

    @property
    def per_bin(self) -> bool:
        return self.prep.mode in ("binned", "woe")

    def bin_weights(self, w: np.ndarray) -> list[np.ndarray]:
        """Binned kinds: each feature's effective weight per bin (one-hot: its own weights; WoE: coefficient × WoE)."""
        w = np.asarray(w, dtype=float)
        if self.prep.mode == "binned":
            return [w[o : o + nb] for o, nb in zip(self.offsets, self.n_bins)]
        return [w[j] * np.ldexp(v.astype(float), -WOE_SCALE_BITS) for j, v in enumerate(self.woe_ints)]

    def fixed_scores(self, w: np.ndarray, scale_bits: int) -> np.ndarray:
        """``X_p w_p`` as int64 at ``2^scale_bits``: binned kinds round each bin's weight first (exact points tables)."""
        if not self.per_bin:
            return np.rint(np.ldexp(self.forward(w), scale_bits)).astype(np.int64)
        u = np.zeros(self.rows, dtype=np.int64)
        weights, intercept = self.grid_weights(w, scale_bits)
        for j, ints in enumerate(weights):
            u += ints[self.bins[:, j]]
        return u + intercept

    def coefficients(self, w: np.ndarray) -> list:
        """Binned kinds: per feature its coefficient (WoE) or its one-hot weights (one per bin)."""
        w = np.asarray(w, dtype=float)
        if self.prep.mode == "woe":
            return [float(v) for v in w[: self.width]]
        return [w[o : o + nb] for o, nb in zip(self.offsets, self.n_bins)]

    def grid_weights(self, w: np.ndarray, scale_bits: int) -> tuple[list[np.ndarray], int]:
        """Each feature's bin weights and the intercept (0 at a host) as integers at ``2^scale_bits``: what the
        scores are summed from, so also what a points table is made of."""
        ints = [np.rint(np.ldexp(v, scale_bits)).astype(np.int64) for v in self.bin_weights(w)]
        return ints, int(np.rint(np.ldexp(float(w[-1]), scale_bits))) if self.intercept else 0

    def forward(self, w: np.ndarray) -> np.ndarray:
        """This party's partial linear predictor ``X_p w_p`` for every row."""
        w = np.asarray(w, dtype=float)
        if self.prep.mode == "binned":
            u = w[: self.width][self.offsets + self.bins].sum(axis=1) if self.bins.size else np.zeros(self.rows)
        elif self.prep.mode == "woe":
            u = np.zeros(self.rows)
            for j, weights in enumerate(self.bin_weights(w)):
                u += weights[self.bins[:, j]]
        else:
            u = self.matrix @ w[: self.width] / (1 << STANDARD_SCALE_BITS)
        return u + (w[-1] if self.intercept else 0.0)

    def backward(self, d: np.ndarray) -> np.ndarray:
        """Plaintext ``X_p^T d`` (reference and tests)."""
        d = np.asarray(d, dtype=float)
        if self.prep.mode == "binned":
            g = np.zeros(self.width)
            np.add.at(g, (self.offsets + self.bins).ravel(), np.repeat(d, self.bins.shape[1]))
        elif self.prep.mode == "woe":
            g = np.array([np.ldexp(v.astype(float), -WOE_SCALE_BITS)[self.bins[:, j]] @ d
                          for j, v in enumerate(self.woe_ints)])
        else:
            g = self.matrix.T @ d / (1 << STANDARD_SCALE_BITS)
        return np.append(g, d.sum()) if self.intercept else g

    def backward_encrypted(self, d: EncryptedVector, pool=None) -> EncryptedVector:
        """``X_p^T [[d]]`` at the scale of ``d`` (one modular multiplication per row per binned feature)."""
        if self.per_bin:
            if self.bins.shape[1]:
                sums = d.grouped_sum(self.bins, self.n_bins, pool=pool)
                width = sums.shape[1]
                keep = [j * width + b for j, nb in enumerate(self.n_bins) for b in range(nb)]
                g = sums.take(keep)
                if self.prep.mode == "woe":  # Σ_b WoE_jb · (sum of d over bin b), per feature
                    g = g.dot(self._woe_matrix(), scale_bits=WOE_SCALE_BITS, pool=pool)
            else:
                g = None
        else:
            g = d.dot(self.matrix, scale_bits=STANDARD_SCALE_BITS, pool=pool)
        if self.intercept:
            total = d.sum()
            if g is not None and g.scale_bits != total.scale_bits:  # bring the intercept to the matrix scale
                total = EncryptedVector(total.key, total.mul_scalar(1 << (g.scale_bits - total.scale_bits)).data,
                                        g.scale_bits, total.bound << (g.scale_bits - total.scale_bits))
            g = total if g is None else _concat(g, total)
        return g

    def reason_codes(self, w: np.ndarray, top: int = 2) -> list[list[str]]:
        """Per row, this party's ``top`` most adverse features by name (no values, no bins).

        A binned feature is adverse by how far its bin's weight lies above the feature's
        best bin; a standardized one by its positive contribution ``w·x``. Only features
        that actually raise the risk are named.
        """
        names = self.prep.names
        w = np.asarray(w, dtype=float)
        if self.per_bin:
            if not self.n_bins:
                return [[] for _ in range(self.rows)]
            weights = self.bin_weights(w)
            adverse = np.column_stack([v[self.bins[:, j]] - v.min() for j, v in enumerate(weights)])
        else:
            contrib = self.matrix * w[: self.width] / (1 << STANDARD_SCALE_BITS)
            adverse, col = [], 0
            for spec in self.prep.specs:  # a feature spans its value and missing columns (or its categories)
                span = spec.n_bins() if spec.kind == "category" else 2
                adverse.append(contrib[:, col : col + span].sum(axis=1))
                col += span
            adverse = np.stack(adverse, axis=1) if adverse else np.zeros((self.rows, 0))
        order = np.argsort(-adverse, axis=1)[:, :top]
        return [[names[j] for j in row if adverse[i, j] > 1e-9] for i, row in enumerate(order)]

    def _woe_matrix(self) -> np.ndarray:
        """(all bins) × features: feature j's column holds its bins' WoE integers, zeros elsewhere."""
        out = np.zeros((int(sum(self.n_bins)), len(self.n_bins)), dtype=np.int64)
        for j, (o, v) in enumerate(zip(self.offsets, self.woe_ints)):
            out[o : o + len(v), j] = v
        return out

    def curvature(self) -> np.ndarray:
        """diag(X_p^T X_p) / rows: the Jacobi preconditioner's local part."""
        if self.prep.mode == "binned":
            counts = np.concatenate([np.bincount(self.bins[:, j], minlength=nb) for j, nb in enumerate(self.n_bins)]) if self.n_bins else np.zeros(0)
            diag = counts.astype(float)
        elif self.prep.mode == "woe":
            diag = np.array([float((np.ldexp(v.astype(float), -WOE_SCALE_BITS)[self.bins[:, j]] ** 2).sum())
                             for j, v in enumerate(self.woe_ints)])
        else:
            diag = (self.matrix.astype(float) / (1 << STANDARD_SCALE_BITS)) ** 2
            diag = diag.sum(axis=0)
        if self.intercept:
            diag = np.append(diag, self.rows)
        return diag / max(self.rows, 1)


def _concat(a: EncryptedVector, b: EncryptedVector) -> EncryptedVector:
    return EncryptedVector(a.key, list(a.data) + list(b.data), a.scale_bits, max(a.bound, b.bound))
