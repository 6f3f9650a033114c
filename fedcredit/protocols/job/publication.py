"""The coordinator's checks of what nodes publish: reason codes per row, a host's joined to the bank's ranking."""

from __future__ import annotations

from fedcredit.common.errors import ProtocolError

MAX_REASONS = 5  # reason codes a node publishes per enterprise at most (trees: the bank ranks 3× as many records)


def check_reason_rows(role: str, rows, n: int, top: int) -> None:
    """One node's published reason codes: a list per aligned row of at most ``top`` feature names."""
    if not isinstance(rows, list) or len(rows) != n:
        raise ProtocolError(f"publication: {role} must give reason codes for every one of the {n} aligned rows")
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) > top or not all(_is_name(v) for v in row):
            raise ProtocolError(f"publication: {role}'s reason codes for row {i} must be at most {top} feature names "
                                f"without ';' or ':' (got {str(row)[:80]})")


def _is_name(value) -> bool:
    return isinstance(value, str) and bool(value) and ";" not in value and ":" not in value


def host_reasons(bank_doc: dict, host: str, host_doc: dict, top: int, trees: bool) -> list:
    """A host's reason codes per row: its own (scorecard), or the bank's ranked record numbers of the
    host's splits joined with the host's names for them (trees; records of one feature merge)."""
    if not trees:
        return host_doc.get("reasons")
    if "reasons" in host_doc:
        raise ProtocolError(f"publication: {host} sent its own reason codes; in SecureBoost they come from the bank's "
                            f"ranking and {host}'s record names")
    ranked = bank_doc.get("host_records")
    names, records = host_doc.get("record_names"), ranked.get(host) if isinstance(ranked, dict) else None
    if not isinstance(names, list) or not isinstance(records, list):
        raise ProtocolError(f"publication: no reason codes for {host} (its record names and the bank's ranking)")
    if not all(_is_name(v) for v in names):
        raise ProtocolError(f"publication: {host}'s record names must be non-empty feature names without ';' or ':'")
    out = []
    for row in records:
        if not isinstance(row, list) or not all(isinstance(r, int) and 0 <= r < len(names) for r in row):
            raise ProtocolError(f"publication: the bank ranked records {row!r} that {host} does not have")
        out.append(list(dict.fromkeys(str(names[r]) for r in row))[:top])
    return out
