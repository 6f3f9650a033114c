"""Membership of a level's children as XOR shares, so a host learns the partition without learning who split.

For the next level every host needs, per node split at this level, which of the node's
rows go left. The bank knows that for its own splits when it decides; a host's split is
known to the owner one round later. Rather than relaying the owner's answer through the
bank (a round more), every party except the receiver sends the receiver one share per
node: the owner's share is the bits XOR pair masks, everyone else's the pair masks only.
Each pair mask appears in exactly two shares sent to the same receiver, so the XOR of
all of them is the bits, while any single share (and any strict subset of the shares
a receiver gets) is uniform: the receiver cannot tell which party split the node. Pair
seeds (``crypto.pairwise``) travel once per run in ``sb.seed``, sealed, in the setup
replies: the earlier party of each pair in the party list draws it.

Why three rounds per level with two or more hosts, and not two: a host's histograms of a
child need the child's rows, which depend on the split the bank chose (known once it has
every histogram) and, for a host's split, on that host's feature values. So the chain
bank decides → owner learns its split → every other host learns the rows → the bank has
their histograms is three hops, one round each. Shortening it would need another host to
learn the split or the owner directly (new leakage) or the owner to sum another host's
ciphertexts per bin, which needs that host's bins of every row encrypted (rows × bins
ciphertexts per tree). With one host there is no other host to tell: two rounds.
"""

from __future__ import annotations

import numpy as np

from fedcredit.common.errors import ProtocolError
from fedcredit.crypto import pairwise


def seed_peers(me: str, parties: list[str]) -> list[str]:
    """The parties after ``me`` in the party list: ``me`` draws the pair seed it shares with each of them."""
    return parties[parties.index(me) + 1:]


def needs_seeds(hosts: list[str]) -> bool:
    """Pair seeds are needed with two hosts or more; with one, the bank is its only sender and sends the bits."""
    return len(hosts) >= 2


def share(bits: np.ndarray, me: str, receiver: str, parties: list[str], seeds: dict[str, bytes], label: str) -> np.ndarray:
    """``me``'s share for ``receiver``: ``bits`` (zeros unless ``me`` split the node) XOR the masks of ``me``'s pairs
    with every other sender (every party but ``me`` and ``receiver``)."""
    others = [p for p in parties if p not in (me, receiver)]
    require_seeds(me, others, seeds)
    return pairwise.masked_bits(bits, {p: seeds[p] for p in others}, label)


def require_seeds(me: str, others: list[str], seeds: dict[str, bytes]) -> None:
    """Refuse (before anything changes) when a pair seed ``me`` needs has not arrived."""
    missing = [p for p in others if p != me and p not in seeds]
    if missing:
        raise ProtocolError(f"{me}: no pair seed shared with {', '.join(missing)} (sb.seed not received)")


def share_label(run_id: str, tree: int, node: int, receiver: str) -> str:
    """What a mask is for: distinct per run, tree, node and receiving host, so no mask is ever reused."""
    return f"fedcredit/sb/membership/{run_id}/tree{tree}/node{node}/to/{receiver}"


def check_seed(seed: bytes, sender: str) -> bytes:
    if len(seed) != pairwise.SEED_BYTES:
        raise ProtocolError(f"sb.seed from {sender}: a pair seed must be {pairwise.SEED_BYTES} bytes, got {len(seed)}")
    return bytes(seed)


new_seed = pairwise.new_seed
