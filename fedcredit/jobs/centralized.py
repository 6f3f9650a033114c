"""Centralized reference for a job: the same model and binning trained on pooled data.

Only possible where every node's file is readable in one place (the embedded demo,
benchmarks); a real federation never pools its data. It derives the job's own split from
the aligned IDs (``split_assignment``, as every node does), so both models see the same
train and test enterprises, and it can run before the job: the bank's report shows it.
"""

from __future__ import annotations


import numpy as np
from scipy import sparse
from sklearn.linear_model import LogisticRegression

from fedcredit.data.binning import STANDARD_SCALE_BITS, WOE_SCALE_BITS, FeaturePrep
from fedcredit.data.validate import load_node
from fedcredit.models.gbdt_reference import GbdtReference, PartyBins
from fedcredit.protocols.design import Design
from fedcredit.protocols.job import ModelSettings, NodeConfig, split_assignment
from fedcredit.scoring import metrics
from fedcredit.scoring.woe_binning import NodeBinning


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
    pooled = [_frame(node, ids) for node in nodes]
    labels = next(y for _, y in pooled if y is not None)
    frames = [frame for frame, _ in pooled]
    developments = [developed(node, frame[train].reset_index(drop=True), labels[train], settings) for node, frame
                    in zip(nodes, frames)]
    preps = [prep for _, prep in developments]
    if settings.model == "secureboost":
        directions = [b.directions() if settings.tree_monotone else None for b, _ in developments]
        return _reference_gbdt_auc(nodes, preps, frames, labels, train, valid, test, settings, directions)
    blocks = [_matrix(Design(prep, frame)) for prep, frame in zip(preps, frames)]
    x = sparse.hstack(blocks, format="csr") if any(sparse.issparse(b) for b in blocks) else np.hstack(blocks)
    del blocks
    best = None
    for l2 in sorted(settings.l2_grid, reverse=True) or [settings.l2]:  # the job's choice: best validation AUC
        model = LogisticRegression(C=1.0 / (l2 * train.sum()), max_iter=5000).fit(x[train], labels[train])
        val_auc = metrics.auc(labels[valid], model.decision_function(x[valid])) if settings.l2_grid else 0.0
        if best is None or val_auc > best[0]:
            best = (val_auc, model)
    return metrics.auc(labels[test], best[1].decision_function(x[test]))


def developed(node: NodeConfig, train_frame, train_labels: np.ndarray,
              settings: ModelSettings) -> tuple[NodeBinning, FeaturePrep]:
    """A node's features prepared as in the job, with the labels at hand: the same small-bin merges, monotone
    merges, WoE and selection (the federated run decides them from encrypted label sums, to equal values).
    Returns the binning (IV tables) and the selected features' preparation in the job's feature mode."""
    binning = NodeBinning(FeaturePrep.fit(train_frame, "binned", settings.n_bins, node.categorical), train_frame,
                          settings.woe_settings())
    binning.adopt(binning.decide_own(train_labels))
    kept = binning.select()
    return binning, kept.subset(kept.names, settings.mode)


def _matrix(design: Design):
    """A node's design as the reference model's input. One-hot bins are sparse (one 1 per feature and row):
    dense they would take rows × bins × 8 bytes, over a gigabyte at a million enterprises."""
    if design.prep.mode == "woe":
        return np.column_stack([np.ldexp(v.astype(float), -WOE_SCALE_BITS)[design.bins[:, j]]
                                for j, v in enumerate(design.woe_ints)]) if design.woe_ints else np.zeros((design.rows, 0))
    if design.prep.mode == "binned":
        columns = (design.offsets + design.bins).ravel()
        rows = np.repeat(np.arange(design.rows), design.bins.shape[1])
        return sparse.csr_matrix((np.ones(len(columns)), (rows, columns)), shape=(design.rows, design.width))
    return design.matrix / float(1 << STANDARD_SCALE_BITS)


def _reference_gbdt_auc(nodes, preps, frames, labels, train, valid, test, settings: ModelSettings,
                        directions: list) -> float:
    """The lossless comparison: the same trees grown centrally on the joined bins (no GOSS seed is shared,
    so with GOSS the sample differs from the bank's)."""
    cfg = settings.sb_config().gbdt()
    bins = [(node.role, prep.bins(frame), [s.n_bins() for s in prep.specs], d)
            for node, prep, frame, d in zip(nodes, preps, frames, directions)]
    blocks = lambda rows: [PartyBins(role, b[rows], nb, d) for role, b, nb, d in bins]  # noqa: E731
    model = GbdtReference(cfg).fit(blocks(train), labels[train], (blocks(valid), labels[valid]) if cfg.patience else None)
    return metrics.auc(labels[test], model.decision_function(blocks(test)))
