"""``python -m fedcredit.deploy.superlink ARGS``: ``flower-superlink ARGS`` whose Control and Runtime APIs answer only allowed peers.

Flower 1.41 serves the Fleet API (SuperNodes), the Control API (``flwr`` CLI: submit and
stop runs, register SuperNode keys) and the Runtime API (the ServerApp and its
SuperExec) on one HTTPS port, and the Control API has no authentication in open-source
Flower. Whoever can reach the port for the Fleet API can therefore also submit runs and
register keys. This wrapper adds one ASGI middleware, outermost, to the SuperLink's
FastAPI app: a request to ``/v1/control/*`` or ``/v1/runtime/*`` (or any path but
``/health`` and ``/v1/fleet/*``) from a peer outside ``FEDCREDIT_CONTROL_FROM`` (comma-separated
addresses or networks; ``fedcredit coordinator start`` sets loopback and the address the
SuperLink binds, plus ``--control-from``) gets 403 and a log line. It patches
``flwr.superlink.main._get_middleware``, a private detail of flwr 1.41; on any other
Flower version, or when that detail is not where it was, it refuses to start (fail closed).
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys

ALLOW_ENV = "FEDCREDIT_CONTROL_FROM"
OPEN_PATHS = ("/health", "/v1/fleet/")  # what a node's side may reach


def parse_networks(text: str) -> list:
    """``"127.0.0.0/8,::1,10.0.0.1"`` -> networks; raises ValueError naming a bad entry."""
    nets = []
    for item in (t.strip() for t in text.split(",")):
        if item:
            try:
                nets.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network (CIDR)") from None
    return nets


def allowed(peer: str | None, networks: list) -> bool:
    try:
        address = ipaddress.ip_address((peer or "").split("%")[0])
    except ValueError:
        return False
    if getattr(address, "ipv4_mapped", None):
        address = address.ipv4_mapped
    return any(address in net for net in networks)


def is_open(path: str) -> bool:
    return path == OPEN_PATHS[0] or path.startswith(OPEN_PATHS[1])


class ControlGate:
    """ASGI middleware: only ``networks`` may reach anything but ``/health`` and the Fleet API."""

    def __init__(self, app, networks: list, log=print):
        self.app, self.networks, self.log = app, networks, log

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and not is_open(scope.get("path", "")):
            peer = (scope.get("client") or (None, None))[0]
            if not allowed(peer, self.networks):
                self.log(f"fedcredit: refused {scope.get('method')} {scope.get('path')} from {peer}: the Control and "
                         f"Runtime APIs answer only {', '.join(map(str, self.networks))} (--control-from)")
                body = json.dumps({"detail": "forbidden: this SuperLink's Control and Runtime APIs are not reachable "
                                             "from this address (fedcredit coordinator start --control-from)"}).encode()
                await send({"type": "http.response.start", "status": 403,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def install(networks: list) -> None:
    """Put ``ControlGate`` outermost in the SuperLink app's middleware (flwr 1.41); raises RuntimeError elsewhere."""
    from starlette.middleware import Middleware

    from fedcredit.deploy.supernode import flwr_141

    import flwr.superlink.main as main

    original = getattr(main, "_get_middleware", None)
    if not flwr_141() or not callable(original) or not callable(getattr(main, "create_app", None)):
        raise RuntimeError("the Control API gate supports flwr 1.41 only (flwr.superlink.main._get_middleware)")

    def with_gate():
        return [Middleware(ControlGate, networks=networks,
                           log=lambda line: print(line, file=sys.stderr, flush=True)), *original()]

    main._get_middleware = with_gate


def main() -> int:
    try:
        networks = parse_networks(os.environ.get(ALLOW_ENV, "127.0.0.0/8,::1"))
        install(networks)
    except (RuntimeError, ValueError) as exc:
        print(f"fedcredit: the SuperLink does not start: {exc}", file=sys.stderr, flush=True)
        return 2
    print(f"fedcredit: Control and Runtime APIs answer only {', '.join(map(str, networks))}", file=sys.stderr,
          flush=True)
    from flwr.superlink.cli.flower_superlink import flower_superlink

    sys.argv[0] = "flower-superlink"
    return flower_superlink() or 0


if __name__ == "__main__":
    sys.exit(main())
