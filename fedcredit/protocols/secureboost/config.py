"""What every party of vertical SecureBoost shares: the message kinds, the settings, a party's binned data."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

from fedcredit.common.errors import FedCreditError, ProtocolError
from fedcredit.models.gbdt_reference import GbdtConfig, check_monotone

BANK = "bank"
SETUP, READY, TREE, GRADIENTS, NODES, HISTOGRAMS, SPLIT, LEFT, TREE_DONE = (
    "sb.setup", "sb.ready", "sb.tree", "sb.gradients", "sb.nodes", "sb.histograms", "sb.split", "sb.left",
    "sb.tree_done")
PREDICT, ROUTE, ROUTED, SCORED = "sb.predict", "sb.route", "sb.routed", "sb.scored"
PRUNE, PRUNED = "sb.prune", "sb.pruned"
SEED, SHARE = "sb.seed", "sb.share"
KINDS = (SETUP, READY, TREE, GRADIENTS, NODES, HISTOGRAMS, SPLIT, LEFT, TREE_DONE, PREDICT, ROUTE, ROUTED, SCORED,
         PRUNE, PRUNED, SEED, SHARE)
TO_HOST = (GRADIENTS, NODES, SPLIT, ROUTE, PRUNE, SEED)  # bank → host, relayed (sealed when parties have relays)
TO_BANK = (HISTOGRAMS, LEFT, ROUTED, PRUNED)  # host → bank, relayed
HOST_TO_HOST = (SEED, SHARE)  # host → another host, relayed


@dataclass(frozen=True)
class SbConfig:
    """Tree and crypto settings shared by every party (sent in ``sb.setup``)."""

    n_trees: int = 3
    max_depth: int = 3
    learning_rate: float = 0.3
    l2: float = 1.0
    gamma: float = 0.0
    min_child_weight: float = 1.0
    scale_bits: int = 16
    bank_first_tree: bool = False  # first tree from the bank's features only: hosts get no gradients for it
    goss_top: float = 0.0  # GOSS a (0 and goss_other 0: no sampling); the seed is the bank's own
    goss_other: float = 0.0  # GOSS b
    patience: int | None = None  # early stopping on the bank's validation rows' AUC
    key_bits: int = 2048
    backend: str = "paillier"

    def __post_init__(self) -> None:
        if not isinstance(self.scale_bits, int):
            raise ProtocolError("invalid SecureBoost setting: scale_bits must be an int (g/h travel as fixed point)")
        if not isinstance(self.key_bits, int) or self.key_bits < 1024:
            raise ProtocolError("invalid SecureBoost setting: key_bits must be an int ≥ 1024")
        try:
            self.gbdt()
        except Exception as exc:
            raise ProtocolError(str(exc)) from None

    def gbdt(self) -> GbdtConfig:
        names = {f.name for f in fields(GbdtConfig)}
        return GbdtConfig(**{k: v for k, v in asdict(self).items() if k in names})


@dataclass
class TreePartyData:
    """A party's binned features for every aligned row (agreed order), its training rows, labels (bank)."""

    bins: np.ndarray  # aligned rows × features, bin indices
    n_bins: list[int]
    train_rows: np.ndarray  # indices into the aligned rows
    labels: np.ndarray | None = None  # bank only: labels of all aligned rows
    prep: object = None  # the party's FeaturePrep, to describe thresholds in its model part
    valid_rows: np.ndarray | None = None  # bank only: validation rows (indices into the aligned rows) for early stopping
    # bank only: party role -> monotone direction per feature index (+1, -1, 0; gbdt_reference); hosts never see them
    monotone: dict[str, list[int]] | None = None

    @classmethod
    def from_prep(cls, prep, frame, train_rows, labels=None, valid_rows=None, monotone=None) -> "TreePartyData":
        data = cls(prep.bins(frame), [s.n_bins() for s in prep.specs], np.asarray(train_rows), labels, prep,
                   None if valid_rows is None else np.asarray(valid_rows), monotone)
        own = (data.monotone or {}).get(BANK) or []
        fixed = [f"feature {j} ({s.name})" for j, (s, d) in enumerate(zip(prep.specs, own)) if d and s.kind == "category"]
        if fixed:  # categories are in bin order, which says nothing of size
            raise ProtocolError(f"monotone constraints of {BANK}: {', '.join(fixed)} "
                                f"{'is a category' if len(fixed) == 1 else 'are categories'}, whose direction must be 0")
        return data

    def __post_init__(self) -> None:
        self.bins = np.asarray(self.bins, dtype=np.int64).reshape(len(self.bins), -1)
        if self.bins.shape[1] != len(self.n_bins) or (self.bins.size and (self.bins.min() < 0 or
                                                                          (self.bins >= np.asarray(self.n_bins)).any())):
            raise ProtocolError("party data: bins must be (rows, features) indices below each feature's n_bins")
        self.train_bins = self.bins[self.train_rows]
        if self.monotone is not None:
            if not isinstance(self.monotone, dict) or not all(isinstance(k, str) for k in self.monotone):
                raise ProtocolError("party data: monotone constraints must map party roles to directions per feature")
            try:
                self.monotone = {role: check_monotone(role, dirs, len(self.n_bins) if role == BANK else None)
                                 for role, dirs in self.monotone.items()}
            except FedCreditError as exc:
                raise ProtocolError(str(exc)) from None
