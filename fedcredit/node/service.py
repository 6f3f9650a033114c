"""The node service: one long-lived process per node that holds its agents and a warm crypto worker pool.

Flower's deployment engine starts a fresh ClientApp process for every message; loading
fedcredit, numpy and pandas and unpickling the node's whole agent each time cost
seconds per round. The node's ClientApp is therefore a thin relay
(``fedcredit.flower.relay_app``) that hands every message bundle to this service over
the node's local channel (``fedcredit.node.channel``) and returns its answer. The
service keeps each Flower run's agent in memory (``NodeRuns``) and checkpoints it after
every delivery, so a killed service, restarted, resumes where its last completed
delivery left it. A run's agent plays the role its job's ``job.hello`` gives this node
(``fedcredit.node.naming``: the bank's, or a host's own name). Requests are handled one at a
time; deliveries of concurrent runs interleave, each run with its own agent and checkpoint.

Served with FastAPI on uvicorn, bound to a Unix socket only (no TCP port):
``GET /health``, ``GET /role``, ``POST /deliver`` and ``POST /abort``; and ``POST /task``,
through which the node's ``flwr-clientapp`` launcher (``fedcredit.deploy.clientapp``)
hands a whole Flower task to this process, so no per-message process imports Flower.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request, Response

from fedcredit.common.errors import FedCreditError
from fedcredit.common.wire import join_messages, split_messages
from fedcredit.crypto import make_pool
import fedcredit.node.channel as channel
from fedcredit.node.checkpoint import node_secret
from fedcredit.node.config import node_from_config, pool_settings
from fedcredit.node.models import saved_parts
from fedcredit.node.naming import job_node
from fedcredit.node.runs import NodeRuns
from fedcredit.protocols import HELLO, NodeAgent, QueryNode

log = logging.getLogger("fedcredit.node")


DEFAULT_COORDINATOR_TIMEOUT = 3600.0  # seconds a node waits for a silent coordinator before it abandons the run


def coordinator_timeout(cfg: dict) -> float:
    """The node config's ``coordinator-timeout`` (seconds, > 0)."""
    raw = cfg.get("coordinator-timeout", DEFAULT_COORDINATOR_TIMEOUT)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = -1.0
    if not value > 0:
        raise FedCreditError(f"node config coordinator-timeout must be a number of seconds > 0, got {raw!r}")
    return value


