"""Homomorphic kernels written once against a small group interface.

A *group* (``paillier_arith.PaillierGroup`` or ``mock_arith.MockGroup``) offers
``mul`` (add plaintexts), ``inv`` (negate), ``pow2k`` (multiply by 2^k) and ``one``
(zero). Kernels work on a chunk of rows so the parallel layer can split a vector by
rows and combine the partial results with ``combine_*``.
"""

from __future__ import annotations

import numpy as np


def product(group, values: list):
    """Homomorphic sum of a list of ciphertexts (``one`` for an empty list)."""
    mul = group.mul
    acc = None
    for v in values:
        acc = v if acc is None else mul(acc, v)
    return group.one if acc is None else acc


def grouped_sum_partial(group, cts: list, bins: np.ndarray, n_bins: list[int], skip: list[int], want_total: bool):
    """Per feature, per bin, the homomorphic sum of ``cts`` rows falling in that bin.

    One ``mul`` per row per feature. Rows in bin ``skip[j]`` are not summed (the
    caller recovers that bin as total minus the others); ``-1`` skips nothing.
    Returns ``(total_or_None, [[sum per bin] per feature])``; empty bins are ``None``.
    """
    mul = group.mul
    out = []
    for j in range(bins.shape[1]):
        acc = [None] * n_bins[j]
        s = skip[j]
        for c, b in zip(cts, bins[:, j].tolist()):
            if b != s:
                cur = acc[b]
                acc[b] = c if cur is None else mul(cur, c)
        out.append(acc)
    return (product(group, cts) if want_total else None), out


def combine_grouped(group, partials: list, skip: list[int]) -> list[list]:
    """Merge row-chunk results of ``grouped_sum_partial`` and fill the skipped bins."""
    mul = group.mul
    total = None
    sums = None
    for part_total, part in partials:
        if part_total is not None:
            total = part_total if total is None else mul(total, part_total)
        if sums is None:
            sums = [list(row) for row in part]
            continue
        for row, prow in zip(sums, part):
            for b, v in enumerate(prow):
                if v is not None:
                    row[b] = v if row[b] is None else mul(row[b], v)
    one = group.one
    for j, row in enumerate(sums):
        s = skip[j]
        if s >= 0:
            others = product(group, [v for b, v in enumerate(row) if b != s and v is not None])
            row[s] = mul(total, group.inv(others))
        sums[j] = [one if v is None else v for v in row]
    return sums


def choose_window(n_terms: int, bits: int) -> int:
    """Bucket width minimising ceil(bits/c) * (n_terms + 2^(c+1)) group operations."""
    best_c, best_cost = 1, None
    for c in range(1, min(bits, 20) + 1):
        cost = -(-bits // c) * (n_terms + (2 << c)) + bits
        if best_cost is None or cost < best_cost:
            best_c, best_cost = c, cost
    return best_c


def multiexp(group, bases: list, exps: np.ndarray):
    """``sum_i exps[i] * bases[i]`` homomorphically, exps >= 0 (Pippenger bucket method)."""
    if not len(bases):
        return group.one
    bits = int(exps.max()).bit_length()
    if bits == 0:
        return group.one
    mul = group.mul
    c = choose_window(len(bases), bits)
    mask = (1 << c) - 1
    result = None
    for w in reversed(range(-(-bits // c))):
        if result is not None:
            result = group.pow2k(result, c)
        buckets = [None] * (mask + 1)
        for base, d in zip(bases, ((exps >> (w * c)) & mask).tolist()):
            if d:
                cur = buckets[d]
                buckets[d] = base if cur is None else mul(cur, base)
        running = acc = None
        for d in range(mask, 0, -1):
            bd = buckets[d]
            if bd is not None:
                running = bd if running is None else mul(running, bd)
            if running is not None:
                acc = running if acc is None else mul(acc, running)
        if acc is not None:
            result = acc if result is None else mul(result, acc)
    return group.one if result is None else result


def dot_partial(group, cts: list, X: np.ndarray) -> list:
    """``X^T cts`` for an int64 matrix (rows x features); negatives via one negation per feature."""
    out = []
    for j in range(X.shape[1]):
        col = X[:, j]
        pos = np.flatnonzero(col > 0)
        neg = np.flatnonzero(col < 0)
        acc = multiexp(group, [cts[i] for i in pos.tolist()], col[pos])
        if len(neg):
            neg_sum = multiexp(group, [cts[i] for i in neg.tolist()], -col[neg])
            acc = group.mul(acc, group.inv(neg_sum))
        out.append(acc)
    return out


def combine_dot(group, partials: list[list]) -> list:
    return [product(group, list(col)) for col in zip(*partials)]


def horner_pack(group, cts: list, slot_bits: int):
    """``sum_j cts[j] * 2^(slot_bits*j)``: cts[0] lands in the lowest slot."""
    acc = cts[-1]
    for c in reversed(cts[:-1]):
        acc = group.mul(group.pow2k(acc, slot_bits), c)
    return acc


def pack_groups(group, cts: list, slot_bits: int, per_pack: int) -> list:
    return [horner_pack(group, cts[i : i + per_pack], slot_bits) for i in range(0, len(cts), per_pack)]
