"""Party state machines (PSI, vertical LR, SecureBoost, the job): pure Python, transport-agnostic.

Nothing here imports Flower: the same party objects run over an in-process loop
(tests, notebooks) and over Flower (simulation or deployment engine).

What this package exports is the party interface the engines (``fedcredit.flower``) use,
and all they may use (tests/test_layers.py): a data holder's ``NodeAgent``, the
``JobCoordinator`` (wrapped by ``audited`` for the coordinator's end of the audit trail),
the job's public settings, how a progress event reads, and the coordinator's outputs of
a finished job; for online queries a serving run's ``QueryCoordinator`` and ``QueryNode``
and ``verify_answer``. The protocols' own modules stay behind it.
"""

from fedcredit.protocols.audited import audited, continued
from fedcredit.protocols.job import HELLO, JobCoordinator, ModelSettings, NodeAgent, NodeConfig, Publication
from fedcredit.protocols.job.outputs import coordinator_identity, finish_run, publication_for
from fedcredit.protocols.progress import step_line
from fedcredit.protocols.query import AnswerError, QueryCoordinator, QueryError, QueryNode, verify_answer
from fedcredit.protocols.vertical_lr.config import BANK

__all__ = ["BANK", "HELLO", "AnswerError", "JobCoordinator", "ModelSettings", "NodeAgent", "NodeConfig", "Publication",
           "QueryCoordinator", "QueryError", "QueryNode", "audited", "continued", "coordinator_identity", "finish_run",
           "publication_for", "step_line", "verify_answer"]
