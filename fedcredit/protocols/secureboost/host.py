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
from fedcredit.models import gbdt_reference as ref
from fedcredit.protocols.secureboost import shares, wire
from fedcredit.protocols.secureboost.config import (
    BANK, GRADIENTS, HISTOGRAMS, LEFT, NODES, PRUNE, PRUNED, ROUTE, ROUTED, SEED, SETUP, SHARE, SPLIT, TreePartyData)
from fedcredit.protocols.secureboost.party import SbParty


class SbHost(SbParty):
    """A host in vertical SecureBoost (features, no labels); driven by ``handle``."""

    def __init__(self, role: str, data: TreePartyData, pool=None, goss_seed: int | None = None,
                 model: dict | None = None):
        super().__init__(role, data, pool, model)
        # ``goss_seed`` is taken only to be refused (``sb_party`` passes it on): like validation rows, it is the bank's
        if data.valid_rows is not None or goss_seed is not None:
            raise ProtocolError(f"{role}: validation rows and the GOSS seed are the bank's")
        if data.monotone is not None:  # the directions would tell a host how its features relate to the labels
            raise ProtocolError(f"{role}: monotone constraints are the bank's; a host never holds them")
        self.lookup: list[tuple[int, int]] = []  # record -> (feature, bin); "bins ≤ bin go left"
        self._gh: EncryptedVector | None = None
        self._hists: dict[int, EncryptedVector] = {}
        self._slot_bits = 0
        self._pos: np.ndarray | None = None  # training row -> position in this tree's ciphertexts (-1: not sampled)
        self._tree = -1  # the tree being grown (its index, from the bank's gradients)
        self._members: dict[int, np.ndarray] = {}  # node of the current level -> its training rows
        self._level: dict | None = None  # a level whose membership shares are still coming in (_nodes, _share)
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
        return {SETUP: self._setup, SEED: self._seed, GRADIENTS: self._gradients, NODES: self._nodes,
                SHARE: self._share, SPLIT: self._split, ROUTE: self._route, PRUNE: self._prune}

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
        self._tree, self._members, self._level = meta_int(msg, "tree"), {0: root}, None
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
        """The bank's level: its membership shares of every split node, and the splits this host won.

        Answers ``sb.left`` (this host's partitions, possibly none) to the bank and one
        ``sb.share`` per other host; the children's histograms follow once every share is in.
        """
        expect(msg, NODES, sender=BANK)
        if self._gh is None:
            raise ProtocolError(f"{msg.describe()}: no gradients received for this tree")
        if self._level is not None:
            raise ProtocolError(f"{msg.describe()}: the previous level's shares are still missing")
        entries = msg.meta.get("nodes")
        ok = isinstance(entries, list) and entries and all(
            isinstance(e, dict) and set(e) == {"parent", "left", "right"} and all(
                isinstance(v, int) and not isinstance(v, bool) for v in e.values()) for e in entries)
        if not ok:
            raise ProtocolError(f"{msg.describe()}: meta field 'nodes' must list parent/left/right node ids")
        parents = [e["parent"] for e in entries]
        missing = [p for p in parents if p not in self._members]
        if missing or len(set(parents)) != len(parents):
            raise ProtocolError(f"{msg.describe()}: nodes {parents} are not distinct nodes of the current level")
        children = [c for e in entries for c in (e["left"], e["right"])]
        if len(set(children)) != len(children) or set(children) & set(self._members):
            raise ProtocolError(f"{msg.describe()}: child ids {children} must be new and distinct")
        splits = self._splits(msg, parents)
        parts = unbundle(msg, [f"share{p}" for p in parents] + [f"ask{s['node']}" for s in splits])
        bits = {p: wire.mask_from_bytes(parts[f"share{p}"][0], len(self._members[p]), msg, f"share of node {p}")
                for p in parents}
        asked = self._asked(msg, splits, parts)
        if len(self.hosts) > 1:  # before the lookup table changes
            shares.require_seeds(self.role, [BANK, *self.hosts], self.seeds)
        left, answers, out_parts = self._apply_splits(splits, asked)
        for p, go in left.items():
            bits[p] = bits[p] ^ go
        payload, meta = bundle(out_parts)
        out = [self._reply(LEFT, BANK, msg.step + 1, {**meta, "nodes": answers}, payload)]
        others = [h for h in self.hosts if h != self.role]
        parties = [BANK, *self.hosts]
        for peer in others:
            mine = {p: left.get(p, np.zeros(len(self._members[p]), dtype=bool)) for p in parents}
            share_parts = {f"share{p}": (wire.mask_to_bytes(shares.share(
                mine[p], self.role, peer, parties, self.seeds, shares.share_label(self.run_id, self._tree, p, peer))), {})
                for p in parents}
            payload, meta = bundle(share_parts)
            out.append(self._reply(SHARE, peer, msg.step + 1, {**meta, "nodes": parents}, payload))
        self._level = {"nodes": [[e["parent"], e["left"], e["right"]] for e in entries], "bits": bits, "waiting": others}
        if not others:
            out.append(self._children(msg))
        return out

    def _share(self, msg: Message) -> list[Message]:
        """Another host's membership shares of the level: XOR-ed in; the last one completes the level."""
        expect(msg, SHARE)
        level = self._level
        if level is None or msg.sender not in level["waiting"]:
            raise ProtocolError(f"{msg.describe()}: no share expected from {msg.sender}")
        parents = [p for p, _, _ in level["nodes"]]
        if msg.meta.get("nodes") != parents:
            raise ProtocolError(f"{msg.describe()}: shares for nodes {msg.meta.get('nodes')!r}, expected {parents}")
        parts = unbundle(msg, [f"share{p}" for p in parents])
        for p in parents:
            level["bits"][p] = level["bits"][p] ^ wire.mask_from_bytes(parts[f"share{p}"][0], len(self._members[p]), msg,
                                                                      f"share of node {p}")
        level["waiting"] = [h for h in level["waiting"] if h != msg.sender]
        return [] if level["waiting"] else [self._children(msg)]

    def _children(self, msg: Message) -> Message:
        """Every share is in: the children's rows; build the smaller child's histogram, derive its sibling as
        parent − child (kept for the next level) and send the built ones (the bank derives its siblings too)."""
        level, self._level = self._level, None
        members, hists, order = {}, {}, []
        for parent, left, right in level["nodes"]:
            rows, go = self._members[parent], level["bits"][parent]
            members[left], members[right] = rows[go], rows[~go]
            small, big = (left, right) if ref.smaller_first(members[left], members[right]) else (right, left)
            hists[small] = self._build(members[small], msg)
            hists[big] = self._hists[parent] - hists[small]
            order.append(small)
        self._members, self._hists = members, hists
        return self._send_histograms(msg, order)

    def _split(self, msg: Message) -> list[Message]:
        """The last level: only the splits this host won (possibly none) need answering."""
        expect(msg, SPLIT, sender=BANK)
        if self._level is not None:
            raise ProtocolError(f"{msg.describe()}: the previous level's shares are still missing")
        splits = self._splits(msg, list(self._members))
        asked = self._asked(msg, splits, unbundle(msg, [f"ask{s['node']}" for s in splits]))
        _, answers, out_parts = self._apply_splits(splits, asked)
        payload, meta = bundle(out_parts)
        return [self._reply(LEFT, BANK, msg.step + 1, {**meta, "nodes": answers}, payload)]

    def _splits(self, msg: Message, level: list[int]) -> list[dict]:
        """The splits the bank chose on this host's features (``splits``), checked: nodes of ``level``, own bins."""
        splits, d = msg.meta.get("splits"), self.data
        if not isinstance(splits, list) or not all(isinstance(s, dict) and set(s) == {"node", "feature", "bin"}
                                                   for s in splits):
            raise ProtocolError(f"{msg.describe()}: meta field 'splits' must list node/feature/bin")
        nodes = [s["node"] for s in splits]
        if any(n not in level for n in nodes) or len(set(nodes)) != len(nodes):
            raise ProtocolError(f"{msg.describe()}: splits of nodes {nodes}, not distinct nodes of the level {level}")
        for s in splits:
            j, b = s["feature"], s["bin"]
            if not (isinstance(j, int) and isinstance(b, int) and 0 <= j < len(d.n_bins) and 0 <= b < d.n_bins[j] - 1):
                raise ProtocolError(f"{msg.describe()}: no split feature {j!r}, bin {b!r} at {self.role}")
        return splits

    def _asked(self, msg: Message, splits: list[dict], parts: dict) -> dict[int, np.ndarray]:
        """Per split, the other rows the bank asks about there (aligned rows outside the tree's sample or held out
        for validation: they follow the tree as it grows)."""
        return {s["node"]: wire.rows_from_bytes(parts[f"ask{s['node']}"][0], self.data.bins.shape[0], msg,
                                                f"node {s['node']}") for s in splits}

    def _apply_splits(self, splits: list[dict], asked: dict[int, np.ndarray]) -> tuple[dict, list, dict]:
        """Record ``splits`` in the lookup table; returns each node's go-left bits, the record numbers and the
        ``sb.left`` parts: the node's partition and the directions of the ``asked`` rows."""
        d = self.data
        left, answers, out = {}, [], {}
        for s in splits:
            n, j, b = s["node"], s["feature"], s["bin"]
            self.lookup.append((j, b))
            left[n] = d.train_bins[self._members[n], j] <= b
            answers.append({"node": n, "record": len(self.lookup) - 1})
            out[f"left{n}"] = (wire.mask_to_bytes(left[n]), {})
            out[f"asked{n}"] = (wire.mask_to_bytes(d.bins[asked[n], j] <= b), {})
        return left, answers, out

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
