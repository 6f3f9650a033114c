"""One Flower ClientApp task run inside the node's long-lived service instead of a fresh process.

Flower 1.41's SuperNode starts ``flwr-clientapp --runtime-api-address … --token …`` for
every message it receives; that process imports Flower (about a CPU-second here), pulls
the message over the SuperNode's Runtime API, runs the ClientApp and pushes the reply.
fedcredit's ``flwr-clientapp`` launcher (``fedcredit.deploy.clientapp``) hands the address
and the task's token to the node service, which already has Flower loaded and does the
same exchange here with Flower's own Runtime API client: pull the task's input and
message, answer it with the relay (``relay_app.relay``, whose requests go to the service's
handlers in-process), push the reply and the task's final status. The task's heartbeat
runs meanwhile, so a service killed mid-task is reported by the SuperNode as a crashed
ClientApp, which the coordinator redelivers.

The FAB's code is never executed: the node answers with the fedcredit it has installed.
Before the first task of a run is answered, the node checks that it trusts the run
(``trusted_run``): the app bundle is its own fedcredit release or signed by a publisher it
pins, and the run config is signed by a submitter whose key it holds
(``fedcredit.flower.trust``). A refused run gets an error reply naming the node, which the
coordinator shows, and a line in the node's log. The verified submitter rides with every
request to the node's handlers (header ``X-Fedcredit-Submitter``) and is known here by
run (``verified_submitter``). Only flwr 1.41 is supported (``supported()``); on any
other version the launcher refuses the task.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from pathlib import Path

from fedcredit.common.errors import FedCreditError
from fedcredit.deploy.supernode import flwr_141, shorten_pull_backoff
from fedcredit.flower.codec import NODE_ERROR
from fedcredit.flower.relay_app import Call, relay
from fedcredit.flower.trust import Refused, load_keys, verify_bundle, verify_run_config
import fedcredit.node.channel as channel

log = logging.getLogger("fedcredit.node")
_ONE_AT_A_TIME = threading.Lock()  # Flower keeps the current task's identity in class attributes
PULL_RETRY_S = 0.02  # first wait before pulling an object again that the SuperNode does not have yet
_TOKEN = re.compile(r"[0-9a-f]{16,256}")


def supported() -> bool:
    return flwr_141()


_SUBMITTERS: dict[int, dict] = {}  # Flower run id -> its verified submitter (checked at the run's first task)


def verified_submitter(run_id: int) -> dict | None:
    """The submitter ``{name, fingerprint}`` this node verified for a Flower run, or None (not seen, or refused)."""
    who = _SUBMITTERS.get(int(run_id))
    return {"name": who["name"], "fingerprint": who["fingerprint"]} if who else None


def trusted_run(node_config: dict, run_id: int, fab, run_config: dict) -> dict:
    """Check (once per run) that this node trusts the run's app bundle and its submitter; returns the submitter.

    The node config names the keys the node pins: ``publishers`` and ``submitters`` (comma-separated
    public key files, ``[trust]`` of node.toml). Raises ``Refused`` with the reason otherwise.
    """
    if int(run_id) in _SUBMITTERS:
        return _SUBMITTERS[int(run_id)]
    verdict = verify_bundle(fab.content, load_keys(node_config.get("publishers", ""), "publisher"))
    if not verdict.trusted:
        raise Refused(verdict.reason)
    who = verify_run_config(run_config, fab.hash_str, load_keys(node_config.get("submitters", ""), "submitter"))
    log.info("run %s trusted: app bundle %s… (%s), submitted by %s (key %s…)", run_id, fab.hash_str[:16],
             verdict.reason, who["name"], who["fingerprint"][:16])
    _SUBMITTERS[int(run_id)] = who
    return who


def _with_submitter(call: Call, who: dict) -> Call:
    header = json.dumps({"name": who["name"], "fingerprint": who["fingerprint"]})

    def with_header(method: str, route: str, body: bytes = b"", headers: dict | None = None):
        return call(method, route, body, {**(headers or {}), channel.SUBMITTER: header})
    return with_header


def _spec(spec: dict) -> tuple[str, str, bool, bytes | None]:
    address, token = spec.get("runtime_api_address"), spec.get("token")
    insecure, certs = spec.get("insecure", False), spec.get("root_certificates")
    if not isinstance(address, str) or not re.fullmatch(r"[\w.\-\[\]:]{1,200}", address):
        raise FedCreditError(f"task: runtime_api_address must be host:port, got {address!r}")
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        raise FedCreditError("task: token must be Flower's hexadecimal task token")
    if not isinstance(insecure, bool) or not (certs is None or isinstance(certs, str)):
        raise FedCreditError("task: insecure must be true/false and root_certificates a file path or null")
    if not insecure and certs is not None:
        try:
            return address, token, insecure, Path(certs).read_bytes()
        except OSError as exc:
            raise FedCreditError(f"task: root_certificates {certs}: {exc}") from None
    return address, token, insecure, None


def run_task(spec: dict, call: Call) -> dict:
    """Run the Flower task ``spec`` names (``runtime_api_address``, ``token``, ``insecure``,
    ``root_certificates``): its message is answered through ``call``. Returns what happened."""
    from flwr.app import Error, Message as FlowerMessage
    from flwr.common.constant import SubStatus
    from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
    from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor, RuntimeVersionHttpInterceptor
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient
    from flwr.supernode.runtime.run_clientapp import pull_task_input, push_message, push_task_output

    if not supported():
        raise FedCreditError("this node's Flower version runs tasks in flwr-clientapp processes only")
    shorten_pull_backoff(PULL_RETRY_S, 0.5)  # the SuperNode may still be fetching the message's objects
    address, token, insecure, certs = _spec(spec)
    with _ONE_AT_A_TIME:
        client = RuntimeHttpClient.from_server_address(
            server_address=address, insecure=insecure, root_certificates=certs,
            interceptors=[RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
                          RuntimeTokenHttpInterceptor(token)],
            retry_invoker=make_simple_http_retry_invoker())
        heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
        message = context = reply = None
        status, details = SubStatus.FAILED, "the node service could not run this task"
        times = [time.perf_counter()]
        try:
            heartbeat.start()
            message, context, run, fab = pull_task_input(client)
            submitter = trusted_run(context.node_config, run.run_id, fab, dict(context.run_config))
            times.append(time.perf_counter())
            reply = relay(message, context, _with_submitter(call, submitter))
            times.append(time.perf_counter())
            status, details = SubStatus.COMPLETED, ""
        except Exception as exc:  # noqa: BLE001 — reported to the coordinator as the node's error
            details = str(exc) if isinstance(exc, Refused) else f"{type(exc).__name__}: {exc}"
            log.error("Flower task failed: %s", details)
            if message is not None:
                who = context.node_config.get("role", "unknown role") if context is not None else "unknown role"
                reply = FlowerMessage(Error(code=NODE_ERROR, reason=f"[{who}] {details}"), reply_to=message)
        finally:
            try:
                if reply is not None and context is not None:
                    push_message(client, reply, context)
                push_task_output(client=client, context=context, sub_status=status, details=details)
            finally:
                heartbeat.stop()
                client.close()
        times.append(time.perf_counter())
        kind = message.metadata.message_type if message is not None else None
        log.info("Flower task %s %s: %s", kind, status, ", ".join(
            f"{what} {b - a:.2f} s" for what, a, b in zip(("pull", "answer", "push"), times, times[1:])))
        return {"status": status, "type": kind}
