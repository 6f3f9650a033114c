"""A data holder's end of the job: it loads and validates its own file, then hands each message to the
phase's party (PSI, then the model run's), and keeps its model part, scores and report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fedcredit.common.errors import FedCreditError, ProtocolError
from fedcredit.common.wire import COORDINATOR, Message, expect, meta_int, meta_str
from fedcredit.crypto import Identity, PublicIdentity
from fedcredit.data.binning import FeaturePrep
from fedcredit.data.validate import load_node
from fedcredit.governance import PolicyRefusal
from fedcredit.protocols import psi, secureboost, vertical_lr, woe
from fedcredit.protocols.design import Design
from fedcredit.protocols.errors import InputError
from fedcredit.protocols.job.baseline import train_alone, trained_at_bank
from fedcredit.protocols.job.development import node_development, tree_directions
from fedcredit.protocols.job.gate import NodeGate
from fedcredit.protocols.job.monitoring import report_stability
from fedcredit.protocols.job.publication import MAX_REASONS
from fedcredit.protocols.job.settings import SCORED, ModelSettings, NodeConfig, split_assignment
from fedcredit.protocols.job.wire import (
    ABORT, CAPACITY, FIGURES, HELLO, INFO, LIMITS, LOAD, PEERS, PREPARED, PUBLISH, QUALITY, REASONS, REPORT, REPORTED,
    SCORES, SPLIT, _from_json_payload, _json_payload)
from fedcredit.protocols.relay import SealedRelay
from fedcredit.scoring import metrics
from fedcredit.scoring.policy import Capacity


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
        self.woe: woe.WoeParty | None = None  # training runs: this node's WoE/IV binning and feature selection
        self._pending: dict | None = None  # the model runs to install once this node's features are decided
        self._frame: pd.DataFrame | None = None  # training runs: the aligned rows' features (development report)
        self.reference_scores: np.ndarray | None = None  # bank, scoring runs: training scores of the saved model
        self.saved_split: np.ndarray | None = None  # bank, scoring runs: each aligned row's split in the saved model's run
        self.development = None  # training runs: this node's development record (its report section)
        self.audit = None  # this node's AuditWriter, created with the job's first message when it has an out_dir
        self.gate: NodeGate | None = None  # this job under the node's own policy (None: a local run without one)
        self.verified_submitter: dict | None = None  # deployments: the job's signer as this node verified it
        self._final_head: dict | None = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["pool"] = None
        for party in state["models"].values():
            party.pool = None
        if state.get("psi") is not None:
            state["psi"]._pool = None
        if state.get("woe") is not None:
            state["woe"].pool = None
        return state

    def attach_pool(self, pool) -> None:
        self.pool = pool
        for party in self.models.values():
            party.pool = pool
        if self.psi is not None:
            self.psi._pool = pool
        if self.woe is not None:
            self.woe.pool = pool

    @staticmethod
    def ends_job(messages: list[Message]) -> bool:
        """True when ``messages`` hold the job's last message to a node (``job.report``): a transport may
        release the node's worker pool after handling them."""
        return any(m.kind == REPORT for m in messages)

    def handle(self, msg: Message) -> list[Message]:
        """Open sealed node-to-node messages, dispatch, seal replies to other nodes; audit both directions."""
        self._audit_message(msg, "received")
        wire = msg
        if self.relay is not None:
            msg = self.relay.open(msg)
        elif msg.relayed:
            raise ProtocolError(f"{msg.describe()}: node-to-node message before peers are known")
        try:
            handled = self._dispatch(msg)
        except PolicyRefusal as exc:
            self._refused(msg, exc)
            raise
        replies = [self.relay.seal(r) if self.relay is not None else r for r in handled]
        for reply in replies:
            self._audit_message(reply, "sent")
        if wire.kind == REPORT and self.audit is not None:
            self._final_head = self.audit.close()
        return replies

    def abort(self, msg: Message) -> None:
        """The job failed: end this node's audit log with a signed 'aborted' record and drop its state.

        Called with the coordinator's ``job.abort`` (whatever state the node is in, even after
        its own error); the node's final head then goes back to the coordinator's log.
        """
        if msg.kind != ABORT or msg.sender != COORDINATOR or msg.receiver != self.role:
            raise ProtocolError(f"{msg.describe()}: not this node's job.abort")
        reason = meta_str(msg, "reason")
        if self.audit is not None and not self.audit.closed:
            self.audit.record(msg, direction="received")
            self._final_head = self.audit.abort(msg.step, reason)
        elif self.audit is not None and self._final_head is None:  # closed by this node's refusal: its head
            self._final_head = self.audit.checkpoint()
        self._drop_state()

    def _refused(self, msg: Message, exc: PolicyRefusal) -> None:
        """This node's policy refused the job: its audit log ends here as aborted, naming the rule (the
        coordinator's ``job.abort`` then finds it closed), and its state goes."""
        if self.audit is not None and not self.audit.closed:
            self._final_head = self.audit.abort(msg.step, f"refused under this node's policy: {exc}")
        self._drop_state()

    def _drop_state(self) -> None:
        self.models.clear()
        self.psi = self.features = self.labels = self.ids = self.woe = self._pending = self._frame = None

    def abandon(self, step: int, reason: str) -> None:
        """The coordinator never came back: end the audit log as aborted (the node's own reason) and drop the state."""
        if self.audit is not None and not self.audit.closed:
            self._final_head = self.audit.abort(step, reason)
        self.models.clear()
        self.psi = self.features = self.labels = self.ids = self.woe = self._pending = self._frame = None

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
            self.audit.record(msg, direction=direction, paillier_key=keys[0] if keys else None)

    def _dispatch(self, msg: Message) -> list[Message]:
        family = msg.kind.split(".", 1)[0]
        if family == "job":
            handlers = {HELLO: self._hello, PEERS: self._peers, SPLIT: self._split, REPORT: self._report,
                        PUBLISH: self._publish, CAPACITY: self._capacity, LOAD: self._load, QUALITY: self._figures}
            return handlers[expect(msg, tuple(handlers), receiver=self.role, sender=COORDINATOR).kind](msg)
        if family == "psi":
            if self.psi is None:
                raise ProtocolError(f"{msg.describe()}: alignment has not been set up at {self.role}")
            return self.psi.handle(msg)
        if family == "woe":
            if self.woe is None:
                raise ProtocolError(f"{msg.describe()}: binning has not been set up at {self.role}")
            replies = self.woe.handle(msg)
            if self.woe.decided and self._pending is not None:
                self._install_decided()
            elif msg.kind == woe.SELECTED and self.settings.tree_monotone:
                self._constrain_trees()
            return replies
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
        self.gate = NodeGate.open(cfg, msg, self.settings, self.verified_submitter)  # the node's policy, before it reads a row
        node = load_node(cfg.data, schema)
        self.ids, self.features, self.labels = node.ids, cfg.pick_features(node), node.label
        if self.gate is not None and self.gate.consent is not None:  # only consented enterprises enter the PSI
            keep = self.gate.consented(node.ids)
            self.ids, self.features = self.ids[keep], self.features[keep].reset_index(drop=True)
            self.labels = self.labels[keep] if self.labels is not None else None
            if self.audit is not None:
                self.audit.record_consent(self.gate.consent.count, self.gate.consent.digest)
        self.psi = psi.PsiParty(self.role, list(self.ids), id_kind=cfg.id_kind, pool=self.pool)
        info = {"rows": len(self.ids), "features": self.features.shape[1], "identity": self.identity.public.to_dict()}
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
        if self.gate is not None:  # before any feature statistic leaves this node
            self.gate.aligned(len(self.aligned_rows), scoring=False)
        self.split = split_assignment(self.ids[self.aligned_rows], s.seed, s.train, s.validation)
        frame = self.features.iloc[self.aligned_rows].reset_index(drop=True)
        train_rows, val_rows = np.flatnonzero(self.split == 0), np.flatnonzero(self.split == 1)
        raw = FeaturePrep.fit(frame.iloc[train_rows], "binned", s.n_bins, self.config.categorical)
        labels = self.labels[self.aligned_rows][train_rows] if self.role == vertical_lr.BANK else None
        self.woe = woe.woe_party(self.role, raw, frame.iloc[train_rows].reset_index(drop=True), labels,
                                 publish_names=self.config.publish_feature_names, pool=self.pool)
        self._pending = {"runs": msg.meta.get("runs", {}), "frame": frame, "train": train_rows, "val": val_rows}
        return [Message(PREPARED, self.role, COORDINATOR, msg.run_id, msg.step + 1, {"features": raw.n_features})]

    def _install_decided(self) -> None:
        """The WoE step decided this node's bins and features: its model parties can be set up."""
        pending, self._pending = self._pending, None
        self.prep = self.woe.prep.subset(self.woe.prep.names, self.settings.mode)
        self._frame = pending["frame"]
        self._install(pending["runs"], pending["frame"], pending["train"], pending["val"])
        if self.settings.tree_monotone:
            self._constrain_trees()

    def _constrain_trees(self) -> None:
        """The bank's tree constraints follow the WoE trends (hosts' once their selections arrived, before any
        of their histograms)."""
        if self.role != vertical_lr.BANK:
            return
        directions = tree_directions(self.woe)
        for party in self.models.values():
            if isinstance(party, secureboost.SbParty):
                party.data.monotone = directions

    def _install(self, runs: dict, frame: pd.DataFrame, train_rows: np.ndarray, val_rows: np.ndarray, saved=None) -> int:
        """This node's party for each model run it takes part in: to train, or from its ``saved`` part;
        returns the number of its parameters."""
        s, is_bank = self.settings, self.role == vertical_lr.BANK
        labels = self.labels[self.aligned_rows] if is_bank else None
        if s.model == "secureboost":
            valid = val_rows if is_bank and s.patience and saved is None else None
            data = secureboost.TreePartyData.from_prep(self.prep, frame, train_rows, labels, valid)
            make, params = (lambda alone=False: secureboost.sb_party(self.role, data, pool=self.pool, model=saved,
                                                                     deployment=False if alone else None)), len(data.n_bins)
        else:
            train = Design(self.prep, frame.iloc[train_rows], intercept=is_bank) if saved is None else None
            data = vertical_lr.PartyData(train, Design(self.prep, frame, intercept=is_bank), train_rows, val_rows, labels)
            make, params = (lambda alone=False: vertical_lr.LrParty(self.role, data, pool=self.pool, weights=saved)), data.every.n_params
        for run_id, parties in runs.items():
            if self.role not in parties:
                continue
            alone = saved is None and trained_at_bank(parties)
            self.models[run_id] = make(alone)
            if alone:  # the bank-only baseline: trained here, nothing of it leaves this node
                train_alone(run_id, self.models[run_id], s, self.pool)
        return params

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
        from fedcredit.scoring.outputs import read_model_part, read_saved_split, read_tree_part, saved_model_kind

        if self.psi is None or self.psi.result is None:
            raise ProtocolError(f"{msg.describe()}: alignment has not finished at {self.role}")
        if self.gate is not None:
            self.gate.aligned(len(self.psi.result.rows), scoring=True)
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
        if self.role == vertical_lr.BANK:  # the training run's scores.parquet, beside its model/ folder
            self.saved_split = read_saved_split(folder.parent.parent / "scores.parquet", self.ids[self.aligned_rows])
        frame = self.features.iloc[self.aligned_rows].reset_index(drop=True)
        empty = np.zeros(0, dtype=np.int64)
        params = self._install(msg.meta.get("runs", {}), frame, empty, empty, saved)
        return [Message(PREPARED, self.role, COORDINATOR, msg.run_id, msg.step + 1, {"params": params})]

    def _evaluation_rows(self) -> np.ndarray:
        """Test rows after training; every scored row in a scoring run."""
        return self.split == 2 if (self.split == 2).any() else self.split == SCORED

    def _figures(self, msg: Message) -> list[Message]:
        """The bank's figures for the quality gate: each model's AUC on held-out rows (aggregates only)."""
        from fedcredit.scoring.quality import figures, held_out_rows

        if self.role != vertical_lr.BANK:
            raise ProtocolError(f"{msg.describe()}: only the bank holds the labels the quality gate needs")
        runs = msg.meta.get("runs")
        if not isinstance(runs, list):
            raise ProtocolError(f"{msg.describe()}: meta field 'runs' must list the model runs to judge")
        name, rows = held_out_rows(self.split)
        y = self.labels[self.aligned_rows][rows]
        doc = {run: figures(name, y, self._model(run, msg.describe()).scores[rows]) for run in runs}
        return [Message(FIGURES, self.role, COORDINATOR, msg.run_id, msg.step + 1, {"figures": doc})]

    def _grade_order(self, context: dict) -> list[dict]:
        """The bank's grade-order check on held-out rows (observed default rates per published grade)."""
        from fedcredit.scoring.quality import grade_order_warnings, held_out_rows

        quality = context.get("quality")
        if not quality or not context.get("grades"):
            return []
        name, rows = held_out_rows(self.split)
        grades = np.asarray(context["grades"], dtype=object)[rows]
        found = grade_order_warnings(grades, self.labels[self.aligned_rows][rows], quality["grade_order"],
                                     float(quality["grade_order_tolerance"]))
        return [{**w, "rows": name} for w in found]

    def _report(self, msg: Message) -> list[Message]:
        """The bank's test metrics per model (aggregates only); every node writes its own model part."""
        out = {}
        for run_id, party in self.models.items():
            if self.role == vertical_lr.BANK and party.scores is not None:
                test = self._evaluation_rows()
                y = self.labels[self.aligned_rows]
                out[run_id] = {k: v for k, v in metrics.summary(y[test], party.scores[test]).items()}
                if self.saved_split is not None:
                    out[run_id].update(_out_of_sample(self.saved_split, y, party.scores))
        context = _from_json_payload(msg, "report context") if self.role == vertical_lr.BANK and msg.payload else None
        reply = {"metrics": out}
        if context is not None and context.get("quality"):
            reply["grade_order"] = context["quality"]["grade_order_warnings"] = self._grade_order(context)
        reply.update(report_stability(self.config, msg.run_id, self.prep, self.features, self.aligned_rows, self.split))
        if self.config.out_dir:
            self.write_outputs(Path(self.config.out_dir), msg.meta.get("main"), msg.meta.get("scaling"))
            if context is not None:
                self.write_report(Path(self.config.out_dir), msg.meta.get("main"), context,
                                  out.get(msg.meta.get("main"), {}), out)
        if self.audit is not None and "checkpoint" in msg.meta:
            self.audit.record_checkpoint(msg.meta["checkpoint"])
        return [Message(REPORTED, self.role, COORDINATOR, msg.run_id, msg.step + 1, reply)]

    def points_table(self, party: vertical_lr.LrParty, scaling: dict | None) -> pd.DataFrame:
        """This node's points per bin of its selected features, on the grid its scores were summed on."""
        from fedcredit.scoring.scorecard import Scorecard, points_table

        design, scale = party.data.every, party.cfg.scale_bits
        ints, intercept = design.grid_weights(party.weights, scale)
        bins = self.woe.binning.bin_table()
        bins = bins[bins.feature.isin(self.prep.names)]
        return points_table(bins, ints, design.coefficients(party.weights), scale, Scorecard(**(scaling or {})),
                            intercept if design.intercept else None)

    def write_report(self, out: Path, main_run: str, context: dict, main_metrics: dict, all_metrics: dict) -> Path:
        """The bank's report: it alone holds the labels that ROC, KS and observed default rates need."""
        from fedcredit.scoring.report import ReportData, render_report
        from fedcredit.scoring.scorecard import grade_table

        party = self._model(main_run, f"{self.role} report")
        y = self.labels[self.aligned_rows]
        scores, test = party.scores, self._evaluation_rows()
        reference = scores[self.split == 0] if (self.split == 0).any() else self.reference_scores
        grades_df = loss = None
        if context.get("grades"):
            grades = np.asarray(context["grades"], dtype=object)
            grades_df = grade_table(grades[test], scores[test], y[test])
            loss = pd.DataFrame(context["loss_table"]) if context.get("loss_table") else None
        bank_only = [m for run, m in all_metrics.items() if run.endswith("-bank")]
        metrics_view = {"test_auc": main_metrics.get("auc"), "test_ks": main_metrics.get("ks"),
                        "test_gini": main_metrics.get("gini"), "bank_only_auc": bank_only[0]["auc"] if bank_only else None}
        data = ReportData(
            title=f"fedcredit — federated {'SecureBoost' if self.settings.model == 'secureboost' else 'scorecard'} report",
            y_test=y[test], score_test=scores[test], run={**context.get("run", {}), "model": self.settings.used_settings()},
            nodes=context.get("nodes", {}), intersection_size=context.get("intersection"),
            fingerprints=context.get("fingerprints", {}), score_train=reference, grades=grades_df,
            limits=np.asarray(context["limits"], dtype=float) if context.get("limits") else None, scores=scores,
            metrics=metrics_view, importance=_importance_table(party) if isinstance(party, secureboost.SbParty) else None,
            loss_table=loss, in_sample=bool((self.split[test] == SCORED).any()), quality=context.get("quality"),
            centralized_auc=context.get("centralized_auc"), development=self.development)
        return render_report(data, out / "report.html")

    def write_outputs(self, out: Path, main_run: str | None, scaling: dict | None = None) -> None:
        """This node's own part of the model (with its IV table and, for a binned scorecard, its points per
        bin); at the bank also its scores."""
        from fedcredit.scoring.outputs import write_model_part, write_scores, write_table_csv, write_tree_part

        party = self.models.get(main_run) if main_run else None
        if party is None:
            return
        if self.woe is not None and self.woe.decided:
            from fedcredit.scoring.development import render_development_report

            folder = out / "model" / self.role
            write_table_csv(folder / "iv.csv", self.woe.binning.selection_table())
            points = None
            if isinstance(party, vertical_lr.LrParty) and party.data.every.per_bin:
                points = self.points_table(party, scaling)
                write_table_csv(folder / "scorecard.csv", points)
            self.development = node_development(self.role, self.woe, self.prep, self._frame, self.split, party, points,
                                                self.settings.model)
            if self.role != vertical_lr.BANK:  # a host's own page: its features stay with it
                render_development_report(f"fedcredit — model development at {self.role}", self.development,
                                          folder / "report.html")
        reference = party.scores[self.split == 0] if self.role == vertical_lr.BANK and (self.split == 0).any() else None
        if isinstance(party, secureboost.SbParty):
            if not party.loaded:  # a trained model: save this node's part
                write_tree_part(out / "model" / self.role, self.role, self.prep, party.model_part(), reference)
        elif party.data.train is not None:
            write_model_part(out / "model" / self.role, self.role, self.prep, party.data.train.labels(), party.weights,
                             reference)
        if self.role == vertical_lr.BANK and party.scores is not None:
            write_scores(out / "scores.parquet", self.ids[self.aligned_rows], self.split, party.scores)


