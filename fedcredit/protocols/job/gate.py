"""A node's gate: its own policy judges a job before the node reads its data (docs/governance.md).

The node agent opens the gate with the job's HELLO: the policy (read afresh for every job, so an
edited policy holds from the next job on) checks the bank, task, model, columns and key size;
the budget ledger counts the job; the consent list picks the enterprises that may enter the
node's side of the alignment. Later the gate checks the aligned population (before any feature
leaves the node) and, for scoring runs, the daily number of scored enterprises.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np

from fedcredit.common.errors import ProtocolError
from fedcredit.common.wire import Message
from fedcredit.data.io import read_header
from fedcredit.governance import (
    BudgetLedger, ConsentSet, JobFacts, NodePolicy, default_ledger, load_consent, resolve_policy)
from fedcredit.governance.consent import normalize_id
from fedcredit.protocols.job.settings import ModelSettings, NodeConfig

DEFAULT_PURPOSE = "credit-scoring"


def utc_today() -> date:
    return datetime.now(timezone.utc).date()


def job_columns(cfg: NodeConfig) -> tuple[str, ...]:
    """The columns a job would use at this node: its listed features, else every declared feature column its
    file holds (read from the file's header, no row is read)."""
    if cfg.features is not None:
        return tuple(cfg.features)
    header = set(read_header(cfg.data))
    return tuple(c.name for c in cfg.schema().feature_columns if c.name in header)


def job_facts(cfg: NodeConfig, msg: Message, settings: ModelSettings, verified: dict | None = None) -> JobFacts:
    """What the HELLO asks of this node (bank, purpose, task, submitter) with the model settings and columns.

    ``verified`` is the submitter this node checked itself (deployments: the signature on the run
    config, ``fedcredit.flower.trust``). The policy judges that one, never the coordinator's word;
    a HELLO that names another submitter is refused as a coordinator misstating the job.
    """
    meta = msg.meta
    bank, purpose, task = meta.get("bank", "bank"), meta.get("purpose", DEFAULT_PURPOSE), meta.get("task", "train")
    submitter = meta.get("submitter")
    if not all(isinstance(v, str) and v for v in (bank, purpose, task)) or not isinstance(submitter, (dict, type(None))):
        raise ProtocolError(f"{msg.describe()}: bank, purpose and task must be names, submitter an object or null")
    if verified is not None:
        if submitter is not None and submitter.get("fingerprint") != verified.get("fingerprint"):
            raise ProtocolError(f"{msg.describe()}: the coordinator names submitter {submitter.get('fingerprint')}, "
                                f"but this node verified {verified.get('fingerprint')}")
        submitter = {"name": verified.get("name"), "fingerprint": verified.get("fingerprint")}
    return JobFacts(cfg.name or cfg.role, bank, purpose, task, settings.model, settings.key_bits, job_columns(cfg), submitter)


@dataclass
class NodeGate:
    """One job's policy at one node: the rules, where its budget is counted, and the consent set it uses."""

    node: str
    run_id: str
    policy: NodePolicy
    ledger: BudgetLedger | None
    consent: ConsentSet | None
    today: date

    @classmethod
    def open(cls, cfg: NodeConfig, msg: Message, settings: ModelSettings,
             verified: dict | None = None) -> "NodeGate | None":
        """The gate for the job ``msg`` (its HELLO) starts; ``None`` when the node has no policy (a local run
        without one). Raises ``PolicyRefusal`` before the node reads its data."""
        policy = resolve_policy(cfg.policy)
        if policy is None:
            return None
        facts = job_facts(cfg, msg, settings, verified)
        policy.check(facts)
        where = Path(cfg.ledger) if cfg.ledger else default_ledger(policy)
        if where is None:
            raise ProtocolError(f"{cfg.name or cfg.role}: the node's policy has a budget but no ledger file to count it in")
        today = utc_today()
        ledger = BudgetLedger(where)
        consent = None
        if policy.consent:
            consent = load_consent(policy.consent).allowed_ids(facts.bank, facts.purpose, today)
        ledger.admit_job(policy, cfg.name or cfg.role, msg.run_id, today)
        return cls(cfg.name or cfg.role, msg.run_id, policy, ledger, consent, today)

    def consented(self, ids: np.ndarray) -> np.ndarray:
        """Which of the node's rows may enter the alignment (all when the policy names no consent file)."""
        if self.consent is None:
            return np.ones(len(ids), dtype=bool)
        return np.fromiter((normalize_id(str(i)) in self.consent.ids for i in ids), dtype=bool, count=len(ids))

    def aligned(self, rows: int, scoring: bool) -> None:
        """The intersection is known: ``min_population``, and for a scoring run ``max_scored_per_day``."""
        self.policy.check_population(self.node, rows)
        if scoring:
            self.ledger.admit_scored(self.policy, self.node, self.run_id, rows, self.today)
