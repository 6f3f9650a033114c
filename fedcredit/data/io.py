"""Reading and writing node tables (Parquet or CSV) with pyarrow; writes are atomic.

Reading turns every way a file can be unusable (missing, empty, unreadable,
wrong format) into a FedCreditError that names the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from fedcredit.common.atomic import atomic_write
from fedcredit.common.errors import FedCreditError

FORMATS = ("parquet", "csv")


def file_format(path: Path) -> str:
    """'parquet' or 'csv' from the file extension; other extensions are refused."""
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix == ".csv":
        return "csv"
    raise FedCreditError(f"{path}: unsupported file type {suffix or '(none)'!r}; expected .parquet or .csv")


def read_table(path: str | os.PathLike, text_columns: list[str] = ()) -> pa.Table:
    """Read a node file. ``text_columns`` (IDs, categories) are read from CSV as text, never as numbers."""
    path = Path(path)
    fmt = file_format(path)
    if not path.exists():
        raise FedCreditError(f"{path}: file not found")
    if path.is_dir():
        raise FedCreditError(f"{path}: is a directory, expected a {fmt} file")
    if path.stat().st_size == 0:
        raise FedCreditError(f"{path}: file is empty (0 bytes)")
    try:
        if fmt == "parquet":
            return pq.read_table(path)
        header = _csv_header(path)
        convert = pacsv.ConvertOptions(
            column_types={c: pa.string() for c in text_columns if c in header},
            strings_can_be_null=True,
        )
        return pacsv.read_csv(path, convert_options=convert)
    except (pa.ArrowInvalid, pa.ArrowException, OSError, UnicodeDecodeError) as exc:
        raise FedCreditError(f"{path}: cannot be read as {fmt}: {_first_line(exc)}") from None


def read_header(path: str | os.PathLike) -> list[str]:
    """A node file's column names, without reading its rows (a node's policy checks them first)."""
    path = Path(path)
    fmt = file_format(path)
    if not path.is_file():
        raise FedCreditError(f"{path}: file not found")
    try:
        return list(pq.read_schema(path).names) if fmt == "parquet" else _csv_header(path)
    except (pa.ArrowInvalid, pa.ArrowException, OSError) as exc:
        raise FedCreditError(f"{path}: cannot be read as {fmt}: {_first_line(exc)}") from None


def _csv_header(path: Path) -> list[str]:
    with open(path, "rb") as fh:
        first = fh.readline().decode("utf-8-sig", errors="replace").strip()
    return [c.strip().strip('"') for c in first.split(",")]


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def write_table(table: pa.Table, path: str | os.PathLike, fmt: str | None = None) -> Path:
    """Write ``table`` to ``path`` atomically (temporary file, then rename): never half-written."""
    path = Path(path)
    fmt = fmt or file_format(path)
    if fmt not in FORMATS:
        raise FedCreditError(f"{path}: unsupported format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if fmt == "parquet":
        return atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))
    return atomic_write(path, lambda tmp: pacsv.write_csv(table, tmp))
