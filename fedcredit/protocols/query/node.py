"""A data holder's end of a serving run: its saved scorecard part applied to its current data, one query at a time.

The node is a ``NodeAgent`` for everything a job and a serving run share (its audit log, the
sealed relay, refusing the run under its policy at ``job.hello``, closing and aborting); what
differs is the dispatch. At ``job.hello`` (task ``query``) its policy judges the run
(``allowed_tasks`` must list ``query``), it loads its saved part once (scorecard LR only) and
reads its data file to check it. Every ``query.ask`` then:

- counts the queried IDs against ``max_queries_per_day`` (a query over budget is refused with
  ``query.refused``, naming the rule; the run goes on and a later query within budget works);
- reads the node's *current* data file (cached by path, modification time and size, never
  pickled into a checkpoint) and its consent list for the run's bank and purpose;
- answers each ID ``ok`` (its partial score on the scoring run's fixed-point grid, pair-masked
  with masks derived from the query's number and id, so never reused), ``unknown`` or
  ``no-consent`` (instead of a partial score, a random word: the coordinator sums only IDs
  every node answered ``ok``, and a sum with a random word in it tells it nothing);
- names its most adverse features per ``ok`` ID (reason codes, as the publication does);
- writes an audit record listing the queried IDs and its verdict on each, so the data holder
  can check them against its consent list.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from fedcredit.common.errors import FedCreditError, ProtocolError
from fedcredit.common.wire import COORDINATOR, Message, bundle, expect, meta_int, meta_str
from fedcredit.crypto import Identity, pairwise
from fedcredit.data.validate import load_node
from fedcredit.governance import PolicyRefusal, load_consent
from fedcredit.protocols.design import Design
from fedcredit.protocols.errors import InputError
from fedcredit.protocols.job.gate import NodeGate, job_facts, utc_today
from fedcredit.protocols.job.node import NodeAgent
from fedcredit.protocols.job.publication import MAX_REASONS
from fedcredit.protocols.job.settings import ModelSettings, NodeConfig
from fedcredit.protocols.job.wire import HELLO, INFO, PEERS, REPORT, REPORTED, _from_json_payload, _json_payload
from fedcredit.protocols.query.wire import (
    ASK, CAPACITY, LIMITS, NO_CONSENT, OK, PAIR, REASONS, REFUSED, SHARE, UNKNOWN, asked_ids, check_query_id)
from fedcredit.protocols.vertical_lr import shares
from fedcredit.protocols.vertical_lr.config import BANK
from fedcredit.scoring.policy import Capacity


@dataclass
class _Snapshot:
    """The node's data file as last read: which file version, each ID's row, the model's columns."""

    key: tuple
    rows: dict[str, int]
    features: pd.DataFrame


