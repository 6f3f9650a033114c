"""The embedded default engine: a job on Flower's simulation runtime, one virtual SuperNode per role.

Simulated nodes map to roles by partition id; each gets its own work directory.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from fedcredit.common.errors import FedCreditError
from fedcredit.common.ray_address import ray_on_loopback as _ray_on_loopback
from fedcredit.flower.client_app import make_client_app
from fedcredit.flower.server_app import make_server_app
from fedcredit.protocols import ModelSettings, NodeConfig


def run_simulated_job(nodes: list[NodeConfig], settings: ModelSettings, work_root: Path, *, on_event=None,
                      run_id: str | None = None, publication=None, task: str = "train", audit=None,
                      purpose: str = "credit-scoring", on_round=None) -> dict:
    """Run the job over Flower's simulation engine and return the coordinator's result.

    ``on_round(outgoing, replies)`` sees every round's protocol messages (``fedcredit.common.wire.BundleMeter``)."""
    _ray_on_loopback()  # the simulated nodes all live in this process tree: loopback is all they need
    from flwr.simulation import run_simulation

    work_root = Path(work_root)
    roles = [n.role for n in nodes]

    def resolve(context):
        node = nodes[int(context.node_config["partition-id"])]
        return node, work_root / node.role

    result: dict = {}
    server = make_server_app(settings, roles, result, on_event=on_event, run_id=run_id, publication=publication, task=task,
                             audit=audit, purpose=purpose, bank_name=nodes[0].name or nodes[0].role,
                             on_round=on_round)
    client = make_client_app(resolve)
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # no GPUs here; silences Ray's notice
    # run_simulation is Flower's in-process simulation entry point; its deprecation notice
    # (in favour of `flwr run`) is not actionable for the user of `fedcredit demo`
    logging.getLogger("flwr").setLevel(logging.ERROR)
    run_simulation(
        server_app=server, client_app=client, num_supernodes=len(nodes),
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                        # "local": a Ray of its own, never a cluster someone started on this machine
                        # (ray.init would attach to one, and refuse num_cpus there: the runtime crashed)
                        "init_args": {"address": "local", "num_cpus": os.cpu_count() or 2, "include_dashboard": False,
                                      "log_to_driver": False}},
    )
    if "error" in result:
        raise FedCreditError(result["error"])
    if not result:
        raise FedCreditError("the Flower simulation ended without a result (see the log above)")
    return result
