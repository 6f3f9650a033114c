"""A host's side of vertical SecureBoost: histograms of the bank's encrypted gradients, its private lookup table.

A host never decrypts: it sums the bank's ciphertexts per bin of its own features,
records the splits the bank picks on them (feature and threshold stay here; the bank
knows a record number) and answers which rows go left.
"""

from __future__ import annotations

import numpy as np

from fedcredit.common.errors import ProtocolError
from fedcredit.common.wire import Message, bundle, expect, meta_int, unbundle
from fedcredit.crypto import EncryptedVector, PaillierPublicKey
from fedcredit.protocols.parts import to_part, vector_part
from fedcredit.protocols.secureboost import wire
from fedcredit.protocols.secureboost.config import (
    BANK, GRADIENTS, HISTOGRAMS, LEFT, NODES, PRUNE, PRUNED, ROUTE, ROUTED, SETUP, SPLIT, TreePartyData)
from fedcredit.protocols.secureboost.party import SbParty


class SbHost(SbParty):
    """A host in vertical SecureBoost (features, no labels); driven by ``handle``."""

    def __init__(self, role: str, data: TreePartyData, pool=None, goss_seed: int | None = None,
                 model: dict | None = None):
        super().__init__(role, data, pool, model)
        # ``goss_seed`` is taken only to be refused (``sb_party`` passes it on): like validation rows, it is the bank's
        if data.valid_rows is not None or goss_seed is not None:
            raise ProtocolError(f"{role}: validation rows and the GOSS seed are the bank's")
        self.lookup: list[tuple[int, int]] = []  # record -> (feature, bin); "bins ≤ bin go left"
        self._gh: EncryptedVector | None = None
        self._hists: dict[int, EncryptedVector] = {}
        self._slot_bits = 0
        self._pos: np.ndarray | None = None  # training row -> position in this tree's ciphertexts (-1: not sampled)
        if model is not None:
            self._load(model)

    # -- the model: the lookup table ---------------------------------------------
    @property
    def has_model(self) -> bool:
        return self.cfg is not None

    def _part(self) -> dict:
        """The lookup table, thresholds in the host's own terms."""
        table = []
        specs = self._specs()
        for r, (j, b) in enumerate(self.lookup):
            row = {"record": r, "feature": j, "bin": b}
            if specs is not None:
                row.update(name=specs[j].name, rule=split_rule(specs[j], b))
            table.append(row)
        return {"lookup": table}

    def _load_part(self, doc: dict) -> None:
        self.lookup = [(int(r["feature"]), int(r["bin"])) for r in doc["lookup"]]
        if any(not (0 <= j < len(self.data.n_bins) and 0 <= b < self.data.n_bins[j] - 1) for j, b in self.lookup):
            raise ValueError("a lookup record names a feature or bin this node does not have")

    def importance(self) -> dict:
        """Feature importance a host may see: per own feature index, its splits in the lookup table (and its name)."""
        out: dict = {}
        for j, _ in self.lookup:
            out.setdefault(j, {"splits": 0, **self._named(j)})["splits"] += 1
        return {"features": out}

    def record_names(self) -> list[str]:
        """The feature name behind each lookup-table record (never its threshold)."""
        names = self._names()
        return [names[j] for j, _ in self.lookup]

    # -- messages from the bank ----------------------------------------------------
    def _handlers(self):
        return {SETUP: self._setup, GRADIENTS: self._gradients, NODES: self._nodes, SPLIT: self._split,
                ROUTE: self._route, PRUNE: self._prune}

    def _gradients(self, msg: Message) -> list[Message]:
        expect(msg, GRADIENTS, sender=BANK)
        try:
            key = PaillierPublicKey(int(msg.meta["key_n"], 16), backend=self.cfg.backend)
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"{msg.describe()}: malformed key ({exc!r})") from None
        if self.key is not None and key != self.key:
            raise ProtocolError(f"{msg.describe()}: the bank's key changed during the run")
        self.key = key
        n = len(self.data.train_rows)
        self._slot_bits = meta_int(msg, "slot_bits", 1)
        if self._slot_bits != wire.gh_slot_bits(self.cfg.scale_bits, n):
            raise ProtocolError(f"{msg.describe()}: slot width {self._slot_bits} does not match {n} training rows")
        sampled = msg.meta.get("sampled")
        if not isinstance(sampled, bool):
            raise ProtocolError(f"{msg.describe()}: meta field 'sampled' must be a bool")
        parts = unbundle(msg, ["gh", "root"] if sampled else ["gh"])
        root = wire.rows_from_bytes(parts["root"][0], n, msg, "root rows") if sampled else np.arange(n)
        self._gh = vector_part(key, parts["gh"], len(root), msg, scale_bits=0)
        self._pos = np.full(n, -1, dtype=np.int64)
        self._pos[root] = np.arange(len(root))
        self._hists = {0: self._build(root, msg)}
        return [self._send_histograms(msg, [0])]

    def _build(self, rows: np.ndarray, msg: Message) -> EncryptedVector:
        d = self.data
        at = self._pos[rows]
        if np.any(at < 0):
            raise ProtocolError(f"{msg.describe()}: rows outside this tree's root")
        return self._gh.take(at).grouped_sum(d.train_bins[rows], d.n_bins, pool=self.pool)

    def _send_histograms(self, msg: Message, nodes: list[int]) -> Message:
        keep = wire.valid_bins(self.data.n_bins)
        flat = wire.concat([self._hists[nid].take(keep) for nid in nodes])
        packed = wire.compress(flat, pool=self.pool)
        payload, meta = bundle({"hist": to_part(packed)})
        return self._reply(HISTOGRAMS, BANK, msg.step + 1, {**meta, "nodes": nodes, "n_bins": list(self.data.n_bins)},
                           payload)

    def _nodes(self, msg: Message) -> list[Message]:
        expect(msg, NODES, sender=BANK)
        if self._gh is None:
            raise ProtocolError(f"{msg.describe()}: no gradients received for this tree")
        entries = msg.meta.get("nodes")
        ok = isinstance(entries, list) and entries and all(
            isinstance(e, dict) and set(e) == {"parent", "build", "derive"} and all(
                isinstance(v, int) and not isinstance(v, bool) for v in e.values()) for e in entries)
        if not ok:
            raise ProtocolError(f"{msg.describe()}: meta field 'nodes' must list parent/build/derive node ids")
        parts = unbundle(msg, [f"rows{e['build']}" for e in entries])
        n = len(self.data.train_rows)
        hists, order = {}, []
        for e in entries:
            parent = self._hists.get(e["parent"])
            if parent is None:
                raise ProtocolError(f"{msg.describe()}: no histogram of node {e['parent']} to subtract from")
            rows = wire.rows_from_bytes(parts[f"rows{e['build']}"][0], n, msg, f"node {e['build']}")
            hists[e["build"]] = self._build(rows, msg)
            hists[e["derive"]] = parent - hists[e["build"]]
            order.append(e["build"])
        self._hists = hists  # derived histograms stay here as the next level's parents; the bank derives its own
        return [self._send_histograms(msg, order)]

    def _split(self, msg: Message) -> list[Message]:
        expect(msg, SPLIT, sender=BANK)
        splits = msg.meta.get("splits")
        d = self.data
        if not isinstance(splits, list) or not splits or not all(isinstance(s, dict) and set(s) == {"node", "feature", "bin"}
                                                                 for s in splits):
            raise ProtocolError(f"{msg.describe()}: meta field 'splits' must list node/feature/bin")
        parts = unbundle(msg, [f"rows{s['node']}" for s in splits])
        answers, out_parts = [], {}
        for s in splits:
            j, b = s["feature"], s["bin"]
            if not (isinstance(j, int) and isinstance(b, int) and 0 <= j < len(d.n_bins) and 0 <= b < d.n_bins[j] - 1):
                raise ProtocolError(f"{msg.describe()}: no split feature {j!r}, bin {b!r} at {self.role}")
            rows = wire.rows_from_bytes(parts[f"rows{s['node']}"][0], len(d.train_rows), msg, f"node {s['node']}")
            self.lookup.append((j, b))
            answers.append({"node": s["node"], "record": len(self.lookup) - 1})
            out_parts[f"left{s['node']}"] = (wire.mask_to_bytes(d.train_bins[rows, j] <= b), {})
        payload, meta = bundle(out_parts)
        return [self._reply(LEFT, BANK, msg.step + 1, {**meta, "nodes": answers}, payload)]

    def _route(self, msg: Message) -> list[Message]:
        expect(msg, ROUTE, sender=BANK)
        queries = msg.meta.get("queries")
        if not isinstance(queries, list) or not all(isinstance(q, dict) and set(q) == {"record", "part"} for q in queries):
            raise ProtocolError(f"{msg.describe()}: meta field 'queries' must list record/part")
        parts = unbundle(msg, [q["part"] for q in queries])
        out = {}
        for q in queries:
            r = q["record"]
            if not isinstance(r, int) or isinstance(r, bool) or not 0 <= r < len(self.lookup):
                raise ProtocolError(f"{msg.describe()}: no split record {r!r} at {self.role}")
            j, b = self.lookup[r]
            rows = wire.rows_from_bytes(parts[q["part"]][0], self.data.bins.shape[0], msg, f"query {q['part']}")
            out[q["part"]] = (wire.mask_to_bytes(self.data.bins[rows, j] <= b), {})
        payload, meta = bundle(out)
        return [self._reply(ROUTED, BANK, msg.step + 1, meta, payload)]

    def _prune(self, msg: Message) -> list[Message]:
        expect(msg, PRUNE, sender=BANK)
        keep = meta_int(msg, "records")
        if keep > len(self.lookup):
            raise ProtocolError(f"{msg.describe()}: {keep} records to keep, {self.role} has {len(self.lookup)}")
        del self.lookup[keep:]
        return [self._reply(PRUNED, BANK, msg.step + 1)]


def split_rule(spec, b: int) -> str:
    """The readable rule of "bins ≤ b go left" for one FeatureSpec (private to its owner)."""
    if spec.kind == "category":
        return f"{spec.name} in {spec.categories[: b + 1]!r}"
    if b < len(spec.edges):
        return f"{spec.name} < {spec.edges[b]!r}"
    return f"{spec.name} is not missing"
