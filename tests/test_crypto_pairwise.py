"""Pairwise masks cancel exactly in the combined sum, and a single share looks nothing like its values."""

import numpy as np
import pytest

from fedcredit.crypto.errors import CryptoError
from fedcredit.crypto import pairwise


def _seeds(parties):
    pair = {frozenset(p): pairwise.new_seed() for p in
            [(a, b) for i, a in enumerate(parties) for b in parties[i + 1:]]}
    return {me: {o: pair[frozenset((me, o))] for o in parties if o != me} for me in parties}


def test_word_masks_cancel_in_the_sum_exactly():
    parties = ["bank", "court", "tax", "utilities"]
    seeds = _seeds(parties)
    rng = np.random.default_rng(1)
    values = {p: rng.integers(-2**40, 2**40, size=1000) for p in parties}
    shares = [pairwise.masked_words(values[p], p, seeds[p], "run/eval-3/z") for p in parties]
    assert np.array_equal(pairwise.unmask_sum(shares), sum(values.values()))
    # one share alone is masked: nearly every word differs from the value and spreads over 64 bits
    lone = shares[0].astype(np.int64)
    assert np.mean(lone == values["bank"]) < 0.01
    assert np.abs(lone.astype(float)).max() > 2.0**60
    # a different label gives different masks, so a missing share leaves noise, not the sum
    other = pairwise.masked_words(values["tax"], "tax", seeds["tax"], "run/eval-4/z")
    assert not np.array_equal(pairwise.unmask_sum([shares[0], other, shares[2], shares[3]]), sum(values.values()))


def test_bit_masks_cancel_by_xor():
    parties = ["bank", "tax", "utilities"]
    seeds = _seeds(parties)
    rng = np.random.default_rng(2)
    owner_bits = rng.random(777) < 0.3
    # only the owner contributes bits, the other senders contribute zeros: the receiver "court" gets them all
    shares = [pairwise.masked_bits(owner_bits if p == "tax" else np.zeros(777, bool), seeds[p], "node-9")
              for p in parties]
    combined = np.logical_xor.reduce(shares)
    assert np.array_equal(combined, owner_bits)
    assert 0.4 < shares[1].mean() < 0.6  # the owner's share alone is noise


def test_stream_is_deterministic_per_seed_and_label():
    seed = pairwise.new_seed()
    assert pairwise.stream(seed, "a", 64) == pairwise.stream(seed, "a", 64)
    assert pairwise.stream(seed, "a", 64) != pairwise.stream(seed, "b", 64)
    with pytest.raises(CryptoError, match="32 bytes"):
        pairwise.stream(b"short", "a", 8)
    with pytest.raises(CryptoError, match="itself"):
        pairwise.pair_sign("tax", "tax")
