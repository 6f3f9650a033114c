"""What can go wrong with one query request, each with the HTTP status the endpoint answers with."""

from __future__ import annotations

import re

from fedcredit.common.errors import FedCreditError


class QueryError(FedCreditError):
    """A request the endpoint answers with ``status`` and this message as its reason."""

    status = 500

    def body(self) -> dict:
        return {"error": str(self)}


class BadQuery(QueryError):
    """The request itself is malformed (body, field, IDs): 400, the reason names the bad field or ID."""

    status = 400


class Unauthorized(QueryError):
    """No token, or one the coordinator does not know: 401."""

    status = 401


class Forbidden(QueryError):
    """A valid token of another bank than the one this serving run answers for: 403."""

    status = 403


class QueryRefused(QueryError):
    """A node refused the query under its policy (allowed banks, task, budget...): 403 naming the node and rule."""

    status = 403

    def __init__(self, node: str, rule: str | None, reason: str):
        super().__init__(reason)
        self.node, self.rule = node, rule

    def body(self) -> dict:
        return {"error": str(self), "node": self.node, "rule": self.rule}


class QueryFailed(QueryError):
    """A node (or the federation) failed to answer: 502, naming the node when one is known."""

    status = 502

    def __init__(self, reason: str, node: str | None = None):
        super().__init__(reason)
        self.node = node

    def body(self) -> dict:
        return {"error": str(self), "node": self.node}


_RULE = re.compile(r"refused\b.*?\bpolicy rule ([A-Za-z0-9_.-]+)", re.DOTALL)


def node_error(node: str, reason: str) -> QueryError:
    """A node's error reply as the endpoint reports it: a policy refusal (its text names ``policy rule R``,
    ``fedcredit.governance.PolicyRefusal``) is a 403 with the rule, anything else a 502."""
    found = _RULE.search(reason)
    if found:
        return QueryRefused(node, found.group(1), f"node {node} refused the query: {reason}")
    return QueryFailed(f"node {node} failed: {reason}", node=node)
