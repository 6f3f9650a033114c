"""Validation of a node's table against its role schema.

Every check runs and every problem is reported (file, column, first offending rows,
what was expected), so a data owner can fix a file in one pass. Rows are counted
from 1 over data rows; for CSV the file line (header = line 1) is given too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from fedcredit.data import uscc
from fedcredit.data.io import read_table
from fedcredit.data.schema import CATEGORY, FLOAT, ID, INT, KIND_EXPECTS, LABEL, Column, RoleSchema
from fedcredit.common.errors import FedCreditError

SHOW_ROWS = 5


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a file: where it is and what was expected."""

    file: str
    column: str | None
    message: str
    rows: tuple[int, ...] = ()
    count: int = 0

    def __str__(self) -> str:
        where = f"{self.file}"
        if self.column is not None:
            where += f", column {self.column!r}"
        text = f"{where}: {self.message}"
        if self.rows:
            shown = ", ".join(_row_label(self.file, r) for r in self.rows)
            more = f" (and {self.count - len(self.rows)} more)" if self.count > len(self.rows) else ""
            text += f" — first rows: {shown}{more}"
        return text


def _row_label(file: str, row: int) -> str:
    return f"{row} (line {row + 1})" if file.lower().endswith(".csv") else str(row)


class ValidationError(FedCreditError):
    """A node file failed validation; ``problems`` lists everything found."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        lines = [str(p) for p in problems]
        super().__init__(f"{len(problems)} problem(s) found:\n  " + "\n  ".join(lines))


@dataclass
class NodeData:
    """A validated node table: IDs, features (pandas, declared columns only) and the label if any."""

    role: str
    path: Path
    ids: np.ndarray
    features: pd.DataFrame
    label: np.ndarray | None
    dropped: dict[str, str] = field(default_factory=dict)  # column -> why it carries nothing (not in features)

    def __len__(self) -> int:
        return len(self.ids)


def validate_file(path, schema: RoleSchema) -> tuple[pa.Table | None, list[Problem]]:
    """Read and check a file; returns the table (None when unreadable) and every problem found."""
    name = str(path)
    text_cols = [c.name for c in schema.columns if c.kind in (ID, CATEGORY)]
    try:
        table = read_table(path, text_columns=text_cols)
    except FedCreditError as exc:
        return None, [Problem(name, None, str(exc).removeprefix(f"{name}: "))]
    return table, validate_table(table, schema, name)


def validate_table(table: pa.Table, schema: RoleSchema, name: str) -> list[Problem]:
    """Every problem of ``table`` against ``schema``; an empty list means valid."""
    if table.num_rows == 0:
        return [Problem(name, None, "has a header but no data rows; expected one row per enterprise")]
    problems: list[Problem] = []
    present = table.column_names
    dupes = sorted({c for c in present if present.count(c) > 1})
    for c in dupes:
        problems.append(Problem(name, c, "appears more than once in the header"))
    for col in schema.columns:
        if col.name not in present:
            what = "ID column" if col.kind == ID else "label column" if col.kind == LABEL else "declared column"
            problems.append(Problem(name, col.name, f"{what} is missing; expected {KIND_EXPECTS[col.kind]} ({col.doc})"))
    for c in present:
        if c not in schema.names:
            problems.append(
                Problem(name, c, f"is not declared for role {schema.role!r}; declare it as an extra column (NAME:float|int|category) or drop it")
            )
    for col in schema.columns:
        if col.name in present and col.name not in dupes:
            problems.extend(_check_column(table.column(col.name), col, schema, name))
    return problems


def _check_column(arr: pa.ChunkedArray, col: Column, schema: RoleSchema, name: str) -> list[Problem]:
    if col.kind == ID:
        return _check_ids(arr, col, schema, name)
    if col.kind == LABEL:
        return _check_label(arr, col, name)
    if col.kind == CATEGORY:
        return _check_category(arr, col, name)
    return _check_number(arr, col, name)


def _problem(name: str, col: Column, message: str, mask: np.ndarray) -> list[Problem]:
    rows = np.flatnonzero(mask)
    if len(rows) == 0:
        return []
    return [Problem(name, col.name, message, tuple(int(r) + 1 for r in rows[:SHOW_ROWS]), len(rows))]


def _nulls(arr: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.is_null(arr, nan_is_null=pa.types.is_floating(arr.type)).to_numpy(zero_copy_only=False), dtype=bool)


def _check_ids(arr: pa.ChunkedArray, col: Column, schema: RoleSchema, name: str) -> list[Problem]:
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        return [Problem(name, col.name, f"has type {arr.type}; expected text IDs")]
    values = np.asarray(normalize_ids(arr), dtype=object)
    missing = np.array([v is None or v == "" for v in values], dtype=bool)
    out = _problem(name, col, "has missing or empty IDs; every row needs an ID", missing)
    if schema.id_kind == "uscc":
        reasons = uscc.invalid_mask(np.where(missing, "", values))
        for code, text in uscc.REASONS.items():
            out += _problem(name, col, f"value {text}", (reasons == code) & ~missing)
    present = pd.Series(values[~missing])
    dup_mask = np.zeros(len(values), dtype=bool)
    dup_mask[np.flatnonzero(~missing)[present.duplicated(keep=False).to_numpy()]] = True
    out += _problem(name, col, "has duplicate IDs; expected one row per enterprise", dup_mask)
    return out


def normalize_ids(arr) -> list:
    """IDs trimmed and upper-cased, the form every node must agree on before alignment."""
    return pc.utf8_upper(pc.utf8_trim_whitespace(arr)).to_pylist()


def _check_label(arr: pa.ChunkedArray, col: Column, name: str) -> list[Problem]:
    nulls = _nulls(arr)
    out = _problem(name, col, "has missing labels; expected 0 or 1 in every row", nulls)
    if not (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type) or pa.types.is_boolean(arr.type) or pa.types.is_null(arr.type)):
        return out + [Problem(name, col.name, f"has type {arr.type}; expected labels 0 or 1")]
    values = arr.to_numpy(zero_copy_only=False).astype(float)
    bad = ~nulls & ~np.isin(values, (0.0, 1.0))
    out += _problem(name, col, "has non-binary labels; expected 0 or 1", bad)
    if not out and len(np.unique(values)) < 2:
        out.append(Problem(name, col.name, "has only one class; a model needs both defaults (1) and non-defaults (0)"))
    return out


def _check_category(arr: pa.ChunkedArray, col: Column, name: str) -> list[Problem]:
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type) or pa.types.is_null(arr.type)):
        if not pa.types.is_dictionary(arr.type):
            return [Problem(name, col.name, f"has type {arr.type}; expected {KIND_EXPECTS[CATEGORY]}")]
        arr = arr.cast(pa.string())
    nulls = _nulls(arr)
    out = [] if col.nullable else _problem(name, col, "has missing values; this column must be filled", nulls)
    if col.values is not None:
        values = np.asarray(arr.to_numpy(zero_copy_only=False), dtype=object)
        bad = ~nulls & ~np.isin(values, np.array(col.values, dtype=object))
        out += _problem(name, col, f"has values outside {{{', '.join(col.values)}}}", bad)
    return out


def _check_number(arr: pa.ChunkedArray, col: Column, name: str) -> list[Problem]:
    nulls = _nulls(arr)
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        parsed = pd.to_numeric(pd.Series(arr.to_numpy(zero_copy_only=False), dtype=object), errors="coerce").to_numpy()
        return _problem(name, col, f"has text where {KIND_EXPECTS[col.kind]} is expected", ~nulls & np.isnan(parsed))
    if not (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type) or pa.types.is_null(arr.type)):
        return [Problem(name, col.name, f"has type {arr.type}; expected {KIND_EXPECTS[col.kind]}")]
    out = [] if col.nullable else _problem(name, col, "has missing values; this column must be filled", nulls)
    values = arr.to_numpy(zero_copy_only=False).astype(float)
    ok = ~nulls
    out += _problem(name, col, "has infinite values; expected finite numbers", ok & np.isinf(values))
    ok &= np.isfinite(np.where(ok, values, 0.0))
    if col.kind == INT:
        out += _problem(name, col, "has fractional values; expected whole numbers", ok & (values != np.round(values)))
    if col.minimum is not None:
        out += _problem(name, col, f"has values below {col.minimum:g}", ok & (values < col.minimum))
    if col.maximum is not None:
        out += _problem(name, col, f"has values above {col.maximum:g}", ok & (values > col.maximum))
    return out


def uninformative_columns(table: pa.Table, schema: RoleSchema) -> dict[str, str]:
    """Feature columns that carry nothing for a model, with why: every value missing, or one value in every row.

    A column with one value and some missing rows is kept: whether it is filled can itself
    carry signal, and binning gives missing values their own bin.
    """
    out = {}
    for col in schema.feature_columns:
        if col.name not in table.column_names:
            continue
        arr = table.column(col.name)
        missing = _nulls(arr)
        values = pc.unique(arr.filter(pa.array(~missing)))
        if missing.all():
            out[col.name] = "every value is missing"
        elif len(values) == 1 and not missing.any():
            out[col.name] = f"the same value ({values[0].as_py()!r}) in every row"
    return out


def column_warnings(name: str, dropped: dict[str, str]) -> list[str]:
    """One line per dropped column, for the console and logs."""
    return [f"{name}, column {col!r}: {why}; it carries nothing for a model and is left out" for col, why in dropped.items()]


def load_node(path, schema: RoleSchema) -> NodeData:
    """Read, validate and return a node's data; raises ValidationError listing every problem.

    Feature columns that carry nothing (``uninformative_columns``) are left out of
    ``features`` and named in ``dropped``; a node left with no feature at all is refused.
    """
    table, problems = validate_file(path, schema)
    if problems:
        raise ValidationError(problems)
    dropped = uninformative_columns(table, schema)
    kept = [c for c in schema.feature_columns if c.name not in dropped]
    if schema.feature_columns and not kept:
        raise ValidationError([Problem(str(path), None, "no feature column carries information (" + "; ".join(
            f"{c}: {why}" for c, why in dropped.items()) + "); expected at least one column that varies")])
    ids = np.asarray(normalize_ids(table.column(schema.id_column)), dtype=object)
    features = table.select([c.name for c in kept]).to_pandas()
    for c in kept:
        if c.kind in (FLOAT, INT):
            features[c.name] = features[c.name].astype("float64")
    label = None
    if schema.label is not None:
        label = table.column(schema.label).to_numpy(zero_copy_only=False).astype(np.int8)
    return NodeData(schema.role, Path(path), ids, features, label, dropped)
