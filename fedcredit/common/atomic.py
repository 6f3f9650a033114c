"""Atomic file output: write to a temporary file beside the target, then rename.

A crash or an error mid-write leaves the previous file (or none), never half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], mode: int | None = None) -> Path:
    """Call ``write(tmp_path)`` and move the result to ``path``.

    ``mode`` sets the file's permissions (e.g. 0o600 for private keys); by default
    the process umask applies as for an ordinary new file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        if mode is None:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    return atomic_write(path, write, mode)


def atomic_write_json(path: str | os.PathLike, doc, default=str) -> Path:
    """Write ``doc`` as indented JSON (one trailing newline) to ``path`` atomically; ``default`` renders
    values JSON does not know (paths, numpy numbers)."""
    return atomic_write_bytes(path, (json.dumps(doc, indent=2, default=default) + "\n").encode())
