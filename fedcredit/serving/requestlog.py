"""The endpoint's append-only request log (JSONL): every request, answered or refused.

One line per request: time, bank (when its token was valid), client address, number of
IDs, HTTP status, seconds and the reason of a refusal. The IDs themselves are not here:
they are in the parties' audit logs, which the data holders check against consent.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

FILE_NAME = "requests.jsonl"


class RequestLog:
    """Appends one JSON line per request and flushes it to disk before the response goes out."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def write(self, *, bank: str | None, client: str | None, ids: int | None, status: int, seconds: float,
              reason: str | None = None, query_id: str | None = None) -> dict:
        row = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "bank": bank, "client": client,
               "ids": ids, "status": status, "seconds": round(seconds, 3), "query_id": query_id, "reason": reason}
        line = json.dumps(row, ensure_ascii=False) + "\n"
        with self._lock, open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        return row


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
