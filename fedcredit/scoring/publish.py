"""Signed publication of pre-credit limits and their offline verification.

Banks act on the published limits, so a bank (or an auditor) must be able to tell, from
the file and the coordinator's public key alone, that not one cell was changed since the
coordinator signed. The signature is over a *canonical digest of the rows*, not the file
bytes, so the one detached signature covers both ``limits.parquet`` and ``limits.csv``
and survives harmless re-encodings (CSV quoting, Parquet compression, row order).

Canonical form (version 1, see docs/limits.md): rows sorted by ``uscc``; each row is the
compact JSON array of its cells, floats as Python ``repr`` of the float64 (shortest
round-trip text, so any change of value shows), the limit as an integer; the digest is
SHA-256 over a header line naming the columns and then one line per row. The signature
file also keeps short per-cell tags (4 bytes of SHA-256) for every row, so a failed
verification can say which row and which cell changed rather than only "mismatch".
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd_
import pyarrow as pa
import pyarrow.parquet as pq

from fedcredit.common.atomic import atomic_write_bytes
from fedcredit.crypto import Identity, PublicIdentity
from fedcredit.crypto.errors import SignatureError
from fedcredit.data.io import write_table
from fedcredit.common.errors import FedCreditError

COLUMNS = ("uscc", "score", "grade", "pd", "limit", "reason_codes", "model_version")
FLOAT_COLUMNS = ("score", "pd")
INT_COLUMNS = ("limit",)
TAGGED = COLUMNS[1:]  # uscc is stored in full in the index; the other cells get tags
TAG_BYTES = 4
SIG_FORMAT = "fedcredit-limits-signature"
CANON_VERSION = 1
REASON_SEP = ";"
MAX_LISTED = 5

_ARROW_TYPES = {"uscc": pa.string(), "score": pa.float64(), "grade": pa.string(), "pd": pa.float64(),
                "limit": pa.int64(), "reason_codes": pa.string(), "model_version": pa.string()}
_INT_TEXT = re.compile(r"^-?[0-9]+$")
_FLOAT_TEXT = re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$")


class LimitsError(FedCreditError):
    """The limits table handed to :func:`publish_limits` cannot be published as it is."""


class VerificationError(FedCreditError):
    """Published limits failed verification. ``kind`` classifies the problem, ``problems`` lists details."""

    def __init__(self, message: str, kind: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.problems = list(problems or [])


@dataclass(frozen=True)
class VerifyReport:
    """What an intact limits file proved: who signed how many rows of which model."""

    path: Path
    signature_path: Path
    rows: int
    signer: str
    fingerprint: str
    model_version: str
    digest: str
    metadata: dict | None = None  # what the signer attached (e.g. a quality-gate override), signed with the rows


# -- canonical form -----------------------------------------------------------------------

def _cell_text(column: str, value) -> str:
    if column in FLOAT_COLUMNS:
        return repr(float(value))
    if column in INT_COLUMNS:
        return str(int(value))
    return value


def _row_line(cells: tuple) -> str:
    return json.dumps([_cell_text(c, v) for c, v in zip(COLUMNS, cells)], ensure_ascii=False, separators=(",", ":"))


def _header_line() -> str:
    return json.dumps({"format": "fedcredit-limits", "version": CANON_VERSION, "columns": list(COLUMNS)},
                      separators=(",", ":"))


def _digest(rows) -> str:
    """SHA-256 over the header line and the rows' canonical lines, rows sorted by uscc."""
    return _digest_sorted(sorted(rows, key=lambda r: r[0]))


def _digest_sorted(rows) -> str:
    """``_digest`` of rows (any iterable, e.g. a generator) already in uscc order."""
    h = hashlib.sha256(_header_line().encode() + b"\n")
    for row in rows:
        h.update(_row_line(row).encode() + b"\n")
    return h.hexdigest()


def _tags(row: tuple) -> bytes:
    """Short per-cell tags of one row: only to locate a change; security rests on the full digest."""
    out = b""
    for column, value in zip(COLUMNS[1:], row[1:]):
        text = json.dumps(_cell_text(column, value), ensure_ascii=False)
        out += hashlib.sha256(f"{column}\0{text}".encode()).digest()[:TAG_BYTES]
    return out


def _signed_payload(doc: dict) -> bytes:
    body = {k: v for k, v in doc.items() if k != "signature"}
    return b"fedcredit/limits-signature/v1\0" + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


