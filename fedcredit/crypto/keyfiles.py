"""Reading and writing key files: JSON documents, private ones 0600 and written atomically."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from fedcredit.common.atomic import atomic_write_bytes
from fedcredit.crypto.errors import KeyFileError

PRIVATE_MODE = 0o600


def write_json(path, doc: dict, private: bool) -> Path:
    data = (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
    return atomic_write_bytes(path, data, mode=PRIVATE_MODE if private else 0o644)


def read_json(path, expected_format: str, private: bool) -> dict:
    """Load a key document, checking its ``format`` tag, version 1 and (for private keys) 0600."""
    path = Path(path)
    try:
        st = path.stat()
        raw = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror or exc}") from exc
    if private and os.name == "posix" and stat.S_IMODE(st.st_mode) & 0o077:
        raise KeyFileError(
            f"private key file {path} is readable by others (mode {stat.S_IMODE(st.st_mode):o}); "
            f"run: chmod 600 {path}"
        )
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KeyFileError(f"key file {path} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != expected_format:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise KeyFileError(f"key file {path}: expected format {expected_format!r}, found {found!r}")
    if doc.get("version") != 1:
        raise KeyFileError(f"key file {path}: unsupported version {doc.get('version')!r} (expected 1)")
    return doc


def field(doc: dict, name: str, kind: type, path) -> object:
    value = doc.get(name)
    if not isinstance(value, kind):
        raise KeyFileError(f"key file {path}: field {name!r} missing or not a {kind.__name__}")
    return value


def hex_int(doc: dict, name: str, path) -> int:
    text = field(doc, name, str, path)
    try:
        value = int(text, 16)
    except ValueError as exc:
        raise KeyFileError(f"key file {path}: field {name!r} is not a hexadecimal integer") from exc
    if value <= 0:
        raise KeyFileError(f"key file {path}: field {name!r} must be positive")
    return value
