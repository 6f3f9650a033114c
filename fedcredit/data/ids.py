"""Entity IDs as they enter alignment: normalized, validated, and a report of what was refused."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from fedcredit.data import uscc
from fedcredit.data.schema import ID_KINDS
from fedcredit.common.errors import FedCreditError

SHOW = 5


@dataclass
class IdReport:
    """Which rows hold usable IDs, and which were refused and why (row numbers count from 0)."""

    total: int
    usable_rows: np.ndarray
    invalid: dict[str, list[int]] = field(default_factory=dict)  # reason -> rows
    duplicate_rows: list[int] = field(default_factory=list)

    @property
    def refused(self) -> int:
        return self.total - len(self.usable_rows)

    def summary(self) -> str:
        parts = [f"{len(self.usable_rows):,} of {self.total:,} IDs usable"]
        for reason, rows in self.invalid.items():
            parts.append(f"{len(rows):,} {reason} (rows {', '.join(map(str, rows[:SHOW]))}{', …' if len(rows) > SHOW else ''})")
        if self.duplicate_rows:
            rows = self.duplicate_rows
            parts.append(f"{len(rows):,} rows with duplicate IDs (rows {', '.join(map(str, rows[:SHOW]))}{', …' if len(rows) > SHOW else ''})")
        return "; ".join(parts)


def prepare_ids(ids, id_kind: str = "uscc") -> tuple[np.ndarray, IdReport]:
    """Trimmed, upper-cased IDs and a report; only valid IDs that occur once are usable."""
    if id_kind not in ID_KINDS:
        raise FedCreditError(f"ID kind must be one of {', '.join(ID_KINDS)}, got {id_kind!r}")
    given = ids if isinstance(ids, (list, np.ndarray)) else list(ids)
    arr = pa.array(given, type=pa.string())
    normal = pc.utf8_upper(pc.utf8_trim_whitespace(arr))
    # IDs a node validated are normalized already: keep its strings rather than a second copy of every ID
    values = np.asarray(given if normal.equals(arr) else normal.to_pylist(), dtype=object)
    empty = np.array([v is None or v == "" for v in values], dtype=bool)
    invalid: dict[str, list[int]] = {}
    bad = empty.copy()
    if empty.any():
        invalid["empty IDs"] = np.flatnonzero(empty).tolist()
    if id_kind == "uscc":
        reasons = uscc.invalid_mask(np.where(empty, "", values))
        for code, text in uscc.REASONS.items():
            rows = np.flatnonzero((reasons == code) & ~empty)
            if len(rows):
                invalid[f"USCCs that {text}"] = rows.tolist()
                bad[rows] = True
    dup = pd.Series(values).duplicated(keep=False).to_numpy() & ~bad
    usable = np.flatnonzero(~bad & ~dup)
    report = IdReport(len(values), usable, invalid, np.flatnonzero(dup).tolist())
    return values, report
