"""A node's policy: which jobs it takes part in, read from a ``[policy]`` TOML table (docs/governance.md).

The table lives in a deployed node's ``node.toml`` or, for local runs, in a file of its own
(``[nodes.<name>] policy = "file.toml"`` in a job file). It is validated strictly, like the
limit policy: an unknown key is more likely a typo that would silently fall back to a default
than an intention, and a node's rules guard its data. Every error names the file and the key.

A key the table leaves out keeps the value of ``DEFAULT_POLICY``, the conservative policy of a
deployed node that has no ``[policy]`` at all: any bank, model and column, the tasks ``train``
and ``score`` (not ``query``), Paillier keys of at least 2048 bits, at least 1,000 aligned
enterprises, 20 jobs and 100,000 scored enterprises per UTC day, and (once ``query`` is allowed)
10,000 queried enterprises per UTC day.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

from fedcredit.common.errors import FedCreditError

TASKS = ("train", "score", "query")
DEFAULT = "default"  # a node config's ``policy`` value that selects DEFAULT_POLICY (a deployed node without [policy])
LEDGER_SUFFIX = ".ledger.json"  # local runs: the budget ledger beside the policy file, ``<file>.ledger.json``


class PolicyRefusal(FedCreditError):
    """A node refuses a job under its policy; the message names the node, the rule, what was asked and what is allowed."""

    def __init__(self, node: str, rule: str, detail: str):
        super().__init__(f"node {node} refused the job: policy rule {rule}: {detail}")
        self.node, self.rule, self.detail = node, rule, detail


@dataclass(frozen=True)
class BankGrant:
    """One label-holding bank a node works for; with ``keys``, only a job submitted with one of those
    registered key fingerprints counts as that bank's (deployments: the verified submitter)."""

    name: str
    keys: tuple[str, ...] = ()

    def describe(self) -> str:
        return self.name if not self.keys else f"{self.name} (keys {', '.join(self.keys)})"


@dataclass(frozen=True)
class JobFacts:
    """What a job asks of one node, gathered by the node itself before it reads its data."""

    node: str
    bank: str
    purpose: str
    task: str
    model: str
    key_bits: int
    columns: tuple[str, ...]
    submitter: dict | None = None  # deployments: {"name", "fingerprint"} of the verified submitter; else None


def _listed(values) -> str:
    return ", ".join(repr(v) for v in values) if values else "none"


@dataclass(frozen=True)
class NodePolicy:
    """A node's rules; ``None`` in an ``allowed_*`` rule means "any"."""

    allowed_banks: tuple[BankGrant, ...] | None = None
    allowed_models: tuple[str, ...] | None = None
    allowed_tasks: tuple[str, ...] = ("train", "score")
    allowed_columns: tuple[str, ...] | None = None
    min_key_bits: int = 2048
    min_population: int = 1000
    max_jobs_per_day: int = 20
    max_scored_per_day: int = 100_000
    max_queries_per_day: int = 10_000  # enterprises asked about in online queries (each ID of each query counts)
    consent: str | None = None  # path of the consent CSV (absolute)
    ledger: str | None = None   # path of the budget ledger (absolute); None: the node decides (see ledger_path)
    source: str = "the default policy"

    def check(self, facts: JobFacts) -> None:
        """Raise ``PolicyRefusal`` for the first rule ``facts`` break: bank (and its submitter's key), task,
        model, columns, key size. The population and the budget are checked when they are known."""
        self._check_bank(facts)
        refuse = lambda rule, detail: PolicyRefusal(facts.node, rule, detail)  # noqa: E731
        if facts.task not in self.allowed_tasks:
            raise refuse("allowed_tasks", f"the job's task is {facts.task!r}; this node allows {_listed(self.allowed_tasks)}")
        if self.allowed_models is not None and facts.model not in self.allowed_models:
            raise refuse("allowed_models", f"the job asks for model {facts.model!r}; this node allows "
                                           f"{_listed(self.allowed_models)}")
        if self.allowed_columns is not None:
            extra = [c for c in facts.columns if c not in self.allowed_columns]
            if extra:
                raise refuse("allowed_columns", f"the job would use column(s) {_listed(extra)}; this node allows "
                                                f"{_listed(self.allowed_columns)} (list the allowed ones as the "
                                                f"node's features)")
        if facts.key_bits < self.min_key_bits:
            raise refuse("min_key_bits", f"the job's Paillier keys have {facts.key_bits} bits; this node needs at "
                                         f"least {self.min_key_bits}")

    def _check_bank(self, facts: JobFacts) -> None:
        if self.allowed_banks is None:
            return
        grant = next((g for g in self.allowed_banks if g.name == facts.bank), None)
        if grant is None:
            raise PolicyRefusal(facts.node, "allowed_banks", f"the job's bank is {facts.bank!r}; this node allows "
                                                             f"{_listed([g.name for g in self.allowed_banks])}")
        if grant.keys:
            who = facts.submitter or {}
            if who.get("fingerprint") not in grant.keys:
                asked = (f"was submitted with key {who.get('fingerprint')}" if who.get("fingerprint")
                         else "has no verified submitter")
                raise PolicyRefusal(facts.node, "allowed_banks", f"the job for bank {facts.bank!r} {asked}; this node "
                                                                 f"allows only {grant.describe()}")

    def check_population(self, node: str, aligned: int) -> None:
        """``min_population``: small populations reveal more (checked once the intersection is known)."""
        if aligned < self.min_population:
            raise PolicyRefusal(node, "min_population", f"the job aligned {aligned} enterprises; this node needs at "
                                                        f"least {self.min_population}")


