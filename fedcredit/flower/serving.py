"""A serving run (run config ``task = "query"``): one bank's online limit queries, until the run is stopped.

The ServerApp finds the job's nodes, runs the query coordinator's setup rounds, then
serves ``POST /v1/limits`` over HTTPS (``fedcredit.serving``; uvicorn in a thread of
this process, on ``query-listen`` with the coordinator's TLS certificate). Requests
are queued and answered one at a time by the main thread: each is one query, its
rounds relayed to the nodes like a job's (``Deliveries``). A node that refuses a query
under its policy (its signed answer says so) gives a 403 naming it and its rule, and the
session goes on; any other node failure gives a 502 and the session is set up again for
the next request (a failed delivery leaves that node's state behind the coordinator's).
``flwr stop`` (or the submitter's Ctrl-C) ends the run: the endpoint stops, the
coordinator's audit log closes, ``status.json`` says how many requests were served.

Progress lines go to stdout (``flwr run --stream`` shows them to the submitter) and to
``serving.log`` in the run's ``out`` folder; ``requests.jsonl`` beside it holds one
line per request (``fedcredit.serving.requestlog``).
"""

from __future__ import annotations

import json
import os
import queue
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from flwr.serverapp import Grid

from fedcredit.common.errors import FedCreditError
from fedcredit.deploy.processes import split_address
from fedcredit.flower.codec import MESSAGE_TYPE, to_record
from fedcredit.flower.delivery import Deliveries
from fedcredit.flower.server_app import unbundle_replies, abort_nodes, find_job_nodes
from fedcredit.serving.errors import BadQuery, QueryError, QueryFailed, node_error, refusal_in_answer

MODEL_KEY = "model-run"      # run config: the training run whose saved model parts answer the queries
PLAIN_LOG, REQUEST_LOG = "serving.log", "requests.jsonl"
CERTS_ENV = "FEDCREDIT_CERTS"  # the coordinator's certificate folder (set by fedcredit coordinator start)
TOKENS_FILE = "query-tokens.json"
STOPPED = "the serving run stopped"


class Say:
    """A progress line on stdout and, time-stamped, in the run's plain log."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def __call__(self, line: str) -> None:
        print(line, flush=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {line}\n")


class FlowerRelay:
    """One session's rounds over the grid: its own delivery numbers under the node-state key ``key``."""

    def __init__(self, grid: Grid, node_of: dict[str, int], name_of: dict[int, str], key: str, *,
                 timeout: float, return_timeout: float, on_event=None):
        self.node_of, self.name_of = node_of, name_of
        self.deliveries = Deliveries(grid, name_of=lambda nid: name_of.get(nid, f"Flower node {nid}"), timeout=timeout,
                                     return_timeout=return_timeout, on_event=on_event, run=key)

    def exchange(self, outgoing: list) -> tuple[list, list[dict]]:
        """One round: every node's bundle out; every node's replies back (in sending order) and the signed final
        heads of the audit logs that nodes closed. A node's error raises ``QueryRefused``/``QueryFailed`` naming
        the node."""
        per_node: dict[int, list] = {}
        for m in outgoing:
            per_node.setdefault(self.node_of[m.receiver], []).append(m)
        try:
            replies = self.deliveries.exchange({n: to_record(ms) for n, ms in per_node.items()}, MESSAGE_TYPE)
        except FedCreditError as exc:  # a node silent or lost for good
            raise QueryFailed(str(exc)) from None
        for nid, reply in replies.items():
            if reply.has_error():
                raise node_error(self.name_of[nid], reply.error.reason)
        return unbundle_replies(replies, self.name_of)

    def abort(self, coordinator, exc: BaseException) -> None:
        abort_nodes(self.deliveries, coordinator, self.node_of, exc)


