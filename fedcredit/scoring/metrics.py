"""Discrimination metrics credit teams report: AUC, KS, Gini (on scikit-learn's ROC)."""

from __future__ import annotations

import numpy as np

from fedcredit.common.errors import FedCreditError


def _check(y, score) -> tuple[np.ndarray, np.ndarray]:
    y, score = np.asarray(y).astype(int), np.asarray(score, dtype=float)
    if y.shape != score.shape or y.ndim != 1:
        raise FedCreditError(f"labels and scores must be 1-D of equal length, got {y.shape} and {score.shape}")
    if len(np.unique(y)) < 2:
        raise FedCreditError("AUC and KS need both defaults and non-defaults in the evaluated rows")
    return y, score


def auc(y, score) -> float:
    from sklearn.metrics import roc_auc_score  # imported when used: a node's per-message process rarely needs it

    y, score = _check(y, score)
    return float(roc_auc_score(y, score))


def ks(y, score) -> float:
    """Kolmogorov-Smirnov statistic: the largest gap between the bad and good score distributions."""
    from sklearn.metrics import roc_curve

    y, score = _check(y, score)
    fpr, tpr, _ = roc_curve(y, score)
    return float(np.max(tpr - fpr))


def gini(y, score) -> float:
    return 2.0 * auc(y, score) - 1.0


def summary(y, score) -> dict[str, float]:
    """AUC, KS and Gini of ``score`` (higher = riskier) against default labels ``y``."""
    a = auc(y, score)
    return {"auc": a, "ks": ks(y, score), "gini": 2.0 * a - 1.0}
