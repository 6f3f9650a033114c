"""What every party of vertical LR shares: the message kinds, the settings, a party's prepared rows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedcredit.common.errors import ProtocolError
from fedcredit.protocols.design import Design

BANK = "bank"
SETUP, LABELS, PAIR, READY, EVAL, SHARE, SIGMOID, GRADIENT, UNMASK, GRAM, FINISH, DONE = (
    "lr.setup", "lr.labels", "lr.pair", "lr.ready", "lr.eval", "lr.share", "lr.sigmoid", "lr.gradient", "lr.unmask",
    "lr.gram", "lr.finish", "lr.done",
)
SCORE, SCORE_SHARE, SCORE_UNMASK, SCORED = "lr.score", "lr.score_share", "lr.score_unmask", "lr.scored"
KINDS = (SETUP, LABELS, PAIR, READY, EVAL, SHARE, SIGMOID, GRADIENT, UNMASK, GRAM, FINISH, DONE,
         SCORE, SCORE_SHARE, SCORE_UNMASK, SCORED)


@dataclass(frozen=True)
class LrConfig:
    """Model and optimizer settings shared by every party (sent in ``lr.setup``)."""

    l2: float = 1e-3
    max_iter: int = 30
    gtol: float = 1e-4  # stop when ‖g‖ falls below gtol·‖g₀‖ (preconditioned norm)
    ftol: float = 1e-4  # or when an accepted step lowers the loss by less than ftol (relative)
    memory: int = 6
    scale_bits: int = 16
    key_bits: int = 2048
    backend: str = "paillier"
    armijo: float = 1e-4
    max_halvings: int = 8
    l2_path: tuple = ()  # several l2 values, strongest first: fit each from the last (warm start), keep the best

    def l2_values(self) -> list[float]:
        """The fits' penalties in order (a single fit at ``l2`` without a path)."""
        return [float(v) for v in self.l2_path] or [self.l2]

    def __post_init__(self) -> None:
        checks = [(self.l2 > 0, "l2 must be > 0"), (self.max_iter >= 1, "max_iter must be ≥ 1"),
                  (0 < self.gtol < 1, "gtol must be in (0, 1)"), (self.memory >= 1, "memory must be ≥ 1"),
                  (8 <= self.scale_bits <= 24, "scale_bits must be in [8, 24]"),
                  (self.key_bits >= 1024, "key_bits must be ≥ 1024"),
                  (all(isinstance(v, (int, float)) and v > 0 for v in self.l2_path), "l2_path values must be > 0")]
        for ok, text in checks:
            if not ok:
                raise ProtocolError(f"invalid LR setting: {text}")


@dataclass
class PartyData:
    """A party's prepared rows: designs for training and for all aligned rows, and (bank) labels.

    For scoring with a saved model, ``train`` is None and the party starts from its weights.
    """

    train: Design | None
    every: Design  # all aligned rows in the agreed order (scoring)
    train_rows: np.ndarray  # indices into the aligned rows
    val_rows: np.ndarray
    labels: np.ndarray | None = None  # bank only: labels of all aligned rows
