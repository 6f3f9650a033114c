"""A party's local design matrix for the linear model, in plaintext and against encrypted residuals.

Binned features are one-hot columns (stored as bin indices: ``forward`` is a table
lookup, the encrypted backward pass a grouped sum); standardized features are an
integer matrix at a fixed-point scale (backward pass: multi-exponentiation). The
bank's design also carries the intercept column.
"""

from __future__ import annotations

import numpy as np

from fedcredit.crypto import EncryptedVector
from fedcredit.data.binning import STANDARD_SCALE_BITS, FeaturePrep


class Design:
    """Rows × parameters design of one party; parameters are this party's own."""

    def __init__(self, prep: FeaturePrep, frame, intercept: bool = False):
        self.prep = prep
        self.intercept = intercept
        if prep.mode == "binned":
            self.bins = prep.bins(frame)
            self.n_bins = [s.n_bins() for s in prep.specs]
            self.offsets = np.concatenate([[0], np.cumsum(self.n_bins)[:-1]]).astype(np.int64)
            self.width = int(sum(self.n_bins))
        else:
            self.matrix = prep.matrix(frame)
            self.width = self.matrix.shape[1]
        self.rows = len(frame)

    @property
    def n_params(self) -> int:
        return self.width + int(self.intercept)

    def labels(self) -> list[str]:
        return self.prep.column_labels() + (["intercept"] if self.intercept else [])

    def forward(self, w: np.ndarray) -> np.ndarray:
        """This party's partial linear predictor ``X_p w_p`` for every row."""
        w = np.asarray(w, dtype=float)
        if self.prep.mode == "binned":
            u = w[: self.width][self.offsets + self.bins].sum(axis=1) if self.bins.size else np.zeros(self.rows)
        else:
            u = self.matrix @ w[: self.width] / (1 << STANDARD_SCALE_BITS)
        return u + (w[-1] if self.intercept else 0.0)

    def backward(self, d: np.ndarray) -> np.ndarray:
        """Plaintext ``X_p^T d`` (reference and tests)."""
        d = np.asarray(d, dtype=float)
        if self.prep.mode == "binned":
            g = np.zeros(self.width)
            np.add.at(g, (self.offsets + self.bins).ravel(), np.repeat(d, self.bins.shape[1]))
        else:
            g = self.matrix.T @ d / (1 << STANDARD_SCALE_BITS)
        return np.append(g, d.sum()) if self.intercept else g

    def backward_encrypted(self, d: EncryptedVector, pool=None) -> EncryptedVector:
        """``X_p^T [[d]]`` at the scale of ``d`` (one modular multiplication per row per binned feature)."""
        if self.prep.mode == "binned":
            if self.bins.shape[1]:
                sums = d.grouped_sum(self.bins, self.n_bins, pool=pool)
                width = sums.shape[1]
                keep = [j * width + b for j, nb in enumerate(self.n_bins) for b in range(nb)]
                g = sums.take(keep)
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
        if self.prep.mode == "binned":
            if not self.n_bins:
                return [[] for _ in range(self.rows)]
            best = np.array([w[o : o + nb].min() for o, nb in zip(self.offsets, self.n_bins)])
            adverse = w[self.offsets + self.bins] - best
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

    def curvature(self) -> np.ndarray:
        """diag(X_p^T X_p) / rows: the Jacobi preconditioner's local part."""
        if self.prep.mode == "binned":
            counts = np.concatenate([np.bincount(self.bins[:, j], minlength=nb) for j, nb in enumerate(self.n_bins)]) if self.n_bins else np.zeros(0)
            diag = counts.astype(float)
        else:
            diag = (self.matrix.astype(float) / (1 << STANDARD_SCALE_BITS)) ** 2
            diag = diag.sum(axis=0)
        if self.intercept:
            diag = np.append(diag, self.rows)
        return diag / max(self.rows, 1)


def _concat(a: EncryptedVector, b: EncryptedVector) -> EncryptedVector:
    return EncryptedVector(a.key, list(a.data) + list(b.data), a.scale_bits, max(a.bound, b.bound))
