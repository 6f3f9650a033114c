"""Homomorphic kernels written once against a small group interface.

A *group* (``paillier_arith.PaillierGroup`` or ``mock_arith.MockGroup``) offers
``mul`` (add plaintexts), ``inv`` (negate), ``pow2k`` (multiply by 2^k) and ``one``
(zero). Kernels work on a chunk of rows so the parallel layer can split a vector by
rows and combine the partial results with ``combine_*``.
"""

from __future__ import annotations

import math

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


MAX_TUPLE = 4  # features summed jointly per pass over the rows
# Joint cells per tuple: ~1 MB of 4096-bit accumulators stays in a core's L2 cache. At
# 100,000 rows and 11 bins, k = 4 (14,641 cells) ran 15 % over its mulmod count, k = 3 6 %.
MAX_CELLS = 2048
INV_COST = 8  # a group inversion in mulmods (gmpy2 invert mod n^2 is ~5 mulmods, plus margin)


def feature_tuples(n_bins: list[int], k: int) -> list[list[int]]:
    """Consecutive features in tuples of at most ``k``, each with at most MAX_CELLS joint cells."""
    tuples, cur, cells = [], [], 1
    for j, nb in enumerate(n_bins):
        if cur and (len(cur) == k or cells * nb > MAX_CELLS):
            tuples.append(cur)
            cur, cells = [], 1
        cur.append(j)
        cells *= nb
    return tuples + [cur] if cur else tuples


def tuple_codes(cols: np.ndarray, tuples: list[list[int]], n_bins: list[int]) -> np.ndarray:
    """(tuples, rows) row-major joint cell of each row, ``b1*B2*B3 + b2*B3 + b3``, in the smallest int type.

    ``cols`` is the bin matrix transposed (features, rows), so each feature is contiguous.
    """
    top = max(math.prod(n_bins[j] for j in t) for t in tuples)
    codes = np.empty((len(tuples), cols.shape[1]), dtype=np.min_scalar_type(-top))
    for row, t in zip(codes, tuples):
        code = cols[t[0]].astype(np.int64)
        for j in t[1:]:
            code = code * n_bins[j] + cols[j]
        row[:] = code
    return codes


def occupied(cells: float, rows: float) -> float:
    """Expected non-empty cells for ``rows`` uniform rows: an upper bound under any skew (concavity)."""
    return cells * -math.expm1(-rows / cells) if cells and rows else 0.0


def tuple_cost(dims: list[int], rows: float, top: float, used: list[int]) -> float:
    """Mulmods of ``joint_sum_partial`` for one tuple on ``rows`` rows.

    Row pass ``rows - N_k``; collapsing level l (N_l cells) into feature l's marginal
    (M_l bins) and the parent table (N_{l-1} cells) costs ``2 N_l - M_l - N_{l-1}``.
    Summed: ``rows - N_1 + sum_{l>=2} (N_l - M_l)``, with N_l the occupied cells of
    the first l features (``top`` caps N_k) and M_l of feature l alone (``used`` caps).
    """
    cost, prefix = rows, 1
    for level, (d, u) in enumerate(zip(dims, used)):
        prefix *= d
        m_l = min(occupied(d, rows), u)
        n_l = m_l if level == 0 else min(occupied(prefix, rows), rows)
        if level == len(dims) - 1:
            n_l = min(n_l, top)
        cost += (n_l - m_l) if level else -n_l
    return cost


def plan_single(counts: list[np.ndarray], rows: int, chunks: int) -> dict:
    """The per-feature plan (k = 1): skip each feature's fullest bin when that beats summing the total."""
    feats = len(counts)
    width = max((len(c) for c in counts), default=0)
    saved = sum(int(c.max()) for c in counts if c.size)
    use_skip = rows > 0 and saved > rows + feats * (width + INV_COST)
    r = rows / chunks
    cost = chunks * sum(r - min(occupied(len(c), r), np.count_nonzero(c)) for c in counts)
    if use_skip:
        cost += rows + feats * (width + INV_COST) - saved
    skip = [int(c.argmax()) for c in counts] if use_skip else [-1] * feats
    return {"k": 1, "skip": skip, "want_total": use_skip, "cost": cost}