# -- publication --------------------------------------------------------------------------

@dataclass(frozen=True)
class _Rows:
    """The canonical rows as columns in uscc order: a row is made only while it is hashed (``iter``), so a
    million limits cost their columns, not a million tuples of Python objects."""

    uscc: list
    score: np.ndarray
    grade: list
    pd: np.ndarray
    limit: np.ndarray
    reasons: list
    model_version: str

    def __len__(self) -> int:
        return len(self.uscc)

    def __iter__(self):
        mv = self.model_version
        for u, s, g, p, lim, r in zip(self.uscc, self.score, self.grade, self.pd, self.limit, self.reasons):
            yield u, float(s), g, float(p), int(lim), r, mv

    def arrow(self) -> pa.Table:
        columns = {"uscc": self.uscc, "score": self.score, "grade": self.grade, "pd": self.pd,
                   "limit": self.limit.astype(np.int64), "reason_codes": self.reasons,
                   "model_version": [self.model_version] * len(self)}
        return pa.table({c: pa.array(v, _ARROW_TYPES[c]) for c, v in columns.items()})


def _normalize(table: pd_.DataFrame, model_version: str) -> _Rows:
    """Check and coerce the table to canonical rows (sorted by uscc); refuse what cannot be signed."""
    if not isinstance(table, pd_.DataFrame):
        raise LimitsError(f"limits must be a pandas DataFrame, got {type(table).__name__}")
    if not isinstance(model_version, str) or not model_version.strip():
        raise LimitsError("model_version must be a non-empty string")
    extra = [c for c in table.columns if c not in COLUMNS]
    if extra:
        raise LimitsError(f"limits table has column(s) {extra} that are not published; expected {list(COLUMNS)}")
    missing = [c for c in ("uscc", "score", "grade", "pd", "limit") if c not in table.columns]
    if missing:
        raise LimitsError(f"limits table lacks column(s) {missing}")
    n = len(table)
    if n == 0:
        raise LimitsError("limits table has no rows")

    def strings(col: str) -> list[str]:
        values = table[col].tolist()
        for i, v in enumerate(values):
            if not isinstance(v, str) or not v:
                raise LimitsError(f"row {i + 1}: {col} must be a non-empty string, got {v!r}")
            _printable(v, col, i)
        return values

    uscc, grade = strings("uscc"), strings("grade")
    dupes = table["uscc"][table["uscc"].duplicated()].unique().tolist()
    if dupes:
        raise LimitsError(f"uscc must be unique (one limit per enterprise); repeated: {dupes[:MAX_LISTED]}")
    score = pd_.to_numeric(table["score"], errors="coerce").to_numpy(dtype=float)
    pd = pd_.to_numeric(table["pd"], errors="coerce").to_numpy(dtype=float)
    if not np.all(np.isfinite(score)):
        raise LimitsError(f"row {int(np.argmin(np.isfinite(score))) + 1}: score must be a finite number")
    bad = ~((pd >= 0) & (pd <= 1))
    if np.any(bad):
        raise LimitsError(f"row {int(np.argmax(bad)) + 1}: pd must lie in [0, 1], got {pd[bad][0]!r}")
    lim = pd_.to_numeric(table["limit"], errors="coerce").to_numpy(dtype=float)
    bad = ~(np.isfinite(lim) & (lim >= 0) & (lim == np.floor(lim)) & (lim < 2**53))
    if np.any(bad):
        raise LimitsError(f"row {int(np.argmax(bad)) + 1}: limit must be a whole, non-negative number of CNY, "
                          f"got {table['limit'].iloc[int(np.argmax(bad))]!r}")
    reasons = [_reason_text(v, i) for i, v in enumerate(table["reason_codes"])] if "reason_codes" in table else [""] * n
    _printable(model_version, "model_version", None)
    if "model_version" in table and not (table["model_version"] == model_version).all():
        raise LimitsError(f"the table's model_version column differs from model_version={model_version!r}")
    order = np.argsort(np.asarray(uscc, dtype=object), kind="stable")  # uscc is unique: one order
    return _Rows([uscc[i] for i in order], score[order], [grade[i] for i in order], pd[order], lim[order],
                 [reasons[i] for i in order], model_version)


def _printable(text: str, col: str, i: int | None) -> None:
    """Refuse control characters: published cells must read the same in a CSV viewer as in Parquet."""
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise LimitsError(f"{'' if i is None else f'row {i + 1}: '}{col} contains a control character: {text!r}")


