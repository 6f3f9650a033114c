"""A node's settings as its operator writes them: ``role='tax' data='/srv/tax.parquet' work-dir='/var/fc' ...``.

The same key='value' string configures the SuperNode (``--node-config``) and the node
service, so both always agree on the node's role and work directory. Keys: role, data,
work-dir, out-dir, id-column, id-kind, label, features, categorical, extra (comma lists),
layout, publish-feature-names, policy (the node's policy: "default" or the path of a TOML file
with a ``[policy]`` table, its node.toml; docs/governance.md). A node with a policy counts its
daily budget in ``WORK-DIR/policy-ledger.json``. The node service also reads
coordinator-timeout, ray-address and ray-private-keys (its crypto worker pool on a Ray
cluster, docs/scale.md).
"""

from __future__ import annotations

import shlex
from pathlib import Path

from fedcredit.common.errors import FedCreditError
from fedcredit.common.ray_address import parse_address
from fedcredit.protocols import NodeConfig

LEDGER = "policy-ledger.json"  # a deployed node's daily budget, in its work (state) folder


def parse_node_config(text: str) -> dict[str, str]:
    """``"role='tax' data='/x.parquet'"`` -> {"role": "tax", "data": "/x.parquet"} (Flower's node-config syntax)."""
    out = {}
    for item in shlex.split(text):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise FedCreditError(f"node config item {item!r} is not key='value'")
        out[key.strip()] = value
    return out


def node_from_config(cfg: dict, run: str | int) -> tuple[NodeConfig, Path]:
    """The node's settings for one Flower run (its outputs go to ``OUT-DIR/run-<run>/``) and its work directory.

    A node serves job after job: each run writes into its own folder, so one run never
    meets another's files.
    """
    if "role" not in cfg or "data" not in cfg:
        raise FedCreditError("node config must set role and data (e.g. --node-config \"role='tax' data='/srv/tax.parquet'\")")
    split = lambda key: [v for v in str(cfg.get(key, "")).split(",") if v]  # noqa: E731
    node = NodeConfig(
        role=str(cfg["role"]), data=str(cfg["data"]), id_column=str(cfg.get("id-column", "uscc")),
        id_kind=str(cfg.get("id-kind", "uscc")), label=cfg.get("label") or None,
        features=split("features") or None, categorical=split("categorical"), extra=split("extra"),
        layout=str(cfg.get("layout", "standard")),
        publish_feature_names=str(cfg.get("publish-feature-names", False)).lower() == "true",
        out_dir=str(Path(str(cfg["out-dir"])) / f"run-{run}") if cfg.get("out-dir") else None)
    work = Path(str(cfg.get("work-dir", "fedcredit-work")))
    if cfg.get("policy"):
        node.policy, node.ledger = str(cfg["policy"]), str(work.resolve() / LEDGER)
    return node, work


def pool_settings(cfg: dict) -> dict:
    """The node's crypto worker pool as ``make_pool`` keywords: ``ray-address`` (a Ray cluster instead of local
    processes) and ``ray-private-keys`` ("true": tasks that need a private key run on that cluster too)."""
    address = cfg.get("ray-address") or None
    private = str(cfg.get("ray-private-keys", "false")).lower()
    if address is not None:
        try:
            parse_address(address)
        except FedCreditError as exc:
            raise FedCreditError(f"node config ray-address: {exc}") from None
    if private not in ("true", "false"):
        raise FedCreditError(f"node config ray-private-keys must be true or false, got {cfg['ray-private-keys']!r}")
    if private == "true" and address is None:
        raise FedCreditError("node config ray-private-keys is set without ray-address (the Ray cluster it refers to)")
    return {"ray_address": address, "private_tasks_on_cluster": private == "true"}
