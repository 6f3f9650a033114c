"""Plaintext SecureBoost reference: XGBoost-style trees on bins, checked by hand and against scikit-learn."""

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from fedcredit.data import synth
from fedcredit.data.binning import FeaturePrep
from fedcredit.data.reference import feature_names, join_nodes
from fedcredit.common.errors import FedCreditError
from fedcredit.models import gbdt_reference as ref
from fedcredit.models.gbdt_reference import GbdtConfig, GbdtReference, PartyBins
from fedcredit.protocols.job import split_assignment
from fedcredit.scoring import metrics

ROLES = ("bank", "tax", "utilities")


def binned(rows: int, seed: int = 0):
    """Synthetic rows binned per node as the LR job does (FeaturePrep fitted on training rows only)."""
    joined = join_nodes(synth.generate(rows, seed))
    y = joined["default_12m"].to_numpy()
    split = split_assignment(joined["uscc"].tolist(), seed, 0.6, 0.2)
    parties = []
    for role in ROLES:
        frame = joined[feature_names(role)]
        prep = FeaturePrep.fit(frame[split == 0])
        parties.append(PartyBins(role, prep.bins(frame), [s.n_bins() for s in prep.specs]))
    return parties, y, split


def rows_of(parties, mask):
    return [PartyBins(p.name, p.bins[mask], p.n_bins) for p in parties]


def test_auc_is_close_to_sklearn_hist_gradient_boosting_on_the_same_bins():
    parties, y, split = binned(8000)
    train, test = split == 0, split == 2
    cfg = GbdtConfig(n_trees=40, max_depth=3, learning_rate=0.1, l2=1.0)
    model = GbdtReference(cfg).fit(rows_of(parties, train), y[train])
    auc = metrics.auc(y[test], model.decision_function(rows_of(parties, test)))
    x = np.hstack([p.bins for p in parties])
    hgb = HistGradientBoostingClassifier(max_iter=40, max_depth=3, learning_rate=0.1, l2_regularization=1.0,
                                         max_leaf_nodes=None, min_samples_leaf=1, early_stopping=False).fit(x[train], y[train])
    hgb_auc = metrics.auc(y[test], hgb.decision_function(x[test]))
    assert auc > 0.8 and abs(auc - hgb_auc) < 0.01, (auc, hgb_auc)
    losses = [h["loss"] for h in model.history]
    assert all(b < a for a, b in zip(losses, losses[1:]))  # every tree lowers the training loss


def test_fixed_point_and_float_gradients_agree():
    parties, y, split = binned(3000)
    train, test = split == 0, split == 2
    cfg = dict(n_trees=10, max_depth=3, learning_rate=0.3)
    fixed = GbdtReference(GbdtConfig(**cfg)).fit(rows_of(parties, train), y[train])
    real = GbdtReference(GbdtConfig(**cfg, scale_bits=None)).fit(rows_of(parties, train), y[train])
    a = fixed.decision_function(rows_of(parties, test))
    b = real.decision_function(rows_of(parties, test))
    assert np.abs(a - b).max() < 1e-3
    assert [n.feature for n in fixed.trees[0].nodes] == [n.feature for n in real.trees[0].nodes]


def test_histogram_subtraction_equals_direct_sums():
    rng = np.random.default_rng(1)
    bins = rng.integers(0, 5, size=(200, 3))
    g, h = rng.integers(-2**16, 2**16, 200), rng.integers(0, 2**14, 200)
    left = rng.random(200) < 0.3
    parent = ref.histogram(bins, [5, 5, 5], g, h)
    small = ref.histogram(bins[left], [5, 5, 5], g[left], h[left])
    direct = ref.histogram(bins[~left], [5, 5, 5], g[~left], h[~left])
    assert np.array_equal(parent[0] - small[0], direct[0]) and np.array_equal(parent[1] - small[1], direct[1])
    assert parent[0].dtype == np.int64


def test_a_stump_by_hand():
    # one feature, two bins: rows 0-1 in bin 0 (y=1), rows 2-3 in bin 1 (y=0); float gradients
    bins = np.array([[0], [0], [1], [1]])
    y = np.array([1.0, 1.0, 0.0, 0.0])
    cfg = GbdtConfig(n_trees=1, max_depth=1, learning_rate=1.0, l2=1.0, min_child_weight=0.0, scale_bits=None)
    model = GbdtReference(cfg).fit([PartyBins("bank", bins, [3])], y)
    tree = model.trees[0]
    assert model.base == 0.0 and (tree.nodes[0].feature, tree.nodes[0].bin) == (0, 0)
    # p = 0.5 everywhere: g = ∓0.5, h = 0.25; left G = -1, H = 0.5 -> w = 1/1.5
    assert tree.nodes[1].weight == pytest.approx(1 / 1.5) and tree.nodes[2].weight == pytest.approx(-1 / 1.5)
    gain = ref.best_split(*ref.histogram(bins, [3], *ref.gradients(np.zeros(4), y, None)), [3], 0.0, 1.0, cfg)
    assert gain[0] == pytest.approx(0.5 * (1 / 1.5 + 1 / 1.5 - 0))
    # min_child_weight and gamma stop the split
    assert ref.best_split(*ref.histogram(bins, [3], *ref.gradients(np.zeros(4), y, None)), [3], 0.0, 1.0,
                          GbdtConfig(min_child_weight=0.6, scale_bits=None)) is None
    assert ref.best_split(*ref.histogram(bins, [3], *ref.gradients(np.zeros(4), y, None)), [3], 0.0, 1.0,
                          GbdtConfig(gamma=1.0, min_child_weight=0.0, scale_bits=None)) is None


