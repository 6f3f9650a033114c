"""Checks of a local job before any engine starts: every node's file, its columns, and the overlap.

A bad file fails in seconds with every problem of every node named, instead of after
Flower and Ray have started (19–76 s) and one node has reported the first problem it
met. Only possible where every node's file is readable here (local engines); on a real
federation each node validates its own file when the job reaches it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedcredit.common.errors import FedCreditError
from fedcredit.data.validate import NodeData, ValidationError, column_warnings, load_node
from fedcredit.protocols.job import MIN_ALIGNED, ModelSettings, NodeConfig, split_assignment

SPLIT_NAMES = ("training", "validation", "test")


class PreflightError(FedCreditError):
    """The job cannot start; ``problems`` lists every reason found, each naming its node and file."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(f"the job cannot start: {len(problems)} problem(s) found:\n  " + "\n  ".join(problems))


@dataclass
class Preflight:
    """What the checks learnt: rows per node, the overlap, and warnings (e.g. columns left out)."""

    rows: dict[str, int]
    ids: np.ndarray  # the enterprises every node knows (sorted), as PSI will find them
    warnings: list[str] = field(default_factory=list)

    @property
    def intersection(self) -> int:
        return len(self.ids)


def check_job(nodes: list[NodeConfig], settings: ModelSettings, *, model: Path | None = None) -> Preflight:
    """Validate every node's file and the overlap; raises PreflightError naming every problem found."""
    problems, loaded, warnings = [], {}, []
    for node in nodes:
        where = f"[nodes.{node.role}] {node.data}"
        try:
            data = load_node(node.data, node.schema())
            node.pick_features(data)
        except ValidationError as exc:
            problems += [f"[nodes.{node.role}] {p}" for p in exc.problems]
            continue
        except FedCreditError as exc:
            problems.append(f"{where}: {exc}" if node.data not in str(exc) else f"[nodes.{node.role}] {exc}")
            continue
        loaded[node.role] = data
        warnings += [f"[nodes.{node.role}] {w}" for w in column_warnings(str(node.data), data.dropped)]
        if model is not None and not (Path(model) / "model" / node.role).is_dir():
            problems.append(f"[nodes.{node.role}]: the model folder {model} has no saved model part for this role "
                            f"(expected {Path(model) / 'model' / node.role}/ from a training run with this role)")
    if problems:
        raise PreflightError(problems)
    ids = _check_overlap(loaded, settings, training=model is None)
    return Preflight({r: len(d) for r, d in loaded.items()}, ids, warnings)


def _check_overlap(data: dict[str, NodeData], settings: ModelSettings, *, training: bool) -> np.ndarray:
    """The enterprises every node knows: enough of them, and (to train) both outcomes in each split that needs them."""
    roles = list(data)
    bank = data[roles[0]]
    common = set(bank.ids)
    for role in roles[1:]:
        common &= set(data[role].ids)
    if len(common) < MIN_ALIGNED:
        raise PreflightError([overlap_report(
            {r: len(d) for r, d in data.items()},
            {r: len(set(bank.ids) & set(data[r].ids)) for r in roles[1:]}, len(common))])
    ids = np.array(sorted(common), dtype=object)
    if not training:
        return ids
    position = {i: k for k, i in enumerate(bank.ids)}
    labels = bank.label[[position[i] for i in ids]]
    split = split_assignment(ids, settings.seed, settings.train, settings.validation)
    needs = {0: "to train", 2: "to measure AUC on test rows"}
    if settings.validation and (settings.model == "secureboost" and settings.patience):
        needs[1] = "for early stopping on validation rows"
    problems = []
    for code, why in needs.items():
        counts = np.bincount(labels[split == code], minlength=2)
        if counts.min() == 0:
            problems.append(f"the {SPLIT_NAMES[code]} rows of the {len(common):,} aligned enterprises hold "
                            f"{counts[0]} non-defaults and {counts[1]} defaults; both outcomes are needed {why}")
    if problems:
        raise PreflightError(problems)
    return ids


def overlap_report(rows: dict[str, int], with_bank: dict[str, int], common: int) -> str:
    """Why an overlap is too small, with every figure a node owner needs to find the cause."""
    counts = ", ".join(f"{r} {n:,} rows" for r, n in rows.items())
    pairs = ", ".join(f"bank ∩ {r}: {n:,}" for r, n in with_bank.items())
    return (f"only {common:,} enterprises are known to every node (needed: at least {MIN_ALIGNED}, so that "
            f"training, validation and test rows each hold some enterprises); {counts}; {pairs}. "
            "Check that every node uses the same ID column and ID kind (uscc or string)")
