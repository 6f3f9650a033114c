"""``flwr-clientapp`` for fedcredit's SuperNodes: hand each Flower task to the node service.

Flower 1.41's SuperExec starts ``flwr-clientapp --runtime-api-address … --token …`` (from
PATH) once per message. Flower's own runner imports the SuperNode package and the
ClientApp's dependencies every time: about 1.5 CPU-seconds per message on this machine.
``fedcredit node start`` puts this launcher first on the SuperNode's PATH. It imports only
the standard-library channel and passes the task's Runtime API address and token to the
node's long-lived service (``POST /task``), which runs the task with Flower already loaded
(``fedcredit.flower.warm_task``) and answers when the reply is pushed.

When the service cannot take the task (it is down or being restarted, or runs a Flower
version it does not support), the launcher runs Flower's own ``flwr-clientapp`` with the
same arguments. That loads the relay ClientApp, which waits for the service and reports
it by the node's role if it stays down. On flwr 1.41 Flower's runner is loaded from its
file, skipping ``flwr.supernode.cli.__init__`` (the whole SuperNode). A service that takes
a task and dies before answering has already used its token: the launcher then exits
with an error, and the SuperNode reports the task as a crashed ClientApp once its
heartbeat stops, which the coordinator redelivers.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shlex
import sys
from pathlib import Path

NAME = "flwr.supernode.cli.flwr_clientapp"
WORK_FLAG = "--fedcredit-node-work"


def _lean_entry():
    """Flower's ``flwr_clientapp`` function, imported without ``flwr.supernode.cli.__init__`` (flwr 1.41 only)."""
    import flwr

    from fedcredit.deploy.supernode import flwr_141

    path = Path(flwr.__file__).parent / "supernode" / "cli" / "flwr_clientapp.py"
    if not flwr_141() or not path.exists():
        return None
    spec = importlib.util.spec_from_file_location(NAME, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, "flwr_clientapp", None)


def _flower_runner(argv: list[str]) -> None:
    sys.argv = ["flwr-clientapp", *argv]
    entry = _lean_entry()
    if entry is None:
        from flwr.supernode.cli import flwr_clientapp as entry
    entry()


def task_spec(argv: list[str]) -> dict | None:
    """The task the SuperExec's arguments describe, or None when they are not the ones this launcher knows."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--runtime-api-address", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--insecure", action="store_true")
    p.add_argument("--root-certificates")
    p.add_argument("--parent-pid")
    try:
        args, unknown = p.parse_known_args(argv)
    except SystemExit:
        return None
    if unknown:
        return None  # e.g. runtime dependency installation, token on stdin: Flower's runner handles those
    return {"runtime_api_address": args.runtime_api_address, "token": args.token, "insecure": args.insecure,
            "root_certificates": str(Path(args.root_certificates).resolve()) if args.root_certificates else None}


def hand_to_service(work: str, spec: dict) -> int | None:
    """Run the task in the node service: its exit code, or None when the service did not take it."""
    import fedcredit.node.channel as channel

    try:
        status, _, body = channel.call(work, "POST", "/task", json.dumps(spec).encode(),
                                       {"Content-Type": "application/json"}, resend=False)
    except channel.ServiceLost as exc:
        print(f"fedcredit flwr-clientapp: {exc}", file=sys.stderr)
        return 1
    except channel.ServiceDown:
        return None
    if status == 404:
        return None
    if status != 200:
        print(f"fedcredit flwr-clientapp: the node service failed the task: {channel.error_text(body)}",
              file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    work = None
    if len(argv) >= 2 and argv[0] == WORK_FLAG:
        work, argv = argv[1], argv[2:]
    spec = task_spec(argv) if work else None
    if spec is not None:
        code = hand_to_service(work, spec)
        if code is not None:
            sys.exit(code)
    _flower_runner(argv)


def write_shim(folder: Path, service_work: Path | None = None) -> Path:
    """An executable ``flwr-clientapp`` in ``folder`` that runs this module with this Python; with
    ``service_work`` (the node service's work directory) it hands tasks to that service first."""
    folder.mkdir(parents=True, exist_ok=True)
    shim = folder / "flwr-clientapp"
    work = f"{WORK_FLAG} {shlex.quote(str(service_work))} " if service_work is not None else ""
    shim.write_text(f"#!/bin/sh\nexec {sys.executable} -m fedcredit.deploy.clientapp {work}\"$@\"\n")
    shim.chmod(0o755)
    return shim


if __name__ == "__main__":
    main()
