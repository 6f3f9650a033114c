"""Node and coordinator config files of the deployment kits (``nodes/<role>/node.toml``, ``coordinator.toml``).

An operator keeps one reviewed file per machine instead of a long command line; the
command-line options still override it. The node's file is also the only home of its
data path and column settings: they become its SuperNode's node config and never travel.
Relative paths are relative to the file. See nodes/*/README.md.
"""

from __future__ import annotations

import stat
import tomllib
from pathlib import Path

from fedcredit.common.errors import FedCreditError
from fedcredit.common.ray_address import parse_address
from fedcredit.deploy.naming import NAME_RE
from fedcredit.governance import DEFAULT, policy_from_table

# key -> (type, is a path)
NODE_KEYS = {"role": (str, False), "superlink": (str, False), "certs": (str, True), "data": (str, True),
             "work": (str, True), "out": (str, True), "key": (str, True), "port": (int, False),
             "idle_poll": (float, False), "heartbeat": (float, False), "coordinator_timeout": (float, False),
             "ray_address": (str, False), "ray_private_keys": (bool, False)}
# [node] keys the node service reads (fedcredit.node.service), as node-config entries
SERVICE_CONFIG_NAMES = {"coordinator_timeout": "coordinator-timeout", "ray_address": "ray-address",
                        "ray_private_keys": "ray-private-keys"}
COLUMN_KEYS = {"id_column": (str, False), "id_type": (str, False), "label": (str, False),
               "features": (list, False), "categorical": (list, False), "extra": (list, False),
               "layout": (str, False), "publish_feature_names": (bool, False)}
COORDINATOR_KEYS = {"certs": (str, True), "host": (str, False), "port": (int, False), "state": (str, True),
                    "nodes": (list, False), "control_from": (list, False), "publishers": (list, True)}
# [trust] of node.toml: the public keys whose jobs (submitters) and app bundles (publishers) the node accepts
TRUST_KEYS = {"submitters": (list, True), "publishers": (list, True)}
# [columns] key -> the node-config key the ClientApp reads (fedcredit.flower.client_app)
NODE_CONFIG_NAMES = {"id_column": "id-column", "id_type": "id-kind", "label": "label", "features": "features",
                     "categorical": "categorical", "extra": "extra", "layout": "layout",
                     "publish_feature_names": "publish-feature-names"}


def _read(path: Path) -> dict:
    try:
        return tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FedCreditError(f"{path}: config file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise FedCreditError(f"{path}: not valid TOML ({exc})") from None


def _path(source: Path, value: str) -> Path:
    """A path from a config file: relative ones are relative to the file."""
    value = Path(value).expanduser()
    return value if value.is_absolute() else (Path(source).resolve().parent / value)


def _table(path: Path, doc: dict, section: str, spec: dict) -> dict:
    table = doc.get(section, {})
    if not isinstance(table, dict):
        raise FedCreditError(f"{path}: [{section}] must be a table")
    unknown = sorted(set(table) - set(spec))
    if unknown:
        raise FedCreditError(f"{path}: unknown key(s) {unknown} in [{section}]; allowed: {sorted(spec)}")
    values = {}
    for key, value in table.items():
        kind, is_path = spec[key]
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool) if kind is float else
              isinstance(value, int) and not isinstance(value, bool) if kind is int else isinstance(value, kind))
        if kind is list:
            ok = ok and all(isinstance(v, str) and v and "," not in v for v in value)
        if not ok:
            what = "a list of names without commas" if kind is list else kind.__name__
            raise FedCreditError(f"{path}: [{section}] {key} must be {what}, got {value!r}")
        if is_path:
            value = [_path(path, v) for v in value] if kind is list else _path(path, value)
        values[key] = value
    return values


