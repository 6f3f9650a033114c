"""Job files (TOML): the model settings, the nodes' roles and data, named federations. See docs/job.md.

One file serves both engines. Locally (simulation, in-process) every ``[nodes.<name>]``
needs its ``data``; submitted to a real federation (``--federation NAME``) only the
section names matter, because each node reads its data and column settings from its
own node config and nothing about them travels. ``[job] bank`` names the section of the
job's label holder (default ``bank``); it plays the protocol role ``bank``, every other
section is a host playing its own name (``fedcredit.deploy.naming``).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from fedcredit.deploy.federations import Federation, parse_section
from fedcredit.deploy.naming import BANK, job_nodes
from fedcredit.common.errors import FedCreditError
from fedcredit.common.ray_address import parse_address
from fedcredit.governance import load_policy
from fedcredit.protocols.job import MODELS, ModelSettings, NodeConfig

_NODE_KEYS = {"data", "id_column", "id_type", "label", "features", "categorical", "extra", "layout", "publish_feature_names",
              "policy"}
_JOB_KEYS = {"seed", "purpose", "bank", "ray_address"}
DEFAULT_PURPOSE = "credit-scoring"
_MODEL_KEYS = {"type", "features"} | {f.name for f in fields(ModelSettings)} - {"mode", "seed", "model"}
_SECTIONS = ("job", "model", "nodes", "federations")
MODEL_TYPES = MODELS


@dataclass
class JobFile:
    """A checked job file; ``nodes`` keeps each ``[nodes.<name>]`` table as written (the bank's first)."""

    path: Path
    settings: ModelSettings
    nodes: dict[str, dict]
    federations: dict[str, Federation] = field(default_factory=dict)
    bank: str = BANK  # the name of the job's label holder ([job] bank)
    purpose: str = DEFAULT_PURPOSE  # what the job's bank uses the data for (the hosts' consent lists name it)
    ray_address: str | None = None  # in-process engine: every party's crypto workers on this Ray cluster

    @property
    def roles(self) -> list[str]:
        """The protocol roles, in the order of ``nodes``: the job's bank plays ``bank``, hosts their names."""
        return [BANK if name == self.bank else name for name in self.nodes]

    def node_configs(self) -> list[NodeConfig]:
        """Every node's local settings (by protocol role), for engines that read all data on this machine."""
        return [_node(self.path, name, spec, role) for (name, spec), role in zip(self.nodes.items(), self.roles)]

    def local_settings(self) -> dict[str, list[str]]:
        """Per role, the keys a federation ignores (data and columns stay in each node's own config)."""
        return {role: sorted(spec) for role, spec in self.nodes.items() if spec}


def read_job(path: str | Path) -> JobFile:
    """Parse and check a job file without requiring node data; every error names the file and the key."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise FedCreditError(f"{path}: job file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise FedCreditError(f"{path}: not valid TOML ({exc})") from None
    unknown = set(doc) - set(_SECTIONS)
    if unknown:
        raise FedCreditError(f"{path}: unknown section(s) {sorted(unknown)}; "
                             "expected [job], [model], [nodes.<role>], [federations.<name>]")
    job, model, nodes = doc.get("job", {}), doc.get("model", {}), doc.get("nodes", {})
    if set(job) - _JOB_KEYS:
        raise FedCreditError(f"{path}: unknown key(s) {sorted(set(job) - _JOB_KEYS)} in [job]; allowed: {sorted(_JOB_KEYS)}")
    purpose = job.pop("purpose", DEFAULT_PURPOSE)
    if not isinstance(purpose, str) or not purpose.strip():
        raise FedCreditError(f"{path}: [job] purpose must be a non-empty string, got {purpose!r}")
    bank = job.pop("bank", BANK)
    ray_address = job.pop("ray_address", None)
    if ray_address is not None:
        try:
            parse_address(ray_address)
        except FedCreditError as exc:
            raise FedCreditError(f"{path}: [job] ray_address: {exc}") from None
    if not isinstance(bank, str):
        raise FedCreditError(f"{path}: [job] bank must be the name of a [nodes.<name>] section, got {bank!r}")
    if set(model) - _MODEL_KEYS:
        raise FedCreditError(f"{path}: unknown key(s) {sorted(set(model) - _MODEL_KEYS)} in [model]; allowed: {sorted(_MODEL_KEYS)}")
    if model.get("type", "scorecard_lr") not in MODEL_TYPES:
        raise FedCreditError(f"{path}: [model] type must be one of {MODEL_TYPES}, got {model.get('type')!r}")
    if bank not in nodes or len(nodes) < 2:
        raise FedCreditError(f"{path}: [nodes] needs a [nodes.{bank}] section (the job's bank"
                             f"{', [job] bank' if bank != BANK else ''}) and at least one host, got {sorted(nodes)}")
    for name, spec in nodes.items():
        _check_node(path, name, spec, name == bank)
    settings_args = {k: v for k, v in model.items() if k not in ("type", "features")}
    settings_args["mode"] = model.get("features", "binned")
    settings_args["model"] = model.get("type", "scorecard_lr")
    if settings_args["mode"] not in ("binned", "woe", "standardized"):
        raise FedCreditError(f"{path}: [model] features must be 'binned', 'woe' or 'standardized', "
                             f"got {settings_args['mode']!r}")
    _check_types(path, "[model]", settings_args)
    _check_types(path, "[job]", job)
    try:
        settings = ModelSettings(seed=job.get("seed", 42), **settings_args)
    except (TypeError, ValueError, FedCreditError) as exc:
        raise FedCreditError(f"{path}: invalid [model] settings: {exc}") from None
    hosts = sorted(n for n in nodes if n != bank)
    job_nodes(bank, hosts, f"{path}: [nodes]")
    ordered = {bank: nodes[bank], **{n: nodes[n] for n in hosts}}
    federations = parse_section(doc.get("federations", {}), str(path), path.parent)
    return JobFile(path, settings, ordered, federations, bank=bank, purpose=purpose, ray_address=ray_address)


def load_job(path: str | Path) -> tuple[list[NodeConfig], ModelSettings]:
    """A job for the local engines: every node's data is required."""
    job = read_job(path)
    return job.node_configs(), job.settings


def _check_types(path: Path, section: str, values: dict) -> None:
    """A quoted number or a 0/1 for a flag is refused: it would reach every party as the wrong type."""
    defaults = ModelSettings()
    for key, value in values.items():
        expected = type(getattr(defaults, "mode" if key == "features" else key))
        ok = (isinstance(value, bool) if expected is bool else
              isinstance(value, int) and not isinstance(value, bool) if expected is int else
              isinstance(value, (int, float)) and not isinstance(value, bool) if expected is float else
              isinstance(value, expected))
        if not ok:
            shown = "features" if key == "mode" else key
            raise FedCreditError(f"{path}: {section} {shown} must be {expected.__name__}, got {value!r}")


def _check_node(path: Path, name: str, spec, is_bank: bool) -> None:
    where = f"{path}: [nodes.{name}]"
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise FedCreditError(f"{where}: a node name is letters, digits, '_' or '-'")
    if not isinstance(spec, dict):
        raise FedCreditError(f"{where} must be a table")
    if set(spec) - _NODE_KEYS:
        raise FedCreditError(f"{where}: unknown key(s) {sorted(set(spec) - _NODE_KEYS)}; allowed: {sorted(_NODE_KEYS)}")
    if not is_bank and spec.get("label"):
        raise FedCreditError(f"{where}: only the bank holds the label (the job's bank is named by [job] bank)")
    if not isinstance(spec.get("publish_feature_names", False), bool):
        raise FedCreditError(f"{where}: 'publish_feature_names' must be true or false")
    if "policy" in spec:  # the node's own policy file (docs/governance.md), checked now: errors name it and the key
        if not isinstance(spec["policy"], str) or not spec["policy"].strip():
            raise FedCreditError(f"{where}: 'policy' must be the path of a node policy file (TOML)")
        load_policy(_relative(path, spec["policy"]))
    for key in ("features", "categorical", "extra"):
        if key in spec and not (isinstance(spec[key], list) and all(isinstance(v, str) for v in spec[key])):
            raise FedCreditError(f"{where}: '{key}' must be a list of column names")


def _node(path: Path, name: str, spec: dict, role: str) -> NodeConfig:
    if "data" not in spec:
        raise FedCreditError(f"{path}: [nodes.{name}]: 'data' (the node's Parquet or CSV file) is required "
                             "to run here; with --federation NAME each node reads its own")
    data = _relative(path, spec["data"])
    policy = str(_relative(path, spec["policy"]).resolve()) if "policy" in spec else None
    return NodeConfig(role=role, name=name if name != role else None, data=str(data),
                      id_column=spec.get("id_column", "uscc"), id_kind=spec.get("id_type", "uscc"),
                      label=spec.get("label", "default_12m" if role == "bank" else None), features=spec.get("features"),
                      categorical=spec.get("categorical", []), extra=spec.get("extra", []),
                      layout=spec.get("layout", "standard"),
                      publish_feature_names=spec.get("publish_feature_names", False), policy=policy)


def _relative(path: Path, value: str) -> Path:
    """A path of the job file: relative ones are relative to the file."""
    p = Path(value).expanduser()
    return p if p.is_absolute() else (path.parent / p)