def test_ties_go_to_the_lowest_party_feature_and_bin():
    rng = np.random.default_rng(2)
    col = rng.integers(0, 4, size=(300, 1))
    y = (col[:, 0] >= 2).astype(float)
    same = np.hstack([col, col])  # two identical features at each party
    cfg = GbdtConfig(n_trees=1, max_depth=1)
    model = GbdtReference(cfg).fit([PartyBins("bank", same, [5, 5]), PartyBins("tax", same, [5, 5])], y)
    root = model.trees[0].nodes[0]
    assert (root.party, root.feature, root.bin) == ("bank", 0, 1)
    model = GbdtReference(cfg).fit([PartyBins("bank", np.zeros((300, 0), dtype=int), []),
                                    PartyBins("tax", same, [5, 5]), PartyBins("utilities", same, [5, 5])], y)
    root = model.trees[0].nodes[0]
    assert (root.party, root.feature, root.bin) == ("tax", 0, 1)


def test_settings_and_inputs_are_checked():
    with pytest.raises(FedCreditError, match="max_depth"):
        GbdtConfig(max_depth=0)
    with pytest.raises(FedCreditError, match="l2"):
        GbdtConfig(l2=0)
    with pytest.raises(FedCreditError, match="rows"):
        GbdtReference().fit([PartyBins("bank", np.zeros((3, 1), dtype=int), [2])], np.zeros(4))


def test_goss_keeps_the_largest_gradients_and_amplifies_the_drawn_rows():
    rng = np.random.default_rng(4)
    n = 1000
    g, h = rng.integers(-2**16, 2**16, n), rng.integers(0, 2**14, n)
    cfg = GbdtConfig(goss_top=0.1, goss_other=0.2, goss_seed=7)
    rows, g2, h2 = ref.goss(g, h, cfg, tree=0)
    top = np.argsort(-np.abs(g), kind="stable")[:100]
    assert len(rows) == 300 and np.all(np.diff(rows) > 0) and set(top) <= set(rows)
    drawn = np.setdiff1d(rows, top)
    factor = (1 - 0.1) / 0.2
    assert np.array_equal(g2[drawn], np.rint(g[drawn] * factor).astype(np.int64))
    assert np.array_equal(h2[drawn], np.rint(h[drawn] * factor).astype(np.int64))
    rest = np.setdiff1d(np.arange(n), drawn)
    assert np.array_equal(g2[rest], g[rest]) and np.array_equal(h2[rest], h[rest]) and g2.dtype == np.int64
    again = ref.goss(g, h, cfg, tree=0)
    assert np.array_equal(again[0], rows) and np.array_equal(again[1], g2)  # deterministic
    assert not np.array_equal(ref.goss(g, h, cfg, tree=1)[0], rows)  # a new draw per tree ...
    assert not np.array_equal(ref.goss(g, h, GbdtConfig(goss_top=0.1, goss_other=0.2, goss_seed=8), 0)[0], rows)  # ... and seed
    off = ref.goss(g, h, GbdtConfig(), tree=0)
    assert np.array_equal(off[0], np.arange(n)) and off[1] is g
    with pytest.raises(FedCreditError, match="goss"):
        GbdtConfig(goss_top=0.6, goss_other=0.5)


def test_goss_and_early_stopping_models_stay_accurate():
    parties, y, split = binned(5000)
    train, valid, test = split == 0, split == 1, split == 2
    base = dict(n_trees=40, max_depth=3, learning_rate=0.2)
    full = GbdtReference(GbdtConfig(**base)).fit(rows_of(parties, train), y[train])
    goss = GbdtReference(GbdtConfig(**base, goss_top=0.2, goss_other=0.1)).fit(rows_of(parties, train), y[train])
    early = GbdtReference(GbdtConfig(**base, patience=3)).fit(rows_of(parties, train), y[train],
                                                                (rows_of(parties, valid), y[valid]))
    aucs = [metrics.auc(y[test], m.decision_function(rows_of(parties, test))) for m in (full, goss, early)]
    assert min(aucs) > 0.85 and abs(aucs[1] - aucs[0]) < 0.02, aucs
    valid_aucs = [h["valid_auc"] for h in early.history]
    assert len(early.trees) == early.best_trees == int(np.argmax(valid_aucs)) + 1 < len(early.history) < 40
    assert len(early.history) - len(early.trees) == 3
    with pytest.raises(FedCreditError, match="validation rows"):
        GbdtReference(GbdtConfig(patience=3)).fit(rows_of(parties, train), y[train])


def test_early_stopping_by_hand_and_importance():
    stop = ref.EarlyStopping(2, np.array([0, 0, 1, 1]))
    decisions = [stop.update(k, np.array(s)) for k, s in enumerate(
        [[0, 1, 0, 1], [0, 0, 1, 1], [0, 1, 1, 0], [0, 0, 1, 1]], start=1)]
    assert decisions == [False, False, False, True]  # tree 4 ties the best (tree 2): no progress for 2 trees
    assert stop.best_trees == 2 and stop.aucs == [0.5, 1.0, 0.5, 1.0]
    parties, y, split = binned(1500)
    model = GbdtReference(GbdtConfig(n_trees=4, max_depth=3)).fit(rows_of(parties, split == 0), y[split == 0])
    imp = model.importance()
    splits = [n for t in model.trees for n in t.nodes if not n.is_leaf]
    assert sum(v["splits"] for v in imp.values()) == len(splits) and {p for p, _ in imp} <= set(ROLES)
    assert sum(v["gain"] for v in imp.values()) == pytest.approx(sum(n.gain for n in splits))
    assert all(v["gain"] > 0 for v in imp.values())
