"""The coordinator's script for a whole job: validate, align (PSI), train or load the model, publish, report."""

from __future__ import annotations

import time
from dataclasses import asdict

import numpy as np

from fedcredit.common.errors import ProtocolError
from fedcredit.common.wire import COORDINATOR, Message, meta_int
from fedcredit.crypto import PublicIdentity
from fedcredit.protocols import psi, secureboost, vertical_lr, woe
from fedcredit.protocols.errors import InputError
from fedcredit.protocols.job.baseline import trained_at_bank
from fedcredit.protocols.job.lockstep import lockstep
from fedcredit.protocols.job.monitoring import collect_csi
from fedcredit.protocols.job.publication import check_reason_rows, host_reasons
from fedcredit.protocols.job.settings import MIN_ALIGNED, ModelSettings, Publication
from fedcredit.protocols.job.wire import (
    ABORT, CAPACITY, FIGURES, HELLO, INFO, LIMITS, LOAD, PEERS, PREPARED, PUBLISH, QUALITY, REASONS, REPORT, REPORTED,
    SCORES, SPLIT, _from_json_payload, _json_payload)
from fedcredit.protocols.script import ScriptedCoordinator
from fedcredit.scoring.quality import QualityGateError, judge, refusal


class JobCoordinator(ScriptedCoordinator):
    """The coordinator's script for a whole job; composes the PSI and LR coordinators."""

    name = "job"

    def __init__(self, run_id: str, roles: list[str], settings: ModelSettings, *, pool=None, on_event=None,
                 deployment: bool | None = None, publication: Publication | None = None, task: str = "train",
                 bank_name: str = "bank", purpose: str = "credit-scoring", submitter: dict | None = None,
                 keypairs: dict | None = None, saved: dict | None = None):
        if task not in ("train", "score"):
            raise InputError(f"task must be 'train' or 'score', got {task!r}")
        self.task = task
        # what every node's policy judges the job by (its HELLO): the label-holding bank's node name, the
        # purpose its consent lists name, and (deployments) the verified submitter
        self.bank_name, self.purpose, self.submitter = bank_name, purpose, submitter
        # scoring runs on a federation: the saved model's training run id ("model") and the previous publication's
        # run id ("previous"), by which each node finds its own saved part and the distribution it last published
        self.saved = {k: str(v) for k, v in (saved or {}).items() if v} if task == "score" else {}
        if not roles or roles[0] != "bank" or len(set(roles)) != len(roles) or len(roles) < 2:
            raise InputError(f"a job needs the bank first and at least one host, all distinct; got {roles!r}")
        self.run_id, self.roles, self.settings = run_id, list(roles), settings
        self.pool, self.on_event, self.deployment = pool, on_event or (lambda kind, info: None), deployment
        self.result: dict = {}
        self.publication = publication
        self.identities: dict[str, PublicIdentity] = {}
        self._model: vertical_lr.LrCoordinator | secureboost.SbCoordinator | None = None  # the main model run
        self._runs: dict = {}  # model run id -> its coordinator
        self._keypairs = dict(keypairs or {})  # model run id -> Paillier keypair to reuse (a resumed job)

    def generated_keypairs(self) -> dict:
        """The Paillier keypairs this coordinator holds (model run id -> keypair): the only randomness of
        its state, which a coordinator journal keeps so that a resumed job replays to the same state."""
        return {run_id: m.keypair for run_id, m in self._runs.items() if getattr(m, "keypair", None) is not None}

    @property
    def paillier_fingerprint(self) -> str | None:
        """The Paillier key of the model run in progress (for the audit trail): the coordinator's
        for the scorecard, the bank's (announced in its ``sb.ready``) for SecureBoost."""
        return _key_fingerprint(self._model)

    def paillier_fingerprint_for(self, run_id: str) -> str | None:
        """The Paillier key of the model run ``run_id`` (model runs share rounds); else ``paillier_fingerprint``."""
        model = self._runs.get(run_id)
        return _key_fingerprint(model) if model is not None else self.paillier_fingerprint

    def abort_messages(self, exc: BaseException) -> list[Message]:
        """``job.abort`` for every node of a job that failed after its first message (none before).

        The nodes learn the step and the kind of failure only, never the error's text: it may
        quote another node's file, columns or figures.
        """
        if getattr(self, "_script", None) is None:
            return []
        reason = f"the coordinator stopped the job at step {self.rounds} ({type(exc).__name__})"
        return [Message(ABORT, COORDINATOR, r, self.run_id, self.rounds, {"reason": reason}) for r in self.roles]

    def close_aborted(self, exc: BaseException) -> None:
        """Without an audit trail there is nothing to close (``audited`` records the abort)."""

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
        reasons = [doc.get("reasons")] + [host_reasons(doc, r, _from_json_payload(hosts[r], "reason codes"), pub.reasons,
                                                        trees) for r in self.roles[1:]]
        for role, rows in zip(self.roles, reasons):
            check_reason_rows(role, rows, len(ids), pub.reasons)
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

    def _quality_request(self, runs: list[str]) -> list[Message]:
        """Before anything is published: the bank's figures on held-out rows, for the policy's gate."""
        return [self._send(QUALITY, "bank", {"runs": runs}, 3)]

    def _quality_verdict(self, main: str, runs: list[str], replies: list[Message]) -> None:
        """The gate on the bank's figures: a failing model raises ``QualityGateError`` (nothing has
        been written or published yet), unless the publication allows a weak model: then the
        override is recorded."""
        pub = self.publication
        got = [m for m in replies if m.kind == FIGURES and m.sender == "bank"]
        if len(got) != 1 or len(replies) != 1:
            raise ProtocolError("quality gate: expected the bank's figures on held-out rows, and nothing else")
        figures = got[0].meta.get("figures")
        if not isinstance(figures, dict) or set(figures) != set(runs) or not all(map(_is_figures, figures.values())):
            raise ProtocolError(f"{got[0].describe()}: figures must give rows, n and auc for each of {runs}")
        verdict = judge(pub.quality, figures[main], figures.get(f"{main}-bank"))
        if not verdict["passed"]:
            if not pub.allow_weak_model:
                raise QualityGateError(refusal(verdict))
            verdict["override"] = True
        self.result["quality"] = verdict
        self.on_event("quality", verdict)

    def _align(self, identities: dict):
        """PSI up to its last round, which is returned unsent: the bank's final list is known by then,
        so a too small intersection is refused before any host learns it, and the job's next
        messages can go with that round."""
        aligner = psi.PsiCoordinator(f"{self.run_id}/psi", self.roles)
        outgoing = [self._send(PEERS, r, {"peers": identities}, 1) for r in self.roles] + aligner.start()
        while aligner.size < 0:
            replies = yield outgoing
            outgoing = aligner.advance(replies)
        self.result["intersection"] = aligner.size
        self.on_event("aligned", {"intersection": aligner.size, "hosts_common": aligner.hosts_common})
        if aligner.size < MIN_ALIGNED:
            rows = ", ".join(f"{r} {v['rows']:,} rows" for r, v in self.result["nodes"].items())
            raise InputError(f"only {aligner.size} enterprises are known to every node (needed: at least {MIN_ALIGNED}, "
                             f"so that training, validation and test rows each hold some); {rows}; known to every host: "
                             f"{aligner.hosts_common:,}. Check that every node uses the same ID column and ID kind")
        return aligner, outgoing

    def _models(self, main: str, runs: dict[str, list[str]], aligner: psi.PsiCoordinator, first: list[Message]):
        """Every model run (the joint one, the bank-only baseline) in the same rounds, starting with
        the alignment's last round (``first``); the quality gate's request goes with their last round.
        Returns the model coordinators by run id."""
        split = [self._send(SPLIT if self.task == "train" else LOAD, r, {"runs": runs}, 2) for r in self.roles]
        models = {run_id: self._model_coordinator(run_id, parties) for run_id, parties in runs.items()
                  if not trained_at_bank(parties)}  # a bank-only baseline is trained inside the bank
        self._runs, self._model = models, models[main]
        gate = self.publication is not None and self.publication.quality is not None and self.task == "train"
        late: list[Message] = []

        def other(round_no: int, replies: list[Message]) -> None:
            if round_no == 0:
                self._each(replies, PREPARED)
                replies = [m for m in replies if m.kind != PREPARED]
            late.extend(replies)

        tail = (lambda: self._quality_request(list(runs))) if gate else None
        if self.task == "train":  # bins and features are decided first: the models start with the decisions
            binning = woe.WoeCoordinator(f"{self.run_id}/woe", self.roles, self.settings.woe_config())
            staged = {aligner.run_id: aligner, binning.run_id: binning}
            later = lambda: models if binning.ready else None  # noqa: E731
            sent = yield from lockstep(staged, first + split + binning.start(), other, tail, later)
        else:
            first = first + split + [m for model in models.values() for m in model.start()]
            sent = yield from lockstep({aligner.run_id: aligner, **models}, first, other, tail)
        if gate and not sent:
            late.extend((yield self._quality_request(list(runs))))
        if gate:
            self._quality_verdict(main, list(runs), late)
        elif late:
            raise ProtocolError(f"unexpected replies {[m.describe() for m in late]} during model training")
        return models

    def _model_coordinator(self, run_id: str, parties: list[str]):
        s, train = self.settings, self.task == "train"
        progress = lambda rec, name=run_id: self.on_event("iteration", {"model": name, **rec})  # noqa: E731
        if s.model == "secureboost":
            return secureboost.SbCoordinator(run_id, parties, s.sb_config(), train=train,
                                             on_progress=lambda rec: progress({"iteration": rec["tree"], **rec}))
        return vertical_lr.LrCoordinator(run_id, parties, s.lr_config(), pool=self.pool, deployment=self.deployment,
                                         train=train, on_progress=progress, keypair=self._keypairs.get(run_id))

    def _run(self):
        started = time.perf_counter()
        s = self.settings
        job = {"bank": self.bank_name, "purpose": self.purpose, "task": self.task, "submitter": self.submitter,
               **self.saved}
        replies = yield [self._send(HELLO, r, {"settings": asdict(s), **job}, 0) for r in self.roles]
        info = self._each(replies, INFO)
        self.result["nodes"] = {r: {"rows": meta_int(m, "rows"), "features": meta_int(m, "features")} for r, m in info.items()}
        identities = {r: m.meta["identity"] for r, m in info.items()}
        self.identities = {r: PublicIdentity.from_dict(doc) for r, doc in identities.items()}
        self.result["identities"] = {r: pub.fingerprint for r, pub in self.identities.items()}
        self.on_event("validated", self.result["nodes"])
        aligner, last = yield from self._align(identities)
        main = f"{self.run_id}/{s.run_suffix}"
        runs = {main: self.roles}
        if s.bank_only_baseline and self.task == "train":
            runs[f"{main}-bank"] = ["bank"]
        models = yield from self._models(main, runs, aligner, last)
        context = {}
        if self.publication is not None:
            pub = self.result["publication"] = yield from self._publish(main)
            table = self.publication.loss_table
            context = {"grades": pub["grade"], "limits": pub["limit"],
                       "loss_table": table(np.array(pub["grade"]), np.array(pub["pd"]), np.array(pub["limit"])) if table else None}
        # the job's wall time and rounds as every output states them: up to the report, whose round is the last
        seconds = round(time.perf_counter() - started, 1)
        context.update(run={"run_id": self.run_id, "seconds": seconds, "rounds": self.rounds + 1, "model": asdict(s)},
                       centralized_auc=self.publication.centralized_auc if self.publication else None,
                       nodes=self.result["nodes"], intersection=self.result["intersection"],
                       fingerprints={"paillier": _key_fingerprint(models[main]), "identities": self.result["identities"],
                                     "limits signing key": self.publication.signer if self.publication else None})
        if "quality" in self.result:
            context["quality"] = {**self.result["quality"], "grade_order": self.publication.grade_order,
                                  "grade_order_tolerance": self.publication.quality.grade_order_tolerance}
        scaling = self.publication.scaling if self.publication is not None else None
        replies = yield [Message(REPORT, COORDINATOR, r, self.run_id, 5, {"main": main, "scaling": scaling},
                                 _json_payload(context) if r == "bank" else b"") for r in self.roles]
        reported_by = self._each(replies, REPORTED)
        bank_report = reported_by["bank"].meta
        self.result.update(collect_csi(reported_by))  # scoring runs: one CSI per feature from its owner
        reported = bank_report.get("metrics", {})
        if "quality" in self.result:
            self.result["quality"]["grade_order_warnings"] = _warnings(bank_report.get("grade_order"))
        model = models[main]
        self.result.update(
            metrics=reported.get(main, {}), bank_only=reported.get(f"{main}-bank"), model=s.model,
            history=model.history, evaluations=model.evaluations,
            key_fingerprint=_key_fingerprint(model), seconds=seconds)
        if s.model == "secureboost":
            self.result["trees"] = model.trees
        elif len(model.regularization) > 1:  # l2 chosen by the bank's validation AUC
            self.result["regularization"] = {"chosen_l2": model.l2, "path": model.regularization}
        self.on_event("finished", self.result)


def _is_figures(doc) -> bool:
    """One model's held-out figures as the bank reports them: ``{"rows", "n", "auc"}``."""
    auc = doc.get("auc") if isinstance(doc, dict) else None
    return (isinstance(doc, dict) and set(doc) == {"rows", "n", "auc"} and doc["rows"] in ("validation", "test")
            and isinstance(doc["n"], int) and doc["n"] >= 0
            and (auc is None or (isinstance(auc, float) and 0.0 <= auc <= 1.0)))


def _warnings(doc) -> list[dict]:
    """The bank's grade-order warnings (a list of small dicts), or a ProtocolError."""
    if doc is None:
        return []
    if not isinstance(doc, list) or not all(isinstance(w, dict) and {"better", "worse"} <= set(w) for w in doc):
        raise ProtocolError("job.reported: grade_order must list warnings naming the better and the worse grade")
    return doc


def _key_fingerprint(model) -> str | None:
    if isinstance(model, secureboost.SbCoordinator):
        return model.key_fingerprint
    return model.keypair.public_key.fingerprint if model is not None and model.keypair is not None else None
