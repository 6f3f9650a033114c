"""Keep Ray on the loopback address when everything it runs lives on this machine.

Used by Flower's simulation engine (``fedcredit.flower.simulation``) and by a node's Ray
worker pool when its cluster is local (``fedcredit.crypto.ray_pool``).
"""

from __future__ import annotations

import ipaddress
import os
import sys


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
