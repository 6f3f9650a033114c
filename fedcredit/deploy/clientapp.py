"""``flwr-clientapp`` for fedcredit's SuperNodes: hand each Flower task to the node service.

Flower 1.41's SuperExec starts ``flwr-clientapp --runtime-api-address … --token …`` (from
PATH) once per message. Flower's own runner imports the SuperNode package and the
ClientApp's dependencies every time: about 1.5 CPU-seconds per message on this machine.
``fedcredit node start`` puts this launcher first on the SuperNode's PATH. It imports only
the standard-library channel and passes the task's Runtime API address and token to the
node's long-lived service (``POST /task``), which runs the task with Flower already loaded
(``fedcredit.flower.warm_task``) and answers when the reply is pushed.

When the service cannot take the task (it is down or being restarted), the launcher runs
the same task itself (``fedcredit.flower.warm_task.run_task``, answering through the
relay, which waits for the service and reports it by the node's role if it stays down).
It never runs Flower's own ``flwr-clientapp``: that would install and import the app
bundle's code next to the node's data. Arguments it does not know (runtime dependency
installation, a token on stdin) and a Flower version other than 1.41 are refused: the
task fails, the SuperNode reports it, nothing from the bundle runs. A service that takes
a task and dies before answering has already used its token: the launcher then exits
with an error, and the SuperNode reports the task as a crashed ClientApp once its
heartbeat stops, which the coordinator redelivers.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

WORK_FLAG = "--fedcredit-node-work"  # fedcredit.deploy.processes.NODE_WORK_FLAG (not imported: this starts per task)
SERVICE_WAIT_S = 60.0  # how long the launcher's own run of a task waits for a service that is being restarted


def run_here(work: str, spec: dict) -> int:
    """Run the task in this process with the installed fedcredit (never the bundle's code): its exit code."""
    import fedcredit.node.channel as channel
    from fedcredit.common.errors import FedCreditError
    from fedcredit.flower.warm_task import run_task

    def call(method: str, route: str, body: bytes = b"", headers: dict | None = None):
        return channel.call(work, method, route, body, headers, wait=SERVICE_WAIT_S)

    try:
        outcome = run_task(spec, call)
    except FedCreditError as exc:
        print(f"fedcredit flwr-clientapp: {exc}", file=sys.stderr)
        return 1
    return 0 if outcome.get("status") == "completed" else 1


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
        return None  # e.g. runtime dependency installation, token on stdin: refused
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
    if spec is None:
        print(f"fedcredit flwr-clientapp: refusing the task: {shlex.join(argv)!r} is not a task this node runs "
              "(it runs tasks with its installed fedcredit only; no runtime dependency installation)", file=sys.stderr)
        sys.exit(2)
    code = hand_to_service(work, spec)
    sys.exit(code if code is not None else run_here(work, spec))


def write_shim(folder: Path, service_work: Path) -> Path:
    """An executable ``flwr-clientapp`` in ``folder`` that runs this module with this Python, handing tasks to
    the node service of ``service_work`` (its work directory)."""
    from fedcredit.deploy.processes import NODE_WORK_FLAG, write_launcher

    return write_launcher(folder, "flwr-clientapp", __name__ if __name__ != "__main__" else "fedcredit.deploy.clientapp",
                          NODE_WORK_FLAG, str(service_work))


if __name__ == "__main__":
    main()
