"""Online limit queries: a serving run answers a bank's question about one enterprise or a batch.

``QueryCoordinator`` (the coordinator's side: setup, then ``submit`` per query, signed answers)
and ``QueryNode`` (a data holder's side: its saved scorecard part on its current data, under
its policy, budget and consent) talk over the same message transport as a job; the serving
loop around them (HTTP endpoint, Flower) lives elsewhere. ``verify_answer`` checks an answer
with the coordinator's public key alone.
"""

from fedcredit.protocols.query.answer import AnswerError, verify_answer
from fedcredit.protocols.query.coordinator import QueryCoordinator
from fedcredit.protocols.query.node import QueryNode
from fedcredit.protocols.query.wire import KINDS, MAX_BATCH, QueryError, check_ids

__all__ = ["KINDS", "MAX_BATCH", "AnswerError", "QueryCoordinator", "QueryError", "QueryNode", "check_ids",
           "verify_answer"]
