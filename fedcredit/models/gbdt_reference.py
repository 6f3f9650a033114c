"""Plaintext reference of SecureBoost: second-order gradient boosting on pre-binned features.

The same algorithm as ``fedcredit/protocols/secureboost/``, trained centrally on the
joined bins of every party, so the federated model can be checked tree for tree:

- logistic loss; per sample ``g = p − y``, ``h = p(1 − p)``; the first score is the
  training log-odds;
- with ``scale_bits`` set, g and h are quantized to ``round(v·2^scale_bits)`` exactly as the
  bank encrypts them, and histograms are exact integer sums (what the bank decrypts), so
  gains and leaf weights come out bit for bit the same as in the federated run;
- a split of a node sends bins ``≤ b`` of one feature left (the last bin of a numeric
  feature is "missing", which therefore always goes right; categories are taken in
  their bin order, like numeric bins);
  ``gain = ½ [G_L²/(H_L+λ) + G_R²/(H_R+λ) − G²/(H+λ)] − γ``, valid when both children
  have hessian sum ``≥ min_child_weight``; a node splits when the best gain is > 0;
- ties go to the lowest (party, feature, bin) in party order (bank first);
- trees grow depth-wise to ``max_depth``; nodes are numbered in level order (a split
  node's children get the next two ids, left first); leaf weight ``−G/(H+λ)``, added to
  the score times ``learning_rate``;
- with ``bank_first_tree`` the first tree uses the first party's (the bank's) features only;
- histogram subtraction: of two siblings, the one with fewer instances (the left on a
  tie) is built from its rows, the other is parent − sibling;
- GOSS (``goss_top`` = a, ``goss_other`` = b, LightGBM's gradient-based one-side sampling):
  per tree, the ⌊a·n⌋ rows of largest |g| (ties: lower row first) plus ⌊b·n⌋ rows drawn
  without replacement from the rest by ``numpy.random.default_rng([goss_seed, tree])``
  form the root; the drawn rows' g and h are multiplied by (1−a)/b and rounded back to
  fixed point (``goss``). Rows outside the sample still get the tree's leaf weight (they
  are routed through the finished tree);
- early stopping (``patience``): after each tree the validation rows' AUC is computed from
  their scores so far; training stops once ``patience`` trees in a row have not raised the
  best AUC (strictly), and the model keeps the trees up to the best one;
- feature importance: per (party, feature) the number of splits and their total gain
  over the kept trees (``importance``);
- monotone constraints (``PartyBins.monotone``, XGBoost's rule): a direction per feature,
  +1 = the raw score must not decrease as the feature's bin index grows, −1 = must not
  increase, 0 = free. The missing bin is the last and always goes right, so it counts as
  above every value. Every node carries weight bounds [lower, upper] (the root none); a
  node's weight is ``−G/(H+λ)`` clipped to them, and a term of the gain is
  ``−(2Gw + (H+λ)w²)`` of that clipped weight (``G²/(H+λ)`` when unclipped, so trees without
  bounds are today's bit for bit). A split on a constrained feature is admissible only when
  its children's (clipped) weights follow the direction; its children get the mid-point of
  the two weights as a new upper (left, +1) and lower (right, +1) bound, and every child
  inherits its parent's bounds, so the whole tree is monotone along the feature
  (``decide_split``, which the federated bank calls too).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from fedcredit.common.errors import FedCreditError
from fedcredit.scoring import metrics


@dataclass(frozen=True)
class GbdtConfig:
    """Settings shared by the reference and the federated protocol."""

    n_trees: int = 3
    max_depth: int = 3
    learning_rate: float = 0.3
    l2: float = 1.0  # λ
    gamma: float = 0.0  # γ: minimum gain of a split
    min_child_weight: float = 1.0  # minimum hessian sum of a child
    scale_bits: int | None = 16  # fixed-point g/h (None: float64, the reference only)
    bank_first_tree: bool = False  # grow the first tree from the bank's features alone (a label-leakage defence)
    goss_top: float = 0.0  # GOSS a: fraction of rows kept for their large |g| (0 with goss_other 0: no sampling)
    goss_other: float = 0.0  # GOSS b: fraction of rows drawn from the rest, their g/h amplified by (1 − a)/b
    goss_seed: int = 0  # the bank's private seed of the GOSS draws (never sent to hosts)
    patience: int | None = None  # early stopping: trees without a better validation AUC before stopping

    def __post_init__(self) -> None:
        checks = [
            (isinstance(self.n_trees, int) and self.n_trees >= 1, "n_trees must be an int ≥ 1"),
            (isinstance(self.max_depth, int) and 1 <= self.max_depth <= 16, "max_depth must be an int in [1, 16]"),
            (0 < self.learning_rate <= 1, "learning_rate must be in (0, 1]"),
            (self.l2 > 0, "l2 must be > 0"),
            (self.gamma >= 0, "gamma must be ≥ 0"),
            (self.min_child_weight >= 0, "min_child_weight must be ≥ 0"),
            (self.scale_bits is None or (isinstance(self.scale_bits, int) and 8 <= self.scale_bits <= 30),
             "scale_bits must be None or an int in [8, 30]"),
            ((self.goss_top == 0 and self.goss_other == 0)
             or (0 < self.goss_top < 1 and 0 < self.goss_other < 1 and self.goss_top + self.goss_other <= 1),
             "goss_top and goss_other must both be 0 (no GOSS) or in (0, 1) with a sum ≤ 1"),
            (isinstance(self.goss_seed, int) and not isinstance(self.goss_seed, bool) and self.goss_seed >= 0,
             "goss_seed must be an int ≥ 0"),
            (self.patience is None or (isinstance(self.patience, int) and not isinstance(self.patience, bool)
                                       and self.patience >= 1), "patience must be None or an int ≥ 1"),
        ]
        for ok, text in checks:
            if not ok:
                raise FedCreditError(f"invalid GBDT setting: {text}")


@dataclass
class TreeNode:
    """One node; a split node names its owner party, the owner's feature index and bin."""

    id: int
    depth: int
    party: str | None = None
    feature: int | None = None
    bin: int | None = None
    left: int | None = None
    right: int | None = None
    weight: float | None = None  # leaves only
    record: int | None = None  # federated host splits: the host's lookup-table record
    gain: float | None = None  # split nodes: the split's gain (known to whoever chooses splits: the bank)
    cover: int | None = None  # training rows that reached the node (for reason codes); set by the federated bank

    @property
    def is_leaf(self) -> bool:
        return self.left is None

    def signature(self) -> tuple:
        """What two implementations must agree on (not the host's private record number)."""
        return (self.id, self.depth, self.party, self.feature, self.bin, self.left, self.right, self.weight)


