"""The job's message kinds and its JSON payloads (published scores, reason codes, limits, the report context)."""

from __future__ import annotations

import json

from fedcredit.common.errors import ProtocolError
from fedcredit.common.wire import Message

HELLO, INFO, PEERS, SPLIT, PREPARED, REPORT, REPORTED = (
    "job.hello", "job.info", "job.peers", "job.split", "job.prepared", "job.report", "job.reported")
PUBLISH, SCORES, REASONS, CAPACITY, LIMITS = "job.publish", "job.scores", "job.reasons", "job.capacity", "job.limits"
LOAD = "job.load"
ABORT = "job.abort"  # the coordinator stops a failed job: each node closes its audit log as aborted
QUALITY, FIGURES = "job.quality", "job.figures"  # the quality gate: the bank's held-out figures before publication
KINDS = (HELLO, INFO, PEERS, SPLIT, PREPARED, REPORT, REPORTED, PUBLISH, SCORES, REASONS, CAPACITY, LIMITS, LOAD,
         QUALITY, FIGURES, ABORT)


def _json_payload(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _from_json_payload(msg: Message, what: str):
    try:
        return json.loads(msg.payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"{msg.describe()}: {what} is not valid JSON ({exc})") from None
