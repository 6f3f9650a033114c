"""Vertical SecureBoost's parties and coordinator (the protocol: ``fedcredit.protocols.secureboost``)."""

from __future__ import annotations

import re
import secrets
from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np

from fedcredit.crypto import EncryptedVector, PaillierPublicKey, generate_keypair
from fedcredit.models import gbdt_reference as ref
from fedcredit.models.gbdt_reference import GbdtConfig, Tree, TreeNode
from fedcredit.protocols.secureboost import wire
from fedcredit.common.errors import ProtocolError
from fedcredit.common.wire import COORDINATOR, Message, bundle, expect, meta_int, unbundle
from fedcredit.protocols.party import ProtocolParty
from fedcredit.protocols.script import ScriptedCoordinator

BANK = "bank"
SETUP, READY, TREE, GRADIENTS, NODES, HISTOGRAMS, SPLIT, LEFT, TREE_DONE = (
    "sb.setup", "sb.ready", "sb.tree", "sb.gradients", "sb.nodes", "sb.histograms", "sb.split", "sb.left",
    "sb.tree_done")
PREDICT, ROUTE, ROUTED, SCORED = "sb.predict", "sb.route", "sb.routed", "sb.scored"
PRUNE, PRUNED = "sb.prune", "sb.pruned"
KINDS = (SETUP, READY, TREE, GRADIENTS, NODES, HISTOGRAMS, SPLIT, LEFT, TREE_DONE, PREDICT, ROUTE, ROUTED, SCORED,
         PRUNE, PRUNED)
TO_HOST = (GRADIENTS, NODES, SPLIT, ROUTE, PRUNE)  # bank → host, relayed (sealed when parties have relays)
TO_BANK = (HISTOGRAMS, LEFT, ROUTED, PRUNED)  # host → bank, relayed


@dataclass(frozen=True)
class SbConfig:
    """Tree and crypto settings shared by every party (sent in ``sb.setup``)."""

    n_trees: int = 3
    max_depth: int = 3
    learning_rate: float = 0.3
    l2: float = 1.0
    gamma: float = 0.0
    min_child_weight: float = 1.0
    scale_bits: int = 16
    bank_first_tree: bool = False  # first tree from the bank's features only: hosts get no gradients for it
    goss_top: float = 0.0  # GOSS a (0 and goss_other 0: no sampling); the seed is the bank's own
    goss_other: float = 0.0  # GOSS b
    patience: int | None = None  # early stopping on the bank's validation rows' AUC
    key_bits: int = 2048
    backend: str = "paillier"

    def __post_init__(self) -> None:
        if not isinstance(self.scale_bits, int):
            raise ProtocolError("invalid SecureBoost setting: scale_bits must be an int (g/h travel as fixed point)")
        if not isinstance(self.key_bits, int) or self.key_bits < 1024:
            raise ProtocolError("invalid SecureBoost setting: key_bits must be an int ≥ 1024")
        try:
            self.gbdt()
        except Exception as exc:
            raise ProtocolError(str(exc)) from None

    def gbdt(self) -> GbdtConfig:
        names = {f.name for f in fields(GbdtConfig)}
        return GbdtConfig(**{k: v for k, v in asdict(self).items() if k in names})


@dataclass
class TreePartyData:
    """A party's binned features for every aligned row (agreed order), its training rows, labels (bank)."""

    bins: np.ndarray  # aligned rows × features, bin indices
    n_bins: list[int]
    train_rows: np.ndarray  # indices into the aligned rows
    labels: np.ndarray | None = None  # bank only: labels of all aligned rows
    prep: object = None  # the party's FeaturePrep, to describe thresholds in its model part
    valid_rows: np.ndarray | None = None  # bank only: validation rows (indices into the aligned rows) for early stopping

    @classmethod
    def from_prep(cls, prep, frame, train_rows, labels=None, valid_rows=None) -> "TreePartyData":
        return cls(prep.bins(frame), [s.n_bins() for s in prep.specs], np.asarray(train_rows), labels, prep,
                   None if valid_rows is None else np.asarray(valid_rows))

    def __post_init__(self) -> None:
        self.bins = np.asarray(self.bins, dtype=np.int64).reshape(len(self.bins), -1)
        if self.bins.shape[1] != len(self.n_bins) or (self.bins.size and (self.bins.min() < 0 or
                                                                          (self.bins >= np.asarray(self.n_bins)).any())):
            raise ProtocolError("party data: bins must be (rows, features) indices below each feature's n_bins")
        self.train_bins = self.bins[self.train_rows]


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
    slot: int = 0
    level: list[int] = field(default_factory=lambda: [0])
    split_nodes: list[int] = field(default_factory=list)
    pending: dict[str, list[int]] = field(default_factory=dict)  # host -> nodes it must split
    built: list[int] = field(default_factory=list)  # nodes whose histograms the hosts were asked for
    leaf: np.ndarray | None = None
    outside: np.ndarray | None = None
    ask: np.ndarray | None = None
    stop: bool = False

    def totals(self, nid: int) -> tuple[int, int]:
        rows = self.members[nid]
        return int(self.g[rows].sum()), int(self.h[rows].sum())


