"""The quality gate before publication, and the grade-order check on held-out rows.

A model that ranks enterprises no better than chance (or no better than the bank's own
data) must not turn into signed credit limits. The coordinator judges the figures the
bank reports for its held-out rows (:func:`judge`); the bank alone holds labels, so it
alone checks that observed default rates fall from worse grades to better ones
(:func:`grade_order_warnings`). Both work on aggregates only (docs/leakage.md).
"""

from __future__ import annotations

import numpy as np

from fedcredit.common.errors import FedCreditError
from fedcredit.scoring.policy import QualityPolicy

#: a grade's observed default rate leaves the bank only over at least this many held-out rows
#: (a rate over a handful of known enterprises would come close to their labels)
MIN_GRADE_ROWS = 30


class QualityGateError(FedCreditError):
    """The model failed the quality gate: nothing is published (the message names the figures)."""


def held_out_rows(split: np.ndarray) -> tuple[str, np.ndarray]:
    """The rows the gate judges: validation rows, or the test rows when the job has none (``validation = 0``)."""
    validation = split == 1
    return ("validation", validation) if validation.any() else ("test", split == 2)


def figures(name: str, y: np.ndarray, scores: np.ndarray) -> dict:
    """``{"rows", "n", "auc"}`` of one model on held-out rows (``auc`` None when they hold one class only)."""
    from fedcredit.scoring import metrics

    y = np.asarray(y)
    auc = float(metrics.auc(y, scores)) if len(np.unique(y)) == 2 else None
    return {"rows": name, "n": int(len(y)), "auc": auc}


def judge(policy: QualityPolicy, joint: dict, bank_only: dict | None) -> dict:
    """The gate's verdict on the joint model's held-out figures (and the bank-only model's, when trained)."""
    auc, base = joint.get("auc"), (bank_only or {}).get("auc")
    failures = []
    if auc is None:
        failures.append(f"no {joint.get('rows', 'held-out')} AUC ({joint.get('n', 0)} rows hold only one class)")
    elif auc < policy.min_auc:
        failures.append(f"{joint['rows']} AUC {auc:.3f} is below the floor {policy.min_auc:g}")
    if auc is not None and base is not None and auc < base + policy.min_margin_over_bank_only:
        failures.append(f"{joint['rows']} AUC {auc:.3f} does not beat the bank-only model's {base:.3f} "
                        f"by the margin {policy.min_margin_over_bank_only:g}")
    return {"passed": not failures, "failures": failures, "rows": joint.get("rows"), "n": joint.get("n"),
            "auc": auc, "bank_only_auc": base, "min_auc": policy.min_auc,
            "min_margin_over_bank_only": policy.min_margin_over_bank_only, "override": False}


def refusal(verdict: dict) -> str:
    """The message of a failed gate: every figure, what happened, how to publish anyway."""
    base, failures = verdict.get("bank_only_auc"), verdict["failures"]
    if base is None:
        context = "; no bank-only baseline trained"
    elif any("bank-only" in f for f in failures):
        context = ""  # the margin failure names both figures
    else:
        context = f"; bank-only {base:.3f} (margin {verdict['min_margin_over_bank_only']:g})"
    return (f"quality gate: {'; '.join(failures)}{context} ({verdict['n']} {verdict['rows']} rows): "
            f"nothing published; use --allow-weak-model to publish anyway")


def grade_order_warnings(grades, y, order: list[str], tolerance: float) -> list[dict]:
    """Adjacent grades (best first, among those with at least ``MIN_GRADE_ROWS`` rows) whose better
    grade shows a higher observed default rate than the worse one by more than ``tolerance``."""
    grades, y = np.asarray(grades, dtype=object), np.asarray(y, dtype=float)
    rated = []
    for g in order:
        rows = grades == g
        if rows.sum() >= MIN_GRADE_ROWS:
            rated.append((g, int(rows.sum()), float(y[rows].mean())))
    return [{"better": b[0], "worse": w[0], "better_rate": round(b[2], 4), "worse_rate": round(w[2], 4),
             "better_rows": b[1], "worse_rows": w[1]}
            for b, w in zip(rated, rated[1:]) if b[2] > w[2] + tolerance]


def describe_warning(w: dict, rows: str) -> str:
    return (f"grade {w['better']} defaults at {w['better_rate']:.1%} on {w['better_rows']} {rows} rows, more than "
            f"the worse grade {w['worse']} at {w['worse_rate']:.1%} ({w['worse_rows']} rows)")