def plan_joint(cols: np.ndarray, n_bins: list[int], used: list[int], tuples: list[list[int]], chunks: int) -> dict:
    """Cell codes, which tuples skip their fullest cell, and the estimated mulmods of summing by ``tuples``.

    Skipping a tuple's fullest cell saves its rows but costs, per feature of the tuple,
    deriving the bin holding it as total minus the others (B mulmods and one inversion).
    The total comes almost free from a tuple that skips nothing (its smallest feature's
    bins), so at least one tuple never skips.
    """
    codes = tuple_codes(cols, tuples, n_bins)
    dims = [[n_bins[j] for j in t] for t in tuples]
    r = cols.shape[1] / chunks
    cost, cells, gains = 0.0, [], []
    for t, d, row in zip(tuples, dims, codes):
        counts = np.bincount(row, minlength=math.prod(d))
        cost += chunks * tuple_cost(d, r, int(np.count_nonzero(counts)), [used[j] for j in t])
        cells.append(int(counts.argmax()))
        gains.append(int(counts.max()) - chunks - sum(d) - INV_COST * len(t))
    order = sorted(range(len(tuples)), key=lambda i: gains[i])
    keep = {i for i in order[1:] if gains[i] > 0}
    total_from = -1
    if keep:
        total_from = min((j for i in order if i not in keep for j in tuples[i]), key=lambda j: n_bins[j])
        saved = sum(gains[i] for i in keep) - chunks * n_bins[total_from]
        if saved > 0:
            cost -= saved
        else:
            keep, total_from = set(), -1
    skip = [-1] * len(n_bins)
    for i in keep:
        for j, b in zip(tuples[i], np.unravel_index(cells[i], dims[i])):
            skip[j] = int(b)
    skip_cells = [cells[i] if i in keep else -1 for i in range(len(tuples))]
    return {"codes": codes, "dims": dims, "skip_cells": skip_cells, "skip": skip, "total_from": total_from,
            "cost": cost}


def choose_plan(cols: np.ndarray, n_bins: list[int], counts: list[np.ndarray], chunks: int, k=None) -> dict:
    """The cheapest plan over tuple sizes 1..MAX_TUPLE (or the one for ``k``) by estimated mulmods.

    ``cols``: the bins transposed (features, rows); ``counts``: rows per bin of each feature.
    """
    rows = cols.shape[1]
    used = [int(np.count_nonzero(c)) for c in counts]
    best, seen = None, []
    for size in [k] if k else range(1, MAX_TUPLE + 1) if rows else [1]:
        if size == 1 or not n_bins:
            plan = plan_single(counts, rows, chunks)
        else:
            tuples = feature_tuples(n_bins, size)
            if tuples in seen:
                continue  # the cell cap or the feature count stopped the tuples growing
            seen.append(tuples)
            plan = {"k": size, **plan_joint(cols, n_bins, used, tuples, chunks)}
        if best is None or plan["cost"] < best["cost"]:
            best = plan
    return best


def marginals(group, table: dict, dims: list[int], skip: list[int]) -> list[list]:
    """Per-feature bin sums of a sparse joint table, collapsing the last axis level by level.

    Each level touches its non-empty cells twice (the last feature's marginal and the
    parent table), so the work is bounded by the non-empty cells, not by the rows.
    Bins in ``skip`` are left ``None``: the caller derives them from the total.
    """
    mul = group.mul
    out = []
    for d, s in zip(reversed(dims[1:]), reversed(skip[1:])):
        marg, parent = [None] * d, {}
        for code, v in table.items():
            p, b = divmod(code, d)
            if b != s:
                cur = marg[b]
                marg[b] = v if cur is None else mul(cur, v)
            cur = parent.get(p)
            parent[p] = v if cur is None else mul(cur, v)
        out.append(marg)
        table = parent
    first = [None] * dims[0]
    for code, v in table.items():
        if code != skip[0]:
            first[code] = v
    out.append(first)
    return out[::-1]


def joint_sum_partial(group, cts: list, codes: np.ndarray, dims: list[list[int]], skip_cells: list[int],
                      skip: list[int], total_from: int):
    """``grouped_sum_partial`` by feature tuples: one ``mul`` per row per tuple, not per feature.

    ``codes[t]`` is each row's joint cell in tuple t (consecutive features of shape
    ``dims[t]``). Rows are summed into their cell (``skip_cells[t]`` is not summed), then
    each feature's bins are marginalised from the non-empty cells. Same plaintext sums,
    so ``combine_grouped`` merges the chunks; the chunk total (needed when bins are
    skipped) is the product of feature ``total_from``'s bins, which skips nothing.
    """
    mul = group.mul
    out = []
    for row_codes, d, s in zip(codes, dims, skip_cells):
        cells = [None] * math.prod(d)
        for c, code in zip(cts, row_codes.tolist()):
            if code != s:
                cur = cells[code]
                cells[code] = c if cur is None else mul(cur, c)
        table = {code: v for code, v in enumerate(cells) if v is not None}
        out += marginals(group, table, d, skip[len(out) : len(out) + len(d)])
    total = None
    if total_from >= 0:
        total = product(group, [v for v in out[total_from] if v is not None])
    return total, out


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
