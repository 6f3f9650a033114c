"""Ray cluster addresses as a node's config gives them, and keeping Ray on loopback when it stays on this machine.

Config checks (node.toml, job files) and the Ray worker pool (``fedcredit.crypto.ray_pool``)
read addresses the same way; Flower's simulation engine (``fedcredit.flower.simulation``) and a
local Ray pool keep Ray's servers on 127.0.0.1.
"""

from __future__ import annotations

import ipaddress
import os
import sys

from fedcredit.common.errors import FedCreditError

LOCAL = "local"  # a Ray instance of this machine, for one process


def ray_on_loopback() -> None:
    """Make Ray's servers (GCS, raylet, object manager, workers, runtime-env agent) listen on 127.0.0.1 only.

    On Linux Ray takes the machine's own address as the node address and binds its gRPC servers
    to every interface (``::``); even ``ray.init(_node_ip_address="127.0.0.1")`` is turned back
    into the machine's address, and so is a cluster address ``127.0.0.1:PORT`` given to
    ``ray.init``. Ray's single-machine mode (what it uses on macOS and Windows) takes the
    loopback address instead, and then binds 127.0.0.1 only. Ray reads the switch when it is
    first imported; its worker processes read it from the environment they inherit.
    """
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:  # Ray was imported before (a notebook, the caller): it has read the switch already
        constants.ENABLE_RAY_CLUSTER = False


def is_loopback_host(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 or ::1."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_address(address) -> tuple[str, int] | None:
    """``"local"`` -> None; ``"HOST:PORT"`` or ``"ray://HOST:PORT"`` (Ray Client) -> (host, port); else FedCreditError."""
    expected = f"\"{LOCAL}\", HOST:PORT or ray://HOST:PORT"
    if not isinstance(address, str) or not address.strip():
        raise FedCreditError(f"a Ray address must be {expected}, got {address!r}")
    if address == LOCAL:
        return None
    rest = address[len("ray://"):] if address.startswith("ray://") else address
    host, colon, port = rest.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise FedCreditError(f"a Ray address must be {expected}, got {address!r}")
    return host.strip("[]"), int(port)
