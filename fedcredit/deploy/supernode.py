"""``python -m fedcredit.deploy.supernode ARGS``: ``flower-supernode ARGS``, optionally with a shorter idle poll.

Flower 1.41's SuperNode sleeps a hard-coded 3 s whenever it pulled no message
(``flwr/supernode/start_client_internal.py``), which costs up to 3 s per message round
of a chatty protocol. With ``FEDCREDIT_IDLE_POLL=SECONDS`` set (``fedcredit node start
--idle-poll``), that one sleep is shortened, and so is the wait before pulling an object
of a message again that has not arrived yet (``shorten_pull_backoff``). This
patches private details of flwr 1.41 only: on another version, or when the detail is
not where it was, the SuperNode runs unchanged and says so.

``FEDCREDIT_HEARTBEAT=SECONDS`` (``fedcredit node start --heartbeat``) sets the interval
the SuperNode announces and keeps (Flower's default 30 s; the SuperLink accepts 10 s at
least). The SuperLink declares a node lost after two intervals without a heartbeat, so
this is how quickly a crashed node is noticed by the coordinator (see
``fedcredit.flower.delivery``).

**Rejoining.** A SuperNode restarted within two heartbeat intervals of its crash is
refused by the SuperLink (it still lists the node as online: Flower logs "Exit Code: 305
... Failed to activate SuperNode" and exits with 1). When the node's work directory holds a run checkpoint (it was in
the middle of a job), this wrapper starts the SuperNode again every few seconds until it
is let in, for at most ``FEDCREDIT_REJOIN_S`` seconds (default: six heartbeat
intervals); a node without a checkpoint (say, an unregistered key) is not retried.
"""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import threading
import time as _time
import types
from pathlib import Path

REFUSED_LINE = b"Exit Code: 305"  # flwr's SUPERNODE_CONNECTION_ERROR (activation or connection failed)
_CHILD = "FEDCREDIT_SUPERNODE_CHILD"


def flwr_141() -> bool:
    """Whether the installed Flower is the 1.41 line, the only one whose private details fedcredit patches."""
    from flwr.supercore.version import package_version

    return package_version.startswith("1.41.")


def _patch(idle: float) -> bool:
    import flwr.supernode.start_client_internal as sci

    if not flwr_141() or getattr(sci, "time", None) is not _time:
        return False
    shim = types.SimpleNamespace(**{k: getattr(_time, k) for k in dir(_time) if not k.startswith("__")})
    # the 3 s idle wait, and the 0.5 s waits for the ClientApp's reply in the same loop
    shim.sleep = lambda s: _time.sleep(idle if s == 3 else min(s, idle) if s == 0.5 else s)
    sci.time = shim
    return True


def shorten_pull_backoff(initial: float, cap: float, max_wait: float | None = None) -> bool:
    """Flower 1.41 retries an object that is not there yet after 1 s, then 2, 4 … up to 10 s.

    Flower registers a message before it uploads the message's objects, so whoever pulls
    it (the SuperNode from the SuperLink, the ClientApp from the SuperNode, the ServerApp
    a reply) may ask for objects that follow milliseconds later, and then sleeps a second
    or more. This shortens the default waits of Flower's two object-pull functions in this
    process (flwr 1.41 only; False elsewhere, where nothing changes).

    ``max_wait`` (seconds) bounds how long one object is waited for (Flower: 500 tries, about
    4 minutes at a 0.5 s cap). A message whose sender died (a coordinator killed mid-round)
    never completes, and a node answers one task at a time, so this is also how long such a
    message holds up the node's next run.
    """
    from flwr.supercore.inflatable import inflatable_utils as pulls

    functions = (pulls.pull_objects, pulls.pull_and_inflate_object_from_tree)
    if not flwr_141() or not all(
            {"initial_backoff", "backoff_cap"} <= set(f.__kwdefaults__ or {}) for f in functions):
        return False
    tries = {} if max_wait is None else {"max_tries_per_object": max(1, math.ceil(max_wait / cap))}
    for f in functions:
        f.__kwdefaults__.update(initial_backoff=initial, backoff_cap=cap, **tries)
    return True