DEFAULT_POLICY = NodePolicy()


def _fail(source: str, key: str, expected: str, value) -> FedCreditError:
    return FedCreditError(f"{source}: [policy] {key} must be {expected}, got {value!r}")


def _names(source: str, key: str, value, allowed: tuple[str, ...] | None = None) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise _fail(source, key, "a list of names", value)
    if allowed is not None and set(value) - set(allowed):
        raise _fail(source, key, f"a list of {_listed(allowed)}", value)
    return tuple(value)


def _grant(source: str, entry) -> BankGrant:
    """``"bank"`` or ``{name = "bank", keys = ["sha256:…"]}``."""
    if isinstance(entry, str) and entry.strip():
        return BankGrant(entry)
    if isinstance(entry, dict):
        unknown = sorted(set(entry) - {"name", "keys"})
        if unknown:
            raise FedCreditError(f"{source}: [policy] allowed_banks: unknown key(s) {unknown} in {entry!r}; "
                                 "an entry is a bank name or {name = \"…\", keys = [\"…\"]}")
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            raise _fail(source, "allowed_banks", "names, or tables with a name", entry)
        keys = _names(source, f"allowed_banks ({name}) keys", entry.get("keys", []))
        return BankGrant(name, keys)
    raise _fail(source, "allowed_banks", "a list of bank names or {name, keys} tables", entry)


def _grants(source: str, value) -> tuple[BankGrant, ...]:
    if not isinstance(value, list):
        raise _fail(source, "allowed_banks", "a list of bank names or {name, keys} tables", value)
    grants = tuple(_grant(source, entry) for entry in value)
    names = [g.name for g in grants]
    if len(set(names)) != len(names):
        raise _fail(source, "allowed_banks", "a list naming each bank once", value)
    return grants


def _count(source: str, key: str, value, least: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise _fail(source, key, f"a whole number ≥ {least}", value)
    return value


def _path(source: str, key: str, value, base: Path) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(source, key, "a file path", value)
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


_RULES = {
    "allowed_banks": lambda s, v, base: _grants(s, v),
    "allowed_models": lambda s, v, base: _names(s, "allowed_models", v),
    "allowed_tasks": lambda s, v, base: _names(s, "allowed_tasks", v, TASKS),
    "allowed_columns": lambda s, v, base: _names(s, "allowed_columns", v),
    "min_key_bits": lambda s, v, base: _count(s, "min_key_bits", v, 512),
    "min_population": lambda s, v, base: _count(s, "min_population", v, 1),
    "max_jobs_per_day": lambda s, v, base: _count(s, "max_jobs_per_day", v, 0),
    "max_scored_per_day": lambda s, v, base: _count(s, "max_scored_per_day", v, 0),
    "max_queries_per_day": lambda s, v, base: _count(s, "max_queries_per_day", v, 0),
    "consent": lambda s, v, base: _path(s, "consent", v, base),
    "ledger": lambda s, v, base: _path(s, "ledger", v, base),
}
KEYS = tuple(_RULES)


def policy_from_table(table, source: str | Path, base: Path | None = None) -> NodePolicy:
    """A ``[policy]`` table (from ``source``, a file; relative paths relative to ``base``) as a NodePolicy.

    Keys left out keep ``DEFAULT_POLICY``'s values; a consent file must exist.
    """
    source = str(source)
    base = Path(base) if base is not None else Path(source).resolve().parent
    if not isinstance(table, dict):
        raise FedCreditError(f"{source}: [policy] must be a table")
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise FedCreditError(f"{source}: unknown key(s) {unknown} in [policy]; allowed: {list(KEYS)}")
    values = {key: _RULES[key](source, value, base) for key, value in table.items()}
    if "consent" in values and not Path(values["consent"]).is_file():
        raise FedCreditError(f"{source}: [policy] consent: file {values['consent']} not found")
    return replace(DEFAULT_POLICY, **values, source=source)


def load_policy(path: str | Path) -> NodePolicy:
    """The ``[policy]`` table of ``path``: a policy file of its own (only ``[policy]``) or a deployed node's
    node.toml (whose other sections ``fedcredit.deploy.kitconfig`` checks)."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise FedCreditError(f"{path}: node policy file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise FedCreditError(f"{path}: not valid TOML ({exc})") from None
    if "policy" not in doc:
        raise FedCreditError(f"{path}: no [policy] table (docs/governance.md)")
    if "node" not in doc and set(doc) != {"policy"}:
        raise FedCreditError(f"{path}: unknown section(s) {sorted(set(doc) - {'policy'})}; a node policy file holds "
                             "only a [policy] table")
    return policy_from_table(doc["policy"], path, path.resolve().parent)


def resolve_policy(value: str | None) -> NodePolicy | None:
    """A node config's ``policy``: ``None`` (no policy: a local run), ``"default"`` or a TOML file's path."""
    if value is None:
        return None
    return DEFAULT_POLICY if value == DEFAULT else load_policy(value)


def default_ledger(policy: NodePolicy) -> Path | None:
    """Where the budget is counted when the node config does not say: the policy's ``ledger``, else beside its
    file (``<file>.ledger.json``); the default policy has no file, so its node must name one."""
    if policy.ledger:
        return Path(policy.ledger)
    if policy is DEFAULT_POLICY or policy.source == DEFAULT_POLICY.source:
        return None
    src = Path(policy.source)
    return src.with_name(src.name + LEDGER_SUFFIX)
