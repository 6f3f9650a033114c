"""Vertical (hetero) logistic regression: bank with labels, any number of hosts, coordinator with the key.

Exact logistic loss, not a Taylor approximation. Per evaluation of the model at a
trial point (3 sequential message rounds when the step is accepted, 1 when the line
search rejects it):

1. ``lr.eval``: every party moves to the trial point and sends the coordinator its
   ``lr.share``: its fixed-point partial scores ``u_p`` — the training rows in a fresh
   secret permutation ``π`` shared by the parties, the validation rows in the agreed
   order — as 64-bit words under pair masks that cancel in the sum over parties
   (``fedcredit.crypto.pairwise``; the pair seeds travel sealed once, after setup);
   the bank adds its private mask on validation rows. Its part of ``yᵀz``: the bank in
   masked plaintext, a host as ``[[w_pᵀX_pᵀy + masks]]`` from ``X_pᵀ[[y]]``, which it
   computed once from the labels the bank encrypted under the coordinator's key.
   The coordinator adds the shares: ``z_π`` (scores it cannot link to any row), the
   scalar ``yᵀz``, masked validation scores; it computes the loss. A rejected step
   ends here: the next ``lr.eval`` (half the step) goes out at once.
2. ``lr.sigmoid``: ``[[σ(z_π)]]`` to every party (the bank also gets its masked
   validation scores and the loss); each forms its residual's gradient under
   encryption — the bank ``X_bᵀ([[σ]] − y)``, a host ``X_jᵀ[[σ]] − X_jᵀ[[y]]`` —
   and sends it masked: ``[[X_pᵀd + r_p]]`` (``lr.gradient``).
3. ``lr.unmask``: the coordinator decrypts the masked gradients and returns them; each
   party removes its mask and reports its block of the L-BFGS Gram matrix (see
   ``lbfgs.py``); the coordinator picks the next direction.

Scoring takes two rounds: masked shares of every row's score (``lr.score_share``),
then their total, still under the bank's private mask, to the bank.

Parameters and gradients stay with their owners, in coordinates preconditioned by
each party's own diagonal curvature (Jacobi). What every message reveals is in
docs/leakage.md.
"""

from fedcredit.protocols.vertical_lr.config import (
    BANK, DONE, EVAL, FINISH, GRADIENT, GRAM, KINDS, LABELS, PAIR, READY, SCORE, SCORE_SHARE, SCORE_UNMASK, SCORED,
    SETUP, SHARE, SIGMOID, UNMASK, LrConfig, PartyData)
from fedcredit.protocols.vertical_lr.coordinator import LrCoordinator
from fedcredit.protocols.vertical_lr.party import LrParty
from fedcredit.protocols.vertical_lr.wire import MASKED_SLOT_BITS

__all__ = [
    "BANK", "DONE", "EVAL", "FINISH", "GRADIENT", "GRAM", "KINDS", "LABELS", "PAIR", "READY", "SCORE", "SCORE_SHARE",
    "SCORE_UNMASK", "SCORED", "SETUP", "SHARE", "SIGMOID", "UNMASK", "MASKED_SLOT_BITS", "LrConfig", "LrCoordinator",
    "LrParty", "PartyData",
]
