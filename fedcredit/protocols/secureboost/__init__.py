"""Vertical SecureBoost: the bank (labels, Paillier key) and hosts grow gradient-boosted trees together.

Per tree (``sb.tree`` from the coordinator starts the first; the bank starts each next tree itself, in the reply
that reports the previous one with ``sb.tree_done``, so a tree costs no round of its own):

1. ``sb.gradients``: the bank encrypts one packed pair ``g·2^S + h`` per training row
   (fixed point, ``wire``) under its own key and sends it, sealed, to each host.
2. ``sb.histograms``: a host sums the ciphertexts per bin of each of its binned features
   for the rows of each node (``grouped_sum``: ciphertext additions only), compresses the
   bins with ``Packer`` and returns them. The bank decrypts, adds its own plaintext
   histograms and picks each node's best split over every party (``gbdt_reference``'s
   gain, ties to the lowest party, feature, bin).
3. ``sb.nodes`` (every level with children to build): to every host, per split node the
   parent and child ids and the bank's XOR share of which of the parent's rows go left
   (``shares``: the bits for its own split, zeros for a host's, XOR pair masks), and to a
   host that won splits their feature and bin indices. The host stores each won split in
   its private lookup table (feature and threshold never leave it), answers ``sb.left``
   (record number and which rows go left; possibly nothing) and sends every other host
   ``sb.share``, its own share (the bits only for its own splits). XOR-ing every share
   gives the partition, while no share tells who split a node. With every share in, a
   host builds the smaller child's histogram, keeps the sibling's as parent − child
   (histogram subtraction) and answers ``sb.histograms`` with the built children only: the
   bank derives each sibling from its decrypted parent, so half the bins are packed, sent
   and decrypted. Pair seeds travel once per run (``sb.seed``, in the setup replies).
4. ``sb.split`` (the last level): to every host, the splits it won there (often none);
   ``sb.left`` answers as above.
5. At ``max_depth`` (or when no split gains) the bank sets leaf weights ``−G/(H+λ)``,
   updates its scores and tells the coordinator ``sb.tree_done``.

Three rounds per level below the root (two with one host), the same messages whoever
split: the floor for a host's split without new leakage (``shares``).

With ``bank_first_tree`` the first tree is grown by the bank alone (no message to hosts).

GOSS (``goss_top``, ``goss_other``): the bank samples each tree's root rows
(``gbdt_reference.goss``, with a seed only the bank knows) and sends the ciphertexts of
those rows only, with the list of root rows; hosts never learn which sampled rows were
kept for a large gradient. After a GOSS tree, and after every tree when early stopping
(``patience``) is on, the training rows outside the sample and the bank's validation
rows follow the new tree as it grows: the bank's own splits route them at once, and at a
host's split the bank sends the owner the ones waiting there with the split (in
``sb.nodes`` / ``sb.split``) and gets their directions in ``sb.left`` — the rows
prediction would send in ``sb.route``, with no round of their own. The bank updates their
scores and the validation AUC; ``sb.tree_done`` tells the coordinator whether to stop.
When the best number of trees is below the number grown, the bank drops the extra trees
and tells each host how many of its lookup-table records the kept trees use
(``sb.prune``, answered by ``sb.pruned``); the host drops the rest.

Feature importance (``importance``): a host counts the splits on each of its features
from its own lookup table; the bank keeps the gain of every split, its own per feature
and a host's per opaque record number. No importance value is ever sent.

Prediction (``sb.predict``; in a training run it comes with ``sb.tree`` and waits for the
end of training, so its first routing leaves with the last ``sb.tree_done``): the bank
routes every aligned row through its own splits;
rows waiting at a host's node go to that host in ``sb.route`` (record number and rows);
the host answers ``sb.routed`` (which go left). At most ``max_depth`` round trips; only
the bank, which holds the leaf weights, learns the score. Row indices are positions
in the training rows (training) or in the aligned rows (prediction), which all parties
share. What each message reveals: docs/leakage.md.
"""

from fedcredit.protocols.secureboost.bank import SbBank, check_tree
from fedcredit.protocols.secureboost.config import (
    BANK, GRADIENTS, HISTOGRAMS, HOST_TO_HOST, KINDS, LEFT, NODES, PREDICT, PRUNE, PRUNED, READY, ROUTE, ROUTED, SCORED,
    SEED, SETUP, SHARE, SPLIT, TO_BANK, TO_HOST, TREE, TREE_DONE, SbConfig, TreePartyData)
from fedcredit.protocols.secureboost.coordinator import SbCoordinator
from fedcredit.protocols.secureboost.host import SbHost, split_rule
from fedcredit.protocols.secureboost.party import SbParty

__all__ = [
    "BANK", "GRADIENTS", "HISTOGRAMS", "HOST_TO_HOST", "KINDS", "LEFT", "NODES", "PREDICT", "PRUNE", "PRUNED", "READY",
    "ROUTE", "ROUTED", "SCORED", "SEED", "SETUP", "SHARE", "SPLIT", "TO_BANK", "TO_HOST", "TREE", "TREE_DONE",
    "SbBank", "SbConfig", "SbCoordinator", "SbHost", "SbParty", "TreePartyData", "check_tree", "sb_party", "split_rule",
]


def sb_party(role: str, data: TreePartyData, pool=None, deployment: bool | None = None, goss_seed: int | None = None,
             model: dict | None = None) -> SbParty:
    """The party for ``role``: the bank (``SbBank``, with labels unless ``model`` is a saved part), or a host."""
    if role == BANK:
        return SbBank(data, pool, deployment, goss_seed, model)
    return SbHost(role, data, pool, goss_seed, model)
