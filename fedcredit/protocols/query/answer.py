"""A query's answer: one row per queried enterprise, signed by the coordinator like the publication.

The answer document is ``{"model", "query_id", "bank", "signed_at", "rows", "signer",
"signature"}``; ``signature`` is the coordinator's Ed25519 signature (base64) over the canonical
JSON of everything else (sorted keys, no spaces, floats as their shortest round-trip text), so
a bank can check, with the coordinator's public key alone, that no row or cell was changed.

A row is ``{"uscc", "status", "score", "grade", "pd", "limit", "reason_codes", "why"}``:
``ok`` rows carry the score, grade, probability of default and limit the model gives on the
nodes' current data; an enterprise some node does not know (or holds no consent for) gets the
limit policy's answer for missing data (``[missing] answer``: ``refer`` → no limit, ``decline``
→ limit 0), never a score from the other nodes' parts alone; a query a node refused under its
policy leaves every row ``refused`` without a limit. ``why`` says which node lacked what.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone

from fedcredit.common.errors import FedCreditError
from fedcredit.crypto import Identity, PublicIdentity, SignatureError
from fedcredit.protocols.query.wire import NO_CONSENT, OK, STATUSES, UNKNOWN

FIELDS = ("model", "query_id", "bank", "signed_at", "rows", "signer", "signature")
ROW_FIELDS = ("uscc", "status", "score", "grade", "pd", "limit", "reason_codes", "why")
_DOMAIN = b"fedcredit/query-answer/v1\0"


class AnswerError(FedCreditError):
    """A query answer failed verification: malformed, signed by another key, or changed after signing."""


def _canonical(doc: dict) -> bytes:
    body = {k: v for k, v in doc.items() if k != "signature"}
    try:
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise AnswerError(f"the answer is not plain JSON ({exc})") from None
    return _DOMAIN + text.encode()


def sign_answer(model: str, query_id: str, bank: str, rows: list[dict], signer: Identity) -> dict:
    """The signed answer document for ``rows`` (in the order the IDs were asked)."""
    signed_at = datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    doc = {"model": model, "query_id": query_id, "bank": bank, "signed_at": signed_at, "rows": rows,
           "signer": signer.fingerprint}
    doc["signature"] = base64.b64encode(signer.sign(_canonical(doc))).decode()
    return doc


def verify_answer(doc, public: PublicIdentity) -> dict:
    """``doc`` when it is an answer signed by ``public`` and unchanged since; else ``AnswerError`` saying what."""
    if not isinstance(doc, dict) or set(doc) != set(FIELDS):
        got = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
        raise AnswerError(f"not a query answer: fields {got}, expected {sorted(FIELDS)}")
    rows = doc["rows"]
    if not isinstance(rows, list) or not all(isinstance(r, dict) and set(r) == set(ROW_FIELDS) for r in rows):
        raise AnswerError(f"query answer {doc.get('query_id')!r}: every row must have exactly {', '.join(ROW_FIELDS)}")
    if doc["signer"] != public.fingerprint:
        raise AnswerError(f"query answer {doc['query_id']!r} names signer {str(doc['signer'])[:23]}…, but the "
                          f"coordinator's key is {public.fingerprint[:23]}…")
    try:
        public.verify(_canonical(doc), base64.b64decode(doc["signature"], validate=True), what="query answer")
    except (ValueError, TypeError, SignatureError):
        raise AnswerError(f"query answer {doc['query_id']!r}: the signature does not match its content: a row or "
                          f"field was changed after the coordinator ({public.fingerprint[:23]}…) signed it") from None
    bad = [r["uscc"] for r in rows if r["status"] not in STATUSES]
    if bad:
        raise AnswerError(f"query answer {doc['query_id']!r}: unknown status for {bad[:3]}")
    return doc


def ok_row(code: str, score: float, grade: str, pd: float, limit: int, reasons: str) -> dict:
    return {"uscc": code, "status": "ok", "score": float(score), "grade": str(grade), "pd": float(pd),
            "limit": int(limit), "reason_codes": reasons, "why": None}


def unanswered_row(code: str, verdicts: dict[str, str], refusals: dict[str, str], missing: str) -> dict:
    """The row of an enterprise without a full score: refused by a node's policy (the query as a whole),
    or lacking data or consent at some node (the limit policy's ``missing`` answer)."""
    if refusals:
        why = "; ".join(refusals[node] for node in sorted(refusals))
        return _row(code, "refused", None, why)
    unknown = sorted(node for node, v in verdicts.items() if v == UNKNOWN)
    refused = sorted(node for node, v in verdicts.items() if v == NO_CONSENT)
    parts = ([f"{' and '.join(unknown)} hold{'s' if len(unknown) == 1 else ''} no data on this enterprise"]
             if unknown else [])
    parts += [f"no consent at {node} for this bank and purpose" for node in refused]
    decided = "declined: limit 0" if missing == "decline" else "referred: no limit"
    why = f"{'; '.join(parts)} ({decided}, limit policy [missing] answer = {missing!r})"
    return _row(code, "refused" if refused else "missing", 0 if missing == "decline" else None, why)


def _row(code: str, status: str, limit: int | None, why: str) -> dict:
    return {"uscc": code, "status": status, "score": None, "grade": None, "pd": None, "limit": limit,
            "reason_codes": None, "why": why}


def all_ok(verdicts: dict[str, str]) -> bool:
    return all(v == OK for v in verdicts.values())
