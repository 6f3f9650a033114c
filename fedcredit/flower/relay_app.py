"""The deployed ClientApp: a thin relay from Flower to the node's own fedcredit node service.

Flower starts one ClientApp process per message, so this module imports only what
forwarding needs: Flower's message types and the standard-library channel to the
service (``fedcredit.node.channel``) — never numpy, pandas, scikit-learn or fedcredit's
protocol code (tests/test_node_service.py checks). The node's data, keys and agents
live in the service that ``fedcredit node start`` runs beside the SuperNode; this
relay passes each message bundle through unread and returns the service's answer, or
its error named by the node's role. The only setting it reads from the node config
is ``work-dir`` (where the service's socket and secret are).
"""

from __future__ import annotations

import json
from typing import Callable

from flwr.app import ConfigRecord, Context, Error, Message as FlowerMessage, RecordDict
from flwr.clientapp import ClientApp

from fedcredit.flower.codec import NODE_ERROR, bundle_bytes, bundle_record
import fedcredit.node.channel as channel

SERVICE_WAIT_S = 60.0  # a service that is being restarted (after a crash) gets this long to come back


def _failure(msg: FlowerMessage, context: Context, text: str) -> FlowerMessage:
    who = context.node_config.get("role", "unknown role")
    reason = text if text.startswith("[") else f"[{who}] {text}"
    return FlowerMessage(Error(code=NODE_ERROR, reason=reason), reply_to=msg)


def _work(context: Context) -> str:
    work = context.node_config.get("work-dir")
    if not work:
        raise channel.ServiceDown("node config must set work-dir (where the fedcredit node service keeps its socket)")
    return str(work)


Call = Callable[..., tuple[int, dict, bytes]]  # (method, route, body, headers) -> (status, headers, body)


def service_call(context: Context) -> Call:
    """Requests to this node's service over its channel, waiting for a service that is being restarted."""
    def call(method: str, route: str, body: bytes = b"", headers: dict | None = None):
        return channel.call(_work(context), method, route, body, headers, wait=SERVICE_WAIT_S)
    return call


def _forward(msg: FlowerMessage, context: Context, route: str, call: Call) -> FlowerMessage:
    try:
        data, sizes = bundle_bytes(msg.content)
        delivery = msg.content["delivery"] if "delivery" in msg.content else {}
        # a resumed job's bundles name the Flower run whose node state they continue
        run = delivery["run"] if "run" in delivery else context.run_id
        headers = {channel.RUN: str(run), channel.SIZES: json.dumps(sizes)}
        if route == "/deliver":
            headers[channel.SEQ] = json.dumps(delivery["seq"] if "seq" in delivery else None)
        status, got, body = call("POST", route, data, headers)
    except Exception as exc:  # the service is down, or the message is not a fedcredit bundle
        return _failure(msg, context, f"{type(exc).__name__}: {exc}")
    if status != 200:
        return _failure(msg, context, channel.error_text(body))
    try:
        content = bundle_record(body, json.loads(got.get(channel.SIZES.lower(), "[]")))
    except Exception as exc:  # noqa: BLE001 — a broken answer is reported, never passed on
        return _failure(msg, context, f"the node service's answer is malformed ({exc})")
    head = got.get(channel.HEAD.lower())
    if head is not None:
        content["audit"] = ConfigRecord({"final_head": head})
    return FlowerMessage(content, reply_to=msg)


def _role(msg: FlowerMessage, context: Context, call: Call) -> FlowerMessage:
    try:
        status, _, body = call("GET", "/role")
        if status != 200:
            raise channel.ServiceDown(channel.error_text(body))
        name = json.loads(body)["role"]
    except Exception as exc:  # the coordinator shows this with the node id
        return FlowerMessage(Error(code=NODE_ERROR, reason=f"[unconfigured node] {exc}"), reply_to=msg)
    return FlowerMessage(RecordDict({"node": ConfigRecord({"role": str(name)})}), reply_to=msg)


def relay(msg: FlowerMessage, context: Context, call: Call) -> FlowerMessage:
    """The node's answer to one Flower message, from its service reached through ``call``."""
    kind = msg.metadata.message_type
    if kind == "query.role":
        return _role(msg, context, call)
    if kind in ("query.step", "query.abort"):
        return _forward(msg, context, "/deliver" if kind == "query.step" else "/abort", call)
    return _failure(msg, context, f"unexpected message type {kind!r} (expected query.role, query.step or query.abort)")


app = ClientApp()


@app.query("role")
def role(msg: FlowerMessage, context: Context) -> FlowerMessage:
    return relay(msg, context, service_call(context))


@app.query("step")
def step(msg: FlowerMessage, context: Context) -> FlowerMessage:
    return relay(msg, context, service_call(context))


@app.query("abort")
def abort(msg: FlowerMessage, context: Context) -> FlowerMessage:
    return relay(msg, context, service_call(context))