def _out_of_sample(saved_split: np.ndarray, y: np.ndarray, scores: np.ndarray) -> dict:
    """A scoring run's honest figures: how many scored rows the saved model trained or validated on, and
    AUC/KS/Gini over the rest (its test rows and enterprises it never saw), when they hold both classes."""
    in_sample = np.isin(saved_split, ("train", "validation"))
    doc = {"in_sample_rows": int(in_sample.sum())}
    rest = ~in_sample
    if len(np.unique(y[rest])) == 2:
        doc["out_of_sample"] = {**metrics.summary(y[rest], scores[rest]), "rows": int(rest.sum())}
    return doc


def _importance_table(bank: secureboost.SbParty) -> pd.DataFrame:
    """The bank's importance view: own features by name, each host's splits by record number."""
    imp = bank.importance()
    rows = [{"party": "bank", "feature": v.get("name", f"feature {j}"), "splits": v["splits"], "gain": v["gain"]}
            for j, v in imp["features"].items()]
    rows += [{"party": host, "feature": f"record {r}", "splits": 1, "gain": gain}
             for host, records in imp["host_records"].items() for r, gain in records.items()]
    return pd.DataFrame(rows, columns=["party", "feature", "splits", "gain"]).sort_values("gain", ascending=False,
                                                                                        ignore_index=True)
