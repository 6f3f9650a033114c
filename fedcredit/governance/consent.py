"""Enterprise consent kept at a host: which enterprises authorized which bank, for what purpose, until when.

A consent file is a CSV with the columns ``id``, ``bank``, ``purpose`` and ``expires`` (an
ISO date, the last day the authorization holds). Only the enterprises with a valid row for
a job's bank and purpose enter the node's side of the alignment; the node's audit log
records how many and the SHA-256 digest of that set (docs/governance.md), so an auditor
holding the same file can check which authorizations a job used. A bad row is refused
naming the file, its line and the column: a consent list decides whose data is shared.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from fedcredit.common.errors import FedCreditError

COLUMNS = ("id", "bank", "purpose", "expires")


@dataclass(frozen=True)
class ConsentRow:
    id: str
    bank: str
    purpose: str
    expires: date


@dataclass(frozen=True)
class ConsentSet:
    """The IDs one job may use, their number and digest (SHA-256 of the sorted IDs, one per line)."""

    ids: frozenset[str]

    @property
    def count(self) -> int:
        return len(self.ids)

    @property
    def digest(self) -> str:
        return hashlib.sha256("".join(f"{i}\n" for i in sorted(self.ids)).encode()).hexdigest()


def normalize_id(value: str) -> str:
    """Trimmed and upper-cased, as node files' IDs are before alignment."""
    return value.strip().upper()


@dataclass(frozen=True)
class ConsentList:
    path: str
    rows: tuple[ConsentRow, ...]

    def allowed_ids(self, bank: str, purpose: str, today: date) -> ConsentSet:
        """Enterprises that authorized ``bank`` for ``purpose`` and whose authorization holds on ``today``."""
        return ConsentSet(frozenset(r.id for r in self.rows
                                    if r.bank == bank and r.purpose == purpose and today <= r.expires))


def load_consent(path: str | Path) -> ConsentList:
    """Read and check a consent CSV; every problem names the file, the line and the column."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise FedCreditError(f"{path}: consent file is empty; expected the columns {', '.join(COLUMNS)}")
            header = [h.strip() for h in header]
            if sorted(header) != sorted(COLUMNS):
                raise FedCreditError(f"{path}: line 1: consent columns are {header}; expected exactly "
                                     f"{', '.join(COLUMNS)}")
            return ConsentList(str(path), tuple(_row(path, reader.line_num, header, values) for values in reader
                                                if any(v.strip() for v in values)))
    except FileNotFoundError:
        raise FedCreditError(f"{path}: consent file not found") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise FedCreditError(f"{path}: not a readable CSV file ({exc})") from None


def _row(path: Path, line: int, header: list[str], values: list[str]) -> ConsentRow:
    if len(values) != len(header):
        raise FedCreditError(f"{path}: line {line}: {len(values)} fields, expected {len(header)} ({', '.join(header)})")
    cell = dict(zip(header, (v.strip() for v in values)))
    for column in ("id", "bank", "purpose"):
        if not cell[column]:
            raise FedCreditError(f"{path}: line {line}, column {column}: empty; every row names an enterprise, "
                                 "a bank and a purpose")
    try:
        expires = date.fromisoformat(cell["expires"])
    except ValueError:
        raise FedCreditError(f"{path}: line {line}, column expires: {cell['expires']!r} is not an ISO date "
                             "(YYYY-MM-DD)") from None
    return ConsentRow(normalize_id(cell["id"]), cell["bank"], cell["purpose"], expires)