def load_node_config(path: Path) -> tuple[dict, dict]:
    """``[node]`` (how to run the SuperNode) and ``[columns]`` as node-config entries for the ClientApp; with a
    ``[policy]`` table (checked here, read again by the node for every job) the entry ``policy`` names this file."""
    doc = _read(path)
    unknown = sorted(set(doc) - {"node", "columns", "policy", "trust"})
    if unknown:
        raise FedCreditError(f"{path}: unknown section(s) {unknown}; expected [node] and optionally [columns], "
                             "[policy], [trust]")
    node = _table(path, doc, "node", NODE_KEYS)
    if "ray_address" in node:
        try:
            parse_address(node["ray_address"])
        except FedCreditError as exc:
            raise FedCreditError(f"{path}: [node] ray_address: {exc}") from None
    if node.get("ray_private_keys") and "ray_address" not in node:
        raise FedCreditError(f"{path}: [node] ray_private_keys is set without ray_address (the node's Ray cluster)")
    columns = _table(path, doc, "columns", COLUMN_KEYS)
    trust = _table(path, doc, "trust", TRUST_KEYS)
    if columns.get("layout") not in (None, "standard", "custom"):
        raise FedCreditError(f"{path}: [columns] layout: expected \"standard\" or \"custom\", got {columns['layout']!r}")
    node_config = {NODE_CONFIG_NAMES[k]: ",".join(v) if isinstance(v, list) else v for k, v in columns.items()}
    if "policy" in doc:
        policy_from_table(doc["policy"], path, Path(path).resolve().parent)
        node_config["policy"] = str(Path(path).resolve())
    node_config.update({k: ",".join(str(p) for p in v) for k, v in trust.items()})
    return node, node_config


def load_coordinator_config(path: Path) -> dict:
    doc = _read(path)
    unknown = sorted(set(doc) - {"coordinator"})
    if unknown:
        raise FedCreditError(f"{path}: unknown section(s) {unknown}; expected [coordinator]")
    return _table(path, doc, "coordinator", COORDINATOR_KEYS)


def merge(options: dict, config: dict, required: tuple[str, ...], source: Path | None) -> dict:
    """Command-line options (not None) over the config file's values; a missing required value names both places."""
    merged = {**config, **{k: v for k, v in options.items() if v is not None}}
    for key in required:
        if merged.get(key) in (None, ""):
            where = f" or '{key}' in {source}" if source else " (or use --config FILE)"
            raise FedCreditError(f"--{key.replace('_', '-')} is required{where}")
    return merged


def check_private_key(path: Path, what: str) -> None:
    """Refuse a missing private key, or one others may read (as ssh does): it authenticates this machine."""
    path = Path(path)
    if not path.is_file():
        raise FedCreditError(f"{what} {path} is missing (from 'fedcredit certs make'; see the kit's README)")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise FedCreditError(f"{what} {path} is readable by others (mode {mode:04o}); run: chmod 600 {path}")


def coordinator_settings(config: Path | None, options: dict) -> dict:
    """The coordinator's settings from its kit file and the command line (which wins), checked before anything
    starts: certificates and state folder given, the SuperLink's TLS key private; host and port defaulted."""
    opts = merge(options, load_coordinator_config(config) if config else {}, ("certs", "state"), config)
    opts.setdefault("host", "127.0.0.1")
    opts.setdefault("port", 9092)
    check_private_key(Path(opts["certs"]) / "superlink.key", "the SuperLink's TLS key")
    return opts


def node_settings(config: Path | None, options: dict) -> tuple[dict, dict]:
    """A node's settings and its ``[columns]`` node config, checked before its SuperNode starts: the SuperLink
    address, a plain node name, a private authentication key, the data file present. Any node may hold a label
    column: it is then a bank, which jobs may name as theirs (``fedcredit.deploy.naming``); a node named ``bank``
    without one uses the standard schema's label. A node without
    ``[policy]`` runs under the default policy (docs/governance.md)."""
    from fedcredit.deploy.processes import split_address

    file_values, columns = load_node_config(config) if config else ({}, {})
    o = merge(options, file_values, ("role", "data", "superlink", "certs", "work"), config)
    split_address(o["superlink"])
    if not NAME_RE.match(str(o["role"])):
        raise FedCreditError(f"{config or '--role'}: node name {o['role']!r} must be letters, digits, '_' or '-'")
    check_private_key(o.get("key") or Path(o["certs"]) / "nodes" / f"{o['role']}.key", f"{o['role']}'s authentication key")
    if not Path(o["data"]).is_file():
        raise FedCreditError(f"data file {o['data']} does not exist")
    columns.setdefault("policy", DEFAULT)
    for key, name in SERVICE_CONFIG_NAMES.items():  # read by the node service (fedcredit.node.service)
        if o.get(key) is not None:
            value = o[key]
            columns[name] = (str(value).lower() if isinstance(value, bool) else
                             f"{float(value):g}" if key == "coordinator_timeout" else str(value))
    return o, columns
