"""One federated job end to end: validate → align (PSI) → split → prepare → train → score.

``JobCoordinator`` runs the phases in order with the same ``start``/``advance``
interface as every protocol; ``NodeAgent`` is a data holder's side: it loads and
validates its own file, then hands each message to the phase's party object. A node
agent pickles to its work directory between messages, so it survives transports
that start a fresh process per message (Flower's deployment engine).
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fedcredit.crypto import Identity, PublicIdentity
from fedcredit.data.binning import FeaturePrep
from fedcredit.data.schema import node_schema, parse_extra
from fedcredit.data.validate import load_node
from fedcredit.protocols import psi, secureboost, vertical_lr
from fedcredit.protocols.design import Design
from fedcredit.common.errors import ProtocolError
from fedcredit.protocols.errors import InputError
from fedcredit.common.wire import COORDINATOR, Message, expect, meta_int
from fedcredit.protocols.relay import SealedRelay
from fedcredit.protocols.script import ScriptedCoordinator
from fedcredit.common.errors import FedCreditError
from fedcredit.scoring import metrics
from fedcredit.scoring.policy import Capacity

HELLO, INFO, PEERS, SPLIT, PREPARED, REPORT, REPORTED = (
    "job.hello", "job.info", "job.peers", "job.split", "job.prepared", "job.report", "job.reported")
PUBLISH, SCORES, REASONS, CAPACITY, LIMITS = "job.publish", "job.scores", "job.reasons", "job.capacity", "job.limits"
LOAD = "job.load"
KINDS = (HELLO, INFO, PEERS, SPLIT, PREPARED, REPORT, REPORTED, PUBLISH, SCORES, REASONS, CAPACITY, LIMITS, LOAD)
SCORED = 3  # split code of enterprises scored with a saved model
SPLITS = ("train", "validation", "test")
MODELS = ("scorecard_lr", "secureboost")
MAX_REASONS = 5  # reason codes a node publishes per enterprise at most (trees: the bank ranks 3× as many records)


@dataclass
class ModelSettings:
    """Public model settings every party receives (never data paths).

    ``model`` picks the federated model: the scorecard logistic regression (``l2``,
    ``max_iter``) or vertical SecureBoost (``trees`` … ``patience``; 0 = no early stopping).
    Both bin features the same way (``n_bins`` quantile bins fitted on the training rows).
    """

    model: str = "scorecard_lr"
    mode: str = "binned"
    n_bins: int = 10
    l2: float = 1e-3
    max_iter: int = 30
    key_bits: int = 2048
    backend: str = "paillier"
    seed: int = 42
    train: float = 0.6
    validation: float = 0.2
    bank_only_baseline: bool = True
    trees: int = 30
    max_depth: int = 4
    learning_rate: float = 0.1
    tree_l2: float = 1.0
    min_child_weight: float = 1.0
    gamma: float = 0.0
    goss_top: float = 0.0
    goss_other: float = 0.0
    bank_first_tree: bool = False
    patience: int = 0

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise InputError(f"model must be one of {', '.join(MODELS)}; got {self.model!r}")
        if self.model == "secureboost":
            if self.mode != "binned":
                raise InputError("SecureBoost splits binned features: features must be 'binned'")
            if self.patience and not self.validation:
                raise InputError("early stopping (patience) needs validation rows: set validation > 0")
            try:
                self.sb_config()
            except ProtocolError as exc:
                raise InputError(str(exc)) from None
        if not (0 < self.train < 1 and 0 <= self.validation < 1 and self.train + self.validation < 1):
            raise InputError(f"split fractions must satisfy 0 < train, 0 ≤ validation, train + validation < 1; "
                             f"got train={self.train}, validation={self.validation}")

    def lr_config(self) -> vertical_lr.LrConfig:
        return vertical_lr.LrConfig(l2=self.l2, max_iter=self.max_iter, key_bits=self.key_bits, backend=self.backend)

    def sb_config(self) -> secureboost.SbConfig:
        return secureboost.SbConfig(
            n_trees=self.trees, max_depth=self.max_depth, learning_rate=self.learning_rate, l2=self.tree_l2,
            gamma=self.gamma, min_child_weight=self.min_child_weight, bank_first_tree=self.bank_first_tree,
            goss_top=self.goss_top, goss_other=self.goss_other, patience=self.patience or None,
            key_bits=self.key_bits, backend=self.backend)

    @property
    def run_suffix(self) -> str:
        """The model runs' id suffix: ``/lr`` and ``/lr-bank``, or ``/sb`` and ``/sb-bank``."""
        return "lr" if self.model == "scorecard_lr" else "sb"

    @property
    def progress_steps(self) -> int:
        return self.max_iter + 1 if self.model == "scorecard_lr" else self.trees