class Failed(Exception):
    """A request the service refuses: its HTTP status and the reason."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


def _header_json(headers, name: str, kind, what: str):
    raw = headers.get(name.lower())
    try:
        value = json.loads(raw) if raw is not None else None
    except ValueError:
        value = None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise Failed(400, f"header {name} must hold {what}, got {raw!r}")
    return value


def new_agent(cfg: dict, run: str, messages: list) -> NodeAgent:
    """A new run's agent, made from the run's first delivery: the role its job gives this node and, for a
    scoring job or a serving run, where this node's saved part and last published distribution are.
    A serving run (``job.hello`` task ``query``) gets a ``QueryNode``, a job a ``NodeAgent``."""
    node = saved_parts(job_node(node_from_config(cfg, run)[0], messages), cfg.get("out-dir"), messages)
    hello = next((m for m in messages if m.kind == HELLO), None)
    return QueryNode(node) if hello is not None and hello.meta.get("task") == "query" else NodeAgent(node)


def make_app(cfg: dict, pool=None, run_task=None) -> FastAPI:
    """The service's endpoints for the node configured by ``cfg`` (``fedcredit.node.config``; its work
    directory holds checkpoints, secret and socket).

    ``run_task(spec, call)``, when given, runs one Flower ClientApp task in this process
    (``POST /task``, from the ``flwr-clientapp`` launcher), answering the task's message
    through ``call``: the same handlers as the HTTP routes, without a socket in between.
    """
    node, work = node_from_config(cfg, "")
    secret = node_secret(work)
    starting: dict[str, list] = {}  # run -> the messages of its delivery in progress (a new agent's job.hello)
    runs = NodeRuns(work, lambda run: new_agent(cfg, run, starting.get(run, [])), pool)
    busy = threading.Lock()
    app = FastAPI(title=f"fedcredit node service ({node.role})", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.runs = runs
    wait = coordinator_timeout(cfg)

    def abandon_idle() -> list[str]:
        """Close the runs whose coordinator has been silent ``coordinator-timeout`` seconds (between requests)."""
        with busy:
            gone = runs.abandon_idle(wait)
        for run in gone:
            log.warning("run %s abandoned: the coordinator did not return within %.0f s; its audit log is closed "
                        "as aborted and its state deleted", run, wait)
        return gone

    app.state.abandon_idle = abandon_idle

    def authorized(request: Request) -> None:
        given = request.headers.get("authorization", "").removeprefix("Bearer ").encode()
        if not hmac.compare_digest(given, secret):
            log.warning("refused a request without the node's secret")
            raise HTTPException(401, "this request does not carry the node's secret")

    def node_error(exc: Exception) -> Failed:
        return Failed(422, f"[{node.role}] {type(exc).__name__}: {exc}")

    def deliver(headers, body: bytes) -> tuple[dict, bytes]:
        run = headers.get(channel.RUN.lower(), "")
        seq = _header_json(headers, channel.SEQ, int, "a delivery number")
        sizes = _header_json(headers, channel.SIZES, list, "a JSON list of message sizes")
        submitter = _header_json(headers, channel.SUBMITTER, dict, "a JSON object {name, fingerprint}") \
            if channel.SUBMITTER.lower() in headers else None
        with busy:
            try:
                starting[run] = split_messages(body, sizes)
                outcome = runs.deliver(run, seq, starting[run], submitter=submitter)  # the warm pool stays: jobs follow jobs
            except Exception as exc:
                log.error("run %s delivery %s failed: %s: %s", run, seq, type(exc).__name__, exc)
                raise node_error(exc) from None
            finally:
                starting.pop(run, None)
            data, sizes_out = join_messages(outcome.replies)
            out = {channel.SIZES: json.dumps(sizes_out), channel.ROLE: node.role}
            if outcome.head is not None:
                out[channel.HEAD] = json.dumps(outcome.head)
            log.info("run %s delivery %s: %d message(s) in, %d out%s", run, seq, len(sizes), len(sizes_out),
                     " (replayed)" if outcome.replayed else "")
            return out, data

    def abort(headers, body: bytes) -> tuple[dict, bytes]:
        run = headers.get(channel.RUN.lower(), "")
        sizes = _header_json(headers, channel.SIZES, list, "a JSON list of message sizes")
        with busy:
            try:
                messages = split_messages(body, sizes)
                if len(messages) != 1:
                    raise FedCreditError(f"an abort carries one job.abort message, got {len(messages)}")
                head = runs.abort(run, messages[0])
            except Exception as exc:
                raise node_error(exc) from None
            log.info("run %s aborted", run)
            return ({channel.HEAD: json.dumps(head)} if head is not None else {}), b""

    def role(headers, body: bytes) -> tuple[dict, bytes]:
        return {}, json.dumps({"role": node.role}).encode()

    routes = {("GET", "/role"): role, ("POST", "/deliver"): deliver, ("POST", "/abort"): abort}

    def local_call(method: str, route: str, body: bytes = b"", headers: dict | None = None):
        """A request answered in this process: (status, lower-case headers, body), like ``channel.call``."""
        handler = routes.get((method, route))
        if handler is None:
            return 404, {}, json.dumps({"detail": f"no route {method} {route}"}).encode()
        try:
            out, data = handler({k.lower(): v for k, v in (headers or {}).items()}, body)
        except Failed as exc:
            return exc.status, {}, json.dumps({"detail": exc.detail}).encode()
        return 200, {k.lower(): v for k, v in out.items()}, data

    app.state.call = local_call  # the routes without HTTP, as a Flower task reaches them (tests use it too)

    def answer(method: str, route: str, headers, body: bytes) -> Response:
        status, out, data = local_call(method, route, body, dict(headers))
        if status != 200:
            raise HTTPException(status, channel.error_text(data))
        return Response(data, media_type="application/octet-stream", headers=out)

    @app.get("/health")
    def health() -> dict:
        return {"ok": True, "role": node.role}

    @app.get("/role")
    def role_route(request: Request) -> dict:
        authorized(request)
        return {"role": node.role}

    @app.post("/deliver")
    async def deliver_route(request: Request) -> Response:
        authorized(request)
        body = await request.body()
        return await _in_thread(lambda: answer("POST", "/deliver", request.headers, body))

    @app.post("/abort")
    async def abort_route(request: Request) -> Response:
        authorized(request)
        body = await request.body()
        return await _in_thread(lambda: answer("POST", "/abort", request.headers, body))

    @app.post("/task")
    async def task_route(request: Request) -> dict:
        authorized(request)
        if run_task is None:
            raise HTTPException(404, "this node service does not run Flower tasks itself")
        try:
            spec = json.loads(await request.body())
        except ValueError:
            spec = None
        if not isinstance(spec, dict):
            raise HTTPException(400, "a task is a JSON object (runtime_api_address, token, insecure, root_certificates)")
        try:
            return await _in_thread(lambda: run_task(spec, local_call))
        except FedCreditError as exc:
            raise HTTPException(400, f"[{node.role}] {exc}") from None

    return app


async def _in_thread(work):
    """CPU-bound protocol work off the event loop (health checks stay answerable)."""
    import anyio

    return await anyio.to_thread.run_sync(work)


def _every(seconds: float, work) -> None:
    """Call ``work()`` every ``seconds`` in a daemon thread (it ends with the service)."""
    def loop() -> None:
        while True:
            time.sleep(seconds)
            try:
                work()
            except Exception as exc:  # noqa: BLE001 — logged; the next sweep tries again
                log.error("abandoning idle runs failed: %s: %s", type(exc).__name__, exc)

    threading.Thread(target=loop, name="coordinator-timeout", daemon=True).start()


def serve(cfg: dict, workers: int | None = None, run_task=None) -> None:
    """Run the service for the node configured by ``cfg`` on its Unix socket until SIGTERM/SIGINT."""
    import uvicorn

    node, work = node_from_config(cfg, "")
    pool_config = pool_settings(cfg)
    work = Path(work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.chmod(work, 0o700)
    sock = channel.socket_path(work)
    sock.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    sock.unlink(missing_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s fedcredit-node %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # every Runtime API request of a Flower task
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(sock))
    os.chmod(sock, 0o600)  # (inside a 0700 directory from the start): only this OS user can connect
    try:
        with make_pool(workers, **pool_config) as pool:  # a Ray cluster that does not answer fails here
            if pool_config["ray_address"] is not None:
                log.info("crypto worker pool on the Ray cluster at %s (%d CPUs now)", pool_config["ray_address"],
                         pool.cpus())
            app = make_app(cfg, pool, run_task)
            _every(min(60.0, coordinator_timeout(cfg) / 4), app.state.abandon_idle)
            config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
            log.info("%s node service listening on %s", node.role, sock)
            uvicorn.Server(config).run(sockets=[listener])
    finally:
        listener.close()
        sock.unlink(missing_ok=True)
