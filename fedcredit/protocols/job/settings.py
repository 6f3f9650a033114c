"""What a job is told: the public model settings, a node's local configuration, how results are published,
and the train / validation / test split every node derives alike."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from fedcredit.common.errors import ProtocolError
from fedcredit.data.schema import node_schema, parse_extra
from fedcredit.common.errors import FedCreditError
from fedcredit.protocols import secureboost, vertical_lr, woe
from fedcredit.protocols.errors import InputError
from fedcredit.scoring.woe_binning import WoeSettings
from fedcredit.scoring.policy import Capacity, QualityPolicy

SCORED = 3  # split code of enterprises scored with a saved model
MIN_ALIGNED = 20  # fewer aligned enterprises cannot fill training, validation and test rows
SPLITS = ("train", "validation", "test")
MODELS = ("scorecard_lr", "secureboost")
LR_SETTINGS = ("l2", "max_iter", "l2_grid")
TREE_SETTINGS = ("trees", "max_depth", "learning_rate", "tree_l2", "min_child_weight", "gamma", "goss_top", "goss_other",
                 "bank_first_tree", "patience", "tree_monotone")
WOE_SETTINGS = ("binning", "trend", "min_bin_share", "min_iv", "top_k", "max_correlation")


@dataclass
class ModelSettings:
    """Public model settings every party receives (never data paths).

    ``model`` picks the federated model: the scorecard logistic regression (``l2``,
    ``max_iter``; ``l2_grid`` picks l2 by validation AUC) or vertical SecureBoost (``trees`` …
    ``patience``; 0 = no early stopping; ``tree_monotone``). Both bin features the same way:
    ``n_bins`` quantile bins fitted on the training rows, bins under ``min_bin_share`` merged,
    with ``binning = "monotone"`` merged further until WoE is monotone (``trend``), then
    features selected by IV (``min_iv``, ``top_k``, ``max_correlation``) at every node. ``mode``
    (the job file's ``features``): one-hot bins, WoE values (the classic scorecard) or
    standardized values.
    """

    model: str = "scorecard_lr"
    mode: str = "binned"
    n_bins: int = 10
    l2: float = 1e-3
    max_iter: int = 30
    key_bits: int = 2048
    backend: str = "paillier"
    seed: int = 42
    train: float = 0.6
    validation: float = 0.2
    bank_only_baseline: bool = True
    trees: int = 30
    max_depth: int = 4
    learning_rate: float = 0.1
    tree_l2: float = 1.0
    min_child_weight: float = 1.0
    gamma: float = 0.0
    goss_top: float = 0.0
    goss_other: float = 0.0
    bank_first_tree: bool = False
    patience: int = 0
    binning: str = "quantile"
    trend: str = "auto"
    min_bin_share: float = 0.05
    min_iv: float = 0.02
    top_k: int = 0
    max_correlation: float = 1.0
    l2_grid: list = field(default_factory=list)
    tree_monotone: bool = False

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise InputError(f"model must be one of {', '.join(MODELS)}; got {self.model!r}")
        if self.model == "secureboost":
            if self.mode != "binned":
                raise InputError("SecureBoost splits binned features: features must be 'binned'")
            if self.patience and not self.validation:
                raise InputError("early stopping (patience) needs validation rows: set validation > 0")
            try:
                self.sb_config()
            except ProtocolError as exc:
                raise InputError(str(exc)) from None
        try:
            self.woe_settings()
        except FedCreditError as exc:
            raise InputError(str(exc)) from None
        if self.mode == "woe" and self.model != "scorecard_lr":
            raise InputError("WoE features are for the scorecard LR (features = 'woe' needs type = 'scorecard_lr')")
        if self.tree_monotone and self.binning != "monotone":
            raise InputError("tree_monotone constrains trees along the WoE trends: it needs binning = 'monotone'")
        if self.l2_grid:
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in self.l2_grid):
                raise InputError(f"l2_grid must list positive numbers, got {self.l2_grid!r}")
            if not self.validation:
                raise InputError("l2_grid picks l2 by validation AUC: set validation > 0")
        if not (0 < self.train < 1 and 0 <= self.validation < 1 and self.train + self.validation < 1):
            raise InputError(f"split fractions must satisfy 0 < train, 0 ≤ validation, train + validation < 1; "
                             f"got train={self.train}, validation={self.validation}")

    def woe_settings(self) -> WoeSettings:
        return WoeSettings(self.binning, self.trend, self.min_bin_share, self.min_iv, self.top_k, self.max_correlation)

    def woe_config(self) -> woe.WoeConfig:
        return woe.WoeConfig(self.woe_settings(), self.key_bits, self.backend)

    def lr_config(self) -> vertical_lr.LrConfig:
        return vertical_lr.LrConfig(l2=self.l2, max_iter=self.max_iter, key_bits=self.key_bits, backend=self.backend,
                                    l2_path=tuple(sorted(self.l2_grid, reverse=True)))

    def sb_config(self) -> secureboost.SbConfig:
        return secureboost.SbConfig(
            n_trees=self.trees, max_depth=self.max_depth, learning_rate=self.learning_rate, l2=self.tree_l2,
            gamma=self.gamma, min_child_weight=self.min_child_weight, bank_first_tree=self.bank_first_tree,
            goss_top=self.goss_top, goss_other=self.goss_other, patience=self.patience or None,
            key_bits=self.key_bits, backend=self.backend)

    def used_settings(self) -> dict:
        """The settings that shaped this model: the shared ones and its own family's (reports list only these)."""
        other = TREE_SETTINGS if self.model == "scorecard_lr" else LR_SETTINGS
        return {k: v for k, v in asdict(self).items() if k not in other}

    @property
    def run_suffix(self) -> str:
        """The model runs' id suffix: ``/lr`` and ``/lr-bank``, or ``/sb`` and ``/sb-bank``."""
        return "lr" if self.model == "scorecard_lr" else "sb"

    @property
    def progress_steps(self) -> int:
        return self.max_iter + 1 if self.model == "scorecard_lr" else self.trees


@dataclass
class NodeConfig:
    """A node's local settings: they stay on the node (data path, ID column, label, features)."""

    role: str
    data: str
    id_column: str = "uscc"
    id_kind: str = "uscc"
    label: str | None = None
    features: list[str] | None = None
    categorical: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)  # NAME:KIND declarations of extra columns
    layout: str = "standard"  # "standard": the role's built-in schema; "custom": only declared columns
    out_dir: str | None = None
    model_dir: str | None = None  # scoring runs: this node's saved model part
    previous_dir: str | None = None  # scoring runs: the previous publication's run folder at this node
    publish_feature_names: bool = False  # a host's choice: the bank sees its features' names (else numbers) with IVs
    policy: str | None = None  # this node's policy: a TOML file with [policy], "default", or None (a local run: none)
    ledger: str | None = None  # where its daily budget is counted (default: beside the policy file)
    name: str | None = None  # the node's own name when it differs from its protocol role (a job's bank 'bank-a')

    def schema(self):
        """The schema this node's file is validated against."""
        base = node_schema(self.role, self.layout, self.label or ("default_12m" if self.role == "bank" else None))
        return base.with_options(self.id_column, self.id_kind, parse_extra(self.extra))

    def pick_features(self, data):
        """The model's columns of this node's validated data (``features`` if listed, else all that carry
        information); a listed column that is missing or carries nothing is an error naming it."""
        if self.features is None:
            return data.features
        for name in self.features:
            if name in data.dropped:
                raise InputError(f"[nodes.{self.role}] features lists {name!r}, but in {data.path} {data.dropped[name]}; "
                                 "it carries nothing for a model: remove it from features")
            if name not in data.features.columns:
                raise InputError(f"[nodes.{self.role}] features lists {name!r}, which is not a declared feature column "
                                 f"of {data.path}; expected some of {sorted(data.features.columns)}")
        return data.features[self.features]