@dataclass
class NodeConfig:
    """A node's local settings: they stay on the node (data path, ID column, label, features)."""

    role: str
    data: str
    id_column: str = "uscc"
    id_kind: str = "uscc"
    label: str | None = None
    features: list[str] | None = None
    categorical: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)  # NAME:KIND declarations of extra columns
    layout: str = "standard"  # "standard": the role's built-in schema; "custom": only declared columns
    out_dir: str | None = None
    model_dir: str | None = None  # scoring runs: this node's saved model part

    def schema(self):
        """The schema this node's file is validated against."""
        base = node_schema(self.role, self.layout, self.label or ("default_12m" if self.role == "bank" else None))
        return base.with_options(self.id_column, self.id_kind, parse_extra(self.extra))


@dataclass
class Publication:
    """How the coordinator turns the bank's published probabilities into grades and limits.

    ``grade(pd) -> (points, grades, caps)`` applies the limit policy's scorecard and
    caps; ``capacity = (role, column, multiple)`` names a capacity term computed at the
    node that owns the column, so the coordinator only ever sees the resulting limit.
    """

    grade: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]
    capacity: Capacity | None = None
    reasons: int = 2
    loss_table: Callable[[np.ndarray, np.ndarray, np.ndarray], list[dict]] | None = None  # per-grade expected loss
    signer: str | None = None  # fingerprint of the key that will sign the publication (shown in the report)


