"""The local channel between a node's thin ClientApp and its node service: HTTP over a Unix socket.

The service listens on ``node.sock`` in the node's work directory (the directory is
mode 0700, the socket 0600: only the node's OS user can connect) and every request
carries the node's secret (``node.secret``, mode 0600) as a bearer token. A message
bundle travels as the request body, raw bytes; the bundle's message sizes, delivery
number and run ride in headers. Standard library only: the ClientApp that imports this
must start fast (Flower starts one process per message) and never loads fedcredit's
protocol code, numpy or pandas itself.

Unix socket paths are limited to about 100 bytes; a work directory too deep for that
gets its socket in ``/tmp/fedcredit-<uid>/`` (mode 0700) under a name derived from the
work directory, which both ends compute the same way.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import time
from pathlib import Path

SOCKET = "node.sock"
SECRET = "node.secret"
MAX_SOCKET_PATH = 100
RUN, SEQ, SIZES, HEAD, ROLE = "X-Fedcredit-Run", "X-Fedcredit-Seq", "X-Fedcredit-Sizes", "X-Fedcredit-Head", "X-Fedcredit-Role"
SUBMITTER = "X-Fedcredit-Submitter"  # the job's verified submitter, JSON {name, fingerprint} (fedcredit.flower.trust)


class ServiceDown(Exception):
    """The node service did not answer on its socket."""


class ServiceLost(ServiceDown):
    """The node service took a request and went away before answering (it may have acted on it)."""


def socket_path(work: str | os.PathLike) -> Path:
    """Where the node service of ``work`` listens."""
    work = Path(work).resolve()
    path = work / SOCKET
    if len(str(path)) <= MAX_SOCKET_PATH:
        return path
    short = Path(f"/tmp/fedcredit-{os.getuid()}")
    return short / (hashlib.sha256(str(work).encode()).hexdigest()[:20] + ".sock")


def read_secret(work: str | os.PathLike) -> str:
    path = Path(work) / SECRET
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise ServiceDown(f"{path} is missing: the node service has not been started in {work}") from None


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float):
        super().__init__("fedcredit-node", timeout=timeout)
        self._path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def call(work: str | os.PathLike, method: str, route: str, body: bytes = b"", headers: dict | None = None, *,
         timeout: float = 3600.0, wait: float = 0.0, resend: bool = True) -> tuple[int, dict, bytes]:
    """One request to the node service of ``work``; waits up to ``wait`` seconds for it to come (back) up.

    Returns (status, headers, body). Raises ``ServiceDown`` when nothing answers in time.
    With ``resend=False`` a request the service took and dropped is not sent again:
    ``ServiceLost`` (requests that must not run twice).
    """
    path = socket_path(work)
    deadline = time.monotonic() + wait
    while True:
        sent = False
        try:
            secret = read_secret(work)
            conn = _UnixConnection(path, timeout)
            try:
                conn.request(method, route, body=body, headers={**(headers or {}), "Authorization": f"Bearer {secret}"})
                sent = True
                response = conn.getresponse()
                return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
            finally:
                conn.close()
        except (FileNotFoundError, ConnectionRefusedError, ConnectionResetError, BrokenPipeError,
                http.client.RemoteDisconnected, ServiceDown) as exc:
            if sent and not resend:
                raise ServiceLost(f"the fedcredit node service at {path} went away while handling {route} "
                                  f"({type(exc).__name__})") from None
            if time.monotonic() >= deadline:
                raise ServiceDown(f"the fedcredit node service at {path} is not answering ({type(exc).__name__}); "
                                  "start the node with `fedcredit node start` (it runs the service beside the "
                                  "SuperNode)") from None
            time.sleep(0.2)


def error_text(body: bytes) -> str:
    """The service's error message from a failed request's JSON body."""
    try:
        doc = json.loads(body)
    except ValueError:
        return body.decode(errors="replace")[:500]
    return str(doc.get("detail", doc)) if isinstance(doc, dict) else str(doc)