@dataclass
class _Routing:
    """Rows on their way to a leaf of each tree (prediction, or rows outside a tree's sample)."""

    trees: list[Tree]
    rows: np.ndarray
    pos: np.ndarray  # trees × rows: current node
    then: str  # the bank's stage called with (pos, step) once every row is at a leaf
    queries: dict = field(default_factory=dict)


def _next_step(inbox: dict[str, Message]) -> int:
    return max(m.step for m in inbox.values()) + 1


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


class SbParty(ProtocolParty):
    """A data holder in vertical SecureBoost (the bank, or a host); driven by ``handle``."""

    KINDS, SETUP = KINDS, SETUP

    def __init__(self, role: str, data: TreePartyData, pool=None, deployment: bool | None = None,
                 goss_seed: int | None = None, model: dict | None = None):
        if (role == BANK) != (data.labels is not None) and model is None:
            raise ProtocolError(f"{role}: only the bank holds labels, and it needs them")
        if role != BANK and (data.valid_rows is not None or goss_seed is not None):
            raise ProtocolError(f"{role}: validation rows and the GOSS seed are the bank's")
        self.role, self.data, self.pool, self.deployment = role, data, pool, deployment
        # the bank's private GOSS seed (hosts could tell large-gradient rows from the sample if they knew it)
        self.goss_seed = (secrets.randbits(62) if goss_seed is None else int(goss_seed)) if role == BANK else None
        self.cfg: SbConfig | None = None
        self.run_id, self.hosts = "", []
        self.key: PaillierPublicKey | None = None
        self.keypair = None  # the bank's
        # the model: the bank's trees (leaf weights, own splits, hosts' record numbers) or a host's lookup table
        self.trees: list[Tree] = []
        self.base = 0.0
        self.lookup: list[tuple[int, int]] = []  # host: record -> (feature, bin); "bins ≤ bin go left"
        self.scores: np.ndarray | None = None  # bank: probability of default of every aligned row
        self.raw_scores: np.ndarray | None = None  # bank: the same as log-odds
        self.learning_rate = 0.0
        self.leaves: np.ndarray | None = None  # bank, after prediction: each aligned row's leaf in each tree
        self.history: list[dict] = []
        self._await: tuple[str, set] | None = None
        self._then: str | None = None  # the bank's stage that continues once the awaited replies are in
        self._growing: _Growing | None = None
        self._routing: _Routing | None = None
        self._inbox: dict[str, Message] = {}
        self._gh: EncryptedVector | None = None
        self._hists: dict[int, EncryptedVector] = {}
        self._slot_bits = 0
        self._pos: np.ndarray | None = None  # host: training row -> position in this tree's ciphertexts (-1: not sampled)
        self._stopper: ref.EarlyStopping | None = None
        self._host_bins: dict[str, list[int]] = {}  # bank: each host's bins per feature, fixed for the run
        self.model_id: str | None = None  # the training run a saved part comes from
        self.loaded = model is not None  # a saved model: predicts, is not trained further
        if model is not None:
            self._load(model)

    def _load(self, doc: dict) -> None:
        """A saved model part (``model_part``); malformed parts are refused naming what is wrong."""
        try:
            if doc.get("role") != self.role:
                raise ValueError(f"the part belongs to {doc.get('role')!r}")
            if not isinstance(doc.get("model_id"), str) or not doc["model_id"]:
                raise ValueError("no model id (the training run it comes from)")
            self.model_id = doc["model_id"]
            if self.role == BANK:
                self.base, self.learning_rate = float(doc["base"]), float(doc["learning_rate"])
                self.trees = [Tree([TreeNode(**n) for n in nodes]) for nodes in doc["trees"]]
                for tree in self.trees:
                    check_tree(tree, self.data.n_bins)
            else:
                self.lookup = [(int(r["feature"]), int(r["bin"])) for r in doc["lookup"]]
                if any(not (0 <= j < len(self.data.n_bins) and 0 <= b < self.data.n_bins[j] - 1) for j, b in self.lookup):
                    raise ValueError("a lookup record names a feature or bin this node does not have")
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"{self.role}: saved SecureBoost model part is malformed ({exc})") from None

    # -- dispatch -----------------------------------------------------------
    def _is_set_up(self) -> bool:
        return self.cfg is not None

    def _handlers(self):
        if self.role == BANK:
            return {SETUP: self._setup, TREE: self._tree, PREDICT: self._predict,
                    HISTOGRAMS: self._collect, LEFT: self._collect, ROUTED: self._collect, PRUNED: self._collect}
        return {SETUP: self._setup, GRADIENTS: self._gradients, NODES: self._nodes, SPLIT: self._split,
                ROUTE: self._route, PRUNE: self._prune}

    def _setup(self, msg: Message) -> list[Message]:
        expect(msg, SETUP, sender=COORDINATOR)
        if self.cfg is not None:
            raise ProtocolError(f"{msg.describe()}: {self.role} is already set up")
        try:
            cfg = SbConfig(**msg.meta["config"])
            parties = [str(p) for p in msg.meta["parties"]]
        except (KeyError, TypeError, ValueError, ProtocolError) as exc:
            raise ProtocolError(f"{msg.describe()}: malformed setup ({exc})") from None
        if not parties or parties[0] != BANK or self.role not in parties or len(set(parties)) != len(parties):
            raise ProtocolError(f"{msg.describe()}: parties must start with the bank and include {self.role}")
        self.cfg, self.run_id, self.hosts = cfg, msg.run_id, parties[1:]
        meta = {}
        self.learning_rate = self.learning_rate if self.loaded else cfg.learning_rate
        if self.loaded:
            meta["model_id"] = self.model_id
        if self.role == BANK and self.loaded:
            missing = sorted({n.party for t in self.trees for n in t.nodes if not n.is_leaf} - {BANK, *self.hosts})
            if missing:
                raise ProtocolError(f"{msg.describe()}: the saved model splits on features of {', '.join(missing)}, "
                                    f"which {'is' if len(missing) == 1 else 'are'} not in this job")
            meta["trees"] = len(self.trees)
        elif self.role == BANK:
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
        return [self._reply(READY, COORDINATOR, msg.step + 1, meta)]

    # -- the bank: explicit stages that wait for hosts' answers ---------------
    # Every wait stores what it waits for and the name of the stage that continues, so the
    # bank is plain data between messages and pickles (transports that checkpoint nodes).
    def _wait(self, msgs: list[Message], kind: str, senders, then: str) -> list[Message]:
        self._await, self._then = (kind, set(senders)), then
        return msgs

    def _collect(self, msg: Message) -> list[Message]:
        if self._await is None or msg.kind != self._await[0] or msg.sender not in self._await[1]:
            raise ProtocolError(f"unexpected {msg.describe()} at the bank")
        if msg.sender in self._inbox:
            raise ProtocolError(f"{msg.describe()}: duplicate message from {msg.sender}")
        self._inbox[msg.sender] = msg
        if len(self._inbox) < len(self._await[1]):
            return []
        inbox, self._inbox = self._inbox, {}
        then, self._await, self._then = self._then, None, None
        return getattr(self, then)(inbox)

    def _busy(self, msg: Message) -> None:
        if self._await is not None or self._growing is not None:
            raise ProtocolError(f"{msg.describe()}: the bank is still busy with the previous request")

    def _tree(self, msg: Message) -> list[Message]:
        expect(msg, TREE, sender=COORDINATOR)
        self._busy(msg)
        if self.loaded:
            raise ProtocolError(f"{msg.describe()}: a saved model is not trained further")
        index = meta_int(msg, "tree")
        if index != len(self.history):
            raise ProtocolError(f"{msg.describe()}: tree {index} requested, the bank has grown {len(self.history)}")
        return self._grow(msg.step + 1)

    def _send_hosts(self, kind: str, step: int, per_host: dict[str, tuple[dict, dict]]) -> list[Message]:
        out = []
        for host, (meta, parts) in per_host.items():
            payload, bmeta = bundle(parts)
            out.append(self._reply(kind, host, step, {**meta, **bmeta}, payload))
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
        if not hosts:
            return self._level(step)
        grow.slot = slot = wire.gh_slot_bits(cfg.scale_bits, n)
        enc = EncryptedVector.encrypt_ints(self.key, wire.pack_gh(g[root], h[root], slot), 0, pool=self.pool)
        meta = {"tree": len(self.history), "key_n": format(self.key.n, "x"), "slot_bits": slot, "sampled": len(root) < n}
        parts = {"gh": (enc.to_bytes(), enc.meta())}
        if len(root) < n:
            parts["root"] = (wire.rows_to_bytes(root), {})
        msgs = self._send_hosts(GRADIENTS, step, {hst: (meta, parts) for hst in hosts})
        return self._wait(msgs, HISTOGRAMS, hosts, "_got_root")

    def _got_root(self, inbox: dict[str, Message]) -> list[Message]:
        grow = self._growing
        grow.remote = self._histograms(inbox, [0], grow.totals, grow.slot)
        return self._level(_next_step(inbox))

    def _level(self, step: int) -> list[Message]:
        """Decide every node of the current level; hosts owning a chosen split are asked for its rows."""
        grow = self._growing
        grow.split_nodes, grow.pending = self._decide(grow.tree, grow.level, grow.members, grow.own, grow.remote,
                                                      grow.hosts, grow.totals)
        if not grow.pending:
            return self._level_split(step)
        per_host = {}
        for hst, nids in grow.pending.items():
            splits = [{"node": i, "feature": grow.tree.nodes[i].feature, "bin": grow.tree.nodes[i].bin} for i in nids]
            per_host[hst] = ({"splits": splits}, {f"rows{i}": (wire.rows_to_bytes(grow.members[i]), {}) for i in nids})
        return self._wait(self._send_hosts(SPLIT, step, per_host), LEFT, grow.pending, "_got_left")

    def _got_left(self, inbox: dict[str, Message]) -> list[Message]:
        grow = self._growing
        for hst, m in inbox.items():
            self._apply_left(m, grow.pending[hst], grow.tree, grow.members)
        return self._level_split(_next_step(inbox))

    def _level_split(self, step: int) -> list[Message]:
        """The next level: the bank's histograms, and the hosts' (smaller child built, sibling derived)."""
        grow, gcfg = self._growing, self.cfg.gbdt()
        grow.level = [c for nid in grow.split_nodes for c in (grow.tree.nodes[nid].left, grow.tree.nodes[nid].right)]
        if not grow.level:
            return self._tree_grown(step)
        if grow.tree.nodes[grow.level[0]].depth < gcfg.max_depth:
            builds = self._own_children(grow.tree, grow.split_nodes, grow.members, grow.own, grow.g, grow.h)
            if grow.hosts:
                grow.built = [[p, s, b] for p, s, b in builds]
                meta = {"nodes": [{"parent": p, "build": s, "derive": b} for p, s, b in builds]}
                parts = {f"rows{s}": (wire.rows_to_bytes(grow.members[s]), {}) for _, s, _ in builds}
                msgs = self._send_hosts(NODES, step, {hst: (meta, parts) for hst in grow.hosts})
                return self._wait(msgs, HISTOGRAMS, grow.hosts, "_got_level")
        return self._level(step)

    def _got_level(self, inbox: dict[str, Message]) -> list[Message]:
        """Hosts send the built children only: each sibling is its parent's decrypted histogram minus the child."""
        grow = self._growing
        built = self._histograms(inbox, [s for _, s, _ in grow.built], grow.totals, grow.slot)
        remote = {}
        for parent, small, big in grow.built:
            remote[small], remote[big] = built[small], {}
            for hst, (sg, sh, nb) in built[small].items():
                pg, ph, _ = grow.remote[parent][hst]
                remote[big][hst] = (pg - sg, ph - sh, nb)
        grow.remote = remote
        return self._level(_next_step(inbox))

    def _tree_grown(self, step: int) -> list[Message]:
        """Every node is a leaf or split: route the rows the tree was not grown on (outside GOSS, validation)."""
        grow, d = self._growing, self.data
        leaf = np.full(len(d.train_rows), -1, dtype=np.int64)
        for node in grow.tree.nodes:
            node.cover = len(grow.members[node.id])
            if node.is_leaf:
                leaf[grow.members[node.id]] = node.id
        self.trees.append(grow.tree)
        grow.leaf, grow.outside = leaf, np.flatnonzero(leaf < 0)
        valid = d.valid_rows if self._stopper is not None else np.zeros(0, dtype=np.int64)
        grow.ask = np.union1d(d.train_rows[grow.outside], valid).astype(np.int64)
        if grow.ask.size:
            return self._route_start(step, [grow.tree], grow.ask, "_tree_routed")
        return self._tree_routed(np.zeros((1, 0), dtype=np.int64), step)

    def _tree_routed(self, pos: np.ndarray, step: int) -> list[Message]:
        """Scores, loss, early stopping; prune when the best model has fewer trees than grown."""
        grow, cfg, gcfg, d = self._growing, self.cfg, self.cfg.gbdt(), self.data
        y = d.labels[d.train_rows].astype(np.float64)
        if grow.outside.size:
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
                    return self._wait(msgs, PRUNED, self.hosts, "_pruned")
        return self._tree_done(step)

    def _pruned(self, inbox: dict[str, Message]) -> list[Message]:
        return self._tree_done(_next_step(inbox))

    def _tree_done(self, step: int) -> list[Message]:
        grow, self._growing = self._growing, None
        entry = self.history[-1]
        meta = {"tree": len(self.history) - 1, "stop": grow.stop, "loss": entry["loss"], "trees": len(self.trees)}
        if "valid_auc" in entry:
            meta["valid_auc"] = entry["valid_auc"]
        return [self._reply(TREE_DONE, COORDINATOR, step, meta)]

    def _decide(self, tree: Tree, level: list[int], members: dict, own: dict, remote: dict, hosts: list[str], totals):
        """Best split of every node of a level (or its leaf weight); the bank's own splits are applied here.

        Returns the split nodes and, per host, the nodes that host must split.
        """
        gcfg, d = self.cfg.gbdt(), self.data
        split_nodes, pending = [], {}
        for nid in level:
            node = tree.nodes[nid]
            tg, th = totals(nid)
            choice = None
            if node.depth < gcfg.max_depth:
                cands = [(BANK, ref.best_split(*own[nid], d.n_bins, tg, th, gcfg))]
                cands += [(hst, ref.best_split(*remote[nid][hst], tg, th, gcfg)) for hst in hosts]
                choice = ref.choose(cands)
            if choice is None:
                node.weight = ref.leaf_weight(tg, th, gcfg)
                continue
            party, j, b, node.gain = choice
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
            if self._host_bins.setdefault(hst, n_bins) != n_bins:  # siblings are parent − child: shapes must stay
                raise ProtocolError(f"{m.describe()}: {hst} changed its bins per feature during the run")
            per_node = sum(n_bins)
            packed = wire.packed_part(self.key, unbundle(m, ["hist"])["hist"], per_node * len(nodes), m)
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

    def _apply_left(self, msg: Message, nids: list[int], tree: Tree, members: dict) -> None:
        records = msg.meta.get("nodes")
        if not isinstance(records, list) or [r.get("node") if isinstance(r, dict) else None for r in records] != nids:
            raise ProtocolError(f"{msg.describe()}: expected answers for nodes {nids}")
        parts = unbundle(msg, [f"left{i}" for i in nids])
        for r, nid in zip(records, nids):
            if not isinstance(r.get("record"), int) or isinstance(r.get("record"), bool) or r["record"] < 0:
                raise ProtocolError(f"{msg.describe()}: node {nid}: record number must be an int ≥ 0")
            node, idx = tree.nodes[nid], members[nid]
            go = wire.mask_from_bytes(parts[f"left{nid}"][0], len(idx), msg, f"node {nid}")
            node.record = r["record"]
            members[node.left], members[node.right] = idx[go], idx[~go]

    # -- the bank: prediction -------------------------------------------------------
    def _predict(self, msg: Message) -> list[Message]:
        expect(msg, PREDICT, sender=COORDINATOR)
        self._busy(msg)
        if not self.trees:
            raise ProtocolError(f"{msg.describe()}: the bank has no finished model to predict with")
        return self._route_start(msg.step + 1, self.trees, np.arange(self.data.bins.shape[0]), "_scored")

    def _route_start(self, step: int, trees: list[Tree], rows: np.ndarray, then: str) -> list[Message]:
        """Find the leaf of each of ``rows`` (increasing aligned-row indices) in each tree, then call ``then(pos, step)``.

        The bank's own splits need no message; rows waiting at a host's split go to that
        host in one ``sb.route`` per round (at most ``max_depth`` rounds).
        """
        self._routing = _Routing(trees, rows, np.zeros((len(trees), len(rows)), dtype=np.int64), then)
        return self._route_round(step)

    def _route_round(self, step: int) -> list[Message]:
        r, d = self._routing, self.data
        queries: dict[str, list[tuple[int, int, np.ndarray]]] = {}
        for t, tree in enumerate(r.trees):
            moved = True
            while moved:  # the bank's own splits need no message
                moved = False
                for node in tree.nodes:
                    idx = np.flatnonzero(r.pos[t] == node.id)
                    if node.party == BANK and idx.size:
                        go = d.bins[r.rows[idx], node.feature] <= node.bin
                        r.pos[t, idx[go]], r.pos[t, idx[~go]] = node.left, node.right
                        moved = True
            for node in tree.nodes:
                idx = np.flatnonzero(r.pos[t] == node.id)
                if not node.is_leaf and node.party != BANK and idx.size:
                    queries.setdefault(node.party, []).append((t, node.id, idx))
        if not queries:
            self._routing = None
            return getattr(self, r.then)(r.pos, step)
        r.queries = queries
        per_host = {}
        for hst, qs in queries.items():
            meta = {"queries": [{"record": r.trees[t].nodes[nid].record, "part": f"q{k}"} for k, (t, nid, _) in enumerate(qs)]}
            per_host[hst] = (meta, {f"q{k}": (wire.rows_to_bytes(r.rows[idx]), {}) for k, (_, _, idx) in enumerate(qs)})
        return self._wait(self._send_hosts(ROUTE, step, per_host), ROUTED, queries, "_got_routed")

    def _got_routed(self, inbox: dict[str, Message]) -> list[Message]:
        r = self._routing
        for hst, m in inbox.items():
            parts = unbundle(m, [f"q{k}" for k in range(len(r.queries[hst]))])
            for k, (t, nid, idx) in enumerate(r.queries[hst]):
                node = r.trees[t].nodes[nid]
                go = wire.mask_from_bytes(parts[f"q{k}"][0], len(idx), m, f"query {k}")
                r.pos[t, idx[go]], r.pos[t, idx[~go]] = node.left, node.right
        return self._route_round(_next_step(inbox))

    def _scored(self, pos: np.ndarray, step: int) -> list[Message]:
        rows = self.data.bins.shape[0]
        score = np.full(rows, self.base)
        for t, tree in enumerate(self.trees):
            weights = np.array([n.weight if n.is_leaf else np.nan for n in tree.nodes])
            score += self.learning_rate * weights[pos[t]]
        self.raw_scores = score
        self.scores = ref.sigmoid(score)
        self.leaves = pos.astype(np.int32)
        return [self._reply(SCORED, COORDINATOR, step, {"rows": rows})]

    # -- a host -----------------------------------------------------------------
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
        self._gh = wire.vector_part(key, parts["gh"], len(root), msg)
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
        payload, meta = bundle({"hist": (packed.to_bytes(), packed.meta())})
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

    def importance(self) -> dict:
        """Feature importance this party may see: its own features only.

        A host: per own feature index, the number of splits in its lookup table (and the
        feature's name). The bank: per own feature, splits and total gain; per host, the
        gain of each split by the host's record number (the bank knows a record as the host's
        feature index and bin it chose, never the feature's name or threshold) — never sent.
        """
        specs = getattr(self.data.prep, "specs", None)
        name = (lambda j: {"name": specs[j].name}) if specs is not None else (lambda j: {})  # noqa: E731
        if self.role != BANK:
            out: dict = {}
            for j, _ in self.lookup:
                out.setdefault(j, {"splits": 0, **name(j)})["splits"] += 1
            return {"features": out}
        own, hosts = {}, {h: {} for h in self.hosts}
        for tree in self.trees:
            for n in tree.nodes:
                if n.is_leaf:
                    continue
                if n.party == BANK:
                    entry = own.setdefault(n.feature, {"splits": 0, "gain": 0.0, **name(n.feature)})
                    entry["splits"] += 1
                    entry["gain"] += n.gain
                else:
                    hosts[n.party][n.record] = n.gain
        return {"features": own, "host_records": hosts}

    @property
    def has_model(self) -> bool:
        """A model to predict with: the bank's trees, a host's part in them (set up for a run)."""
        return bool(self.trees) if self.role == BANK else self.cfg is not None

    def _names(self) -> list[str]:
        specs = getattr(self.data.prep, "specs", None)
        return [s.name for s in specs] if specs is not None else [f"feature {j}" for j in range(len(self.data.n_bins))]

    def record_names(self) -> list[str]:
        """A host: the feature name behind each lookup-table record (never its threshold)."""
        names = self._names()
        return [names[j] for j, _ in self.lookup]

    def reasons(self, top: int, budget: int = 4_000_000) -> tuple[list[list[str]], dict[str, list[list[int]]]]:
        """The bank's reason codes after prediction: per aligned row, the splits that raised its score most.

        Path attribution (Saabas): at each split on a row's path the score moves from the
        node's expected value (leaf weights averaged by training cover) to the child's; the
        moves are summed per bank feature and per host record. Returns the bank's ``top``
        adverse features by name per row, and per host its adverse record numbers, ranked
        (up to ``3·top``: the host's names are joined to them at the coordinator, where
        records of one feature merge).
        """
        if self.role != BANK or self.leaves is None:
            raise ProtocolError(f"{self.role}: reason codes need the bank's predictions")
        columns: dict[tuple[str, int], int] = {}
        paths = []  # per tree: (nodes × depth) column and score move of each node's path
        for tree in self.trees:
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
                    move[node.id, k] = self.learning_rate * (value[child] - value[up.id])
                    k, child = k + 1, up.id
            paths.append((col, move))
        by_party = {p: [c for (q, _), c in columns.items() if q == p] for p in [BANK, *self.hosts]}
        keys = list(columns)
        rows = self.leaves.shape[1]
        chunk = max(256, budget // max(1, len(columns)))  # rows per pass: at most ``budget`` summed moves in memory
        own = self._names()
        bank_codes: list[list[str]] = []
        host_codes: dict[str, list[list[int]]] = {h: [] for h in self.hosts}
        for start in range(0, rows, chunk):
            stop = min(rows, start + chunk)
            total = np.zeros((stop - start, len(columns)))
            for t, (col, move) in enumerate(paths):
                c, m = col[self.leaves[t, start:stop]], move[self.leaves[t, start:stop]]
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
                        bank_codes.append([own[j] for j in picked])
                    else:
                        host_codes[party].append(picked)
        return bank_codes, host_codes

    def model_part(self) -> dict:
        """What this party keeps of the model. A host: its lookup table, thresholds in its own terms."""
        if self.role == BANK:  # a host split is kept as host + record only (prediction needs nothing more)
            trees = [[{**asdict(n), **({"feature": None, "bin": None} if n.party not in (None, BANK) else {})}
                      for n in t.nodes] for t in self.trees]
            return {"role": self.role, "model_id": self.model_id or self.run_id, "base": self.base,
                    "learning_rate": self.learning_rate, "trees": trees}
        table = []
        specs = getattr(self.data.prep, "specs", None)
        for r, (j, b) in enumerate(self.lookup):
            row = {"record": r, "feature": j, "bin": b}
            if specs is not None:
                row.update(name=specs[j].name, rule=split_rule(specs[j], b))
            table.append(row)
        return {"role": self.role, "model_id": self.model_id or self.run_id, "lookup": table}


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


def split_rule(spec, b: int) -> str:
    """The readable rule of "bins ≤ b go left" for one FeatureSpec (private to its owner)."""
    if spec.kind == "category":
        return f"{spec.name} in {spec.categories[: b + 1]!r}"
    if b < len(spec.edges):
        return f"{spec.name} < {spec.edges[b]!r}"
    return f"{spec.name} is not missing"


class SbCoordinator(ScriptedCoordinator):
    """The coordinator's side: starts each tree and the prediction, relays node-to-node messages."""

    name = "vertical SecureBoost"

    def __init__(self, run_id: str, parties: list[str], config: SbConfig | None = None, *, score: bool = True,
                 on_progress=None, train: bool = True):
        if not parties or parties[0] != BANK or len(set(parties)) != len(parties):
            raise ProtocolError(f"vertical SecureBoost needs the bank first and distinct parties; got {parties!r}")
        self.run_id, self.parties, self.hosts = run_id, list(parties), list(parties[1:])
        self.cfg = config or SbConfig()
        self.score, self.on_progress, self.train = score, on_progress, train
        self.history: list[dict] = []
        self.key_fingerprint: str | None = None  # the bank's Paillier key (public; from its sb.ready)
        self.trees = 0  # trees in the final model
        self._step = 0

    @property
    def evaluations(self) -> int:
        """Trees grown (the job reports it like vertical LR's loss evaluations)."""
        return len(self.history)

    def _check(self, replies: list[Message]) -> None:
        for m in replies:
            expect(m, KINDS, run_id=self.run_id)
            if m.relayed:
                ok = ((m.kind in TO_HOST and m.sender == BANK and m.receiver in self.hosts)
                      or (m.kind in TO_BANK and m.sender in self.hosts and m.receiver == BANK))
                if not ok:
                    raise ProtocolError(f"vertical SecureBoost: cannot relay {m.describe()}")
            elif m.receiver != COORDINATOR:
                raise ProtocolError(f"vertical SecureBoost: {m.describe()} is not addressed to the coordinator")

    def _send(self, kind: str, receiver: str, meta=None) -> Message:
        return Message(kind, COORDINATOR, receiver, self.run_id, self._step, meta or {})

    def _relay_until(self, replies: list[Message], final: str):
        """Forward node-to-node messages until the bank reports ``final``; returns that report."""
        while True:
            done = [m for m in replies if m.kind == final]
            relay = [m for m in replies if m.relayed]
            stray = [m for m in replies if m not in done and m not in relay]
            if stray or len(done) > 1 or (done and (relay or done[0].sender != BANK)):
                raise ProtocolError(f"vertical SecureBoost step {self._step}: unexpected "
                                    f"{[m.describe() for m in stray + relay + done]} while waiting for {final}")
            if done:
                return done[0]
            if not relay:
                raise ProtocolError(f"vertical SecureBoost step {self._step}: nothing to relay and no {final} from the bank")
            self._step += 1
            replies = yield relay

    def _run(self):
        setup = {"config": asdict(self.cfg), "parties": self.parties}
        replies = yield [self._send(SETUP, p, setup) for p in self.parties]
        ready = {m.sender: m for m in replies if m.kind == READY}
        if len(replies) != len(self.parties) or set(ready) != set(self.parties):
            raise ProtocolError(f"vertical SecureBoost setup: expected sb.ready from each of {self.parties}")
        fingerprint = ready[BANK].meta.get("key_fingerprint")
        if fingerprint is not None and not (isinstance(fingerprint, str) and re.fullmatch(r"[0-9a-f]{64}", fingerprint)):
            raise ProtocolError(f"{ready[BANK].describe()}: key fingerprint must be 64 hex digits")
        self.key_fingerprint = fingerprint
        if not self.train:  # a saved model: every part must come from the same training run
            ids = {p: m.meta.get("model_id") for p, m in ready.items()}
            if len(set(ids.values())) != 1 or not isinstance(ids[BANK], str):
                raise ProtocolError("vertical SecureBoost: the nodes' saved parts come from different training runs: "
                                    + ", ".join(f"{p} {i!r}" for p, i in ids.items()))
            trees = ready[BANK].meta.get("trees")
            if not isinstance(trees, int) or isinstance(trees, bool) or trees < 1:
                raise ProtocolError(f"{ready[BANK].describe()}: meta field 'trees' must be a positive int")
            self.trees = trees
        for t in range(self.cfg.n_trees if self.train else 0):
            self._step += 1
            replies = yield [self._send(TREE, BANK, {"tree": t})]
            done = yield from self._relay_until(replies, TREE_DONE)
            if done.meta.get("tree") != t:
                raise ProtocolError(f"{done.describe()}: reports tree {done.meta.get('tree')!r}, expected {t}")
            stop = done.meta.get("stop", False)
            if not isinstance(stop, bool):
                raise ProtocolError(f"{done.describe()}: meta field 'stop' must be a bool")
            entry = {"tree": t + 1, "stop": stop}
            for key, name in (("loss", "loss"), ("valid_auc", "val_auc")):  # aggregates, like vertical LR's
                if isinstance(done.meta.get(key), float):
                    entry[name] = done.meta[key]
            trees = done.meta.get("trees")
            if not isinstance(trees, int) or isinstance(trees, bool) or not 0 <= trees <= t + 1:
                raise ProtocolError(f"{done.describe()}: meta field 'trees' must count the model's trees (≤ {t + 1})")
            self.trees = trees
            self.history.append(entry)
            if self.on_progress is not None:
                self.on_progress(dict(entry))
            if stop:  # early stopping: the bank keeps its best trees
                break
        if self.score:
            self._step += 1
            replies = yield [self._send(PREDICT, BANK)]
            yield from self._relay_until(replies, SCORED)
