"""uvicorn in a thread of the serving process, on a socket bound here (so a taken port is a clear error)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import uvicorn

from fedcredit.common.errors import FedCreditError


class HttpsServer:
    """One HTTPS server for ``app`` on ``host:port`` with the given certificate and key; ``stop`` ends it."""

    def __init__(self, app, host: str, port: int, certfile: Path, keyfile: Path):
        for path in (certfile, keyfile):
            if not Path(path).is_file():
                raise FedCreditError(f"TLS file {path} is missing (the coordinator's certificate folder)")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
        except OSError as exc:
            self.sock.close()
            raise FedCreditError(f"the query endpoint cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self.host, self.port = host, self.sock.getsockname()[1]
        config = uvicorn.Config(app, ssl_certfile=str(certfile), ssl_keyfile=str(keyfile), log_level="warning",
                                access_log=False, lifespan="off", ws="none", timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name="fedcredit-query-endpoint", daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    def start(self, timeout: float = 15.0) -> "HttpsServer":
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise FedCreditError(f"the query endpoint on {self.host}:{self.port} did not start "
                                     "(see the log above for uvicorn's reason)")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(timeout)
        self.sock.close()

    def __enter__(self) -> "HttpsServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
