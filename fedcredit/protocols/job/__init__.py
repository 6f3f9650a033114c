"""One federated job end to end: validate → align (PSI) → split → prepare → train → score.

``JobCoordinator`` runs the phases in order with the same ``start``/``advance``
interface as every protocol; ``NodeAgent`` is a data holder's side: it loads and
validates its own file, then hands each message to the phase's party object. A node
agent pickles to its work directory between messages, so it survives transports
that start a fresh process per message (Flower's deployment engine).
"""

from fedcredit.protocols.job.coordinator import JobCoordinator
from fedcredit.protocols.job.node import NodeAgent
from fedcredit.protocols.job.publication import MAX_REASONS
from fedcredit.protocols.job.settings import (
    MIN_ALIGNED, MODELS, SCORED, SPLITS, ModelSettings, NodeConfig, Publication, split_assignment)
from fedcredit.protocols.job.wire import (
    CAPACITY, FIGURES, HELLO, INFO, KINDS, LIMITS, LOAD, PEERS, PREPARED, PUBLISH, QUALITY, REASONS, REPORT, REPORTED,
    SCORES, SPLIT)

__all__ = [
    "CAPACITY", "FIGURES", "QUALITY", "HELLO", "INFO", "KINDS", "LIMITS", "LOAD", "PEERS", "PREPARED", "PUBLISH",
    "REASONS", "REPORT", "REPORTED", "SCORES", "SPLIT", "MAX_REASONS", "MIN_ALIGNED", "MODELS", "SCORED", "SPLITS",
    "JobCoordinator", "ModelSettings", "NodeAgent", "NodeConfig", "Publication", "split_assignment",
]
