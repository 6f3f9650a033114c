"""Vertical (hetero) logistic regression: bank with labels, any number of hosts, coordinator with the key.

Exact logistic loss, not a Taylor approximation. Per evaluation of the model at a
trial point (5 sequential message rounds):

1. ``lr.eval``: every party moves to the trial point; each host sends the bank, sealed,
   its partial predictions ``u_j`` packed and encrypted under the coordinator's key —
   the training rows in a fresh secret permutation ``π`` shared by bank and hosts,
   the validation rows in the agreed order — and ``[[yᵀu_j]]`` (against labels the
   bank encrypted once). Every party reports ``‖w_p‖²`` for the L2 term.
2. ``lr.scores``: the bank adds its own part: ``[[z_π]]``, ``[[yᵀz]]``, and masked
   validation scores ``[[z_val + m]]``, to the coordinator.
3. ``lr.sigmoid``: the coordinator decrypts ``z_π`` — scores it cannot link to any row —
   computes the loss and ``σ(z_π)``, and returns ``[[σ(z_π)]]``; the bank undoes ``π`` and
   forms the residual ``[[d]] = [[σ(z)]] − y``, sends it sealed to the hosts, and sends
   its own masked gradient ``[[X_bᵀd + r]]`` (plus validation AUC/KS) to the coordinator.
4. ``lr.gradient``: hosts send masked ``[[X_jᵀd + r_j]]`` (grouped sums over bins).
5. ``lr.unmask``: the coordinator decrypts the masked gradients and returns them; each
   party removes its mask and reports its block of the L-BFGS Gram matrix (see
   ``lbfgs.py``); the coordinator runs the line search and picks the next direction.

Parameters and gradients stay with their owners, in coordinates preconditioned by
each party's own diagonal curvature (Jacobi). What every message reveals is in
docs/leakage.md.
"""

from fedcredit.protocols.vertical_lr.config import (
    BANK, DONE, EVAL, FINISH, GRADIENT, GRAM, KINDS, LABELS, NORM, PARTIAL, READY, RESIDUAL, SCORE, SCORE_MASKED,
    SCORE_PARTIAL, SCORE_UNMASK, SCORED, SCORES, SETUP, SIGMOID, UNMASK, LrConfig, PartyData)
from fedcredit.protocols.vertical_lr.coordinator import LrCoordinator
from fedcredit.protocols.vertical_lr.party import LrParty
from fedcredit.protocols.vertical_lr.wire import MASKED_SLOT_BITS, Z_SLOT_BITS

__all__ = [
    "BANK", "DONE", "EVAL", "FINISH", "GRADIENT", "GRAM", "KINDS", "LABELS", "NORM", "PARTIAL", "READY", "RESIDUAL",
    "SCORE", "SCORE_MASKED", "SCORE_PARTIAL", "SCORE_UNMASK", "SCORED", "SCORES", "SETUP", "SIGMOID", "UNMASK",
    "MASKED_SLOT_BITS", "Z_SLOT_BITS", "LrConfig", "LrCoordinator", "LrParty", "PartyData",
]
