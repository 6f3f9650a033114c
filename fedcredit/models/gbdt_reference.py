"""Plaintext reference of SecureBoost: second-order gradient boosting on pre-binned features.

The same algorithm as ``fedcredit/protocols/secureboost.py``, trained centrally on the
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
  tie) is built from its rows, the other is parent − sibling.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fedcredit.errors import FedCreditError


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


def best_split(hist_g: np.ndarray, hist_h: np.ndarray, n_bins: list[int], total_g, total_h,
               cfg: GbdtConfig) -> tuple[float, int, int] | None:
    """Best (gain, feature, bin) of one party's histograms at a node, or None.

    Candidates are "bins ≤ b go left" for b < n_bins − 1; ties go to the lowest feature,
    then the lowest bin. Integer histograms are at scale 2^cfg.scale_bits.
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
        gain = 0.5 * (gl * gl / (hl + lam) + gr * gr / (hr + lam) - g * g / (h + lam)) - cfg.gamma
    valid = (hl >= cfg.min_child_weight) & (hr >= cfg.min_child_weight)
    valid &= np.arange(hist_g.shape[1])[None, :] < (np.asarray(n_bins)[:, None] - 1)
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


def leaf_weight(total_g, total_h, cfg: GbdtConfig) -> float:
    g = float(to_real(np.asarray([total_g]), cfg.scale_bits)[0])
    h = float(to_real(np.asarray([total_h]), cfg.scale_bits)[0])
    return -g / (h + cfg.l2)


def smaller_first(left: np.ndarray, right: np.ndarray) -> bool:
    """True when the left child is built from rows (and the right derived by subtraction)."""
    return len(left) <= len(right)


# --- the centralized model -----------------------------------------------------------------

@dataclass
class PartyBins:
    """One party's binned features: rows × features bin indices and bins per feature."""

    name: str
    bins: np.ndarray
    n_bins: list[int]


class GbdtReference:
    """Central SecureBoost-equivalent GBDT over the parties' bins (bank first)."""

    def __init__(self, config: GbdtConfig | None = None):
        self.cfg = config or GbdtConfig()
        self.trees: list[Tree] = []
        self.base = 0.0
        self.parties: list[str] = []
        self.history: list[dict] = []

    def fit(self, parties: list[PartyBins], y: np.ndarray) -> "GbdtReference":
        cfg = self.cfg
        y = np.asarray(y, dtype=np.float64)
        rows = len(y)
        for p in parties:
            if p.bins.shape[0] != rows or p.bins.shape[1] != len(p.n_bins):
                raise FedCreditError(f"party {p.name}: bins of shape {p.bins.shape} for {rows} rows, {len(p.n_bins)} features")
        self.parties = [p.name for p in parties]
        self.base = base_score(y)
        score = np.full(rows, self.base)
        self.trees = []
        for t in range(cfg.n_trees):
            g, h = gradients(score, y, cfg.scale_bits)
            tree, leaf_of = self._grow(parties[:1] if cfg.bank_first_tree and t == 0 else parties, g, h)
            self.trees.append(tree)
            score = score + cfg.learning_rate * np.array([tree.nodes[i].weight for i in leaf_of])
            self.history.append({"tree": len(self.trees), "loss": float(np.mean(np.logaddexp(0, score) - y * score))})
        return self

    def _grow(self, parties: list[PartyBins], g: np.ndarray, h: np.ndarray) -> tuple[Tree, np.ndarray]:
        cfg = self.cfg
        rows = len(g)
        root = TreeNode(0, 0)
        tree = Tree([root])
        members = {0: np.arange(rows)}
        hists = {0: [histogram(p.bins, p.n_bins, g, h) for p in parties]} if cfg.max_depth > 0 else {}
        level = [0]
        while level:
            nxt = []
            for nid in level:
                node, idx = tree.nodes[nid], members[nid]
                tg, th = g[idx].sum(), h[idx].sum()
                split = None
                if node.depth < cfg.max_depth:
                    split = choose([(p.name, best_split(*hists[nid][k], p.n_bins, tg, th, cfg))
                                    for k, p in enumerate(parties)])
                if split is None:
                    node.weight = leaf_weight(tg, th, cfg)
                    continue
                party, j, b, _ = split
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
        leaf_of = np.empty(rows, dtype=np.int64)
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
