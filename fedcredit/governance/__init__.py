"""A data holder's own rules for the jobs it takes part in: its node policy, its budget and its consent list.

Nothing here knows a protocol: the node agent (``fedcredit.protocols.job.node``) gathers the
facts of a job (bank, purpose, task, model, columns, key size, population) and asks the
policy; the policy answers with nothing or a ``PolicyRefusal`` naming the rule. See
docs/governance.md.
"""

from fedcredit.governance.consent import ConsentList, ConsentSet, load_consent
from fedcredit.governance.ledger import BudgetLedger
from fedcredit.governance.policy import (
    DEFAULT, DEFAULT_POLICY, TASKS, BankGrant, JobFacts, NodePolicy, PolicyRefusal, default_ledger, load_policy,
    policy_from_table, resolve_policy)

__all__ = [
    "DEFAULT", "DEFAULT_POLICY", "TASKS", "BankGrant", "BudgetLedger", "ConsentList", "ConsentSet", "JobFacts",
    "NodePolicy", "PolicyRefusal", "default_ledger", "load_consent", "load_policy", "policy_from_table", "resolve_policy",
]
