"""Where a deployed node finds what an earlier run left it: its saved model part and its last published distribution.

A deployed node writes each Flower run's outputs into ``OUT-DIR/run-<flower run>/``
(``fedcredit.node.config``), but a scoring job names its model by the training job's
own run id (the ``model_version`` of the published limits), which the submitter and the
coordinator know. Every run folder holds this node's signed audit log, whose records all
carry that job run id, so the node finds the folder itself: nothing about its folders
travels, and a node restarted with the same out-dir finds its parts again.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from fedcredit.common.errors import FedCreditError
from fedcredit.common.wire import Message
from fedcredit.protocols import HELLO, NodeConfig


def job_run_id(folder: Path, role: str) -> str | None:
    """The job run id of the run whose node outputs are in ``folder`` (from the first record of its audit log)."""
    log = Path(folder) / "audit" / f"{role}.jsonl"
    try:
        with log.open("rb") as fh:
            first = json.loads(fh.readline())
    except (OSError, ValueError):
        return None
    run = first.get("run_id") if isinstance(first, dict) else None
    return run if isinstance(run, str) else None


def run_outputs(out_root: Path, run_id: str, role: str) -> Path:
    """This node's outputs of the job ``run_id`` under its out-dir ``out_root``; refuses when there are none."""
    root = Path(out_root)
    found = [f for f in sorted(root.glob("run-*")) if f.is_dir() and job_run_id(f, role) == run_id]
    if not found:
        raise FedCreditError(f"node {role}: no run {run_id!r} in its out-dir {root} (this node took no part in it as "
                             f"{role}, or its outputs were moved)")
    return found[-1]


def saved_parts(node: NodeConfig, out_root: str | None, messages: list[Message]) -> NodeConfig:
    """``node`` with ``model_dir`` (and ``previous_dir``) set for a scoring job's or a serving run's ``job.hello``
    among ``messages``.

    The hello names the model by its training run id (``model``) and, when the model was
    published before by a scoring run, that run (``previous``); other jobs pass unchanged.
    """
    hello = next((m for m in messages if m.kind == HELLO), None)
    task = hello.meta.get("task") if hello is not None else None
    if task not in ("score", "query") or not hello.meta.get("model"):
        return node
    if not out_root:
        what = "a scoring job" if task == "score" else "a serving run (online queries)"
        raise FedCreditError(f"node {node.role}: {what} needs the node's out-dir, where its model parts are "
                             "(node config out-dir)")
    model, previous = str(hello.meta["model"]), hello.meta.get("previous")
    trained = run_outputs(Path(out_root), model, node.role)
    part = trained / "model" / node.role
    if not part.is_dir():
        raise FedCreditError(f"node {node.role}: run {model} in {trained} left no model part (model/{node.role}): "
                             "it did not finish")
    before = run_outputs(Path(out_root), str(previous), node.role) if previous else trained
    return replace(node, model_dir=str(part), previous_dir=str(before))
