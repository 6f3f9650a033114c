"""Job files (TOML): which node holds which data, and the model settings. See docs/job.md."""

from __future__ import annotations

import tomllib
from dataclasses import fields
from pathlib import Path

from fedcredit.errors import FedCreditError
from fedcredit.protocols.job import ModelSettings, NodeConfig

_NODE_KEYS = {"data", "id_column", "id_type", "label", "features", "categorical", "extra", "layout"}
_MODEL_KEYS = {"type", "features"} | {f.name for f in fields(ModelSettings)} - {"mode", "seed"}
MODEL_TYPES = ("scorecard_lr",)


def load_job(path: str | Path) -> tuple[list[NodeConfig], ModelSettings]:
    """Parse and check a job file; every error names the file and the offending key."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise FedCreditError(f"{path}: job file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise FedCreditError(f"{path}: not valid TOML ({exc})") from None
    unknown = set(doc) - {"job", "model", "nodes"}
    if unknown:
        raise FedCreditError(f"{path}: unknown section(s) {sorted(unknown)}; expected [job], [model], [nodes.<role>]")
    job, model, nodes = doc.get("job", {}), doc.get("model", {}), doc.get("nodes", {})
    if set(job) - {"seed"}:
        raise FedCreditError(f"{path}: unknown key(s) {sorted(set(job) - {'seed'})} in [job]")
    if set(model) - _MODEL_KEYS:
        raise FedCreditError(f"{path}: unknown key(s) {sorted(set(model) - _MODEL_KEYS)} in [model]; allowed: {sorted(_MODEL_KEYS)}")
    if model.get("type", "scorecard_lr") not in MODEL_TYPES:
        raise FedCreditError(f"{path}: [model] type must be one of {MODEL_TYPES}, got {model.get('type')!r}")
    if "bank" not in nodes or len(nodes) < 2:
        raise FedCreditError(f"{path}: [nodes] needs a [nodes.bank] section and at least one host, got {sorted(nodes)}")
    settings_args = {k: v for k, v in model.items() if k not in ("type", "features")}
    settings_args["mode"] = model.get("features", "binned")
    if settings_args["mode"] not in ("binned", "standardized"):
        raise FedCreditError(f"{path}: [model] features must be 'binned' or 'standardized', got {settings_args['mode']!r}")
    try:
        settings = ModelSettings(seed=int(job.get("seed", 42)), **settings_args)
    except (TypeError, ValueError, FedCreditError) as exc:
        raise FedCreditError(f"{path}: invalid [model] settings: {exc}") from None
    roles = ["bank"] + sorted(r for r in nodes if r != "bank")
    return [_node(path, role, nodes[role]) for role in roles], settings


def _node(path: Path, role: str, spec: dict) -> NodeConfig:
    where = f"{path}: [nodes.{role}]"
    if not isinstance(spec, dict):
        raise FedCreditError(f"{where} must be a table")
    if set(spec) - _NODE_KEYS:
        raise FedCreditError(f"{where}: unknown key(s) {sorted(set(spec) - _NODE_KEYS)}; allowed: {sorted(_NODE_KEYS)}")
    if "data" not in spec:
        raise FedCreditError(f"{where}: 'data' (the node's Parquet or CSV file) is required")
    if role != "bank" and spec.get("label"):
        raise FedCreditError(f"{where}: only the bank holds the label")
    for key in ("features", "categorical", "extra"):
        if key in spec and not (isinstance(spec[key], list) and all(isinstance(v, str) for v in spec[key])):
            raise FedCreditError(f"{where}: '{key}' must be a list of column names")
    data = Path(spec["data"])
    data = data if data.is_absolute() else (path.parent / data)
    return NodeConfig(role=role, data=str(data), id_column=spec.get("id_column", "uscc"), id_kind=spec.get("id_type", "uscc"),
                      label=spec.get("label", "default_12m" if role == "bank" else None), features=spec.get("features"),
                      categorical=spec.get("categorical", []), extra=spec.get("extra", []),
                      layout=spec.get("layout", "standard"))
