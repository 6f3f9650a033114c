"""The bank's reason codes: path attribution of each aligned row's score over the splits on its paths."""

from __future__ import annotations

import numpy as np

from fedcredit.models.gbdt_reference import Tree
from fedcredit.protocols.secureboost.config import BANK


def path_reasons(trees: list[Tree], leaves: np.ndarray, learning_rate: float, hosts: list[str], names: list[str],
                 top: int, budget: int) -> tuple[list[list[str]], dict[str, list[list[int]]]]:
    """Per aligned row (its leaf in each tree: ``leaves``), the splits that raised its score most.

    Path attribution (Saabas): at each split on a row's path the score moves from the
    node's expected value (leaf weights averaged by training cover) to the child's; the
    moves are summed per bank feature and per host record. Returns the bank's ``top``
    adverse features by ``names`` per row, and per host its adverse record numbers, ranked
    (up to ``3·top``: the host's names are joined to them at the coordinator, where
    records of one feature merge).
    """
    columns: dict[tuple[str, int], int] = {}
    paths = []  # per tree: (nodes × depth) column and score move of each node's path
    for tree in trees:
        value = _expected_values(tree)
        depth = max(n.depth for n in tree.nodes)
        col = np.full((len(tree.nodes), max(depth, 1)), -1, dtype=np.int64)
        move = np.zeros(col.shape)
        parent = {c: n for n in tree.nodes if not n.is_leaf for c in (n.left, n.right)}
        for node in tree.nodes:
            k, child = 0, node.id
            while child in parent:
                up = parent[child]
                key = (BANK, up.feature) if up.party == BANK else (up.party, up.record)
                col[node.id, k] = columns.setdefault(key, len(columns))
                move[node.id, k] = learning_rate * (value[child] - value[up.id])
                k, child = k + 1, up.id
        paths.append((col, move))
    by_party = {p: [c for (q, _), c in columns.items() if q == p] for p in [BANK, *hosts]}
    keys = list(columns)
    rows = leaves.shape[1]
    chunk = max(256, budget // max(1, len(columns)))  # rows per pass: at most ``budget`` summed moves in memory
    bank_codes: list[list[str]] = []
    host_codes: dict[str, list[list[int]]] = {h: [] for h in hosts}
    for start in range(0, rows, chunk):
        stop = min(rows, start + chunk)
        total = np.zeros((stop - start, len(columns)))
        for t, (col, move) in enumerate(paths):
            c, m = col[leaves[t, start:stop]], move[leaves[t, start:stop]]
            r = np.broadcast_to(np.arange(stop - start)[:, None], c.shape)
            keep = c >= 0
            np.add.at(total, (r[keep], c[keep]), m[keep])
        for party, cols in by_party.items():
            want = top if party == BANK else 3 * top
            cols = np.asarray(cols, dtype=np.int64)
            sub = total[:, cols] if cols.size else np.zeros((stop - start, 0))
            order = np.argsort(-sub, axis=1, kind="stable")[:, :want]
            for i, row in enumerate(order):
                picked = [keys[cols[j]][1] for j in row if sub[i, j] > 1e-9]
                if party == BANK:
                    bank_codes.append([names[j] for j in picked])
                else:
                    host_codes[party].append(picked)
    return bank_codes, host_codes


def _expected_values(tree: Tree) -> dict[int, float]:
    """Each node's expected leaf weight over the training rows that reached it (children have higher ids)."""
    value: dict[int, float] = {}
    for node in reversed(tree.nodes):
        if node.is_leaf:
            value[node.id] = float(node.weight)
            continue
        left, right = tree.nodes[node.left], tree.nodes[node.right]
        wl, wr = left.cover or 0, right.cover or 0
        if wl + wr == 0:
            wl = wr = 1
        value[node.id] = (wl * value[left.id] + wr * value[right.id]) / (wl + wr)
    return value