def _reason_text(value, i: int) -> str:
    """Reason codes as one string, codes joined by ';' (a list is joined; a string is kept)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, str):
        _printable(value, "reason_codes", i)
        return value
    if isinstance(value, (list, tuple, np.ndarray)):
        codes = [str(c) for c in value]
        for c in codes:
            if not c or REASON_SEP in c:
                raise LimitsError(f"row {i + 1}: reason code {c!r} is empty or contains {REASON_SEP!r}")
            _printable(c, "reason_codes", i)
        return REASON_SEP.join(codes)
    raise LimitsError(f"row {i + 1}: reason_codes must be a string or a list of codes, got {value!r}")


def publish_limits(table: pd_.DataFrame, out_dir, signer: Identity, model_version: str,
                   metadata: dict | None = None) -> dict[str, Path]:
    """Write ``limits.parquet``, ``limits.csv`` (rows sorted by uscc) and the detached ``limits.sig.json``.

    ``metadata`` (JSON values, e.g. the quality gate's verdict) is kept in the signature file
    under the signature, so nobody can drop or edit it without breaking verification.

    Each file is written atomically; the signature is written last, so a crash between
    files leaves a signature that does not match (verification fails) rather than a
    signature that vouches for half-written data.
    """
    if not isinstance(signer, Identity):
        raise LimitsError(f"signer must be a fedcredit.crypto.Identity, got {type(signer).__name__}")
    rows = _normalize(table, model_version)
    out = Path(out_dir)
    arrow = rows.arrow()
    paths = {"parquet": write_table(arrow, out / "limits.parquet", "parquet"),
             "csv": write_table(arrow, out / "limits.csv", "csv")}
    doc = {
        "format": SIG_FORMAT, "version": CANON_VERSION, "algorithm": "Ed25519", "digest_algorithm": "SHA-256",
        "signer": signer.name, "signer_fingerprint": signer.fingerprint, "model_version": model_version,
        "rows": len(rows), "columns": list(COLUMNS), "digest": _digest_sorted(rows),
        "index": {"tag_bytes": TAG_BYTES, "tagged_columns": list(TAGGED), "uscc": rows.uscc,
                  "tags": base64.b64encode(b"".join(_tags(r) for r in rows)).decode()},
    }
    if metadata is not None:
        doc["metadata"] = metadata
    doc["signature"] = base64.b64encode(signer.sign(_signed_payload(doc))).decode()
    paths["signature"] = atomic_write_bytes(out / "limits.sig.json", json.dumps(doc, indent=1).encode())
    return paths


# -- reading a published file strictly -----------------------------------------------------

def _fail(message: str, kind: str, problems=None):
    raise VerificationError(message, kind, problems)


def _read_rows(path: Path) -> tuple[list[tuple], str, str]:
    """Rows of a published file as canonical tuples, its format and a hint to add if its content fails."""
    if not path.exists():
        _fail(f"{path}: file not found", "unreadable")
    if path.is_dir():
        _fail(f"{path}: is a directory, expected limits.parquet or limits.csv", "unreadable")
    if path.stat().st_size == 0:
        _fail(f"{path}: file is empty (0 bytes)", "unreadable")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return _read_parquet(path), "parquet", ""
    if suffix == ".csv":
        rows, text_end = _read_csv(path)
        hint = "" if text_end.endswith(("\n", "\r")) else " (the file does not end with a line break: truncated?)"
        return rows, "csv", hint
    _fail(f"{path}: unsupported file type {suffix or '(none)'!r}; expected .parquet or .csv", "unreadable")


def _check_columns(path: Path, names: list[str]) -> None:
    if list(names) == list(COLUMNS):
        return
    missing = [c for c in COLUMNS if c not in names]
    extra = [c for c in names if c not in COLUMNS]
    parts = ([f"missing column(s) {missing}"] if missing else []) + ([f"extra column(s) {extra}"] if extra else [])
    if not parts:
        parts = [f"columns out of order: {list(names)}"]
    _fail(f"{path}: {'; '.join(parts)}; expected exactly {list(COLUMNS)}", "columns")


def _read_parquet(path: Path) -> list[tuple]:
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        _fail(f"{path}: cannot be read as Parquet (truncated or corrupted?): {first}", "unreadable")
    _check_columns(path, table.column_names)
    columns = []
    for name in COLUMNS:
        col = table.column(name)
        want = _ARROW_TYPES[name]
        ok = col.type == want or (want == pa.string() and col.type == pa.large_string())
        if not ok:
            _fail(f"{path}: column {name!r} has type {col.type}, expected {want}", "type")
        values = col.to_pylist()
        if col.null_count:
            i = next(i for i, v in enumerate(values) if v is None)
            _fail(f"{path}: row {i + 1}: cell {name!r} is empty (null)", "type")
        columns.append(values)
    rows = list(zip(*columns))
    for i, r in enumerate(rows):
        for name, v in ((n, r[k]) for k, n in enumerate(COLUMNS) if n in FLOAT_COLUMNS):
            if not math.isfinite(v):
                _fail(f"{path}: row {i + 1}: cell {name!r} is not finite: {v!r}", "type")
    return rows


def _read_csv(path: Path) -> tuple[list[tuple], str]:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        _fail(f"{path}: not UTF-8 text (byte {exc.start}); cannot be read as CSV", "unreadable")
    try:
        records = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except csv.Error as exc:
        _fail(f"{path}: cannot be parsed as CSV (truncated or corrupted?): {exc}", "unreadable")
    if not records:
        _fail(f"{path}: no header line", "unreadable")
    _check_columns(path, records[0])
    rows = []
    for i, rec in enumerate(records[1:], start=1):
        where = f"{path}: row {i} (line {i + 1})"
        if len(rec) != len(COLUMNS):
            _fail(f"{where}: has {len(rec)} field(s), expected {len(COLUMNS)} (file truncated or malformed?)", "unreadable")
        cells = []
        for name, raw in zip(COLUMNS, rec):
            if name in FLOAT_COLUMNS:
                if not _FLOAT_TEXT.match(raw) or not math.isfinite(float(raw)):
                    _fail(f"{where}: cell {name!r} is not a finite number: {raw!r}", "type")
                cells.append(float(raw))
            elif name in INT_COLUMNS:
                if not _INT_TEXT.match(raw):
                    _fail(f"{where}: cell {name!r} is not a whole number: {raw!r}", "type")
                cells.append(int(raw))
            else:
                cells.append(raw)
        rows.append(tuple(cells))
    return rows, text[-1:]


# -- verification -------------------------------------------------------------------------

def _load_signature(sig_path: Path) -> dict:
    if not sig_path.exists():
        _fail(f"{sig_path}: signature file not found (pass --signature if it lives elsewhere)", "missing-signature")
    try:
        doc = json.loads(sig_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        _fail(f"{sig_path}: not a readable signature file: {exc}", "bad-signature-file")
    if not isinstance(doc, dict) or doc.get("format") != SIG_FORMAT or doc.get("version") != CANON_VERSION:
        _fail(f"{sig_path}: not a version-{CANON_VERSION} {SIG_FORMAT} document", "bad-signature-file")
    need = {"signer": str, "signer_fingerprint": str, "model_version": str, "rows": int, "columns": list,
            "digest": str, "index": dict, "signature": str}
    for key, typ in need.items():
        if not isinstance(doc.get(key), typ):
            _fail(f"{sig_path}: field {key!r} is missing or malformed", "bad-signature-file")
    return doc


def _index(doc: dict, sig_path: Path) -> dict[str, bytes]:
    index = doc["index"]
    try:
        uscc, tags = index["uscc"], base64.b64decode(index["tags"], validate=True)
        width = int(index["tag_bytes"]) * len(index["tagged_columns"])
    except (KeyError, TypeError, ValueError):
        _fail(f"{sig_path}: the row index is malformed", "bad-signature-file")
    if index["tagged_columns"] != list(TAGGED) or len(tags) != width * len(uscc) or len(uscc) != doc["rows"]:
        _fail(f"{sig_path}: the row index does not match its {doc['rows']} rows", "bad-signature-file")
    return {u: tags[i * width:(i + 1) * width] for i, u in enumerate(uscc)}


def _locate(rows: list[tuple], signed: dict[str, bytes], fmt: str) -> list[str]:
    """Name every row and cell whose content differs from what was signed."""
    def where(i: int, u: str) -> str:
        return f"row {i + 1} (" + (f"line {i + 2}, " if fmt == "csv" else "") + f"uscc {u})"

    problems, extra = [], []
    seen = set()
    for i, row in enumerate(rows):
        u = row[0]
        seen.add(u)
        if u not in signed:
            extra.append((i, row))
            continue
        mine, theirs = _tags(row), signed[u]
        changed = [c for k, c in enumerate(TAGGED) if mine[k * TAG_BYTES:(k + 1) * TAG_BYTES] != theirs[k * TAG_BYTES:(k + 1) * TAG_BYTES]]
        if changed:
            problems.append(f"{where(i, u)}: cell{'s' if len(changed) > 1 else ''} "
                            f"{', '.join(repr(c) for c in changed)} changed")
    missing = [u for u in signed if u not in seen]
    by_tags: dict[bytes, list[str]] = {}
    for u in missing:
        by_tags.setdefault(signed[u], []).append(u)
    for i, row in extra:
        twins = by_tags.get(_tags(row))
        if twins:  # same content under another uscc: the uscc cell itself was edited
            was = twins.pop(0)
            missing.remove(was)
            problems.append(f"{where(i, row[0])}: cell 'uscc' changed (signed as {was})")
        else:
            problems.append(f"{where(i, row[0])}: row added (uscc not in the signed limits)")
    problems += [f"signed row for uscc {u} is missing" for u in missing]
    return problems


def verify_limits(file, key, signature_path=None) -> VerifyReport:
    """Check ``file`` (limits.parquet or limits.csv) against its detached signature and the signer's public key.

    ``key`` is a :class:`PublicIdentity` or the path of its public identity file; the
    signature defaults to ``<stem>.sig.json`` beside the file. Raises
    :class:`VerificationError` (``kind`` one of missing-signature, bad-signature-file,
    wrong-key, bad-signature, unreadable, columns, type, duplicate, content) naming the problem;
    an unreadable key file raises the crypto layer's KeyFileError (also a FedCreditError).
    """
    path = Path(file)
    sig_path = Path(signature_path) if signature_path is not None else path.with_name(path.stem + ".sig.json")
    public = key if isinstance(key, PublicIdentity) else PublicIdentity.load(key)
    doc = _load_signature(sig_path)
    if doc["signer_fingerprint"] != public.fingerprint:
        _fail(f"{sig_path}: signed by {doc['signer']!r} (fingerprint {doc['signer_fingerprint'][:16]}) but the key "
              f"given is {public.name!r} (fingerprint {public.fingerprint[:16]}): wrong key or forged signature file",
              "wrong-key")
    try:
        public.verify(_signed_payload(doc), base64.b64decode(doc["signature"], validate=True), what=str(sig_path))
    except (SignatureError, ValueError):
        _fail(f"{sig_path}: the signature does not verify with {public.name!r}'s key "
              f"({public.fingerprint[:16]}): the signature file was altered", "bad-signature")
    if doc["columns"] != list(COLUMNS):
        _fail(f"{sig_path}: signs columns {doc['columns']}, this verifier knows {list(COLUMNS)}", "bad-signature-file")
    signed = _index(doc, sig_path)
    rows, fmt, hint = _read_rows(path)
    counts: dict[str, int] = {}
    for i, r in enumerate(rows):
        if r[0] in counts:
            _fail(f"{path}: rows {counts[r[0]] + 1} and {i + 1} share uscc {r[0]} (a row was duplicated)", "duplicate")
        counts[r[0]] = i
    digest = _digest(rows)
    if digest != doc["digest"]:
        problems = _locate(rows, signed, fmt) or ["content differs from the signed digest (change not localized)"]
        last = f"row {len(rows)} ("
        if not any(p.startswith(last) or p.endswith("is missing") for p in problems):
            hint = ""  # an unterminated last line is only suspicious if the end of the file is what differs
        listed = "; ".join(problems[:MAX_LISTED]) + (f"; and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else "")
        if len(problems) > max(MAX_LISTED, len(rows) // 2):
            hint += f" (is {sig_path.name} the signature of this file? it signs {doc['rows']} rows of model {doc['model_version']!r})"
        _fail(f"{path} does not match its signature{hint}: {listed}", "content", problems)
    return VerifyReport(path, sig_path, len(rows), doc["signer"], doc["signer_fingerprint"], doc["model_version"], digest,
                        doc.get("metadata"))


__all__ = ["COLUMNS", "LimitsError", "VerificationError", "VerifyReport", "publish_limits", "verify_limits"]