@dataclass
class Publication:
    """How the coordinator turns the bank's published probabilities into grades and limits.

    ``grade(pd) -> (points, grades, caps)`` applies the limit policy's scorecard and
    caps; ``capacity = (role, column, multiple)`` names a capacity term computed at the
    node that owns the column, so the coordinator only ever sees the resulting limit.
    ``quality`` is the gate a trained model must pass before anything is published
    (``allow_weak_model`` publishes a failing model anyway, and says so everywhere);
    ``grade_order`` names the grades best first (the bank's grade-order check).
    """

    grade: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]
    capacity: Capacity | None = None
    reasons: int = 2
    loss_table: Callable[[np.ndarray, np.ndarray, np.ndarray], list[dict]] | None = None  # per-grade expected loss
    signer: str | None = None  # fingerprint of the key that will sign the publication (shown in the report)
    quality: QualityPolicy | None = None
    allow_weak_model: bool = False
    grade_order: list[str] | None = None
    centralized_auc: float | None = None  # local runs: the pooled-data reference, shown in the bank's report
    scaling: dict | None = None  # base_points, base_odds, pdo: every node's points table uses the published scaling
    missing: str = "refer"  # online queries: the limit policy's answer for an enterprise a node lacks (refer/decline)


def split_assignment(ids, seed: int, train: float, validation: float) -> np.ndarray:
    """0 train, 1 validation, 2 test for each aligned ID, from a seeded hash of the ID itself.

    Every party holds the same aligned IDs, so all derive the same split without a
    message, and the same seed gives the same split in every run (whatever order PSI
    produced).
    """
    prefix = hashlib.sha256(f"fedcredit-split/{seed}/".encode())
    u = np.empty(len(ids))
    for i, ident in enumerate(ids):
        h = prefix.copy()
        h.update(str(ident).encode())
        u[i] = int.from_bytes(h.digest()[:8], "big") / 2.0**64
    return np.where(u < train, 0, np.where(u < train + validation, 1, 2)).astype(np.int8)
