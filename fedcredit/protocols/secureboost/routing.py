"""The bank's rounds with the hosts: stages that wait for their answers, and routing rows to the leaves of trees.

Every wait stores what it waits for and the name of the stage that continues, so the
bank is plain data between messages and pickles (transports that checkpoint nodes).
Routing serves prediction (``sb.predict``); while growing, the rows a tree is not grown
on (outside the GOSS sample, validation rows) travel with the tree's levels instead (bank.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fedcredit.common.errors import ProtocolError
from fedcredit.common.wire import COORDINATOR, Message, bundle, expect, unbundle
from fedcredit.models import gbdt_reference as ref
from fedcredit.models.gbdt_reference import Tree
from fedcredit.protocols.secureboost import wire
from fedcredit.protocols.secureboost.config import BANK, PREDICT, ROUTE, ROUTED, SCORED, TreePartyData
from fedcredit.protocols.secureboost.party import SbParty


@dataclass
class _Routing:
    """Rows on their way to a leaf of each tree (prediction, or rows outside a tree's sample)."""

    trees: list[Tree]
    rows: np.ndarray
    pos: np.ndarray  # trees × rows: current node
    then: str  # the bank's stage called with (pos, step) once every row is at a leaf
    queries: dict = field(default_factory=dict)


def next_step(inbox: dict[str, dict[str, Message]]) -> int:
    return max(m.step for box in inbox.values() for m in box.values()) + 1


class BankRounds(SbParty):
    """The bank's half that talks to the hosts round by round; ``SbBank`` grows the trees on it."""

    HOLDS_LABELS = True

    def __init__(self, data: TreePartyData, pool=None, model: dict | None = None):
        super().__init__(BANK, data, pool, model)
        # the model: the bank's trees (leaf weights, own splits, hosts' record numbers)
        self.trees: list[Tree] = []
        self.base = 0.0
        self.learning_rate = 0.0
        self.raw_scores: np.ndarray | None = None  # the scores as log-odds
        self.leaves: np.ndarray | None = None  # after prediction: each aligned row's leaf in each tree
        self._await: dict[str, list[str]] | None = None  # kind -> the hosts whose message of that kind is awaited
        self._then: str | None = None  # the bank's stage that continues once the awaited replies are in
        self._inbox: dict[str, dict[str, Message]] = {}  # kind -> host -> its message
        self._routing: _Routing | None = None
        self._growing = None  # SbBank's tree in progress (bank._Growing): the bank is busy while there is one
        self._training = False  # from sb.tree (or a setup to train) until the last tree is reported
        self._predict_queued = False  # sb.predict came with sb.tree: score once training ends

    # -- explicit stages that wait for hosts' answers ---------------------------
    def _wait(self, msgs: list[Message], awaited: dict[str, object], then: str) -> list[Message]:
        """Send ``msgs``; once every host in ``awaited`` (kind -> hosts) has answered, call ``then(inbox)``
        with the answers by kind and host (they may arrive over several rounds, in any order)."""
        self._await = {kind: sorted(set(hosts)) for kind, hosts in awaited.items() if hosts}
        self._then = then
        return msgs

    def _collect(self, msg: Message) -> list[Message]:
        if self._await is None or msg.sender not in self._await.get(msg.kind, ()):
            raise ProtocolError(f"unexpected {msg.describe()} at the bank")
        box = self._inbox.setdefault(msg.kind, {})
        if msg.sender in box:
            raise ProtocolError(f"{msg.describe()}: duplicate message from {msg.sender}")
        box[msg.sender] = msg
        if any(len(self._inbox.get(kind, {})) < len(hosts) for kind, hosts in self._await.items()):
            return []
        inbox, self._inbox = self._inbox, {}
        then, self._await, self._then = self._then, None, None
        return getattr(self, then)(inbox)

    def _busy(self, msg: Message) -> None:
        if self._await is not None or self._growing is not None:
            raise ProtocolError(f"{msg.describe()}: the bank is still busy with the previous request")

    def _send_hosts(self, kind: str, step: int, per_host: dict[str, tuple[dict, dict]]) -> list[Message]:
        out = []
        for host, (meta, parts) in per_host.items():
            payload, bmeta = bundle(parts)
            out.append(self._reply(kind, host, step, {**meta, **bmeta}, payload))
        return out

    # -- prediction -------------------------------------------------------------
    def _predict(self, msg: Message) -> list[Message]:
        """Score every aligned row; sent with ``sb.tree``, once training ends (in the reply reporting the last tree)."""
        expect(msg, PREDICT, sender=COORDINATOR)
        if self._training:
            if self._predict_queued:
                raise ProtocolError(f"{msg.describe()}: a prediction is already waiting for the end of training")
            self._predict_queued = True
            return []
        self._busy(msg)
        if not self.trees:
            raise ProtocolError(f"{msg.describe()}: the bank has no finished model to predict with")
        return self._predict_all(msg.step + 1)

    def _predict_all(self, step: int) -> list[Message]:
        return self._route_start(step, self.trees, np.arange(self.data.bins.shape[0]), "_scored")

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
        return self._wait(self._send_hosts(ROUTE, step, per_host), {ROUTED: queries}, "_got_routed")

    def _got_routed(self, inbox: dict[str, dict[str, Message]]) -> list[Message]:
        r = self._routing
        r.pos = r.pos.copy()  # a checkpointed node stores large arrays once, read-only: change a copy
        for hst, m in inbox[ROUTED].items():
            parts = unbundle(m, [f"q{k}" for k in range(len(r.queries[hst]))])
            for k, (t, nid, idx) in enumerate(r.queries[hst]):
                node = r.trees[t].nodes[nid]
                go = wire.mask_from_bytes(parts[f"q{k}"][0], len(idx), m, f"query {k}")
                r.pos[t, idx[go]], r.pos[t, idx[~go]] = node.left, node.right
        return self._route_round(next_step(inbox))

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
