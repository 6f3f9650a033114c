"""The bank's side of vertical SecureBoost: labels, the Paillier key and the trees, grown level by level.

The bank computes every gradient, decrypts the hosts' histograms, picks each node's best
split over every party and keeps the leaf weights; routing.py has its rounds with the
hosts (waiting, prediction), reasons.py the reason codes it ranks from its predictions.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from fedcredit.common.errors import FedCreditError, ProtocolError
from fedcredit.common.wire import COORDINATOR, Message, expect, meta_int, unbundle
from fedcredit.crypto import generate_keypair
from fedcredit.models import gbdt_reference as ref
from fedcredit.models.gbdt_reference import GbdtConfig, Tree, TreeNode
from fedcredit.protocols.parts import packed_part, to_part
from fedcredit.protocols.secureboost import shares, wire
from fedcredit.protocols.secureboost.config import (
    BANK, GRADIENTS, HISTOGRAMS, LEFT, NODES, PREDICT, PRUNE, PRUNED, ROUTED, SETUP, SPLIT, TREE, TREE_DONE,
    TreePartyData)
from fedcredit.protocols.secureboost.reasons import path_reasons
from fedcredit.protocols.secureboost.routing import BankRounds, next_step


@dataclass
class _Growing:
    """The bank's tree in progress between messages (plain data, so the bank pickles)."""

    tree: Tree
    hosts: list[str]
    g: np.ndarray
    h: np.ndarray
    members: dict[int, np.ndarray]  # node -> training rows (indices into the training rows)
    own: dict[int, tuple]  # node -> the bank's own histograms
    remote: dict[int, dict[str, tuple]] = field(default_factory=dict)  # node -> host -> decrypted histograms
    bounds: dict[int, tuple] = field(default_factory=lambda: {0: ref.UNBOUNDED})  # node -> weight bounds (monotone)
    slot: int = 0
    level: list[int] = field(default_factory=lambda: [0])
    split_nodes: list[int] = field(default_factory=list)
    pending: dict[str, list[int]] = field(default_factory=dict)  # host -> nodes it must split
    outside: np.ndarray | None = None  # training rows (positions) outside the tree's root (GOSS)
    ask: np.ndarray | None = None  # aligned rows the tree is not grown on (outside GOSS, validation): routed as it grows
    ask_at: np.ndarray | None = None  # the node each of ``ask`` has reached
    leaf: np.ndarray | None = None
    stop: bool = False

    def totals(self, nid: int) -> tuple[int, int]:
        rows = self.members[nid]
        return int(self.g[rows].sum()), int(self.h[rows].sum())


def check_tree(tree: Tree, bank_bins: list[int]) -> None:
    """A loaded tree must be well formed: one parent per node, depths that follow, leaves that weigh,
    the bank's splits within its bins and a host's splits as record numbers."""
    parents: dict[int, int] = {}
    for k, n in enumerate(tree.nodes):
        if n.id != k:
            raise ValueError(f"node {k} has id {n.id}")
        if k == 0 and n.depth != 0:
            raise ValueError("the root must have depth 0")
        if n.cover is not None and (not isinstance(n.cover, int) or n.cover < 0):
            raise ValueError(f"node {k} has cover {n.cover!r}")
        if n.is_leaf:
            if n.right is not None or n.weight is None or not np.isfinite(n.weight):
                raise ValueError(f"leaf {k} has no finite weight")
            continue
        if not all(isinstance(c, int) and k < c < len(tree.nodes) for c in (n.left, n.right)) or n.left == n.right:
            raise ValueError(f"node {k} has children {n.left}, {n.right} outside the tree")
        for c in (n.left, n.right):
            if c in parents:
                raise ValueError(f"node {c} has two parents")
            parents[c] = k
            if tree.nodes[c].depth != n.depth + 1:
                raise ValueError(f"node {c} is at depth {tree.nodes[c].depth}, below a node at depth {n.depth}")
        if n.party == BANK:
            if not (isinstance(n.feature, int) and isinstance(n.bin, int) and 0 <= n.feature < len(bank_bins)
                    and 0 <= n.bin < bank_bins[n.feature] - 1):
                raise ValueError(f"node {k} splits bank feature {n.feature} at bin {n.bin}, which the bank does not have")
        elif not isinstance(n.party, str) or not n.party or not isinstance(n.record, int) or n.record < 0:
            raise ValueError(f"node {k} splits at a host without a host name and record number")
    if len(parents) != len(tree.nodes) - 1:
        raise ValueError("some nodes are not reachable from the root")


