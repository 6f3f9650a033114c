"""The online query's message kinds, what a query may ask, and its JSON payloads.

A serving run opens like a job (``job.hello`` with task ``query``, ``job.info``, ``job.peers``),
exchanges pair seeds once (``query.pair``, sealed), then answers queries: ``query.ask`` carries
the queried USCCs in the clear to every node (a query tells each node which enterprises a bank
looks at: docs/leakage.md), each node answers with its masked share of every queried
enterprise's score (``query.share``) and its per-ID verdicts and reason codes
(``query.reasons``), or refuses the whole query under its policy (``query.refused``); the
capacity owner caps the limits (``query.capacity`` → ``query.limits``). ``job.report`` ends the
serving run (every audit log closes), ``job.abort`` a failed one.
"""

from __future__ import annotations

import re

import numpy as np

from fedcredit.common.errors import FedCreditError, ProtocolError
from fedcredit.common.wire import Message
from fedcredit.data import uscc
from fedcredit.governance.consent import normalize_id
from fedcredit.protocols.job.wire import _from_json_payload

PAIR, ASK, SHARE, REASONS, REFUSED, CAPACITY, LIMITS = (
    "query.pair", "query.ask", "query.share", "query.reasons", "query.refused", "query.capacity", "query.limits")
KINDS = (PAIR, ASK, SHARE, REASONS, REFUSED, CAPACITY, LIMITS)

MAX_BATCH = 10_000  # enterprises per query at most (the coordinator's default; a node refuses more)
OK, UNKNOWN, NO_CONSENT = "ok", "unknown", "no-consent"
VERDICTS = (OK, UNKNOWN, NO_CONSENT)  # a node's verdict per queried ID
STATUSES = ("ok", "missing", "refused")  # a row of the answer
_QUERY_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


class QueryError(FedCreditError):
    """A query cannot be asked as it stands (a malformed USCC, too many IDs, a bad query id, a run not ready);
    raised by the coordinator before any message leaves it."""


def check_query_id(query_id) -> str:
    """A query id: 1–64 letters, digits, ``_ . : -`` (it names the query in answers and audit logs)."""
    if not isinstance(query_id, str) or not _QUERY_ID.fullmatch(query_id):
        raise QueryError(f"query id {query_id!r} must be 1-64 letters, digits or '_', '.', ':', '-'")
    return query_id


def check_ids(ids, max_batch: int = MAX_BATCH) -> list[str]:
    """The queried USCCs, trimmed and upper-cased; a malformed code, a repeated one, none or more than
    ``max_batch`` raise ``QueryError`` naming the code (and what is wrong with it)."""
    if isinstance(ids, str) or not isinstance(ids, (list, tuple)):
        raise QueryError(f"a query lists USCCs (a list of strings), got {type(ids).__name__}")
    if not ids:
        raise QueryError("a query lists at least one USCC")
    if len(ids) > max_batch:
        raise QueryError(f"a query lists at most {max_batch:,} USCCs, got {len(ids):,}")
    if not all(isinstance(i, str) for i in ids):
        bad = next(i for i in ids if not isinstance(i, str))
        raise QueryError(f"a USCC is a string, got {bad!r}")
    codes = [normalize_id(i) for i in ids]
    reasons = uscc.invalid_mask(np.array(codes, dtype=object))
    if reasons.any():
        k = int(np.flatnonzero(reasons)[0])
        more = int((reasons != 0).sum()) - 1
        raise QueryError(f"USCC {ids[k]!r} {uscc.REASONS[int(reasons[k])]}"
                         + (f" (and {more} more malformed)" if more else "") + "; nothing was asked")
    seen: set[str] = set()
    for code in codes:
        if code in seen:
            raise QueryError(f"USCC {code} is listed twice in the query; nothing was asked")
        seen.add(code)
    return codes


def json_doc(msg: Message, what: str, keys: tuple[str, ...]) -> dict:
    """A JSON payload that must be an object with exactly ``keys``."""
    doc = _from_json_payload(msg, what)
    if not isinstance(doc, dict) or set(doc) != set(keys):
        raise ProtocolError(f"{msg.describe()}: {what} must be an object with {', '.join(keys)}")
    return doc


def asked_ids(msg: Message, max_batch: int = MAX_BATCH) -> list[str]:
    """The IDs of a ``query.ask`` as a node checks them: a coordinator's malformed list is a ProtocolError."""
    doc = json_doc(msg, "the queried IDs", ("ids",))
    try:
        ids = check_ids(doc["ids"], max_batch)
    except QueryError as exc:
        raise ProtocolError(f"{msg.describe()}: {exc}") from None
    if ids != doc["ids"]:
        raise ProtocolError(f"{msg.describe()}: the queried IDs must be trimmed and upper-case")
    return ids
