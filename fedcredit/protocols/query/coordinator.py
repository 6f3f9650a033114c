"""The coordinator's side of online limit queries: a serving run's setup, then one query after another.

A serving run opens like a job: ``job.hello`` (task ``query``, the model's training run id,
the bank, purpose and submitter, which every node's policy judges), ``job.info`` (each node's
identity), ``job.peers``, and one round that relays the pair seeds (``query.pair``, sealed),
from which every query's masks are derived. Then ``submit`` starts a query: the IDs go to every
node, each answers with its pair-masked share of every queried enterprise's score on the same
fixed-point grid the scoring run uses; the shares of an enterprise every node answered
``ok`` for add up to its score z, and pd = 1 / (1 + exp(-z)), grade, cap and (with a capacity
term, at the column's owner) limit follow exactly as in a scoring run's publication. ``finish``
ends the run: every node closes its audit log.

Driver interface: ``start()``/``advance(replies)`` until ``advance`` returns ``[]`` (then
``ready``); ``submit(query_id, ids)``/``advance`` until ``[]`` (then ``answer``); ``finish()``/
``advance`` until ``[]`` (then ``done``). One phase runs at a time.
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

from fedcredit.common.errors import ProtocolError
from fedcredit.common.wire import COORDINATOR, Message, unbundle
from fedcredit.crypto import Identity, PublicIdentity, pairwise
from fedcredit.protocols.errors import InputError
from fedcredit.protocols.job.gate import DEFAULT_PURPOSE
from fedcredit.protocols.job.publication import check_reason_rows
from fedcredit.protocols.job.settings import ModelSettings, Publication
from fedcredit.protocols.job.wire import ABORT, HELLO, INFO, PEERS, REPORT, REPORTED, _json_payload
from fedcredit.protocols.query.answer import all_ok, ok_row, sign_answer, unanswered_row
from fedcredit.protocols.query.wire import (
    ASK, CAPACITY, LIMITS, MAX_BATCH, PAIR, REASONS, REFUSED, SHARE, VERDICTS, QueryError, check_ids, check_query_id,
    json_doc)
from fedcredit.protocols.vertical_lr import shares
from fedcredit.protocols.vertical_lr.config import BANK, LrConfig


class QueryCoordinator:
    """A serving run's coordinator: setup, then queries answered one at a time (module docstring)."""

    name = "query"

    def __init__(self, run_id: str, roles: list[str], *, model: str, publication: Publication, signer: Identity,
                 settings: ModelSettings | None = None, bank_name: str = BANK, purpose: str = DEFAULT_PURPOSE,
                 submitter: dict | None = None, scale_bits: int = LrConfig.scale_bits, max_batch: int = MAX_BATCH,
                 pool=None, on_event=None):
        settings = settings or ModelSettings()
        if settings.model != "scorecard_lr":
            raise InputError(f"model {model} is a {settings.model} model; online queries answer with scorecard LR "
                             "models only (a SecureBoost score needs the bank to route every enterprise through "
                             "the hosts' splits, which a query does not do yet): score it in a scoring run instead")
        if not roles or roles[0] != BANK or len(set(roles)) != len(roles) or len(roles) < 2:
            raise InputError(f"a serving run needs the bank first and at least one host, all distinct; got {roles!r}")
        if publication.capacity is not None and publication.capacity.node not in roles:
            raise InputError(f"capacity term names node {publication.capacity.node!r}, which is not in this run")
        if not isinstance(model, str) or not model:
            raise InputError("a serving run names its model by the training run id")
        if not 1 <= int(max_batch) <= MAX_BATCH:
            raise InputError(f"max_batch must be between 1 and {MAX_BATCH:,}, got {max_batch!r}")
        self.run_id, self.roles, self.model, self.settings = run_id, list(roles), model, settings
        self.publication, self.signer, self.scale_bits, self.max_batch = publication, signer, int(scale_bits), int(max_batch)
        self.bank_name, self.purpose, self.submitter = bank_name, purpose, submitter
        self.pool, self.on_event = pool, on_event or (lambda kind, info: None)
        self.identities: dict[str, PublicIdentity] = {}
        self.result: dict = {}
        self.ready = self.done = False
        self.answer: dict | None = None
        self.rounds = 0
        self._phase = None  # the running phase (a generator): setup, one query, or the close
        self._seq = 0  # queries asked so far: each query's masks are derived from its own number and id
        self._asked: set[str] = set()
        self.query: dict | None = None  # the query in progress (or the last one): its id and checked IDs

    # -- driver interface ------------------------------------------------------------------------
    def start(self) -> list[Message]:
        if self._phase is not None or self.ready or self.done:
            raise ProtocolError("the serving run has been started already")
        return self._begin(self._setup())

    def submit(self, query_id: str, ids: list[str]) -> list[Message]:
        """The first round of a query about ``ids``; malformed or too many IDs raise ``QueryError`` (nothing is sent)."""
        if not self.ready or self.done or self._phase is not None:
            state = "finished" if self.done else "busy with another query" if self.ready else "not set up yet"
            raise QueryError(f"the serving run is {state}: query {query_id!r} cannot be asked now")
        check_query_id(query_id)
        if query_id in self._asked:
            raise QueryError(f"query id {query_id!r} was used before in this serving run")
        codes = check_ids(ids, self.max_batch)
        self._asked.add(query_id)
        self.query = {"query_id": query_id, "ids": codes}
        self._seq += 1
        self.answer = None
        return self._begin(self._query(query_id, codes, self._seq))

    def finish(self) -> list[Message]:
        """The serving run's last round: ``job.report`` to every node (each closes its audit log)."""
        if self._phase is not None or self.done:
            raise QueryError("the serving run cannot be finished while a phase runs (or twice)")
        return self._begin(self._close())

    def advance(self, replies: list[Message]) -> list[Message]:
        if self._phase is None:
            raise ProtocolError(f"{self.name}: no round in progress; replies {[m.describe() for m in replies]} "
                                "were not expected")
        for m in replies:
            if m.run_id != self.run_id:
                raise ProtocolError(f"{m.describe()}: not a message of serving run {self.run_id}")
        self.rounds += 1
        try:
            return self._phase.send(replies)
        except StopIteration:
            self._phase = None
            return []
        except BaseException:
            self._phase = None  # the phase failed; a later query starts afresh with its own masks
            raise

    def _begin(self, phase) -> list[Message]:
        self._phase = phase
        return next(phase)

    @property
    def paillier_fingerprint(self) -> None:
        return None  # queries encrypt nothing: masks only

    def paillier_fingerprint_for(self, run_id: str) -> None:
        return None

    def abort_messages(self, exc: BaseException) -> list[Message]:
        """``job.abort`` for every node once the run has started (the step and the error's type only)."""
        if self.rounds == 0 and self._phase is None and not self.ready:
            return []
        reason = f"the coordinator stopped the serving run at step {self.rounds} ({type(exc).__name__})"
        return [self._send(ABORT, r, {"reason": reason}) for r in self.roles]

    def close_aborted(self, exc: BaseException) -> None:
        """Without an audit trail there is nothing to close (``audited`` records the abort)."""

    # -- phases --------------------------------------------------------------------------------------
    def _send(self, kind: str, role: str, meta: dict, payload: bytes = b"") -> Message:
        return Message(kind, COORDINATOR, role, self.run_id, self.rounds, meta, payload)

    def _each(self, replies: list[Message], kind: str) -> dict[str, Message]:
        got = {m.sender: m for m in replies if m.kind == kind and m.receiver == COORDINATOR}
        if set(got) != set(self.roles) or len(replies) != len(self.roles):
            raise ProtocolError(f"expected one {kind} from each of {self.roles} and nothing else, got "
                                f"{[m.describe() for m in replies]}")
        return got

    def _setup(self):
        job = {"settings": asdict(self.settings), "task": "query", "model": self.model, "bank": self.bank_name,
               "purpose": self.purpose, "submitter": self.submitter, "scale_bits": self.scale_bits}
        info = self._each((yield [self._send(HELLO, r, job) for r in self.roles]), INFO)
        try:
            self.identities = {r: PublicIdentity.from_dict(m.meta["identity"]) for r, m in info.items()}
        except Exception as exc:  # noqa: BLE001 — whatever a node sent, it is not an identity
            raise ProtocolError(f"job.info: a node's identity is malformed ({exc})") from None
        self.result["identities"] = {r: pub.fingerprint for r, pub in self.identities.items()}
        self.on_event("validated", {"nodes": list(self.roles), "identities": self.result["identities"]})
        peers = {r: pub.to_dict() for r, pub in self.identities.items()}
        replies = yield [self._send(PEERS, r, {"peers": peers}) for r in self.roles]
        pairs = sorted((m.sender, m.receiver) for m in replies if m.kind == PAIR)
        want = sorted((a, b) for a in self.roles for b in self.roles if a < b)
        if pairs != want or len(replies) != len(want):
            raise ProtocolError(f"serving run setup: expected pair seeds {want}, got "
                                f"{[m.describe() for m in replies]}")
        if (yield replies):  # relayed, sealed: the receivers answer nothing
            raise ProtocolError("serving run setup: nodes answered the relayed pair seeds")
        self.ready = True
        self.on_event("ready", {"run_id": self.run_id, "model": self.model})

    def _query(self, query_id: str, ids: list[str], seq: int):
        pub = self.publication
        meta = {"query_id": query_id, "seq": seq, "reasons": pub.reasons}
        ask = _json_payload({"ids": ids})
        replies = yield [self._send(ASK, r, meta, ask) for r in self.roles]
        answers, refusals = self._answers(replies, query_id, len(ids))
        verdicts = [{r: answers[r]["verdicts"][i] for r in answers} for i in range(len(ids))]
        ok = np.array([not refusals and all_ok(v) for v in verdicts], dtype=bool)
        rows: list[dict | None] = [None] * len(ids)
        for i in np.flatnonzero(~ok):
            rows[i] = unanswered_row(ids[i], verdicts[i], refusals, pub.missing)
        if ok.any():
            total = pairwise.unmask_sum([answers[r]["words"] for r in self.roles])[ok]
            z = np.ldexp(total.astype(np.int64).astype(float), -self.scale_bits)  # as the bank unmasks its scores
            pd_ = 1.0 / (1.0 + np.exp(-z))
            points, grades, caps = pub.grade(pd_)
            limits = np.asarray(caps, dtype=np.int64)
            positions = np.flatnonzero(ok)
            if pub.capacity is not None:
                limits = yield from self._capacity(query_id, seq, positions, limits)
            for k, i in enumerate(positions):
                codes = ";".join(f"{r}:{name}" for r in self.roles for name in answers[r]["reasons"][i])
                rows[i] = ok_row(ids[i], points[k], grades[k], pd_[k], limits[k], codes)
        self.answer = sign_answer(self.model, query_id, self.bank_name, rows, self.signer)
        self.on_event("answered", {"query_id": query_id, "rows": len(rows), "ok": int(ok.sum()),
                                   "refused_by": sorted(refusals)})

    def _answers(self, replies: list[Message], query_id: str, count: int) -> tuple[dict, dict]:
        """Each node's masked words, verdicts and reason codes, or its refusal of the whole query."""
        top = self.publication.reasons
        by_node: dict[str, dict[str, Message]] = {}
        for m in replies:
            if m.kind not in (SHARE, REASONS, REFUSED) or m.receiver != COORDINATOR or m.sender not in self.roles \
                    or m.meta.get("query_id") != query_id or m.kind in by_node.get(m.sender, {}):
                raise ProtocolError(f"query {query_id}: unexpected {m.describe()}")
            by_node.setdefault(m.sender, {})[m.kind] = m
        answers, refusals = {}, {}
        for role in self.roles:
            got = by_node.get(role, {})
            if set(got) == {REFUSED}:
                reason = got[REFUSED].meta.get("reason")
                if not isinstance(reason, str) or not reason:
                    raise ProtocolError(f"{got[REFUSED].describe()}: a refusal names its reason")
                refusals[role] = reason[:500]
                continue
            if set(got) != {SHARE, REASONS}:
                raise ProtocolError(f"query {query_id}: {role} must answer with its share and its verdicts, or "
                                    f"refuse; got {sorted(got)}")
            words = shares.words_of(unbundle(got[SHARE], ["z"])["z"], got[SHARE], count)
            doc = json_doc(got[REASONS], "verdicts and reason codes", ("verdicts", "reasons"))
            verdicts = doc["verdicts"]
            if not isinstance(verdicts, list) or len(verdicts) != count or not all(v in VERDICTS for v in verdicts):
                raise ProtocolError(f"{got[REASONS].describe()}: one verdict of {VERDICTS} per queried ID")
            check_reason_rows(role, doc["reasons"], count, top)
            answers[role] = {"words": words, "verdicts": verdicts, "reasons": doc["reasons"]}
        return answers, refusals

    def _capacity(self, query_id: str, seq: int, positions: np.ndarray, caps: np.ndarray):
        """limit = min(cap, multiple × own column), computed by the column's owner for the scored rows."""
        owner = self.publication.capacity.node
        payload = _json_payload({"rows": positions.tolist(), "caps": caps.tolist()})
        meta = {"query_id": query_id, "seq": seq, "capacity": asdict(self.publication.capacity)}
        replies = yield [self._send(CAPACITY, owner, meta, payload)]
        got = [m for m in replies if m.kind == LIMITS and m.sender == owner and m.meta.get("query_id") == query_id]
        if len(got) != 1 or len(replies) != 1:
            raise ProtocolError(f"query {query_id}: expected the limits from {owner}, got "
                                f"{[m.describe() for m in replies]}")
        doc = json_doc(got[0], "limits", ("limits",))
        try:
            capped = np.asarray(doc["limits"], dtype=np.int64)
        except (TypeError, ValueError, OverflowError):
            capped = np.zeros(0, dtype=np.int64)
        if capped.shape != caps.shape or np.any(capped > caps) or np.any(capped < 0):
            raise ProtocolError(f"{got[0].describe()}: limits must be between 0 and each enterprise's cap")
        return capped

    def _close(self):
        self._each((yield [self._send(REPORT, r, {"main": f"{self.run_id}/query"}) for r in self.roles]), REPORTED)
        self.done = True
        self.on_event("finished", {"run_id": self.run_id, "queries": self._seq})