class SbBank(BankRounds):
    """The bank in vertical SecureBoost (labels, the Paillier key, the trees); driven by ``handle``."""

    def __init__(self, data: TreePartyData, pool=None, deployment: bool | None = None, goss_seed: int | None = None,
                 model: dict | None = None):
        super().__init__(data, pool, model)
        self.deployment = deployment
        # the bank's private GOSS seed (hosts could tell large-gradient rows from the sample if they knew it)
        self.goss_seed = secrets.randbits(62) if goss_seed is None else int(goss_seed)
        self.history: list[dict] = []
        self._stopper: ref.EarlyStopping | None = None
        self._host_bins: dict[str, list[int]] = {}  # each host's bins per feature, fixed for the run
        self._next_tree: int | None = None  # set by a finished tree that is not the last: the step to start the next at
        if model is not None:
            self._load(model)

    # -- the model --------------------------------------------------------------
    @property
    def has_model(self) -> bool:
        return bool(self.trees)

    def _part(self) -> dict:
        """The trees; a host split is kept as host + record only (prediction needs nothing more)."""
        trees = [[{**asdict(n), **({"feature": None, "bin": None} if n.party not in (None, BANK) else {})}
                  for n in t.nodes] for t in self.trees]
        return {"base": self.base, "learning_rate": self.learning_rate, "trees": trees}

    def _load_part(self, doc: dict) -> None:
        self.base, self.learning_rate = float(doc["base"]), float(doc["learning_rate"])
        self.trees = [Tree([TreeNode(**n) for n in nodes]) for nodes in doc["trees"]]
        for tree in self.trees:
            check_tree(tree, self.data.n_bins)

    def importance(self) -> dict:
        """Feature importance the bank may see: per own feature, splits and total gain; per host, the gain
        of each split by the host's record number (the bank knows a record as the host's feature index and
        bin it chose, never the feature's name or threshold) — never sent."""
        own, hosts = {}, {h: {} for h in self.hosts}
        for tree in self.trees:
            for n in tree.nodes:
                if n.is_leaf:
                    continue
                if n.party == BANK:
                    entry = own.setdefault(n.feature, {"splits": 0, "gain": 0.0, **self._named(n.feature)})
                    entry["splits"] += 1
                    entry["gain"] += n.gain
                else:
                    hosts[n.party][n.record] = n.gain
        return {"features": own, "host_records": hosts}

    def reasons(self, top: int, budget: int = 4_000_000) -> tuple[list[list[str]], dict[str, list[list[int]]]]:
        """The bank's reason codes after prediction: per aligned row, the splits that raised its score most
        (``reasons.path_reasons``)."""
        if self.leaves is None:
            raise ProtocolError(f"{self.role}: reason codes need the bank's predictions")
        return path_reasons(self.trees, self.leaves, self.learning_rate, self.hosts, self._names(), top, budget)

    # -- dispatch and setup -------------------------------------------------------
    def _handlers(self):
        return {SETUP: self._setup, TREE: self._tree, PREDICT: self._predict,
                HISTOGRAMS: self._collect, LEFT: self._collect, ROUTED: self._collect, PRUNED: self._collect}

    def _set_up(self, msg: Message, meta: dict) -> None:
        """A saved model: its hosts must be in the job. To train: the key, base score, early stopping."""
        cfg = self.cfg
        self.learning_rate = self.learning_rate if self.loaded else cfg.learning_rate
        if self.loaded:
            missing = sorted({n.party for t in self.trees for n in t.nodes if not n.is_leaf} - {BANK, *self.hosts})
            if missing:
                raise ProtocolError(f"{msg.describe()}: the saved model splits on features of {', '.join(missing)}, "
                                    f"which {'is' if len(missing) == 1 else 'are'} not in this job")
            meta["trees"] = len(self.trees)
            return
        unknown = sorted(set(self.data.monotone or {}) - {BANK, *self.hosts})
        if unknown:
            raise ProtocolError(f"{msg.describe()}: monotone constraints for {', '.join(unknown)}, "
                                f"which {'is' if len(unknown) == 1 else 'are'} not in this job")
        if self.hosts:  # a bank-only model never encrypts
            self.keypair = generate_keypair(cfg.key_bits, backend=cfg.backend, deployment=self.deployment)
            self.key = self.keypair.public_key
        y = self.data.labels[self.data.train_rows].astype(np.float64)
        self.base = ref.base_score(y)
        self._score = np.full(len(y), self.base)
        meta["train_rows"] = len(y)
        valid = self.data.valid_rows
        if (cfg.patience is None) != (valid is None or len(valid) == 0):
            raise ProtocolError(f"{msg.describe()}: early stopping needs validation rows at the bank, and they need patience")
        if valid is not None:
            self._valid_score = np.full(len(valid), self.base)
            self._stopper = ref.EarlyStopping(cfg.patience, self.data.labels[valid].astype(np.float64))
        if self.key is not None:
            meta.update(key_fingerprint=self.key.fingerprint, key_bits=self.key.bits)
        self._training = True  # until the last tree: an sb.predict meanwhile waits for it

    # -- growing one tree: explicit stages that wait for hosts' answers -------------
    def _tree(self, msg: Message) -> list[Message]:
        expect(msg, TREE, sender=COORDINATOR)
        self._busy(msg)
        if self.loaded:
            raise ProtocolError(f"{msg.describe()}: a saved model is not trained further")
        index = meta_int(msg, "tree")
        if index != 0 or self.history:  # sb.tree starts training; the bank starts every later tree itself
            raise ProtocolError(f"{msg.describe()}: tree {index} requested, the bank has grown {len(self.history)}")
        return self._keep_growing(self._grow(msg.step + 1))

    def _collect(self, msg: Message) -> list[Message]:
        return self._keep_growing(super()._collect(msg))

    def _keep_growing(self, out: list[Message]) -> list[Message]:
        """Start the next tree in the reply that reports the last one (no round for an ``sb.tree`` per tree).

        A loop, not a call from ``_tree_done``: trees the bank grows alone finish within
        one message, and a long run of them must not nest calls.
        """
        while self._next_tree is not None:
            step, self._next_tree = self._next_tree, None
            out = out + self._grow(step)
        return out

    def gbdt_config(self) -> GbdtConfig:
        """The settings as the reference takes them (the bank's: with its private GOSS seed)."""
        return replace(self.cfg.gbdt(), goss_seed=self.goss_seed or 0)

    def _grow(self, step: int) -> list[Message]:
        """Start one tree: gradients, the root's own histogram, encrypted g/h to the hosts."""
        cfg, gcfg, d = self.cfg, self.gbdt_config(), self.data
        y = d.labels[d.train_rows].astype(np.float64)
        hosts = [] if gcfg.bank_first_tree and not self.trees else list(self.hosts)  # hosts see nothing of a bank-only tree
        n = len(y)
        g, h = ref.gradients(self._score, y, cfg.scale_bits)
        root, g, h = ref.goss(g, h, gcfg, len(self.trees))
        grow = self._growing = _Growing(Tree([TreeNode(0, 0)]), hosts, g, h, {0: root},
                                        {0: ref.histogram(d.train_bins[root], d.n_bins, g[root], h[root])})
        grow.outside = np.setdiff1d(np.arange(n), root)
        valid = d.valid_rows if self._stopper is not None else np.zeros(0, dtype=np.int64)
        grow.ask = np.union1d(d.train_rows[grow.outside], valid).astype(np.int64)
        grow.ask_at = np.zeros(len(grow.ask), dtype=np.int64)
        if not hosts:
            return self._level(step)
        grow.slot = slot = wire.gh_slot_bits(cfg.scale_bits, n)
        enc = self.keypair.encrypt_ints(wire.pack_gh(g[root], h[root], slot), 0, pool=self.pool)
        meta = {"tree": len(self.history), "key_n": format(self.key.n, "x"), "slot_bits": slot, "sampled": len(root) < n}
        parts = {"gh": to_part(enc)}
        if len(root) < n:
            parts["root"] = (wire.rows_to_bytes(root), {})
        msgs = self._send_hosts(GRADIENTS, step, {hst: (meta, parts) for hst in hosts})
        return self._wait(msgs, {HISTOGRAMS: hosts}, "_got_root")

    def _got_root(self, inbox: dict[str, dict[str, Message]]) -> list[Message]:
        grow = self._growing
        grow.remote = self._histograms(inbox[HISTOGRAMS], [0], grow.totals, grow.slot)
        return self._level(next_step(inbox))

    def _level(self, step: int) -> list[Message]:
        """Decide every node of the current level; then one message to every host, whoever split what.

        Below the last level, ``sb.nodes`` carries the bank's membership shares of every split
        node (``shares``) and, to a host that won splits, its feature and bin; hosts answer
        ``sb.left`` (their splits' partitions; possibly none) and, once they hold every share,
        ``sb.histograms`` of the children. At the last level only the owners' partitions are
        needed (``sb.split`` → ``sb.left``; empty for hosts that won none). The same messages
        every level, so a host cannot tell from them or their rounds which party split a node.
        """
        grow = self._growing
        grow.split_nodes, grow.pending = self._decide(grow.tree, grow.level, grow.members, grow.own, grow.remote,
                                                      grow.hosts, grow.totals, grow.bounds)
        if not grow.split_nodes:
            return self._tree_grown(step)
        tree = grow.tree
        grow.ask_at = grow.ask_at.copy()  # checkpointed arrays are read-only: change a copy
        for nid in grow.split_nodes:  # rows the tree is not grown on follow the bank's own splits here
            node, at = tree.nodes[nid], np.flatnonzero(grow.ask_at == nid)
            if node.party == BANK:
                go = self.data.bins[grow.ask[at], node.feature] <= node.bin
                grow.ask_at[at[go]], grow.ask_at[at[~go]] = node.left, node.right
        if not grow.hosts:  # the bank's own splits: the children's rows are known
            return self._next_level(step)
        owned = {hst: [{"node": i, "feature": tree.nodes[i].feature, "bin": tree.nodes[i].bin}
                       for i in grow.pending.get(hst, [])] for hst in grow.hosts}
        asks = {hst: {f"ask{i}": (wire.rows_to_bytes(grow.ask[grow.ask_at == i]), {}) for i in grow.pending.get(hst, [])}
                for hst in grow.hosts}  # and a host's: the owner answers their directions in sb.left
        if tree.nodes[grow.split_nodes[0]].depth + 1 >= self.cfg.max_depth:
            msgs = self._send_hosts(SPLIT, step, {hst: ({"splits": owned[hst]}, asks[hst]) for hst in grow.hosts})
            return self._wait(msgs, {LEFT: grow.hosts}, "_got_last")
        nodes = [{"parent": i, "left": tree.nodes[i].left, "right": tree.nodes[i].right} for i in grow.split_nodes]
        per_host = {hst: ({"nodes": nodes, "splits": owned[hst]},
                          {**{f"share{i}": (wire.mask_to_bytes(self._membership_share(i, hst)), {})
                              for i in grow.split_nodes}, **asks[hst]})
                    for hst in grow.hosts}
        return self._wait(self._send_hosts(NODES, step, per_host), {LEFT: grow.hosts, HISTOGRAMS: grow.hosts},
                          "_got_level")

    def _membership_share(self, nid: int, receiver: str) -> np.ndarray:
        """The bank's share for ``receiver`` of which rows of node ``nid`` go left: the bits for its own split,
        zeros for a host's, XOR its pair masks."""
        grow = self._growing
        node, rows = grow.tree.nodes[nid], grow.members[nid]
        bits = (self.data.train_bins[rows, node.feature] <= node.bin if node.party == BANK
                else np.zeros(len(rows), dtype=bool))
        label = shares.share_label(self.run_id, len(self.history), nid, receiver)
        return shares.share(bits, BANK, receiver, [BANK, *grow.hosts], self.seeds, label)

    def _got_level(self, inbox: dict[str, dict[str, Message]]) -> list[Message]:
        self._apply_lefts(inbox[LEFT])
        return self._next_level(next_step(inbox), inbox[HISTOGRAMS])

    def _got_last(self, inbox: dict[str, dict[str, Message]]) -> list[Message]:
        self._apply_lefts(inbox[LEFT])
        return self._next_level(next_step(inbox))

    def _next_level(self, step: int, hists: dict[str, Message] | None = None) -> list[Message]:
        """The children become the level: the bank's histograms (smaller child from rows, sibling by subtraction)
        and the hosts' — who send the built children only: each sibling is its parent's decrypted histogram minus
        the child, so half the bins are packed, sent and decrypted."""
        grow = self._growing
        grow.level = [c for nid in grow.split_nodes for c in (grow.tree.nodes[nid].left, grow.tree.nodes[nid].right)]
        if grow.tree.nodes[grow.level[0]].depth < self.cfg.max_depth:
            builds = self._own_children(grow.tree, grow.split_nodes, grow.members, grow.own, grow.g, grow.h)
            if hists is not None:
                built = self._histograms(hists, [s for _, s, _ in builds], grow.totals, grow.slot)
                remote = {}
                for parent, small, big in builds:
                    remote[small], remote[big] = built[small], {}
                    for hst, (sg, sh, nb) in built[small].items():
                        pg, ph, _ = grow.remote[parent][hst]
                        remote[big][hst] = (pg - sg, ph - sh, nb)
                grow.remote = remote
        return self._level(step)

    def _apply_lefts(self, lefts: dict[str, Message]) -> None:
        grow = self._growing
        grow.ask_at = grow.ask_at.copy()  # checkpointed arrays are read-only: change a copy
        for hst, m in lefts.items():
            self._apply_left(m, grow.pending.get(hst, []), grow)

    def _tree_grown(self, step: int) -> list[Message]:
        """Every node is a leaf or split; the rows the tree was not grown on reached their leaves along with it."""
        grow, d = self._growing, self.data
        leaf = np.full(len(d.train_rows), -1, dtype=np.int64)
        for node in grow.tree.nodes:
            node.cover = len(grow.members[node.id])
            if node.is_leaf:
                leaf[grow.members[node.id]] = node.id
        self.trees.append(grow.tree)
        grow.leaf = leaf
        return self._tree_routed(grow.ask_at[None, :], step)

    def _tree_routed(self, pos: np.ndarray, step: int) -> list[Message]:
        """Scores, loss, early stopping; prune when the best model has fewer trees than grown."""
        grow, cfg, gcfg, d = self._growing, self.cfg, self.cfg.gbdt(), self.data
        y = d.labels[d.train_rows].astype(np.float64)
        if grow.outside.size:
            grow.leaf = grow.leaf.copy()  # checkpointed arrays are read-only: change a copy
            grow.leaf[grow.outside] = pos[0, np.searchsorted(grow.ask, d.train_rows[grow.outside])]
        weights = np.array([nd.weight if nd.is_leaf else np.nan for nd in grow.tree.nodes])
        self._score = self._score + gcfg.learning_rate * weights[grow.leaf]
        loss = float(np.mean(np.logaddexp(0, self._score) - y * self._score))
        entry = {"tree": len(self.history) + 1, "loss": loss}
        self.history.append(entry)
        if self._stopper is not None:
            valid = d.valid_rows
            self._valid_score = self._valid_score + gcfg.learning_rate * weights[pos[0, np.searchsorted(grow.ask, valid)]]
            grow.stop = self._stopper.update(len(self.history), self._valid_score)
            entry["valid_auc"] = self._stopper.aucs[-1]
            if (grow.stop or len(self.history) == cfg.n_trees) and self._stopper.best_trees < len(self.trees):
                self.trees = self.trees[: self._stopper.best_trees]
                if self.hosts:
                    used = {hst: sum(n.party == hst for t in self.trees for n in t.nodes) for hst in self.hosts}
                    msgs = self._send_hosts(PRUNE, step, {hst: ({"records": used[hst]}, {}) for hst in self.hosts})
                    return self._wait(msgs, {PRUNED: self.hosts}, "_pruned")
        return self._tree_done(step)

    def _pruned(self, inbox: dict[str, Message]) -> list[Message]:
        return self._tree_done(next_step(inbox))

    def _tree_done(self, step: int) -> list[Message]:
        grow, self._growing = self._growing, None
        entry = self.history[-1]
        meta = {"tree": len(self.history) - 1, "stop": grow.stop, "loss": entry["loss"], "trees": len(self.trees)}
        if "valid_auc" in entry:
            meta["valid_auc"] = entry["valid_auc"]
        report = [self._reply(TREE_DONE, COORDINATOR, step, meta)]
        if not grow.stop and len(self.history) < self.cfg.n_trees:
            self._next_tree = step
            return report
        self._training = False
        if self._predict_queued:  # sent with sb.tree: scoring starts in the reply that reports the last tree
            self._predict_queued = False
            return report + self._predict_all(step)
        return report

    def _decide(self, tree: Tree, level: list[int], members: dict, own: dict, remote: dict, hosts: list[str], totals,
                bounds: dict):
        """Best split of every node of a level (or its leaf weight); the bank's own splits are applied here.

        Monotone constraints: the bank's directions for its own and each host's features (by index),
        with the reference's rule (``ref.decide_split``); ``bounds`` gets the children's weight bounds.
        Returns the split nodes and, per host, the nodes that host must split.
        """
        gcfg, d, mono = self.cfg.gbdt(), self.data, self.data.monotone or {}
        split_nodes, pending = [], {}
        for nid in level:
            node = tree.nodes[nid]
            tg, th = totals(nid)
            choice = None
            if node.depth < gcfg.max_depth:
                cands = [ref.Candidate(BANK, *own[nid], d.n_bins, mono.get(BANK))]
                cands += [ref.Candidate(hst, *remote[nid][hst], mono.get(hst)) for hst in hosts]
                choice = ref.decide_split(cands, tg, th, gcfg, bounds[nid])
            if choice is None:
                node.weight = ref.leaf_weight(tg, th, gcfg, bounds[nid])
                continue
            (party, j, b, node.gain), (bounds[len(tree.nodes)], bounds[len(tree.nodes) + 1]) = choice
            left, right = TreeNode(len(tree.nodes), node.depth + 1), TreeNode(len(tree.nodes) + 1, node.depth + 1)
            tree.nodes += [left, right]
            node.party, node.feature, node.bin, node.left, node.right = party, j, b, left.id, right.id
            split_nodes.append(nid)
            if party == BANK:
                go = d.train_bins[members[nid], j] <= b
                members[left.id], members[right.id] = members[nid][go], members[nid][~go]
            else:
                pending.setdefault(party, []).append(nid)
        return split_nodes, pending

    def _own_children(self, tree: Tree, split_nodes: list[int], members: dict, own: dict, g, h) -> list[tuple]:
        """The bank's histograms of the next level: the smaller child from rows, its sibling by subtraction.

        Returns (parent, built child, derived child) per split node, what hosts are asked to do too.
        """
        d, builds = self.data, []
        for nid in split_nodes:
            node = tree.nodes[nid]
            small, big = ((node.left, node.right) if ref.smaller_first(members[node.left], members[node.right])
                          else (node.right, node.left))
            idx = members[small]
            own[small] = ref.histogram(d.train_bins[idx], d.n_bins, g[idx], h[idx])
            own[big] = (own[nid][0] - own[small][0], own[nid][1] - own[small][1])
            builds.append((nid, small, big))
            del own[nid]
        return builds

    def _histograms(self, inbox: dict[str, Message], nodes: list[int], totals, slot: int) -> dict[int, dict[str, tuple]]:
        """Decrypt every host's histograms: node -> host -> (G, H, n_bins), checked against the node totals."""
        out: dict[int, dict[str, tuple]] = {nid: {} for nid in nodes}
        for hst, m in inbox.items():
            if m.meta.get("nodes") != nodes:
                raise ProtocolError(f"{m.describe()}: histograms for nodes {m.meta.get('nodes')!r}, expected {nodes}")
            n_bins = m.meta.get("n_bins")
            if not isinstance(n_bins, list) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                                                       for v in n_bins):
                raise ProtocolError(f"{m.describe()}: meta field 'n_bins' must be a list of positive ints")
            if hst not in self._host_bins:  # the host's feature count is known now: the bank's directions must fit
                try:
                    ref.check_monotone(hst, (self.data.monotone or {}).get(hst), len(n_bins))
                except FedCreditError as exc:
                    raise ProtocolError(f"{exc} (the bank's setting, checked against {hst}'s histograms)") from None
            if self._host_bins.setdefault(hst, n_bins) != n_bins:  # siblings are parent − child: shapes must stay
                raise ProtocolError(f"{m.describe()}: {hst} changed its bins per feature during the run")
            per_node = sum(n_bins)
            packed = packed_part(self.key, unbundle(m, ["hist"])["hist"], per_node * len(nodes), m,
                                 key_owner="the bank's key")
            ints = packed.packer.unpack_ints(self.keypair.decrypt_ints(packed.inner, pool=self.pool), packed.count)
            big_g, big_h = wire.unpack_gh(ints, slot)
            width = max(n_bins, default=1)
            keep = wire.valid_bins(n_bins)
            for k, nid in enumerate(nodes):
                hg, hh = np.zeros(len(n_bins) * width, dtype=np.int64), np.zeros(len(n_bins) * width, dtype=np.int64)
                hg[keep], hh[keep] = big_g[k * per_node:(k + 1) * per_node], big_h[k * per_node:(k + 1) * per_node]
                hg, hh = hg.reshape(len(n_bins), width), hh.reshape(len(n_bins), width)
                tg, th = totals(nid)
                if n_bins and (np.any(hg.sum(axis=1) != tg) or np.any(hh.sum(axis=1) != th)):
                    raise ProtocolError(f"{m.describe()}: histogram of node {nid} does not add up to the node's totals")
                out[nid][hst] = (hg, hh, n_bins)
        return out

    def _apply_left(self, msg: Message, nids: list[int], grow: _Growing) -> None:
        """A host's partitions at its splits ``nids``: of the node's training rows and of the rows it was asked about."""
        records, tree, members = msg.meta.get("nodes"), grow.tree, grow.members
        if not isinstance(records, list) or [r.get("node") if isinstance(r, dict) else None for r in records] != nids:
            raise ProtocolError(f"{msg.describe()}: expected answers for nodes {nids}")
        parts = unbundle(msg, [f"{kind}{i}" for i in nids for kind in ("left", "asked")])
        for r, nid in zip(records, nids):
            if not isinstance(r.get("record"), int) or isinstance(r.get("record"), bool) or r["record"] < 0:
                raise ProtocolError(f"{msg.describe()}: node {nid}: record number must be an int ≥ 0")
            node, idx, at = tree.nodes[nid], members[nid], np.flatnonzero(grow.ask_at == nid)
            go = wire.mask_from_bytes(parts[f"left{nid}"][0], len(idx), msg, f"node {nid}")
            asked = wire.mask_from_bytes(parts[f"asked{nid}"][0], len(at), msg, f"node {nid}'s other rows")
            node.record = r["record"]
            members[node.left], members[node.right] = idx[go], idx[~go]
            grow.ask_at[at[asked]], grow.ask_at[at[~asked]] = node.left, node.right
