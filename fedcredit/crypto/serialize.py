"""Exact ciphertext encoding: fixed-width big-endian bytes and Arrow fixed_size_binary arrays."""

from __future__ import annotations

import pyarrow as pa

from fedcredit.crypto.errors import SerializationError


def to_bytes(cts: list, width: int) -> bytes:
    """Concatenate ciphertexts as ``width``-byte big-endian integers."""
    return b"".join(int(c).to_bytes(width, "big") for c in cts)


def from_bytes(data, width: int, group, count: int | None = None) -> list:
    """Parse ``data`` into ciphertexts, checking length, count and range for ``group``."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise SerializationError(f"ciphertext data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) % width:
        raise SerializationError(
            f"ciphertext data is {len(data)} bytes, not a multiple of the {width}-byte ciphertext size of this key"
        )
    found = len(data) // width
    if count is not None and found != count:
        raise SerializationError(f"expected {count} ciphertexts ({count * width} bytes), got {found}")
    parse = group.parse
    cts = [parse(int.from_bytes(data[i : i + width], "big")) for i in range(0, len(data), width)]
    for i, c in enumerate(cts):
        if not group.is_valid(c):
            raise SerializationError(
                f"ciphertext {i} is out of range for this key (must be in (0, n^2) for Paillier, [0, n) for mock)"
            )
    return cts


def to_arrow(data: bytes, width: int) -> pa.FixedSizeBinaryArray:
    """Wrap concatenated ciphertext bytes as an Arrow ``fixed_size_binary(width)`` array."""
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(data) // width, [None, pa.py_buffer(data)])


def from_arrow(array, width: int) -> bytes:
    """Concatenated bytes of an Arrow ``fixed_size_binary(width)`` array without nulls."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if not isinstance(array, pa.Array):
        raise SerializationError(f"expected a pyarrow array, got {type(array).__name__}")
    if not pa.types.is_fixed_size_binary(array.type) or array.type.byte_width != width:
        raise SerializationError(f"expected an Arrow fixed_size_binary({width}) array, got {array.type}")
    if array.null_count:
        raise SerializationError(f"ciphertext array has {array.null_count} null entries")
    buf = array.buffers()[1]
    start = array.offset * width
    return buf.to_pybytes()[start : start + len(array) * width]
