"""Centralized reference for a job: the same model and binning trained on pooled data.

Only possible where every node's file is readable in one place (the embedded demo,
benchmarks); a real federation never pools its data. It derives the job's own split from
the aligned IDs (``split_assignment``, as every node does), so both models see the same
train and test enterprises, and it can run before the job: the bank's report shows it.
"""

from __future__ import annotations


import numpy as np
from sklearn.linear_model import LogisticRegression

from fedcredit.data.binning import STANDARD_SCALE_BITS, FeaturePrep
from fedcredit.data.validate import load_node
from fedcredit.models.gbdt_reference import GbdtReference, PartyBins
from fedcredit.protocols.design import Design
from fedcredit.protocols.job import ModelSettings, NodeConfig, split_assignment
from fedcredit.scoring import metrics


def _frame(node: NodeConfig, ids: np.ndarray):
    data = load_node(node.data, node.schema())
    position = {i: k for k, i in enumerate(data.ids)}
    rows = np.array([position[i] for i in ids])
    feats = node.pick_features(data)
    return feats.iloc[rows].reset_index(drop=True), (data.label[rows] if data.label is not None else None)


def centralized_auc(nodes: list[NodeConfig], ids: np.ndarray, settings: ModelSettings) -> float:
    """Test AUC of the same model on the pooled, identically prepared features of the aligned ``ids``:
    scikit-learn's logistic regression for the scorecard, the plaintext SecureBoost reference for trees."""
    split = split_assignment(ids, settings.seed, settings.train, settings.validation)
    train, valid, test = split == 0, split == 1, split == 2
    preps, frames, labels = [], [], None
    for node in nodes:
        frame, y = _frame(node, ids)
        labels = y if y is not None else labels
        preps.append(FeaturePrep.fit(frame[train], settings.mode, settings.n_bins, node.categorical))
        frames.append(frame)
    if settings.model == "secureboost":
        return _reference_gbdt_auc(nodes, preps, frames, labels, train, valid, test, settings)
    x = np.hstack([_dense(Design(prep, frame)) for prep, frame in zip(preps, frames)])
    model = LogisticRegression(C=1.0 / (settings.l2 * train.sum()), max_iter=5000)
    model.fit(x[train], labels[train])
    return metrics.auc(labels[test], model.decision_function(x[test]))


def _dense(design: Design) -> np.ndarray:
    if design.prep.mode == "binned":
        out = np.zeros((design.rows, design.width))
        out[np.arange(design.rows)[:, None], design.offsets + design.bins] = 1.0
        return out
    return design.matrix / float(1 << STANDARD_SCALE_BITS)


def _reference_gbdt_auc(nodes, preps, frames, labels, train, valid, test, settings: ModelSettings) -> float:
    """The lossless comparison: the same trees grown centrally on the joined bins (no GOSS seed is shared,
    so with GOSS the sample differs from the bank's)."""
    cfg = settings.sb_config().gbdt()
    bins = [(node.role, prep.bins(frame), [s.n_bins() for s in prep.specs]) for node, prep, frame in zip(nodes, preps, frames)]
    blocks = lambda rows: [PartyBins(role, b[rows], nb) for role, b, nb in bins]  # noqa: E731
    model = GbdtReference(cfg).fit(blocks(train), labels[train], (blocks(valid), labels[valid]) if cfg.patience else None)
    return metrics.auc(labels[test], model.decision_function(blocks(test)))