def _json_payload(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _from_json_payload(msg: Message, what: str):
    try:
        return json.loads(msg.payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"{msg.describe()}: {what} is not valid JSON ({exc})") from None


def split_assignment(ids, seed: int, train: float, validation: float) -> np.ndarray:
    """0 train, 1 validation, 2 test for each aligned ID, from a seeded hash of the ID itself.

    Every party holds the same aligned IDs, so all derive the same split without a
    message, and the same seed gives the same split in every run (whatever order PSI
    produced).
    """
    prefix = hashlib.sha256(f"fedcredit-split/{seed}/".encode())
    u = np.empty(len(ids))
    for i, ident in enumerate(ids):
        h = prefix.copy()
        h.update(str(ident).encode())
        u[i] = int.from_bytes(h.digest()[:8], "big") / 2.0**64
    return np.where(u < train, 0, np.where(u < train + validation, 1, 2)).astype(np.int8)


class NodeAgent:
    """A data holder's end of the job; ``handle`` takes one message and returns its replies."""

    def __init__(self, config: NodeConfig, identity: Identity | None = None, pool=None):
        self.config = config
        self.role = config.role
        self.identity = identity or Identity.generate(config.role)
        self.pool = pool
        self.relay: SealedRelay | None = None
        self.settings: ModelSettings | None = None
        self.ids: np.ndarray | None = None
        self.features: pd.DataFrame | None = None
        self.labels: np.ndarray | None = None
        self.psi: psi.PsiParty | None = None
        self.models: dict[str, vertical_lr.LrParty | secureboost.SbParty] = {}  # model run id -> this node's party
        self.aligned_rows: np.ndarray | None = None
        self.split: np.ndarray | None = None
        self.prep: FeaturePrep | None = None
        self.reference_scores: np.ndarray | None = None  # bank, scoring runs: training scores of the saved model
        self.audit = None  # this node's AuditWriter, created with the job's first message when it has an out_dir
        self._final_head: dict | None = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["pool"] = None
        for party in state["models"].values():
            party.pool = None
        if state.get("psi") is not None:
            state["psi"]._pool = None
        return state

    def attach_pool(self, pool) -> None:
        self.pool = pool
        for party in self.models.values():
            party.pool = pool
        if self.psi is not None:
            self.psi._pool = pool

    def handle(self, msg: Message) -> list[Message]:
        """Open sealed node-to-node messages, dispatch, seal replies to other nodes; audit both directions."""
        self._audit_message(msg, "received")
        wire = msg
        if self.relay is not None:
            msg = self.relay.open(msg)
        elif msg.relayed:
            raise ProtocolError(f"{msg.describe()}: node-to-node message before peers are known")
        replies = [self.relay.seal(r) if self.relay is not None else r for r in self._dispatch(msg)]
        for reply in replies:
            self._audit_message(reply, "sent")
        if wire.kind == REPORT and self.audit is not None:
            self._final_head = self.audit.close()
        return replies

    def restore(self) -> None:
        """Called on an agent loaded from its checkpoint: drop audit records written after it (a crash mid-message)."""
        if self.audit is not None and not self.audit.closed:
            self.audit.rollback()

    def take_final_head(self) -> dict | None:
        """This node's final signed log head, once, for the transport to hand to the coordinator.

        It cannot travel in a logged message (the log is closed by then); it is signed, so
        carrying it beside the protocol messages is safe.
        """
        head, self._final_head = self._final_head, None
        return head

    def _audit_message(self, msg: Message, direction: str) -> None:
        """This node's signed, hash-chained record of a message at its end (when it keeps an audit log)."""
        if self.audit is None and msg.kind == HELLO and self.config.out_dir:
            from fedcredit.audit.log import AuditWriter

            path = Path(self.config.out_dir) / "audit" / f"{self.role}.jsonl"
            self.audit = AuditWriter(path, self.identity, msg.run_id)
        if self.audit is not None:
            keys = [p.key.fingerprint for p in self.models.values() if p.key is not None and p.run_id == msg.run_id]
            self.audit.record(msg.to_bytes(), direction=direction, paillier_key=keys[0] if keys else None)

    def _dispatch(self, msg: Message) -> list[Message]:
        family = msg.kind.split(".", 1)[0]
        if family == "job":
            handlers = {HELLO: self._hello, PEERS: self._peers, SPLIT: self._split, REPORT: self._report,
                        PUBLISH: self._publish, CAPACITY: self._capacity, LOAD: self._load}
            return handlers[expect(msg, tuple(handlers), receiver=self.role, sender=COORDINATOR).kind](msg)
        if family == "psi":
            if self.psi is None:
                raise ProtocolError(f"{msg.describe()}: alignment has not been set up at {self.role}")
            return self.psi.handle(msg)
        if family in ("lr", "sb"):
            party = self.models.get(msg.run_id)
            if party is None:
                raise ProtocolError(f"{msg.describe()}: no model run {msg.run_id!r} at {self.role}")
            return party.handle(msg)
        raise ProtocolError(f"unexpected {msg.describe()} at {self.role}")

    def _hello(self, msg: Message) -> list[Message]:
        try:
            self.settings = ModelSettings(**msg.meta["settings"])
        except (KeyError, TypeError) as exc:
            raise ProtocolError(f"{msg.describe()}: malformed settings ({exc})") from None
        cfg = self.config
        schema = cfg.schema()
        if cfg.label is not None and cfg.label != schema.label:
            raise InputError(f"{cfg.role}: label column {cfg.label!r} differs from the schema's {schema.label!r}; "
                             f"use layout = 'custom' for another label column")
        node = load_node(cfg.data, schema)
        features = node.features if cfg.features is None else node.features[cfg.features]
        self.ids, self.features, self.labels = node.ids, features, node.label
        self.psi = psi.PsiParty(self.role, list(node.ids), id_kind=cfg.id_kind, pool=self.pool)
        info = {"rows": len(node), "features": features.shape[1], "identity": self.identity.public.to_dict()}
        return [Message(INFO, self.role, COORDINATOR, msg.run_id, msg.step + 1, info)]

    def _peers(self, msg: Message) -> list[Message]:
        peers = msg.meta.get("peers")
        if not isinstance(peers, dict) or self.role not in peers:
            raise ProtocolError(f"{msg.describe()}: peers must map every role to its public identity")
        if PublicIdentity.from_dict(peers[self.role]) != self.identity.public:
            raise ProtocolError(f"{msg.describe()}: the coordinator announced a different key for {self.role}")
        others = [PublicIdentity.from_dict(doc) for role, doc in peers.items() if role != self.role]
        self.relay = SealedRelay(self.identity, others)
        return []

    def _split(self, msg: Message) -> list[Message]:
        if self.psi is None or self.psi.result is None:
            raise ProtocolError(f"{msg.describe()}: alignment has not finished at {self.role}")
        s = self.settings
        self.aligned_rows = self.psi.result.rows
        self.split = split_assignment(self.ids[self.aligned_rows], s.seed, s.train, s.validation)
        frame = self.features.iloc[self.aligned_rows].reset_index(drop=True)
        train_rows, val_rows = np.flatnonzero(self.split == 0), np.flatnonzero(self.split == 1)
        self.prep = FeaturePrep.fit(frame.iloc[train_rows], s.mode, s.n_bins, self.config.categorical)
        return self._install(msg, frame, train_rows, val_rows)

    def _install(self, msg: Message, frame: pd.DataFrame, train_rows: np.ndarray, val_rows: np.ndarray,
                 saved=None) -> list[Message]:
        """This node's party for each model run it takes part in: to train, or from its ``saved`` part."""
        s, is_bank = self.settings, self.role == vertical_lr.BANK
        labels = self.labels[self.aligned_rows] if is_bank else None
        if s.model == "secureboost":
            valid = val_rows if is_bank and s.patience and saved is None else None
            data = secureboost.TreePartyData.from_prep(self.prep, frame, train_rows, labels, valid)
            make, params = (lambda: secureboost.sb_party(self.role, data, pool=self.pool, model=saved)), len(data.n_bins)
        else:
            train = Design(self.prep, frame.iloc[train_rows], intercept=is_bank) if saved is None else None
            data = vertical_lr.PartyData(train, Design(self.prep, frame, intercept=is_bank), train_rows, val_rows, labels)
            make, params = (lambda: vertical_lr.LrParty(self.role, data, pool=self.pool, weights=saved)), data.every.n_params
        for run_id, parties in msg.meta.get("runs", {}).items():
            if self.role in parties:
                self.models[run_id] = make()
        return [Message(PREPARED, self.role, COORDINATOR, msg.run_id, msg.step + 1, {"params": params})]

    def _main_party(self, msg: Message):
        return self._model(msg.meta.get("main", ""), msg.describe())

    def _model(self, run_id: str, where: str):
        party = self.models.get(run_id)
        if party is None or not party.has_model:
            raise ProtocolError(f"{where}: no trained model {run_id!r} at {self.role}")
        return party

    def _publish(self, msg: Message) -> list[Message]:
        """Reason codes (own feature names) per aligned row; the bank adds IDs and probabilities."""
        party = self._main_party(msg)
        top = meta_int(msg, "reasons")
        if top > MAX_REASONS:
            raise ProtocolError(f"{msg.describe()}: at most {MAX_REASONS} reason codes per node and enterprise, "
                                f"{top} asked")
        if isinstance(party, vertical_lr.LrParty):
            doc = {"reasons": party.data.every.reason_codes(party.weights, top)}
        elif self.role == vertical_lr.BANK:  # trees: the bank ranks every party's splits on each row's path
            if party.leaves is None:
                raise ProtocolError(f"{msg.describe()}: the bank has no predictions to explain")
            own, hosts = party.reasons(top)
            doc = {"reasons": own, "host_records": hosts}
        else:  # a host names the feature behind each of its records (never a threshold)
            doc = {"record_names": party.record_names()}
        kind = REASONS
        if self.role == vertical_lr.BANK:
            if party.scores is None:
                raise ProtocolError(f"{msg.describe()}: the bank has no scores to publish")
            doc.update(ids=[str(i) for i in self.ids[self.aligned_rows]], pd=[float(v) for v in party.scores])
            kind = SCORES
        return [Message(kind, self.role, COORDINATOR, msg.run_id, msg.step + 1, {}, _json_payload(doc))]

    def _capacity(self, msg: Message) -> list[Message]:
        """limit = min(cap of the enterprise's grade, multiple × own column), computed here so the column stays here."""
        try:
            capacity = Capacity(**msg.meta["capacity"])
        except (KeyError, TypeError, FedCreditError) as exc:
            raise ProtocolError(f"{msg.describe()}: malformed capacity term ({exc})") from None
        if capacity.node != self.role or capacity.column not in self.features.columns:
            raise ProtocolError(f"{msg.describe()}: {self.role} does not own a column {capacity.column!r}")
        caps = np.asarray(_from_json_payload(msg, "caps"), dtype=np.int64)
        values = self.features[capacity.column].to_numpy(dtype=float)[self.aligned_rows]
        if len(caps) != len(values):
            raise ProtocolError(f"{msg.describe()}: {len(caps)} caps for {len(values)} aligned rows")
        limits = capacity.apply(caps, values)
        return [Message(LIMITS, self.role, COORDINATOR, msg.run_id, msg.step + 1, {}, _json_payload(limits.tolist()))]

    def _load(self, msg: Message) -> list[Message]:
        """Scoring run: this node's saved model part applied to its aligned rows (nothing is trained)."""
        from fedcredit.scoring.outputs import read_model_part, read_tree_part, saved_model_kind

        if self.psi is None or self.psi.result is None:
            raise ProtocolError(f"{msg.describe()}: alignment has not finished at {self.role}")
        if not self.config.model_dir:
            raise InputError(f"{self.role}: a scoring run needs this node's saved model (model_dir)")
        folder = Path(self.config.model_dir)
        kind = saved_model_kind(folder)
        if kind != self.settings.model:
            raise InputError(f"{self.role}: the saved model in {folder} is {kind}, the job asks for {self.settings.model}")
        read = read_tree_part if kind == "secureboost" else read_model_part
        self.prep, saved, self.reference_scores = read(folder, self.role)
        self.aligned_rows = self.psi.result.rows
        self.split = np.full(len(self.aligned_rows), SCORED, dtype=np.int8)
        frame = self.features.iloc[self.aligned_rows].reset_index(drop=True)
        empty = np.zeros(0, dtype=np.int64)
        return self._install(msg, frame, empty, empty, saved)

    def _evaluation_rows(self) -> np.ndarray:
        """Test rows after training; every scored row in a scoring run."""
        return self.split == 2 if (self.split == 2).any() else self.split == SCORED

    def _report(self, msg: Message) -> list[Message]:
        """The bank's test metrics per model (aggregates only); every node writes its own model part."""
        out = {}
        for run_id, party in self.models.items():
            if self.role == vertical_lr.BANK and party.scores is not None:
                test = self._evaluation_rows()
                y = self.labels[self.aligned_rows]
                out[run_id] = {k: v for k, v in metrics.summary(y[test], party.scores[test]).items()}
        if self.config.out_dir:
            self.write_outputs(Path(self.config.out_dir), msg.meta.get("main"))
            if self.role == vertical_lr.BANK and msg.payload:
                self.write_report(Path(self.config.out_dir), msg.meta.get("main"), _from_json_payload(msg, "report context"),
                                  out.get(msg.meta.get("main"), {}), out)
        if self.audit is not None and "checkpoint" in msg.meta:
            self.audit.record_checkpoint(msg.meta["checkpoint"])
        return [Message(REPORTED, self.role, COORDINATOR, msg.run_id, msg.step + 1, {"metrics": out})]

    def write_report(self, out: Path, main_run: str, context: dict, main_metrics: dict, all_metrics: dict) -> Path:
        """The bank's report: it alone holds the labels that ROC, KS and observed default rates need."""
        from fedcredit.scoring.report import ReportData, render_report
        from fedcredit.scoring.scorecard import grade_table

        party = self._model(main_run, f"{self.role} report")
        y = self.labels[self.aligned_rows]
        scores, test = party.scores, self._evaluation_rows()
        reference = scores[self.split == 0] if (self.split == 0).any() else self.reference_scores
        grades_df = None
        if context.get("grades"):
            grades = np.asarray(context["grades"], dtype=object)
            grades_df = grade_table(grades[test], scores[test], y[test])
            if context.get("loss_table"):
                loss = pd.DataFrame(context["loss_table"])
                grades_df = grades_df.merge(loss, on="grade", how="outer", suffixes=(" (test)", " (all)"))
        bank_only = [m for run, m in all_metrics.items() if run.endswith("-bank")]
        metrics_view = {"test_auc": main_metrics.get("auc"), "test_ks": main_metrics.get("ks"),
                        "test_gini": main_metrics.get("gini"), "bank_only_auc": bank_only[0]["auc"] if bank_only else None}
        data = ReportData(
            title=f"fedcredit — federated {'SecureBoost' if self.settings.model == 'secureboost' else 'scorecard'} report",
            y_test=y[test], score_test=scores[test], run=context.get("run", {}),
            nodes=context.get("nodes", {}), intersection_size=context.get("intersection"),
            fingerprints=context.get("fingerprints", {}), score_train=reference, grades=grades_df,
            limits=np.asarray(context["limits"], dtype=float) if context.get("limits") else None, scores=scores,
            metrics=metrics_view, importance=_importance_table(party) if isinstance(party, secureboost.SbParty) else None)
        return render_report(data, out / "report.html")

    def write_outputs(self, out: Path, main_run: str | None) -> None:
        """This node's own part of the model; at the bank also its scores."""
        from fedcredit.scoring.outputs import write_model_part, write_scores, write_tree_part

        party = self.models.get(main_run) if main_run else None
        if party is None:
            return
        reference = party.scores[self.split == 0] if self.role == vertical_lr.BANK and (self.split == 0).any() else None
        if isinstance(party, secureboost.SbParty):
            if not party.loaded:  # a trained model: save this node's part
                write_tree_part(out / "model" / self.role, self.role, self.prep, party.model_part(), reference)
        elif party.data.train is not None:
            write_model_part(out / "model" / self.role, self.role, self.prep, party.data.train.labels(), party.weights,
                             reference)
        if self.role == vertical_lr.BANK and party.scores is not None:
            write_scores(out / "scores.parquet", self.ids[self.aligned_rows], self.split, party.scores)


class JobCoordinator(ScriptedCoordinator):
    """The coordinator's script for a whole job; composes the PSI and LR coordinators."""

    name = "job"

    def __init__(self, run_id: str, roles: list[str], settings: ModelSettings, *, pool=None, on_event=None,
                 deployment: bool | None = None, publication: Publication | None = None, task: str = "train"):
        if task not in ("train", "score"):
            raise InputError(f"task must be 'train' or 'score', got {task!r}")
        self.task = task
        if not roles or roles[0] != "bank" or len(set(roles)) != len(roles) or len(roles) < 2:
            raise InputError(f"a job needs the bank first and at least one host, all distinct; got {roles!r}")
        self.run_id, self.roles, self.settings = run_id, list(roles), settings
        self.pool, self.on_event, self.deployment = pool, on_event or (lambda kind, info: None), deployment
        self.result: dict = {}
        self.publication = publication
        self.identities: dict[str, PublicIdentity] = {}
        self._model: vertical_lr.LrCoordinator | secureboost.SbCoordinator | None = None

    @property
    def paillier_fingerprint(self) -> str | None:
        """The Paillier key of the model run in progress (for the audit trail): the coordinator's
        for the scorecard, the bank's (announced in its ``sb.ready``) for SecureBoost."""
        return _key_fingerprint(self._model)

    def _send(self, kind: str, role: str, meta: dict, step: int) -> Message:
        return Message(kind, COORDINATOR, role, self.run_id, step, meta)

    def _each(self, replies: list[Message], kind: str) -> dict[str, Message]:
        got = {m.sender: m for m in replies if m.kind == kind}
        if set(got) != set(self.roles) or len([m for m in replies if m.kind == kind]) != len(self.roles):
            raise ProtocolError(f"expected one {kind} from each of {self.roles}, got from {sorted(got)}")
        return got

    def _publish(self, main: str):
        """Scores from the bank, reason codes from every node, limits (capacity at its owner)."""
        pub = self.publication
        replies = yield [self._send(PUBLISH, r, {"main": main, "reasons": pub.reasons}, 3) for r in self.roles]
        bank = [m for m in replies if m.kind == SCORES]
        hosts = {m.sender: m for m in replies if m.kind == REASONS}
        if [m.sender for m in bank] != ["bank"] or set(hosts) != set(self.roles[1:]) or len(replies) != len(self.roles):
            raise ProtocolError("publication: expected scores from the bank and reason codes from every host")
        doc = _from_json_payload(bank[0], "scores")
        ids, pd_ = doc.get("ids"), np.asarray(doc.get("pd"), dtype=float)
        if not isinstance(ids, list) or len(ids) != len(pd_) or not np.all((pd_ >= 0) & (pd_ <= 1)):
            raise ProtocolError(f"{bank[0].describe()}: IDs and probabilities must be equally long, probabilities in [0, 1]")
        trees = self.settings.model == "secureboost"
        reasons = [doc.get("reasons")] + [_host_reasons(doc, r, _from_json_payload(hosts[r], "reason codes"), pub.reasons,
                                                        trees) for r in self.roles[1:]]
        for role, rows in zip(self.roles, reasons):
            _check_reason_rows(role, rows, len(ids), pub.reasons)
        points, grades, caps = pub.grade(pd_)
        limits = np.asarray(caps, dtype=np.int64)
        if pub.capacity is not None:
            owner = pub.capacity.node
            if owner not in self.roles:
                raise InputError(f"capacity term names node {owner!r}, which is not in this job")
            replies = yield [Message(CAPACITY, COORDINATOR, owner, self.run_id, 4, {"capacity": asdict(pub.capacity)},
                                     _json_payload(limits.tolist()))]
            got = [m for m in replies if m.kind == LIMITS and m.sender == owner]
            if len(got) != 1 or len(replies) != 1:
                raise ProtocolError(f"publication: expected the limits from {owner}")
            capped = np.asarray(_from_json_payload(got[0], "limits"), dtype=np.int64)
            if capped.shape != limits.shape or np.any(capped > limits) or np.any(capped < 0):
                raise ProtocolError(f"{got[0].describe()}: limits must be between 0 and each enterprise's cap")
            limits = capped
        codes = [";".join(f"{role}:{name}" for role, rs in zip(self.roles, row) for name in rs)
                 for row in zip(*reasons)]
        return {"uscc": ids, "score": np.asarray(points, dtype=float).tolist(), "grade": list(map(str, grades)),
                "pd": pd_.tolist(), "limit": limits.tolist(), "reason_codes": codes}

    def _sub(self, protocol, first: list[Message] = (), extra_kind: str | None = None):
        """Run a sub-protocol to its end. Messages in ``first`` go out with its first round; their
        replies (of ``extra_kind``, one per node) are checked and kept from the sub-protocol."""
        outgoing = list(first) + protocol.start()
        while True:
            replies = yield outgoing
            if extra_kind is not None:
                self._each(replies, extra_kind)
                replies, extra_kind = [m for m in replies if m.kind != extra_kind], None
            outgoing = protocol.advance(replies)
            if not outgoing:
                return

    def _model_coordinator(self, run_id: str, parties: list[str]):
        s, train = self.settings, self.task == "train"
        progress = lambda rec, name=run_id: self.on_event("iteration", {"model": name, **rec})  # noqa: E731
        if s.model == "secureboost":
            return secureboost.SbCoordinator(run_id, parties, s.sb_config(), train=train,
                                             on_progress=lambda rec: progress({"iteration": rec["tree"], **rec}))
        return vertical_lr.LrCoordinator(run_id, parties, s.lr_config(), pool=self.pool, deployment=self.deployment,
                                         train=train, on_progress=progress)

    def _run(self):
        started = time.perf_counter()
        s = self.settings
        replies = yield [self._send(HELLO, r, {"settings": asdict(s)}, 0) for r in self.roles]
        info = self._each(replies, INFO)
        self.result["nodes"] = {r: {"rows": meta_int(m, "rows"), "features": meta_int(m, "features")} for r, m in info.items()}
        identities = {r: m.meta["identity"] for r, m in info.items()}
        self.identities = {r: PublicIdentity.from_dict(doc) for r, doc in identities.items()}
        self.result["identities"] = {r: pub.fingerprint for r, pub in self.identities.items()}
        self.on_event("validated", self.result["nodes"])
        peers = [self._send(PEERS, r, {"peers": identities}, 1) for r in self.roles]
        aligner = psi.PsiCoordinator(f"{self.run_id}/psi", self.roles)
        yield from self._sub(aligner, peers)
        self.result["intersection"] = aligner.size
        self.on_event("aligned", {"intersection": aligner.size, "hosts_common": aligner.hosts_common})
        if aligner.size < 20:
            raise InputError(f"only {aligner.size} enterprises are known to every node; too few to train a model")
        main = f"{self.run_id}/{s.run_suffix}"
        runs = {main: self.roles}
        if s.bank_only_baseline and self.task == "train":
            runs[f"{main}-bank"] = ["bank"]
        split = [self._send(SPLIT if self.task == "train" else LOAD, r, {"runs": runs}, 2) for r in self.roles]
        models = {}
        for i, (run_id, parties) in enumerate(runs.items()):
            model = self._model = self._model_coordinator(run_id, parties)
            yield from self._sub(model, split if i == 0 else [], PREPARED if i == 0 else None)
            models[run_id] = model
        context = {}
        if self.publication is not None:
            pub = self.result["publication"] = yield from self._publish(main)
            table = self.publication.loss_table
            context = {"grades": pub["grade"], "limits": pub["limit"],
                       "loss_table": table(np.array(pub["grade"]), np.array(pub["pd"]), np.array(pub["limit"])) if table else None}
        context.update(run={"run_id": self.run_id, "seconds": round(time.perf_counter() - started, 1), "rounds": self.rounds,
                            "model": asdict(s)},
                       nodes=self.result["nodes"], intersection=self.result["intersection"],
                       fingerprints={"paillier": _key_fingerprint(models[main]), "identities": self.result["identities"],
                                     "limits signing key": self.publication.signer if self.publication else None})
        replies = yield [Message(REPORT, COORDINATOR, r, self.run_id, 5, {"main": main},
                                 _json_payload(context) if r == "bank" else b"") for r in self.roles]
        reported = self._each(replies, REPORTED)["bank"].meta.get("metrics", {})
        model = models[main]
        self.result.update(
            metrics=reported.get(main, {}), bank_only=reported.get(f"{main}-bank"), model=s.model,
            history=model.history, evaluations=model.evaluations,
            key_fingerprint=_key_fingerprint(model), seconds=time.perf_counter() - started)
        if s.model == "secureboost":
            self.result["trees"] = model.trees
        self.on_event("finished", self.result)


def _importance_table(bank: secureboost.SbParty) -> pd.DataFrame:
    """The bank's importance view: own features by name, each host's splits by record number."""
    imp = bank.importance()
    rows = [{"party": "bank", "feature": v.get("name", f"feature {j}"), "splits": v["splits"], "gain": v["gain"]}
            for j, v in imp["features"].items()]
    rows += [{"party": host, "feature": f"record {r}", "splits": 1, "gain": gain}
             for host, records in imp["host_records"].items() for r, gain in records.items()]
    return pd.DataFrame(rows, columns=["party", "feature", "splits", "gain"]).sort_values("gain", ascending=False,
                                                                                        ignore_index=True)


def _key_fingerprint(model) -> str | None:
    if isinstance(model, secureboost.SbCoordinator):
        return model.key_fingerprint
    return model.keypair.public_key.fingerprint if model is not None and model.keypair is not None else None


def _check_reason_rows(role: str, rows, n: int, top: int) -> None:
    """One node's published reason codes: a list per aligned row of at most ``top`` feature names."""
    if not isinstance(rows, list) or len(rows) != n:
        raise ProtocolError(f"publication: {role} must give reason codes for every one of the {n} aligned rows")
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) > top or not all(_is_name(v) for v in row):
            raise ProtocolError(f"publication: {role}'s reason codes for row {i} must be at most {top} feature names "
                                f"without ';' or ':' (got {str(row)[:80]})")


