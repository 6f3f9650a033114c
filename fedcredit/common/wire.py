"""The one message type every protocol exchanges, and its strict byte codec.

A message has a small JSON header (kind, sender, receiver, run id, step, metadata)
and an opaque payload (ciphertexts, blinded points, or a sealed envelope). The
codec rejects anything that is not exactly a well-formed message.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field

from fedcredit.common.errors import ProtocolError

COORDINATOR = "coordinator"
MAGIC = b"FCM1"
MAX_HEADER = 1 << 16
_HEADER_FIELDS = {"kind": str, "sender": str, "receiver": str, "run_id": str, "step": int, "meta": dict, "sealed": bool}


@dataclass(frozen=True)
class Message:
    """A protocol message from ``sender`` to ``receiver`` (role names or "coordinator")."""

    kind: str
    sender: str
    receiver: str
    run_id: str
    step: int
    meta: dict = field(default_factory=dict)
    payload: bytes = b""
    sealed: bool = False  # payload is an envelope only ``receiver`` can open

    @property
    def relayed(self) -> bool:
        """True for node-to-node messages, which the coordinator forwards without reading."""
        return COORDINATOR not in (self.sender, self.receiver)

    def describe(self) -> str:
        return f"{self.kind} #{self.step} from {self.sender} to {self.receiver} (run {self.run_id})"

    def header(self) -> dict:
        return {k: getattr(self, k) for k in _HEADER_FIELDS}

    def to_parts(self) -> list:
        """The wire bytes in pieces (magic and length, header, payload), the payload not copied: joined, hashed
        or written one after the other they are ``to_bytes()`` without a transient copy of a large payload."""
        head = json.dumps(self.header(), sort_keys=True, separators=(",", ":")).encode("utf-8")
        payload = self.payload if isinstance(self.payload, (bytes, bytearray, memoryview)) else bytes(self.payload)
        return [MAGIC + struct.pack(">I", len(head)), head, payload]

    def to_bytes(self) -> bytes:
        return b"".join(self.to_parts())

    @classmethod
    def from_bytes(cls, data: bytes) -> "Message":
        """The message ``data`` encodes (bytes, or a memoryview into a bundle: the payload is copied once)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ProtocolError(f"message: expected bytes, got {type(data).__name__}")
        view = memoryview(data).cast("B")
        if len(view) < 8 or view[:4] != MAGIC:
            raise ProtocolError("message: not a fedcredit message (bad magic or too short)")
        (size,) = struct.unpack(">I", view[4:8])
        if size > MAX_HEADER or 8 + size > len(view):
            raise ProtocolError(f"message: header length {size} does not fit the {len(view)}-byte message")
        try:
            head = json.loads(bytes(view[8 : 8 + size]).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ProtocolError(f"message: header is not valid JSON ({exc})") from None
        return cls(**check_header(head), payload=bytes(view[8 + size :]))


def check_header(head) -> dict:
    """The header's fields if they are exactly the expected ones with the expected types."""
    if not isinstance(head, dict) or set(head) != set(_HEADER_FIELDS):
        got = sorted(head) if isinstance(head, dict) else type(head).__name__
        raise ProtocolError(f"message: header fields {got}, expected {sorted(_HEADER_FIELDS)}")
    for name, kind in _HEADER_FIELDS.items():
        value = head[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ProtocolError(f"message: header field {name!r} must be {kind.__name__}, got {value!r}")
    return head


def expect(msg: Message, kinds, *, receiver: str | None = None, sender: str | None = None, run_id: str | None = None) -> Message:
    """``msg`` if it is one of ``kinds`` and is routed as expected; otherwise a ProtocolError."""
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    if msg.kind not in kinds:
        raise ProtocolError(f"unexpected {msg.describe()}; expected {' or '.join(kinds)}")
    for name, want in (("receiver", receiver), ("sender", sender), ("run_id", run_id)):
        if want is not None and getattr(msg, name) != want:
            raise ProtocolError(f"{msg.describe()}: {name} is {getattr(msg, name)!r}, expected {want!r}")
    return msg


def meta_int(msg: Message, name: str, minimum: int = 0) -> int:
    """An integer metadata field, checked; malformed metadata is rejected."""
    value = msg.meta.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ProtocolError(f"{msg.describe()}: meta field {name!r} must be an integer ≥ {minimum}, got {value!r}")
    return value


def meta_str(msg: Message, name: str, allowed=None) -> str:
    value = msg.meta.get(name)
    if not isinstance(value, str) or (allowed is not None and value not in allowed):
        want = f"one of {sorted(allowed)}" if allowed is not None else "a string"
        raise ProtocolError(f"{msg.describe()}: meta field {name!r} must be {want}, got {value!r}")
    return value


def bundle(parts: dict[str, tuple[bytes, dict]]) -> tuple[bytes, dict]:
    """Several named binary parts (e.g. ciphertext vectors with their metadata) as one payload."""
    index, chunks = [], []
    for name, (data, meta) in parts.items():
        index.append({"name": name, "size": memoryview(data).nbytes, "meta": meta})
        chunks.append(data)  # joined once below, never copied on its own
    return b"".join(chunks), {"parts": index}


def unbundle(msg: Message, names) -> dict[str, tuple[bytes, dict]]:
    """The parts of a bundled payload; exactly ``names`` must be present and sizes must add up."""
    index = msg.meta.get("parts")
    if not isinstance(index, list) or not all(isinstance(p, dict) and set(p) == {"name", "size", "meta"} for p in index):
        raise ProtocolError(f"{msg.describe()}: payload index is missing or malformed")
    got = [p["name"] for p in index]
    if sorted(got) != sorted(names):
        raise ProtocolError(f"{msg.describe()}: payload parts {got}, expected {sorted(names)}")
    out, pos = {}, 0
    for p in index:
        size = p["size"]
        if not isinstance(size, int) or size < 0 or pos + size > len(msg.payload):
            raise ProtocolError(f"{msg.describe()}: part {p['name']!r} size {size!r} does not fit the payload")
        out[p["name"]] = (msg.payload[pos : pos + size], p["meta"])
        pos += size
    if pos != len(msg.payload):
        raise ProtocolError(f"{msg.describe()}: {len(msg.payload) - pos} trailing payload bytes")
    return out


def join_messages(messages: list[Message]) -> tuple[bytes, list[int]]:
    """Several messages as one byte string and their sizes (one node's bundle for a round).

    Every payload is copied once, into the bundle (not first into each message's own bytes)."""
    pieces = [m.to_parts() for m in messages]
    return b"".join(p for parts in pieces for p in parts), [sum(memoryview(p).nbytes for p in parts) for parts in pieces]


def split_messages(data: bytes, sizes: list) -> list[Message]:
    """The messages of a bundle from its bytes and sizes; sizes that do not add up are rejected."""
    if any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in sizes) or sum(sizes) != len(data):
        raise ProtocolError(f"message bundle sizes {list(sizes)[:5]} do not add up to its {len(data)} bytes")
    out, pos, view = [], 0, memoryview(data)
    for size in sizes:
        out.append(Message.from_bytes(view[pos:pos + size]))  # a view: each payload is copied once, not twice
        pos += size
    return out


def encoded_size(msg: Message) -> int:
    """``len(msg.to_bytes())`` without building the bytes (a ciphertext payload may be hundreds of MB)."""
    return sum(memoryview(p).nbytes for p in msg.to_parts())


@dataclass
class BundleMeter:
    """The sizes of the bundles a job's rounds make: per node and round, the messages to it (one Flower
    message from the coordinator) and the messages from it (one Flower reply), as ``join_messages`` joins them.

    Engines call ``round(outgoing, replies)`` once per round; benchmarks read ``largest`` (bytes of the
    biggest bundle, the figure to hold against a transport's message limit) and where it was."""

    largest: int = 0
    where: str = ""
    rounds: int = 0
    total: int = 0  # bytes of every bundle, both directions

    def round(self, outgoing: list[Message], replies: list[Message]) -> None:
        self.rounds += 1
        for direction, messages, node_of in (("to", outgoing, lambda m: m.receiver), ("from", replies, lambda m: m.sender)):
            per_node: dict[str, list[Message]] = {}
            for msg in messages:
                per_node.setdefault(node_of(msg), []).append(msg)
            for node, msgs in per_node.items():
                size = sum(encoded_size(m) for m in msgs)
                self.total += size
                if size > self.largest:
                    kinds = sorted({m.kind for m in msgs})
                    self.largest, self.where = size, f"round {self.rounds}, {direction} {node}: {', '.join(kinds)}"
