"""The network lab's pieces: TCP reassembly, canary search and TLS framing on synthetic frames (anywhere), and
a real two-party lab with a delayed, lossy link that leaves nothing behind (root only)."""

from __future__ import annotations

import random
import shutil
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from fedcredit_netlab import namespaces as netlab
from fedcredit_netlab.capture import Capture, find_canaries, tcp_streams, tls_framing


def _frame(seq: int, payload: bytes, flags: int = 0x18, src="10.213.1.11", dst="10.213.1.10", sport=40000,
           dport=9092) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, flags, 65535, 0, 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0, socket.inet_aton(src),
                     socket.inet_aton(dst))
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + tcp


def test_streams_are_reassembled_by_sequence_number_and_canaries_found_across_segments():
    data = bytes(random.Random(1).getrandbits(8) for _ in range(3000)) + b"CANARY-91330100Y390N10J9U" + b"z" * 500
    isn = 2 ** 32 - 1000  # the sequence numbers wrap inside the stream
    frames = [_frame(isn, b"", flags=0x02)]
    pieces = [(i, data[i:i + 700]) for i in range(0, len(data), 700)]
    frames += [_frame((isn + 1 + i) % 2 ** 32, p) for i, p in pieces]
    frames.append(frames[3])  # a retransmission
    random.Random(2).shuffle(frames)
    frames.append(b"\xff" * 14 + b"ARP-ish frame holding NONTCP-CANARY")
    streams = tcp_streams(frames)
    assert streams == {("10.213.1.11", 40000, "10.213.1.10", 9092): data}
    hits = find_canaries(frames, {"id": b"CANARY-91330100Y390N10J9U", "raw": b"NONTCP-CANARY", "absent": b"nope!!"})
    assert set(hits) == {"id", "raw"} and hits["raw"][0].startswith("non-TCP frame")


def test_tls_framing_accepts_records_only():
    records = b"\x16\x03\x01\x00\x05hello" + b"\x17\x03\x03\x00\x03abc" + b"\x17\x03\x03\x40\x00" + b"x" * 10
    assert tls_framing(records) == {"ok": True, "records": {22: 1, 23: 2}, "bytes": len(records)}
    assert not tls_framing(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")["ok"]
    assert not tls_framing(records[:13] + b"POST /v1/fleet HTTP/1.1")["ok"]


NO_LAB = netlab.unavailable_reason()


@pytest.mark.skipif(NO_LAB is not None, reason=f"no network lab here: {NO_LAB}")
def test_lab_links_capture_impairment_and_cleanup():
    with netlab.Lab(["coordinator", "bank"]) as lab:
        prefix = lab.prefix
        capture = Capture(lab.link("bank"))
        lab.send_plain("bank", b"plain-text-control-0123456789")

        def listen():
            s = socket.socket()
            s.bind((lab.address("coordinator"), 0))
            s.listen(4)
            return s

        server = netlab.in_netns(lab.ns("coordinator"), listen)

        def echo():
            while True:
                try:
                    conn, _ = server.accept()
                except OSError:
                    return
                with conn:
                    while data := conn.recv(65536):
                        conn.sendall(data)

        threading.Thread(target=echo, daemon=True).start()
        loss = 2.0 if shutil.which("nft") or shutil.which("iptables") else 0.0  # CI machines may have neither
        impairment = lab.impair("bank", 40, loss, ("coordinator", server.getsockname()[1]))
        relays = lab.pids("coordinator") if "relay" in impairment.delay_mechanism else []
        host, port = impairment.address.rsplit(":", 1)

        def round_trips():
            with socket.create_connection((host, int(port)), timeout=10) as s:
                times = []
                for _ in range(3):
                    t = time.perf_counter()
                    s.sendall(b"ping")
                    assert s.recv(16) == b"ping"
                    times.append(time.perf_counter() - t)
                return times

        times = netlab.in_netns(lab.ns("bank"), round_trips)  # the bank's traffic crosses its impaired link
        seen = capture.stop()
        server.close()
        assert min(times) >= 0.079, (times, impairment)  # 40 ms each way
        assert (impairment.loss_mechanism != "none") == bool(loss) and impairment.delay_mechanism != "none"
        assert "control" in find_canaries(seen.frames, {"control": b"plain-text-control-0123456789"})
        assert seen.bytes_total > 0 and seen.kernel_drops == 0
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert prefix not in left and prefix not in links
    for pid in relays:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text(), pid