@dataclass
class QueryService:
    """Queries answered one at a time by a set-up session; a failed session is replaced at the next request.

    ``new_session(n)`` returns (coordinator, relay) for session number ``n``; ``serve`` (the
    caller's thread, the ServerApp's main thread) takes the requests ``answer`` queues.
    """

    new_session: Callable[[int], tuple]
    say: Callable[[str], None] = print
    watch: Callable[[], object] | None = None  # called every ``watch_s`` while idle: Flower's stop surfaces there
    watch_s: float = 2.0
    sessions: int = 0
    served: int = 0
    _current: tuple | None = None
    _queue: queue.Queue = field(default_factory=queue.Queue)
    _stopping: bool = False

    def open(self) -> float:
        """Set a session up (the coordinator's setup rounds); returns its seconds."""
        started = time.perf_counter()
        self.sessions += 1
        coordinator, relay = self.new_session(self.sessions)
        try:
            self._rounds(coordinator, relay, coordinator.start())
            if not coordinator.ready:
                raise QueryFailed("the query coordinator's setup ended without it being ready")
        except BaseException as exc:
            relay.abort(coordinator, exc)
            raise
        self._current = (coordinator, relay)
        return time.perf_counter() - started

    @staticmethod
    def _rounds(coordinator, relay, outgoing: list) -> None:
        while outgoing:
            messages, heads = relay.exchange(outgoing)
            for head in heads:  # a node that closed its audit log: its head goes into the coordinator's
                coordinator.record_final_head(head)
            outgoing = coordinator.advance(messages)

    def ask(self, query_id: str, ids: list[str]) -> dict:
        """One query now, in this thread (setting a session up first when there is none)."""
        if self._current is None:
            seconds = self.open()
            self.say(f"query session {self.sessions} set up in {seconds:.2f} s")
        coordinator, relay = self._current
        try:
            outgoing = coordinator.submit(query_id, ids)
        except FedCreditError as exc:  # refused before any message: the session goes on
            raise BadQuery(str(exc)) from None
        try:
            self._rounds(coordinator, relay, outgoing)
            answer = coordinator.answer
        except BaseException as exc:
            self._current = None
            relay.abort(coordinator, exc)
            if isinstance(exc, QueryError):
                raise
            if isinstance(exc, FedCreditError):
                raise QueryFailed(str(exc)) from None
            raise
        self.served += 1
        refused = refusal_in_answer(answer)
        if refused is not None:  # a node's policy (e.g. its daily budget) refused the query; the session goes on
            raise refused
        return answer

    def answer(self, query_id: str, ids: list[str]) -> dict:
        """Queue a query for the serving thread and wait for its answer (called by the endpoint's threads)."""
        if self._stopping:
            raise QueryFailed(STOPPED)
        done: Future = Future()
        self._queue.put((query_id, ids, done))
        return done.result()

    def serve(self, poll: float = 0.5) -> None:
        """Answer queued queries until ``stop`` (or an exception in this thread: Flower's stop signal)."""
        watched = time.monotonic()
        try:
            while not self._stopping:
                try:
                    query_id, ids, done = self._queue.get(timeout=poll)
                except queue.Empty:
                    if self.watch is not None and time.monotonic() - watched >= self.watch_s:
                        self.watch()  # a stopped run's request fails: Flower ends this process gracefully
                        watched = time.monotonic()
                    continue
                try:
                    done.set_result(self.ask(query_id, ids))
                except Exception as exc:  # noqa: BLE001 — handed to the request's thread
                    done.set_exception(exc)
                except BaseException:  # Flower stopped the run mid-query: the request is answered, then we go
                    done.set_exception(QueryFailed(STOPPED))
                    raise
        finally:
            self._stopping = True
            self._fail_pending()

    def stop(self) -> None:
        self._stopping = True

    def _fail_pending(self) -> None:
        while True:
            try:
                _, _, done = self._queue.get_nowait()
            except queue.Empty:
                return
            done.set_exception(QueryFailed(STOPPED))

    def close(self, reason: str, reach_nodes: bool = True) -> None:
        """End the current session: with ``reach_nodes`` its last round (every party closes its audit log),
        else the coordinator closes its own log as aborted (a stopped Flower run cannot reach the nodes: they
        close theirs after their coordinator-timeout)."""
        current, self._current = self._current, None
        if current is None:
            return
        coordinator, relay = current
        if reach_nodes:
            try:
                self._rounds(coordinator, relay, coordinator.finish())
                return
            except BaseException as exc:  # noqa: BLE001 — the session ends aborted instead
                try:
                    relay.abort(coordinator, exc)
                    return
                except BaseException:  # noqa: BLE001
                    pass
        try:
            coordinator.close_aborted(FedCreditError(reason))
        except Exception:  # noqa: BLE001 — already closed
            pass


def certs_folder() -> Path:
    """The coordinator's certificate folder: ``$FEDCREDIT_CERTS``, else the one holding its submitters' keys."""
    if os.environ.get(CERTS_ENV):
        return Path(os.environ[CERTS_ENV])
    if os.environ.get("FEDCREDIT_SUBMITTERS"):
        return Path(os.environ["FEDCREDIT_SUBMITTERS"]).parent
    raise FedCreditError("the serving run does not know the coordinator's certificate folder: start the coordinator "
                         "with 'fedcredit coordinator start' (it sets FEDCREDIT_CERTS)")


def tokens_path(cfg: dict) -> Path:
    """Run config ``query-tokens``, else ``STATE/query-tokens.json`` of the coordinator's state folder."""
    if str(cfg.get("query-tokens") or ""):
        return Path(str(cfg["query-tokens"])).expanduser()
    if os.environ.get("FEDCREDIT_STATE"):
        return Path(os.environ["FEDCREDIT_STATE"]) / TOKENS_FILE
    raise FedCreditError("run config 'query-tokens' is empty and the coordinator's state folder is unknown")


def _request_line(say):
    def on_request(row: dict) -> None:
        what = f"{row['ids']} id(s)" if row["ids"] is not None else "no ids read"
        reason = f": {row['reason']}" if row["reason"] else ""
        say(f"request from {row['client']}: bank {row['bank'] or '-'}, {what} -> {row['status']} in "
            f"{row['seconds']:.2f} s{reason}")
    return on_request