def _is_name(value) -> bool:
    return isinstance(value, str) and bool(value) and ";" not in value and ":" not in value


def _host_reasons(bank_doc: dict, host: str, host_doc: dict, top: int, trees: bool) -> list:
    """A host's reason codes per row: its own (scorecard), or the bank's ranked record numbers of the
    host's splits joined with the host's names for them (trees; records of one feature merge)."""
    if not trees:
        return host_doc.get("reasons")
    if "reasons" in host_doc:
        raise ProtocolError(f"publication: {host} sent its own reason codes; in SecureBoost they come from the bank's "
                            f"ranking and {host}'s record names")
    ranked = bank_doc.get("host_records")
    names, records = host_doc.get("record_names"), ranked.get(host) if isinstance(ranked, dict) else None
    if not isinstance(names, list) or not isinstance(records, list):
        raise ProtocolError(f"publication: no reason codes for {host} (its record names and the bank's ranking)")
    if not all(_is_name(v) for v in names):
        raise ProtocolError(f"publication: {host}'s record names must be non-empty feature names without ';' or ':'")
    out = []
    for row in records:
        if not isinstance(row, list) or not all(isinstance(r, int) and 0 <= r < len(names) for r in row):
            raise ProtocolError(f"publication: the bank ranked records {row!r} that {host} does not have")
        out.append(list(dict.fromkeys(str(names[r]) for r in row))[:top])
    return out
