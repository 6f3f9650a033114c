"""``python -m fedcredit.deploy.supernode ARGS``: ``flower-supernode ARGS``, optionally with a shorter idle poll.

Flower 1.41's SuperNode sleeps a hard-coded 3 s whenever it pulled no message
(``flwr/supernode/start_client_internal.py``), which costs up to 3 s per message round
of a chatty protocol. With ``FEDCREDIT_IDLE_POLL=SECONDS`` set (``fedcredit node start
--idle-poll``), that one sleep is shortened; every other sleep is left alone. This
patches a private detail of flwr 1.41 only: on another version, or when the detail is
not where it was, the SuperNode runs unchanged and says so.

``FEDCREDIT_HEARTBEAT=SECONDS`` (``fedcredit node start --heartbeat``) sets the interval
the SuperNode announces and keeps (Flower's default 30 s; the SuperLink accepts 10 s at
least). The SuperLink declares a node lost after two intervals without a heartbeat, so
this is how quickly a crashed node is noticed by the coordinator (see
``fedcredit.flower.delivery``).
"""

from __future__ import annotations

import os
import sys
import time as _time
import types


def _patch(idle: float) -> bool:
    import flwr.supernode.start_client_internal as sci
    from flwr.supercore.version import package_version

    if not package_version.startswith("1.41.") or getattr(sci, "time", None) is not _time:
        return False
    shim = types.SimpleNamespace(**{k: getattr(_time, k) for k in dir(_time) if not k.startswith("__")})
    # the 3 s idle wait, and the 0.5 s waits for the ClientApp's reply in the same loop
    shim.sleep = lambda s: _time.sleep(idle if s == 3 else min(s, idle) if s == 0.5 else s)
    sci.time = shim
    return True


def _patch_heartbeat(seconds: int) -> bool:
    import flwr.supercore.heartbeat as hb
    import flwr.supernode.fleet_http_connection as conn
    from flwr.common.constant import HEARTBEAT_MIN_INTERVAL

    if seconds < HEARTBEAT_MIN_INTERVAL or not all(hasattr(m, "HEARTBEAT_DEFAULT_INTERVAL") for m in (hb, conn)):
        return False
    hb.HEARTBEAT_DEFAULT_INTERVAL = conn.HEARTBEAT_DEFAULT_INTERVAL = seconds
    return True


def main() -> int:
    beat = os.environ.get("FEDCREDIT_HEARTBEAT")
    if beat and not _patch_heartbeat(int(float(beat))):
        print(f"fedcredit: heartbeat interval {beat} s not applicable (Flower needs >= 10 s, flwr 1.41 layout); "
              "using Flower's default", file=sys.stderr, flush=True)
    idle = os.environ.get("FEDCREDIT_IDLE_POLL")
    if idle:
        if not _patch(float(idle)):
            print("fedcredit: idle-poll patch not applicable to this flwr version; using Flower's default",
                  file=sys.stderr, flush=True)
    from flwr.supernode.cli.flower_supernode import flower_supernode

    sys.argv[0] = "flower-supernode"
    return flower_supernode() or 0


if __name__ == "__main__":
    sys.exit(main())
