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

    def __init__(self, node: str, rule: str | None, reason: str, answer: dict | None = None):
        super().__init__(reason)
        self.node, self.rule, self.answer = node, rule, answer

    def body(self) -> dict:
        return {"error": str(self), "node": self.node, "rule": self.rule,
                **({"answer": self.answer} if self.answer is not None else {})}


class QueryFailed(QueryError):
    """A node (or the federation) failed to answer: 502, naming the node when one is known."""

    status = 502

    def __init__(self, reason: str, node: str | None = None):
        super().__init__(reason)
        self.node = node

    def body(self) -> dict:
        return {"error": str(self), "node": self.node}


_RULE = re.compile(r"refused\b.*?\bpolicy rule ([A-Za-z0-9_.-]+)", re.DOTALL)
_NODE_RULE = re.compile(r"node ([A-Za-z0-9_.-]+) refused the query: policy rule ([A-Za-z0-9_.-]+)")


def node_error(node: str, reason: str) -> QueryError:
    """A node's error reply as the endpoint reports it: a policy refusal (its text names ``policy rule R``,
    ``fedcredit.governance.PolicyRefusal``) is a 403 with the rule, anything else a 502."""
    found = _RULE.search(reason)
    if found:
        return QueryRefused(node, found.group(1), f"node {node} refused the query: {reason}")
    return QueryFailed(f"node {node} failed: {reason}", node=node)


def refusal_in_answer(doc: dict) -> QueryRefused | None:
    """A signed answer whose rows a node's policy refused as a whole (``status`` refused, ``why`` naming
    ``node N refused the query: policy rule R``): a 403 carrying the node, the rule and the answer itself."""
    rows = doc.get("rows") if isinstance(doc, dict) else None
    if not rows or any(not isinstance(r, dict) or r.get("status") != "refused" for r in rows):
        return None
    found = _NODE_RULE.search(str(rows[0].get("why") or ""))
    if found is None:
        return None
    return QueryRefused(found.group(1), found.group(2), str(rows[0]["why"]), answer=doc)
