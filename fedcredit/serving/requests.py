"""The body of ``POST /v1/limits`` checked before anything leaves the coordinator: one reason per refusal."""

from __future__ import annotations

import json

import numpy as np

from fedcredit.data import uscc
from fedcredit.serving.errors import BadQuery

MAX_IDS = 10_000
FIELD = "uscc"


def check_ids(ids, *, max_ids: int = MAX_IDS, where: str = f"field '{FIELD}'") -> list[str]:
    """The IDs of a query, trimmed and upper-cased (the form every node aligns on); raises ``BadQuery`` naming
    the first bad ID (by position and value), a duplicate, or a list that is empty or too long."""
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise BadQuery(f"{where} must be a list of USCC strings")
    if not 1 <= len(ids) <= max_ids:
        raise BadQuery(f"{where} must hold 1 to {max_ids:,} USCCs, got {len(ids):,}")
    clean = [i.strip().upper() for i in ids]
    reasons = uscc.invalid_mask(np.array(clean, dtype=object))
    bad = np.flatnonzero(reasons)
    if len(bad):
        first = int(bad[0])
        more = f" ({len(bad) - 1:,} more malformed)" if len(bad) > 1 else ""
        raise BadQuery(f"{where}[{first}] = {ids[first]!r} {uscc.REASONS[int(reasons[first])]}{more}")
    seen: dict[str, int] = {}
    for pos, code in enumerate(clean):
        if code in seen:
            raise BadQuery(f"{where}[{pos}] = {ids[pos]!r} repeats {where}[{seen[code]}]")
        seen[code] = pos
    return clean


def parse_body(raw: bytes, max_ids: int = MAX_IDS) -> list[str]:
    """``{"uscc": [...]}`` and nothing else; raises ``BadQuery`` with the reason."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadQuery(f"the body is not JSON ({exc}); expected {{\"{FIELD}\": [\"<USCC>\", ...]}}") from None
    if not isinstance(doc, dict):
        raise BadQuery(f"the body must be a JSON object {{\"{FIELD}\": [...]}}")
    unknown = sorted(set(doc) - {FIELD})
    if unknown:
        raise BadQuery(f"unknown field(s) {unknown}; the body holds only '{FIELD}'")
    if FIELD not in doc:
        raise BadQuery(f"field '{FIELD}' is missing")
    return check_ids(doc[FIELD], max_ids=max_ids)