class QueryNode(NodeAgent):
    """A data holder's end of a serving run (module docstring); ``handle`` takes one message and returns its replies."""

    def __init__(self, config: NodeConfig, identity: Identity | None = None, pool=None,
                 clock: Callable[[], object] = utc_today):
        super().__init__(config, identity, pool)
        self.clock = clock  # today's UTC date: the day a query is counted on and consent is judged on
        self.weights: np.ndarray | None = None
        self.scale_bits = 0
        self.bank = self.purpose = ""
        self.peers: list[str] = []
        self.pair_seeds: dict[str, bytes] = {}
        self.last_seq = 0  # the last query answered: a query's number must grow, so masks are never reused
        self.last_ids: list[str] = []  # the last query's IDs (its capacity round refers to them by position)
        self.last_ok: set[int] = set()
        self._snapshot: _Snapshot | None = None
        self._consent_cache: tuple | None = None

    def __getstate__(self):
        state = super().__getstate__()
        state["_snapshot"] = state["_consent_cache"] = None  # re-read after a restart: checkpoints stay small
        return state

    def _drop_state(self) -> None:
        super()._drop_state()
        self.weights, self.pair_seeds, self.last_ids, self.last_ok = None, {}, [], set()
        self._snapshot = self._consent_cache = None

    def abandon(self, step: int, reason: str) -> None:
        super().abandon(step, reason)
        self._drop_state()

    def _dispatch(self, msg: Message) -> list[Message]:
        if msg.kind == PAIR:
            return self._pair(msg)
        handlers = {HELLO: self._hello, PEERS: self._peers, ASK: self._ask, CAPACITY: self._capacity,
                    REPORT: self._close}
        if msg.kind not in handlers:
            raise ProtocolError(f"unexpected {msg.describe()} at {self.role} in a serving run")
        expect(msg, tuple(handlers), receiver=self.role, sender=COORDINATOR)
        if msg.kind != HELLO and self.weights is None:
            raise ProtocolError(f"{msg.describe()}: the serving run has not been set up at {self.role}")
        return handlers[msg.kind](msg)

    # -- setup --------------------------------------------------------------------------------
    def _hello(self, msg: Message) -> list[Message]:
        from fedcredit.scoring.outputs import read_model_part, saved_model_kind

        if self.weights is not None:
            raise ProtocolError(f"{msg.describe()}: {self.role} is set up already")
        try:
            self.settings = ModelSettings(**msg.meta["settings"])
        except (KeyError, TypeError, FedCreditError) as exc:
            raise ProtocolError(f"{msg.describe()}: malformed settings ({exc})") from None
        meta_str(msg, "task", ("query",))
        self.scale_bits = meta_int(msg, "scale_bits", 8)
        if self.scale_bits > 24:
            raise ProtocolError(f"{msg.describe()}: scale_bits must be in [8, 24], got {self.scale_bits}")
        cfg = self.config
        facts = job_facts(cfg, msg, self.settings, self.verified_submitter)
        self.bank, self.purpose = facts.bank, facts.purpose
        self.gate = NodeGate.open(cfg, msg, self.settings, self.verified_submitter)  # before any file is read
        if not cfg.model_dir:
            raise InputError(f"{self.role}: a serving run needs this node's saved model part (model_dir)")
        folder = Path(cfg.model_dir)
        kind = saved_model_kind(folder)
        if kind != "scorecard_lr":
            raise InputError(f"{self.role}: the saved model in {folder} is {kind}; online queries answer with "
                             "scorecard LR models only")
        self.prep, weights, _ = read_model_part(folder, self.role)
        self.weights = weights
        self._current()  # a missing or invalid data file fails the setup, not the first query
        info = {"identity": self.identity.public.to_dict(), "params": len(weights)}
        return [Message(INFO, self.role, COORDINATOR, msg.run_id, msg.step + 1, info)]

    def _peers(self, msg: Message) -> list[Message]:
        """Keys to seal to and accept from (``NodeAgent``), then a fresh pair seed for every node named after this one."""
        if self.relay is not None:
            raise ProtocolError(f"{msg.describe()}: peers are announced once")
        super()._peers(msg)
        self.peers = sorted(r for r in msg.meta["peers"] if r != self.role)
        out = []
        for other in self.peers:
            if other > self.role:
                self.pair_seeds[other] = pairwise.new_seed()
                out.append(Message(PAIR, self.role, other, msg.run_id, msg.step + 1, {}, self.pair_seeds[other]))
        return out

    def _pair(self, msg: Message) -> list[Message]:
        expect(msg, PAIR, receiver=self.role)
        if msg.sender not in self.peers or not msg.sender < self.role or msg.sender in self.pair_seeds:
            raise ProtocolError(f"{msg.describe()}: a pair seed comes once from each node named before {self.role}")
        if len(msg.payload) != pairwise.SEED_BYTES:
            raise ProtocolError(f"{msg.describe()}: a pair seed must be {pairwise.SEED_BYTES} bytes")
        self.pair_seeds[msg.sender] = bytes(msg.payload)
        return []

    # -- one query ----------------------------------------------------------------------------
    def _ask(self, msg: Message) -> list[Message]:
        query_id, seq = check_query_id_of(msg), meta_int(msg, "seq", 1)
        top = meta_int(msg, "reasons")
        if seq <= self.last_seq:
            raise ProtocolError(f"{msg.describe()}: query number {seq} after {self.last_seq}: masks are never reused")
        if top > MAX_REASONS:
            raise ProtocolError(f"{msg.describe()}: at most {MAX_REASONS} reason codes per node and enterprise")
        missing = [p for p in self.peers if p not in self.pair_seeds]
        if missing:
            raise ProtocolError(f"{msg.describe()}: {self.role} has no pair seed with {missing}")
        ids = asked_ids(msg)
        self.last_seq, self.last_ids, self.last_ok = seq, ids, set()
        reply = {"query_id": query_id}
        today = self.clock()
        if self.gate is not None:
            try:
                self.gate.ledger.admit_queried(self.gate.policy, self.gate.node, msg.run_id, query_id, len(ids), today)
            except PolicyRefusal as exc:
                reason = f"node {exc.node} refused the query: policy rule {exc.rule}: {exc.detail}"
                self._record_query(query_id, ids, ["refused"] * len(ids))
                return [Message(REFUSED, self.role, COORDINATOR, msg.run_id, msg.step + 1, {**reply, "reason": reason})]
        data, consent = self._current(), self._consent(today)
        rows = np.array([data.rows.get(i, -1) for i in ids], dtype=np.int64)
        verdicts = [UNKNOWN if r < 0 else NO_CONSENT if consent is not None and i not in consent else OK
                    for i, r in zip(ids, rows)]
        ok = np.array([v == OK for v in verdicts], dtype=bool)
        values = np.frombuffer(secrets.token_bytes(8 * len(ids)), dtype=np.int64).copy()  # no partial score to sum
        reasons: list[list[str]] = [[] for _ in ids]
        if ok.any():
            design = Design(self.prep, data.features.iloc[rows[ok]].reset_index(drop=True), intercept=self.role == BANK)
            if design.n_params != len(self.weights):
                raise InputError(f"{self.role}: the saved part has {len(self.weights)} parameters, its columns on the "
                                 f"current data {design.n_params}")
            values[ok] = design.fixed_scores(self.weights, self.scale_bits)  # bin by bin, as in a scoring run
            for i, codes in zip(np.flatnonzero(ok), design.reason_codes(self.weights, top)):
                reasons[i] = codes
        self.last_ok = set(np.flatnonzero(ok).tolist())
        words = shares.share(values, self.role, self.pair_seeds, f"{msg.run_id}/query/{seq}/{query_id}")
        self._record_query(query_id, ids, verdicts)
        payload, meta = bundle({"z": shares.word_part(words)})
        doc = _json_payload({"verdicts": verdicts, "reasons": reasons})
        return [Message(SHARE, self.role, COORDINATOR, msg.run_id, msg.step + 1, {**reply, **meta}, payload),
                Message(REASONS, self.role, COORDINATOR, msg.run_id, msg.step + 1, reply, doc)]

    def _capacity(self, msg: Message) -> list[Message]:
        """limit = min(cap, multiple × own column) for the last query's scored IDs; the column stays here."""
        query_id = check_query_id_of(msg)
        try:
            capacity = Capacity(**msg.meta["capacity"])
        except (KeyError, TypeError, FedCreditError) as exc:
            raise ProtocolError(f"{msg.describe()}: malformed capacity term ({exc})") from None
        data = self._current()
        if capacity.node != self.role or capacity.column not in data.features.columns:
            raise ProtocolError(f"{msg.describe()}: {self.role} does not own a column {capacity.column!r}")
        if meta_int(msg, "seq", 1) != self.last_seq:
            raise ProtocolError(f"{msg.describe()}: capacity for a query other than the last one answered")
        doc = _from_json_payload(msg, "caps")
        positions, caps = (doc.get("rows"), doc.get("caps")) if isinstance(doc, dict) else (None, None)
        if not isinstance(positions, list) or not isinstance(caps, list) or len(positions) != len(caps) \
                or not all(isinstance(p, int) and p in self.last_ok for p in positions) \
                or not all(isinstance(c, int) and c >= 0 for c in caps):
            raise ProtocolError(f"{msg.describe()}: caps must name IDs this node scored in the query, each once")
        rows = [data.rows.get(self.last_ids[p]) for p in positions]
        if any(r is None for r in rows):
            raise InputError(f"{self.role}: an enterprise of query {query_id} left the data file during the query")
        values = data.features[capacity.column].to_numpy(dtype=float)[np.asarray(rows, dtype=np.int64)]
        limits = capacity.apply(np.asarray(caps, dtype=np.int64), values)
        return [Message(LIMITS, self.role, COORDINATOR, msg.run_id, msg.step + 1, {"query_id": query_id},
                        _json_payload({"limits": limits.tolist()}))]

    def _close(self, msg: Message) -> list[Message]:
        """The serving run ends: keep the coordinator's signed log head (``handle`` then closes this node's log)."""
        if self.audit is not None and "checkpoint" in msg.meta:
            self.audit.record_checkpoint(msg.meta["checkpoint"])
        return [Message(REPORTED, self.role, COORDINATOR, msg.run_id, msg.step + 1, {})]

    # -- the node's own files -----------------------------------------------------------------------
    def _current(self) -> _Snapshot:
        """The data file as it is now (read again only when its path, modification time or size changed)."""
        cfg = self.config
        path = Path(cfg.data)
        try:
            stat = path.stat()
        except OSError as exc:
            raise InputError(f"{self.role}: data file {path} cannot be read ({exc.strerror})") from None
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
        if self._snapshot is None or self._snapshot.key != key:
            node = load_node(cfg.data, cfg.schema())
            rows = {str(i): k for k, i in enumerate(node.ids)}
            self._snapshot = _Snapshot(key, rows, cfg.pick_features(node))
        return self._snapshot

    def _consent(self, today) -> frozenset[str] | None:
        """The IDs whose consent covers this run's bank and purpose on ``today`` (None: no consent list)."""
        path = self.gate.policy.consent if self.gate is not None else None
        if not path:
            return None
        stat = Path(path).stat()
        key = (path, stat.st_mtime_ns, stat.st_size, today, self.bank, self.purpose)
        if self._consent_cache is None or self._consent_cache[0] != key:
            self._consent_cache = (key, load_consent(path).allowed_ids(self.bank, self.purpose, today).ids)
        return self._consent_cache[1]

    def _record_query(self, query_id: str, ids: list[str], verdicts: list[str]) -> None:
        if self.audit is not None:
            self.audit.record_query(query_id, ids, verdicts)


def check_query_id_of(msg: Message) -> str:
    try:
        return check_query_id(msg.meta.get("query_id"))
    except FedCreditError as exc:
        raise ProtocolError(f"{msg.describe()}: {exc}") from None
