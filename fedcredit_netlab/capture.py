"""Capture frames on an interface and look for bytes that must never cross it in clear.

``Capture`` reads every frame of one interface (both directions) with an ``AF_PACKET``
raw socket on a background thread (no tcpdump needed; needs root), up to a byte budget;
frames beyond it are counted, not kept. ``tcp_streams`` reassembles each TCP direction by
sequence number, so a value split across segments is still found; ``find_canaries``
searches those streams and every non-TCP frame; ``tls_framing`` checks that a stream is a
sequence of well-formed TLS records from its first byte to its last.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections import defaultdict
from dataclasses import dataclass, field

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_STATISTICS = 6
MAX_FRAME = 262144  # veth passes GSO frames up to 64 KiB; leave room


@dataclass
class Captured:
    """What a capture saw: kept frames, totals over all frames, and kernel-side drops (must be 0 to trust a search)."""

    interface: str
    frames: list[bytes] = field(default_factory=list)
    frames_total: int = 0
    bytes_total: int = 0
    bytes_not_kept: int = 0
    kernel_drops: int = 0


class Capture:
    """Frames of ``interface`` until ``stop()``; keeps at most ``limit_bytes`` (0: count only)."""

    def __init__(self, interface: str, limit_bytes: int = 512 << 20):
        self.result = Captured(interface)
        self.limit = limit_bytes
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE (root): ride out bursts
        except OSError:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
        self._sock.bind((interface, 0))
        self._sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._loop, name=f"capture-{interface}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        buf = bytearray(MAX_FRAME)
        r = self.result
        while not self._stop.is_set():
            try:
                n = self._sock.recv_into(buf, MAX_FRAME, socket.MSG_TRUNC)
            except socket.timeout:
                continue
            except OSError:
                break
            r.frames_total += 1
            r.bytes_total += n
            if r.bytes_total - r.bytes_not_kept <= self.limit and n <= MAX_FRAME:
                r.frames.append(bytes(buf[:n]))
            else:
                r.bytes_not_kept += n

    def stop(self) -> Captured:
        """Stop reading and return what was seen (call once)."""
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            _packets, drops = struct.unpack("II", self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
            self.result.kernel_drops = drops
        except OSError:
            pass
        self._sock.close()
        return self.result


def _tcp_segment(frame: bytes):
    """(flow, seq, flags, payload) of an Ethernet/IPv4/TCP frame, else None."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00":
        return None
    ip = frame[14:]
    ihl = (ip[0] & 0x0F) * 4
    if ip[0] >> 4 != 4 or ip[9] != 6 or len(ip) < ihl + 20:
        return None
    total = struct.unpack("!H", ip[2:4])[0] or len(ip)  # 0 on GSO frames: take the frame's length
    tcp = ip[ihl:total]
    if len(tcp) < 20:
        return None
    sport, dport, seq = struct.unpack("!HHI", tcp[:8])
    flow = (socket.inet_ntoa(ip[12:16]), sport, socket.inet_ntoa(ip[16:20]), dport)
    return flow, seq, tcp[13], tcp[(tcp[12] >> 4) * 4:]


def tcp_streams(frames: list[bytes]) -> dict[tuple, bytes]:
    """Each TCP direction ``(src, sport, dst, dport)``'s bytes in sequence order (retransmissions counted once)."""
    segments: dict[tuple, list] = defaultdict(list)
    isn: dict[tuple, int] = {}
    for frame in frames:
        seg = _tcp_segment(frame)
        if seg is None:
            continue
        flow, seq, flags, payload = seg
        if flags & 0x02:  # SYN: data starts at seq + 1
            isn[flow] = seq + 1
        if payload:
            segments[flow].append((seq, payload))
    streams = {}
    for flow, segs in segments.items():
        base = isn.get(flow, min(s for s, _ in segs))
        out = bytearray()
        for offset, payload in sorted(((s - base) % (1 << 32), p) for s, p in segs):
            if offset + len(payload) <= len(out):
                continue
            # a gap (capture started mid-stream, or a frame was missed) just joins the bytes around it
            out += payload[max(0, len(out) - offset):]
        streams[flow] = bytes(out)
    return streams


def find_canaries(frames: list[bytes], canaries: dict[str, bytes]) -> dict[str, list[str]]:
    """Where each canary (name -> bytes) occurs: in which reassembled TCP stream or non-TCP frame."""
    hits: dict[str, list[str]] = {}
    places = [(f"tcp {s}:{sp} -> {d}:{dp}", data) for (s, sp, d, dp), data in tcp_streams(frames).items()]
    places += [(f"non-TCP frame {i}", f) for i, f in enumerate(frames) if _tcp_segment(f) is None]
    for name, needle in canaries.items():
        where = [label for label, data in places if needle in data]
        if where:
            hits[name] = where
    return hits


def tls_framing(stream: bytes) -> dict:
    """Walk ``stream`` as TLS records (type 20-23, version 3.x, length ≤ 2^14 + 256).

    ``ok`` is true when records cover the stream from byte 0 to its end (the last one may
    be cut off by the capture's end); ``records`` counts them by content type.
    """
    pos, counts = 0, defaultdict(int)
    while pos + 5 <= len(stream):
        kind, major, length = stream[pos], stream[pos + 1], struct.unpack("!H", stream[pos + 3:pos + 5])[0]
        if kind not in (20, 21, 22, 23) or major != 3 or length > (1 << 14) + 256:
            return {"ok": False, "records": dict(counts), "bad_at": pos, "bytes": len(stream)}
        counts[kind] += 1
        pos += 5 + length
    return {"ok": True, "records": dict(counts), "bytes": len(stream)}