@dataclass
class Tree:
    nodes: list[TreeNode] = field(default_factory=list)

    def signature(self) -> list[tuple]:
        return [n.signature() for n in self.nodes]


# --- shared arithmetic (the federated bank calls exactly these) -------------------------

def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def base_score(y: np.ndarray) -> float:
    """Log-odds of the training default rate (the score before any tree)."""
    rate = min(max(float(np.mean(y)), 1e-6), 1 - 1e-6)
    return float(np.log(rate / (1 - rate)))


def gradients(score: np.ndarray, y: np.ndarray, scale_bits: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(g, h) of the logistic loss; int64 ``round(v·2^scale_bits)`` when quantized."""
    p = sigmoid(score)
    g, h = p - y, p * (1.0 - p)
    if scale_bits is None:
        return g, h
    return (np.rint(np.ldexp(g, scale_bits)).astype(np.int64), np.rint(np.ldexp(h, scale_bits)).astype(np.int64))


def to_real(values, scale_bits: int | None) -> np.ndarray:
    arr = np.asarray(values)
    return arr.astype(np.float64) if scale_bits is None else np.ldexp(arr.astype(np.float64), -scale_bits)


def histogram(bins: np.ndarray, n_bins: list[int], g: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per feature and bin: sums of g and of h over the given rows (``bins`` rows × features).

    Returns two (features, max bins) arrays; int64 (exact) for integer g/h.
    """
    feats = bins.shape[1]
    width = max(n_bins, default=1)
    flat = (bins + np.arange(feats) * width).ravel()
    size = feats * width
    out = []
    for v in (g, h):
        s = np.bincount(flat, weights=np.repeat(v, feats).astype(np.float64), minlength=size)
        if np.asarray(v).dtype.kind in "iu":
            if bins.shape[0] and float(np.abs(v).max()) * bins.shape[0] >= 2.0**53:
                raise FedCreditError("histogram: integer sums would exceed float64's exact range")
            s = np.rint(s).astype(np.int64)
        out.append(s.reshape(feats, width))
    return out[0], out[1]


Bounds = tuple[float, float]
UNBOUNDED: Bounds = (-math.inf, math.inf)  # a node's weight bounds without monotone constraints above it
DIRECTIONS = (-1, 0, 1)


def check_monotone(party: str, directions, n_features: int | None) -> list[int] | None:
    """A party's monotone directions, one per feature in {-1, 0, 1} (None: no constraints).

    ``n_features`` None skips the length check (a host's count is known later). Raises
    FedCreditError naming the party and the feature index.
    """
    if directions is None:
        return None
    if isinstance(directions, (str, bytes, dict)) or not hasattr(directions, "__len__"):
        raise FedCreditError(f"monotone constraints of {party}: expected a list of directions, one per feature "
                             f"(-1, 0 or 1), got {type(directions).__name__}")
    if n_features is not None and len(directions) != n_features:
        raise FedCreditError(f"monotone constraints of {party}: {len(directions)} directions for {n_features} "
                             "features")
    for j, d in enumerate(directions):
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d not in DIRECTIONS:
            raise FedCreditError(f"monotone constraints of {party}: feature {j} has direction {d!r}, "
                                 "expected -1, 0 or 1")
    return [int(d) for d in directions]


def _clip(w, bounds: Bounds):
    lo, hi = bounds
    return np.clip(w, lo, hi) if isinstance(w, np.ndarray) else min(max(w, lo), hi)


def _terms(g, h, lam: float, bounds: Bounds):
    """(loss reduction, weight) of nodes with sums g, h: ``G²/(H+λ)`` at the optimal weight ``−G/(H+λ)``;
    where that weight falls outside ``bounds``, ``−(2Gw + (H+λ)w²)`` at the clipped weight w."""
    plain, w = g * g / (h + lam), -g / (h + lam)
    if bounds == UNBOUNDED:
        return plain, w
    wc = _clip(w, bounds)
    return np.where(wc == w, plain, -(2 * g * wc + (h + lam) * wc * wc)), wc


def best_split(hist_g: np.ndarray, hist_h: np.ndarray, n_bins: list[int], total_g, total_h,
               cfg: GbdtConfig, monotone: list[int] | None = None,
               bounds: Bounds = UNBOUNDED) -> tuple[float, int, int] | None:
    """Best (gain, feature, bin) of one party's histograms at a node, or None.

    Candidates are "bins ≤ b go left" for b < n_bins − 1; ties go to the lowest feature,
    then the lowest bin. Integer histograms are at scale 2^cfg.scale_bits. ``monotone``
    (a direction per feature) and the node's weight ``bounds``: see the module docstring.
    """
    if hist_g.size == 0:
        return None
    gl = to_real(np.cumsum(hist_g, axis=1), cfg.scale_bits)
    hl = to_real(np.cumsum(hist_h, axis=1), cfg.scale_bits)
    g = float(to_real(np.asarray([total_g]), cfg.scale_bits)[0])
    h = float(to_real(np.asarray([total_h]), cfg.scale_bits)[0])
    gr, hr = g - gl, h - hl
    lam = cfg.l2
    with np.errstate(divide="ignore", invalid="ignore"):
        (tl, wl), (tr, wr), (tp, _) = _terms(gl, hl, lam, bounds), _terms(gr, hr, lam, bounds), _terms(g, h, lam, bounds)
        gain = 0.5 * (tl + tr - tp) - cfg.gamma
    valid = (hl >= cfg.min_child_weight) & (hr >= cfg.min_child_weight)
    valid &= np.arange(hist_g.shape[1])[None, :] < (np.asarray(n_bins)[:, None] - 1)
    if monotone is not None and any(monotone):
        d = np.asarray(monotone)[:, None]
        valid &= ~(((d > 0) & (wl > wr)) | ((d < 0) & (wl < wr)))
    gain = np.where(valid, gain, -np.inf)
    idx = int(np.argmax(gain))  # first maximum in (feature, bin) order
    j, b = divmod(idx, hist_g.shape[1])
    best = float(gain[j, b])
    if not best > 0:
        return None
    return best, j, b


def choose(candidates: list[tuple[str, tuple[float, int, int] | None]]) -> tuple[str, int, int, float] | None:
    """The best split over parties in the given order (ties: the earlier party)."""
    best = None
    for party, cand in candidates:
        if cand is not None and (best is None or cand[0] > best[3]):
            best = (party, cand[1], cand[2], cand[0])
    return best


def leaf_weight(total_g, total_h, cfg: GbdtConfig, bounds: Bounds = UNBOUNDED) -> float:
    """``−G/(H+λ)``, clipped to the node's weight bounds."""
    g = float(to_real(np.asarray([total_g]), cfg.scale_bits)[0])
    h = float(to_real(np.asarray([total_h]), cfg.scale_bits)[0])
    return _clip(-g / (h + cfg.l2), bounds)


def child_bounds(hist_g: np.ndarray, hist_h: np.ndarray, j: int, b: int, total_g, total_h, cfg: GbdtConfig,
                 direction: int, bounds: Bounds) -> tuple[Bounds, Bounds]:
    """Weight bounds of the (left, right) children of a split "feature j, bins ≤ b left": the parent's,
    split at the mid-point of the children's clipped weights when the feature is constrained."""
    if direction == 0:
        return bounds, bounds
    gl, hl = hist_g[j, :b + 1].sum(), hist_h[j, :b + 1].sum()
    mid = (leaf_weight(gl, hl, cfg, bounds) + leaf_weight(total_g - gl, total_h - hl, cfg, bounds)) / 2
    lo, hi = bounds
    return ((lo, mid), (mid, hi)) if direction > 0 else ((mid, hi), (lo, mid))


@dataclass(frozen=True)
class Candidate:
    """One party's histograms at a node, as split finding takes them."""

    party: str
    hist_g: np.ndarray
    hist_h: np.ndarray
    n_bins: list[int]
    monotone: list[int] | None = None


def decide_split(cands: list[Candidate], total_g, total_h, cfg: GbdtConfig,
                 bounds: Bounds = UNBOUNDED) -> tuple[tuple[str, int, int, float], tuple[Bounds, Bounds]] | None:
    """A node's split over every party (in order): ((party, feature, bin, gain), children's bounds), or None."""
    choice = choose([(c.party, best_split(c.hist_g, c.hist_h, c.n_bins, total_g, total_h, cfg, c.monotone, bounds))
                     for c in cands])
    if choice is None:
        return None
    party, j, b, _ = choice
    c = next(c for c in cands if c.party == party)
    direction = c.monotone[j] if c.monotone is not None else 0
    return choice, child_bounds(c.hist_g, c.hist_h, j, b, total_g, total_h, cfg, direction, bounds)


def goss(g: np.ndarray, h: np.ndarray, cfg: GbdtConfig, tree: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """GOSS sample of one tree: (sorted root rows, g, h with the drawn rows amplified).

    Without GOSS: every row, g and h unchanged. Integer g/h stay integers (``rint`` of
    the product with (1 − a)/b), so the federated bank encrypts exactly these values.
    """
    n = len(g)
    if not cfg.goss_other:
        return np.arange(n), g, h
    top, other = int(cfg.goss_top * n), int(cfg.goss_other * n)
    order = np.lexsort((np.arange(n), -np.abs(np.asarray(g, dtype=np.float64))))
    rest = np.sort(order[top:])
    drawn = np.random.default_rng([cfg.goss_seed, tree]).choice(rest, size=min(other, len(rest)), replace=False)
    factor = (1.0 - cfg.goss_top) / cfg.goss_other
    g, h = g.copy(), h.copy()
    if np.asarray(g).dtype.kind in "iu":
        g[drawn] = np.rint(g[drawn] * factor).astype(np.int64)
        h[drawn] = np.rint(h[drawn] * factor).astype(np.int64)
    else:
        g[drawn], h[drawn] = g[drawn] * factor, h[drawn] * factor
    return np.sort(np.concatenate([order[:top], drawn])), g, h


class EarlyStopping:
    """Validation AUC after each tree; stop after ``patience`` trees without a strictly better one."""

    def __init__(self, patience: int | None, y_valid: np.ndarray | None):
        self.patience, self.y = patience, y_valid
        self.best_auc, self.best_trees, self.aucs = -np.inf, 0, []

    def update(self, trees: int, valid_score: np.ndarray) -> bool:
        """Record the AUC with ``trees`` trees; True when training should stop."""
        auc = metrics.auc(self.y, valid_score)
        self.aucs.append(auc)
        if auc > self.best_auc:
            self.best_auc, self.best_trees = auc, trees
        return trees - self.best_trees >= self.patience


def importance(trees: list[Tree]) -> dict[tuple[str, int], dict]:
    """(party, feature) -> {"splits": count, "gain": total gain} over ``trees`` (the reference's view)."""
    out: dict[tuple[str, int], dict] = {}
    for tree in trees:
        for n in tree.nodes:
            if not n.is_leaf:
                entry = out.setdefault((n.party, n.feature), {"splits": 0, "gain": 0.0})
                entry["splits"] += 1
                entry["gain"] += n.gain
    return out


def smaller_first(left: np.ndarray, right: np.ndarray) -> bool:
    """True when the left child is built from rows (and the right derived by subtraction)."""
    return len(left) <= len(right)


# --- the centralized model -----------------------------------------------------------------

@dataclass
class PartyBins:
    """One party's binned features: rows × features bin indices and bins per feature; optionally
    a monotone direction per feature (module docstring; category features take 0)."""

    name: str
    bins: np.ndarray
    n_bins: list[int]
    monotone: list[int] | None = None


class GbdtReference:
    """Central SecureBoost-equivalent GBDT over the parties' bins (bank first)."""

    def __init__(self, config: GbdtConfig | None = None):
        self.cfg = config or GbdtConfig()
        self.trees: list[Tree] = []
        self.base = 0.0
        self.parties: list[str] = []
        self.history: list[dict] = []
        self.best_trees = 0

    def fit(self, parties: list[PartyBins], y: np.ndarray,
            valid: tuple[list[PartyBins], np.ndarray] | None = None) -> "GbdtReference":
        """Grow the trees; ``valid`` (validation rows' bins, labels) is needed with ``patience``."""
        cfg = self.cfg
        if (cfg.patience is None) != (valid is None):
            raise FedCreditError("early stopping needs validation rows, and validation rows need patience")
        y = np.asarray(y, dtype=np.float64)
        rows = len(y)
        for p in parties:
            if p.bins.shape[0] != rows or p.bins.shape[1] != len(p.n_bins):
                raise FedCreditError(f"party {p.name}: bins of shape {p.bins.shape} for {rows} rows, {len(p.n_bins)} features")
            check_monotone(p.name, p.monotone, len(p.n_bins))
        self.parties = [p.name for p in parties]
        self.base = base_score(y)
        score = np.full(rows, self.base)
        self.trees, self.history = [], []
        by_name = {p.name: p for p in parties}
        stopper = None
        if valid is not None:
            vparties = {p.name: p for p in valid[0]}
            vrows = valid[0][0].bins.shape[0]
            vscore = np.full(vrows, self.base)
            stopper = EarlyStopping(cfg.patience, np.asarray(valid[1]))
        for t in range(cfg.n_trees):
            g, h = gradients(score, y, cfg.scale_bits)
            root, g, h = goss(g, h, cfg, t)
            tree, leaf_of = self._grow(parties[:1] if cfg.bank_first_tree and t == 0 else parties, g, h, root)
            self.trees.append(tree)
            if len(root) < rows:  # GOSS: the rows outside the sample are routed through the new tree
                step = route(tree, by_name, rows)
            else:
                step = np.array([tree.nodes[i].weight for i in leaf_of])
            score = score + cfg.learning_rate * step
            entry = {"tree": len(self.trees), "loss": float(np.mean(np.logaddexp(0, score) - y * score))}
            self.history.append(entry)
            if stopper is not None:
                vscore = vscore + cfg.learning_rate * route(tree, vparties, vrows)
                stop = stopper.update(len(self.trees), vscore)
                entry["valid_auc"] = stopper.aucs[-1]
                if stop:
                    break
        if stopper is not None:
            self.trees = self.trees[:stopper.best_trees]
        self.best_trees = len(self.trees)
        return self

    def importance(self) -> dict[tuple[str, int], dict]:
        return importance(self.trees)

    def _grow(self, parties: list[PartyBins], g: np.ndarray, h: np.ndarray, sample: np.ndarray) -> tuple[Tree, np.ndarray]:
        """One tree over the ``sample`` rows; returns it and the leaf of each sampled row (others: −1)."""
        cfg = self.cfg
        rows = len(g)
        tree = Tree([TreeNode(0, 0)])
        members, bounds = {0: sample}, {0: UNBOUNDED}
        hists = {0: [histogram(p.bins[sample], p.n_bins, g[sample], h[sample]) for p in parties]}
        level = [0]
        while level:
            nxt = []
            for nid in level:
                node, idx = tree.nodes[nid], members[nid]
                tg, th = g[idx].sum(), h[idx].sum()
                split = None
                if node.depth < cfg.max_depth:
                    split = decide_split([Candidate(p.name, *hists[nid][k], p.n_bins, p.monotone)
                                          for k, p in enumerate(parties)], tg, th, cfg, bounds[nid])
                if split is None:
                    node.weight = leaf_weight(tg, th, cfg, bounds[nid])
                    continue
                (party, j, b, gain), (bounds[len(tree.nodes)], bounds[len(tree.nodes) + 1]) = split
                node.gain = gain
                p = next(q for q in parties if q.name == party)
                go_left = p.bins[idx, j] <= b
                left, right = TreeNode(len(tree.nodes), node.depth + 1), TreeNode(len(tree.nodes) + 1, node.depth + 1)
                tree.nodes += [left, right]
                node.party, node.feature, node.bin, node.left, node.right = party, j, b, left.id, right.id
                members[left.id], members[right.id] = idx[go_left], idx[~go_left]
                if node.depth + 1 < cfg.max_depth:  # children may split: histograms by subtraction
                    small, big = (left.id, right.id) if smaller_first(members[left.id], members[right.id]) else (right.id, left.id)
                    sidx = members[small]
                    hists[small] = [histogram(q.bins[sidx], q.n_bins, g[sidx], h[sidx]) for q in parties]
                    hists[big] = [(pg - sg, ph - sh) for (pg, ph), (sg, sh) in zip(hists[nid], hists[small])]
                hists.pop(nid, None)
                nxt += [left.id, right.id]
            level = nxt
        leaf_of = np.full(rows, -1, dtype=np.int64)
        for node in tree.nodes:
            if node.is_leaf:
                leaf_of[members[node.id]] = node.id
        return tree, leaf_of

    def decision_function(self, parties: list[PartyBins]) -> np.ndarray:
        """Raw scores (log-odds) for rows binned like the training rows."""
        by_name = {p.name: p for p in parties}
        rows = parties[0].bins.shape[0]
        score = np.full(rows, self.base)
        for tree in self.trees:
            score += self.cfg.learning_rate * route(tree, by_name, rows)
        return score

    def predict_proba(self, parties: list[PartyBins]) -> np.ndarray:
        return sigmoid(self.decision_function(parties))


def route(tree: Tree, parties: dict[str, PartyBins], rows: int) -> np.ndarray:
    """Leaf weight of every row in one tree."""
    out = np.zeros(rows)
    stack = [(0, np.arange(rows))]
    while stack:
        nid, idx = stack.pop()
        node = tree.nodes[nid]
        if node.is_leaf:
            out[idx] = node.weight
            continue
        left = parties[node.party].bins[idx, node.feature] <= node.bin
        stack += [(node.left, idx[left]), (node.right, idx[~left])]
    return out