def run_serving(grid: Grid, cfg: dict, flower_run_id: int | None = None, submitter: dict | None = None) -> dict:
    """Serve the run config's bank's queries with model ``model-run`` until the run is stopped; returns its status."""
    from fedcredit.flower.deployment import STATUS, _printer, job_nodes_from_run_config, policy_from_run_config, write_status
    from fedcredit.flower.saved_model import scoring_plan
    from fedcredit.protocols import coordinator_identity, publication_for
    from fedcredit.serving.api import make_app
    from fedcredit.serving.requestlog import RequestLog
    from fedcredit.serving.server import HttpsServer
    from fedcredit.serving.tokens import TokenDigests

    if not str(cfg.get("out", "")):
        raise FedCreditError("run config 'out' (the coordinator's output folder) is empty")
    out = Path(str(cfg["out"])).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    (out / STATUS).unlink(missing_ok=True)
    say = Say(out / PLAIN_LOG)
    started = time.perf_counter()
    service = server = None
    stopped_by_flower = False
    status: dict = {"ok": False, "task": "query", "flower_run_id": flower_run_id}
    try:
        model = str(cfg.get(MODEL_KEY) or "").strip()
        if not str(cfg.get("query-listen") or ""):
            raise FedCreditError("run config 'query-listen' must be the endpoint's HOST:PORT")
        host, port = split_address(str(cfg["query-listen"]))
        signer = coordinator_identity(Path(str(cfg.get("keys") or out / "keys")))
        # the saved model's settings and nodes, from the coordinator's own record of the training run (as for
        # scoring runs)
        saved = scoring_plan(cfg, out, signer.public if cfg.get("keys") else None)
        roles = saved.roles
        job = job_nodes_from_run_config(cfg, roles)
        tokens = TokenDigests.load(tokens_path(cfg))
        certs = certs_folder()
        policy = policy_from_run_config(cfg.get("policy", ""))
        publication = publication_for(policy, signer.fingerprint)
        purpose = str(cfg.get("purpose") or "credit-scoring")
        timeout = float(cfg.get("timeout", 600.0))
        return_timeout = float(cfg.get("node-return-timeout", 600.0))
        registry = None
        if str(cfg.get("registry", "")):
            registry = {str(k): int(v) for k, v in json.loads(Path(str(cfg["registry"])).read_text()).items()}
        say(f"fedcredit query service: model {model}, bank {job.bank}, hosts {','.join(job.hosts)}; "
            f"waiting for {len(roles)} nodes")
        if job.bank not in tokens.banks():
            say(f"warning: {tokens.source} holds no token of bank {job.bank}: every request will get 401 "
                f"(make one with: fedcredit coordinator query-token {job.bank} --state STATE)")
        on_event = _printer(0)  # the relay's lost/returning nodes, as a job prints them
        name_of: dict[int, str] = {}
        finder = Deliveries(grid, name_of=lambda nid: name_of.get(nid, f"Flower node {nid}"), timeout=timeout)
        node_of = find_job_nodes(finder, grid, job, registry, timeout)
        name_of.update({nid: job.name_of(role) for role, nid in node_of.items()})

        def new_session(n: int):
            from fedcredit.protocols import QueryCoordinator, audited

            key = f"{flower_run_id or 'query'}.q{n}"
            coordinator = QueryCoordinator(key, roles, model=model, settings=saved.settings, bank_name=job.bank,
                                           purpose=purpose, submitter=submitter, publication=publication,
                                           signer=signer)
            coordinator = audited(coordinator, out / ("audit" if n == 1 else f"audit.{n}"), signer)
            return coordinator, FlowerRelay(grid, node_of, name_of, key, timeout=timeout,
                                            return_timeout=return_timeout, on_event=on_event)

        service = QueryService(new_session, say=say, watch=grid.get_node_ids)
        say(f"query session set up in {service.open():.2f} s")
        app = make_app(service.answer, bank=job.bank, tokens=tokens, log=RequestLog(out / REQUEST_LOG),
                       on_request=_request_line(say))
        server = HttpsServer(app, host, port, certs / "superlink.pem", certs / "superlink.key").start()
        say(f"serving bank {job.bank}'s limit queries on {server.url}/v1/limits (TLS); stop with flwr stop or Ctrl-C")
        status.update(ok=True, endpoint=server.url, model=model, bank=job.bank)
        service.serve()
        return status
    except BaseException as exc:
        if isinstance(exc, (KeyboardInterrupt, SystemExit)) and status["ok"]:
            stopped_by_flower = True  # flwr stop: the grid is closed; the process exits within seconds
            raise
        msg = str(exc) if isinstance(exc, FedCreditError) else f"{type(exc).__name__}: {exc}"
        status.update(ok=False, error=msg)
        say(f"fedcredit query service FAILED: {msg}")
        raise
    finally:
        if server is not None:
            server.stop(timeout=3.0)
        if service is not None:
            service.close(STOPPED, reach_nodes=not stopped_by_flower)
            status.update(requests_answered=service.served, sessions=service.sessions)
        status["seconds"] = round(time.perf_counter() - started, 1)
        write_status(out, status)
        if status["ok"]:
            say(f"query service stopped after {status['seconds']} s: {service.served if service else 0} "
                "query(ies) answered")
