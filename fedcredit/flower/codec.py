"""Protocol messages ↔ Flower RecordDicts: one raw byte array plus the message sizes.

All protocol messages for one node in one round travel in one Flower message;
ciphertexts stay raw bytes (an ``ArrayRecord`` of ``uint8``), never Python ints.
"""

from __future__ import annotations

from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedcredit.common.errors import ProtocolError
from fedcredit.common.wire import Message, join_messages, split_messages

NODE_ERROR = 1001  # a fedcredit failure inside a node: deterministic, never retried
MESSAGE_TYPE = "query.step"
ABORT_TYPE = "query.abort"  # a failed job: the node closes its audit log as aborted


def to_record(messages: list[Message]) -> RecordDict:
    return bundle_record(*join_messages(messages))


def bundle_record(data: bytes, sizes: list[int]) -> RecordDict:
    """A bundle's Flower record from its bytes and message sizes (what the node relay passes on unread)."""
    return RecordDict({
        "payload": ArrayRecord({"blob": Array(dtype="uint8", shape=(len(data),), stype="raw", data=data)}),
        "index": ConfigRecord({"sizes": list(sizes)}),
    })


def bundle_bytes(record: RecordDict) -> tuple[bytes, list[int]]:
    """A Flower record's bundle bytes and message sizes, not yet parsed into messages."""
    try:
        data = bytes(record["payload"]["blob"].data)
        sizes = list(record["index"]["sizes"]) if record["index"].get("sizes") is not None else []
    except (KeyError, TypeError, AttributeError) as exc:
        raise ProtocolError(f"Flower message is not a fedcredit bundle ({exc!r})") from None
    return data, sizes


def from_record(record: RecordDict) -> list[Message]:
    return split_messages(*bundle_bytes(record))