def object_wait() -> float | None:
    """``FEDCREDIT_OBJECT_WAIT_S``: the node's bound on waiting for one object of a message (None: Flower's)."""
    value = os.environ.get("FEDCREDIT_OBJECT_WAIT_S")
    try:
        return float(value) if value else None
    except ValueError:
        from fedcredit.common.errors import FedCreditError

        raise FedCreditError(f"FEDCREDIT_OBJECT_WAIT_S must be a number of seconds, got {value!r}") from None


def _patch_heartbeat(seconds: int) -> bool:
    import flwr.supercore.heartbeat as hb
    import flwr.supernode.fleet_http_connection as conn
    from flwr.common.constant import HEARTBEAT_MIN_INTERVAL

    if seconds < HEARTBEAT_MIN_INTERVAL or not all(hasattr(m, "HEARTBEAT_DEFAULT_INTERVAL") for m in (hb, conn)):
        return False
    hb.HEARTBEAT_DEFAULT_INTERVAL = conn.HEARTBEAT_DEFAULT_INTERVAL = seconds
    return True


def _has_checkpoint(argv: list[str]) -> bool:
    """Whether the node config's work-dir holds a run checkpoint (``run-*/checkpoint``, ``fedcredit.node.runs``)."""
    config = argv[argv.index("--node-config") + 1] if "--node-config" in argv[:-1] else ""
    work = re.search(r"work-dir='([^']*)'", config)
    return bool(work) and any(Path(work.group(1)).glob("run-*/checkpoint"))


def supervise(argv: list[str], command: list[str] | None = None, pause: float = 5.0) -> int:
    """Run the SuperNode as a child; start it again while the SuperLink refuses a node that is rejoining.

    ``command`` (default: this module as the SuperNode itself) gets ``argv`` appended.
    """
    beat = float(os.environ.get("FEDCREDIT_HEARTBEAT") or 30)
    window = float(os.environ.get("FEDCREDIT_REJOIN_S") or 6 * beat)
    started = _time.monotonic()
    child: list[subprocess.Popen] = []

    def forward(signum, _frame):
        if child and child[0].poll() is None:
            child[0].send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return _supervise_loop(argv, command, pause, window, started, child)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _pass_through(stream, seen: list[bytes]) -> None:
    """Copy the SuperNode's output to ours (its log) and keep the lines that say why it exited."""
    for line in stream:
        sys.stdout.buffer.write(line)
        sys.stdout.flush()
        if b"Exit Code" in line:
            seen.append(line)


def _supervise_loop(argv, command, pause, window, started, child) -> int:
    while True:
        child[:] = [subprocess.Popen([*(command or [sys.executable, "-m", "fedcredit.deploy.supernode"]), *argv],
                                    env={**os.environ, _CHILD: "1"}, start_new_session=True,  # signals: forwarded once
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)]
        seen: list[bytes] = []
        copier = threading.Thread(target=_pass_through, args=(child[0].stdout, seen), daemon=True)
        copier.start()
        code = child[0].wait()  # not EOF: the SuperNode's own children may hold the pipe after it exited
        copier.join(timeout=2.0)
        rejoin = any(REFUSED_LINE in line for line in seen) and _has_checkpoint(argv)
        if not rejoin or _time.monotonic() - started > window:
            return code
        print(f"fedcredit: the SuperLink refused this node (it may still list its crashed predecessor as online); "
              f"this node holds a run checkpoint, so it tries again in {pause:g} s (for up to {window:.0f} s)",
              file=sys.stderr, flush=True)
        _time.sleep(pause)


def main() -> int:
    if not os.environ.get(_CHILD):
        return supervise(sys.argv[1:])
    beat = os.environ.get("FEDCREDIT_HEARTBEAT")
    if beat and not _patch_heartbeat(int(float(beat))):
        print(f"fedcredit: heartbeat interval {beat} s not applicable (Flower needs >= 10 s, flwr 1.41 layout); "
              "using Flower's default", file=sys.stderr, flush=True)
    idle = os.environ.get("FEDCREDIT_IDLE_POLL")
    if idle:
        if not (_patch(float(idle)) and shorten_pull_backoff(min(float(idle), 0.05), 0.5)):
            print("fedcredit: idle-poll patch not applicable to this flwr version; using Flower's default",
                  file=sys.stderr, flush=True)
    from flwr.supernode.cli.flower_supernode import flower_supernode

    sys.argv[0] = "flower-supernode"
    return flower_supernode() or 0


if __name__ == "__main__":
    sys.exit(main())
