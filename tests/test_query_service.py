"""The query endpoint end to end on one machine: real uvicorn with TLS in front of the serving loop.

A query session (``fedcredit.flower.serving.QueryService``) runs over an in-process
relay to the parties; every request goes through HTTPS with the federation's CA. The
answers, refusals and request-log lines are what a bank and an auditor see; the CLI
(``fedcredit query``) is run against the same endpoint. Every server started is stopped.
"""

from __future__ import annotations

import json
import ssl
import stat
import threading
from dataclasses import dataclass, field

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from fedcredit.cli import app as cli_app
from fedcredit.common.errors import FedCreditError
from fedcredit.crypto import Identity
from fedcredit.data import uscc
from fedcredit.deploy.certs import make_certs
from fedcredit.flower.serving import QueryService, _request_line
from fedcredit.governance import PolicyRefusal
from fedcredit.serving.api import make_app
from fedcredit.serving.errors import node_error
from fedcredit.serving.requestlog import RequestLog, read
from fedcredit.serving.requests import MAX_IDS
from fedcredit.serving.server import HttpsServer
from fedcredit.serving.tokens import FILE_NAME, TokenDigests, new_token

# --- a stand-in for the query protocol (fedcredit.protocols.query) with its interface -----------------------


@dataclass
class Msg:
    receiver: str
    kind: str
    sender: str = "coordinator"
    body: dict = field(default_factory=dict)


def _signed_bytes(doc: dict) -> bytes:
    body = {k: v for k, v in doc.items() if k not in ("signature", "signer")}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def verify_answer(doc: dict, public) -> None:
    public.verify(_signed_bytes(doc), bytes.fromhex(doc["signature"]), "query answer")


class FakeQueryCoordinator:
    """Setup: one hello round; per query: one round, the bank's PD per enterprise, signed; a node's policy
    refusal (a ``refused`` reply) refuses the whole query, as the query protocol does."""

    def __init__(self, run_id, roles, *, model, settings, bank_name, purpose, submitter, publication, signer,
                 pool=None, on_event=None):
        self.run_id, self.roles, self.model, self.bank, self.signer = run_id, roles, model, bank_name, signer
        self.ready, self.done, self.answer, self.closed, self._query = False, False, None, None, None

    def start(self):
        return [Msg(r, "hello") for r in self.roles]

    def submit(self, query_id, ids):
        if not all(uscc.is_valid(i) for i in ids):
            raise FedCreditError("malformed USCC")
        self._query, self.answer = (query_id, ids), None
        return [Msg(r, "ask", body={"ids": ids}) for r in self.roles]

    def finish(self):
        self._query = "finish"
        return [Msg(r, "report") for r in self.roles]

    def advance(self, replies):
        if not self.ready:
            self.ready = True
            return []
        if self._query == "finish":
            self.done, self.closed = True, "finished"
            return []
        query_id, ids = self._query
        refusals = [r.body["reason"] for r in replies if r.kind == "refused"]
        pd_ = {k: v for r in replies if r.sender == "bank" and r.kind == "reply" for k, v in r.body.items()}

        def row(i):
            if refusals:
                return {"uscc": i, "status": "refused", "score": None, "grade": None, "pd": None, "limit": None,
                        "reason_codes": None, "why": "; ".join(refusals)}
            if i not in pd_:
                return {"uscc": i, "status": "missing", "score": None, "grade": None, "pd": None, "limit": None,
                        "reason_codes": None, "why": "tax holds no data on this enterprise"}
            return {"uscc": i, "status": "ok", "score": 600.0, "grade": "A", "pd": pd_[i], "limit": 1_000_000,
                    "reason_codes": "bank:dpd_max;tax:revenue_growth", "why": None}

        doc = {"model": self.model, "query_id": query_id, "bank": self.bank, "signed_at": "2026-11-29T00:00:00Z",
               "rows": [row(i) for i in ids], "signer": self.signer.fingerprint}
        doc["signature"] = self.signer.sign(_signed_bytes(doc)).hex()
        self.answer = doc
        return []

    def abort_messages(self, exc):
        return [Msg(r, "abort") for r in self.roles]

    def close_aborted(self, exc):
        self.closed = str(exc)

    def record_final_head(self, head):
        raise AssertionError("the stand-in's nodes keep no audit log")


class FakeNode:
    def __init__(self, role, name, pds=None):
        self.role, self.name, self.pds, self.refuse, self.crash = role, name, pds or {}, None, False
        self.refuse_run = None

    def handle(self, m):
        if m.kind == "hello" and self.refuse_run:
            raise PolicyRefusal(self.name, self.refuse_run, "this node does not answer queries")
        if m.kind == "ask" and self.refuse:
            reason = f"node {self.name} refused the query: policy rule {self.refuse}: 0 queries left today"
            return [Msg("coordinator", "refused", sender=self.role, body={"reason": reason})]
        if m.kind == "ask" and self.crash:
            raise RuntimeError("disk full")
        return [Msg("coordinator", "reply", sender=self.role,
                    body={i: self.pds[i] for i in m.body.get("ids", []) if i in self.pds})]


class LocalRelay:
    """Rounds delivered in this process; a node's exception comes back as the deployed node's error text."""

    def __init__(self, nodes):
        self.nodes = nodes

    def exchange(self, outgoing):
        replies, heads = [], []
        for m in outgoing:
            node = self.nodes[m.receiver]
            try:
                replies += node.handle(m)
            except Exception as exc:  # noqa: BLE001
                raise node_error(node.name, f"[{node.name}] {type(exc).__name__}: {exc}") from None
        return replies, heads

    def abort(self, coordinator, exc):
        coordinator.close_aborted(exc)


# --- fixtures --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ids():
    return list(uscc.generate(4, np.random.default_rng(7)))


@pytest.fixture
def endpoint(tmp_path, ids):
    """A serving loop for bank-a behind HTTPS; yields a namespace with url, tokens, nodes, log, ca."""
    certs = tmp_path / "certs"
    make_certs(certs, "127.0.0.1", ["bank-a", "tax"])
    state = tmp_path / "state"
    state.mkdir()
    token_a, token_a_file, _ = new_token("bank-a", state)
    token_b, _, _ = new_token("bank-b", state)
    signer = Identity.generate("coordinator")
    keys = tmp_path / "keys"
    signer.save(keys / "coordinator.key.json", public_path=keys / "coordinator.pub.json")
    nodes = {"bank": FakeNode("bank", "bank-a", {ids[0]: 0.02, ids[1]: 0.4}), "tax": FakeNode("tax", "tax")}
    coordinators = []

    def new_session(n):
        coordinators.append(FakeQueryCoordinator(f"run.q{n}", ["bank", "tax"], model="m1", settings=None,
                                                 bank_name="bank-a",
                                                 purpose="credit-scoring", submitter=None, publication=None,
                                                 signer=signer))
        return coordinators[-1], LocalRelay(nodes)

    lines = []
    service = QueryService(new_session, say=lines.append)
    service.open()
    log = RequestLog(tmp_path / "out" / "requests.jsonl")
    app = make_app(service.answer, bank="bank-a", tokens=TokenDigests.load(state / FILE_NAME), log=log,
                   on_request=_request_line(lines.append))
    server = HttpsServer(app, "127.0.0.1", 0, certs / "superlink.pem", certs / "superlink.key").start()
    serving = threading.Thread(target=service.serve, kwargs={"poll": 0.05}, daemon=True)
    serving.start()

    class E:
        pass

    e = E()
    e.url, e.ca, e.token_a, e.token_b, e.token_a_file = server.url, certs / "ca.pem", token_a, token_b, token_a_file
    e.nodes, e.log, e.service, e.signer, e.keys, e.certs, e.coordinators = nodes, log, service, signer, keys, certs, coordinators
    e.lines = lines
    try:
        yield e
    finally:
        service.stop()
        serving.join(5)
        server.stop()
        assert not serving.is_alive() and not server.thread.is_alive()


def post(e, body, token=None, raw=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(verify=ssl.create_default_context(cafile=str(e.ca)), timeout=30) as client:
        if raw is not None:
            return client.post(e.url + "/v1/limits", content=raw, headers=headers)
        return client.post(e.url + "/v1/limits", json=body, headers=headers)


# --- the endpoint ----------------------------------------------------------------------------------------------


def test_answer_is_signed_and_logged_without_ids(endpoint, ids):
    r = post(endpoint, {"uscc": [ids[0], ids[2].lower()]}, endpoint.token_a)
    assert r.status_code == 200, r.text
    doc = r.json()
    verify_answer(doc, endpoint.signer.public)
    assert [row["uscc"] for row in doc["rows"]] == [ids[0], ids[2]]  # normalized, in the asked order
    assert [row["status"] for row in doc["rows"]] == ["ok", "missing"]
    doc["rows"][0]["limit"] = 5
    with pytest.raises(Exception):
        verify_answer(doc, endpoint.signer.public)
    (row,) = read(endpoint.log.path)
    assert (row["bank"], row["ids"], row["status"], row["client"]) == ("bank-a", 2, 200, "127.0.0.1")
    assert ids[0] not in endpoint.log.path.read_text()  # the IDs are in the parties' audit logs, not here
    assert httpx.get(endpoint.url + "/v1/health", verify=ssl.create_default_context(cafile=str(endpoint.ca))).json() \
        == {"ok": True}


@pytest.mark.parametrize("body, names", [
    (b"{not json", "not JSON"),
    (b"[1, 2]", "JSON object"),
    (b'{"ids": ["x"]}', "'ids'"),
    (b'{"uscc": []}', "1 to 10,000"),
    (json.dumps({"uscc": ["91110108MA01ABCDE0"] * (MAX_IDS + 1)}).encode(), "got 10,001"),
    (b'{"uscc": "91110108MA01ABCDE0"}', "list of USCC strings"),
])
def test_malformed_bodies_get_400_naming_the_field(endpoint, body, names):
    r = post(endpoint, None, endpoint.token_a, raw=body)
    assert r.status_code == 400 and names in r.json()["error"], r.text
    assert read(endpoint.log.path)[-1]["status"] == 400 and names in read(endpoint.log.path)[-1]["reason"]


def test_bad_and_repeated_uscc_named(endpoint, ids):
    bad = ids[1][:-1] + ("0" if ids[1][-1] != "0" else "1")
    r = post(endpoint, {"uscc": [ids[0], bad]}, endpoint.token_a)
    assert r.status_code == 400 and f"uscc'[1] = '{bad}'" in r.json()["error"] and "check character" in r.json()["error"]
    r = post(endpoint, {"uscc": [ids[0], ids[0]]}, endpoint.token_a)
    assert r.status_code == 400 and "repeats" in r.json()["error"]
    assert endpoint.service.served == 0  # nothing reached the parties


def test_tokens_401_and_another_banks_403(endpoint, ids):
    r = post(endpoint, {"uscc": [ids[0]]})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer" and "no token" in r.json()["error"]
    r = post(endpoint, {"uscc": [ids[0]]}, "not-a-token")
    assert r.status_code == 401 and "unknown token" in r.json()["error"]
    r = post(endpoint, {"uscc": [ids[0]]}, endpoint.token_b)
    assert r.status_code == 403 and "bank bank-b's" in r.json()["error"]
    rows = read(endpoint.log.path)
    assert [(x["status"], x["bank"]) for x in rows] == [(401, None), (401, None), (403, None)]
    assert endpoint.service.served == 0


def test_node_refusal_403_names_node_and_rule_and_the_session_goes_on(endpoint, ids):
    endpoint.nodes["tax"].refuse = "max_queries_per_day"
    r = post(endpoint, {"uscc": [ids[0]]}, endpoint.token_a)
    assert r.status_code == 403, r.text
    body = r.json()
    assert (body["node"], body["rule"]) == ("tax", "max_queries_per_day") and "node tax refused" in body["error"]
    verify_answer(body["answer"], endpoint.signer.public)  # the signed refusal, for the bank's records
    endpoint.nodes["tax"].refuse = None
    assert post(endpoint, {"uscc": [ids[0]]}, endpoint.token_a).status_code == 200
    assert endpoint.service.sessions == 1 and not endpoint.coordinators[0].closed
    assert [x["status"] for x in read(endpoint.log.path)] == [403, 200]
    assert any("bank bank-a, 1 id(s) -> 403" in line and "policy rule max_queries_per_day" in line
               for line in endpoint.lines), endpoint.lines


def test_other_node_failure_502_names_node_then_a_new_session_answers(endpoint, ids):
    endpoint.nodes["bank"].crash = True
    r = post(endpoint, {"uscc": [ids[0]]}, endpoint.token_a)
    assert r.status_code == 502 and r.json()["node"] == "bank-a" and "disk full" in r.json()["error"]
    assert endpoint.coordinators[0].closed  # the broken session's log closed as aborted
    endpoint.nodes["bank"].crash = False
    assert post(endpoint, {"uscc": [ids[0]]}, endpoint.token_a).status_code == 200
    assert endpoint.service.sessions == 2
    endpoint.service.close("test over")
    assert endpoint.coordinators[1].closed == "finished"  # a stopped service closes its session normally


def test_a_node_refusing_the_serving_run_is_named_at_setup():
    from fedcredit.serving.errors import QueryRefused

    nodes = {"bank": FakeNode("bank", "bank-a"), "tax": FakeNode("tax", "tax")}
    nodes["tax"].refuse_run = "allowed_tasks"
    made = []

    def new_session(n):
        made.append(FakeQueryCoordinator("r", ["bank", "tax"], model="m1", settings=None, bank_name="bank-a",
                                         purpose="p", submitter=None, publication=None, signer=None))
        return made[-1], LocalRelay(nodes)

    with pytest.raises(QueryRefused) as refused:
        QueryService(new_session).open()
    assert (refused.value.node, refused.value.rule, refused.value.status) == ("tax", "allowed_tasks", 403)
    assert made[0].closed


# --- the CLI ---------------------------------------------------------------------------------------------------


def test_cli_query_verifies_and_prints(endpoint, ids, tmp_path, monkeypatch):
    import fedcredit.cli.query as cli_query

    monkeypatch.setenv("FEDCREDIT_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(cli_query, "_verifier", lambda: verify_answer)
    runner = CliRunner()
    added = runner.invoke(cli_app, ["federation", "add", "lab", "--superlink", "127.0.0.1:9092", "--certs",
                                    str(endpoint.certs), "--keys", str(endpoint.keys), "--query", endpoint.url,
                                    "--query-token", str(endpoint.token_a_file), "--submitter-key", "x"])
    assert added.exit_code == 0, added.output
    shown = runner.invoke(cli_app, ["query", "--federation", "lab", "--bank", "bank-a", ids[0], ids[3]])
    assert shown.exit_code == 0, shown.output
    assert ids[0] in shown.output and "signature verified (2 row(s))" in shown.output and "missing" in shown.output
    as_json = runner.invoke(cli_app, ["query", "--federation", "lab", "--bank", "bank-a", ids[1], "--json"])
    assert as_json.exit_code == 0 and json.loads(as_json.output)["rows"][0]["pd"] == 0.4
    wrong_bank = runner.invoke(cli_app, ["query", "--federation", "lab", "--bank", "bank-b", ids[1]])
    assert wrong_bank.exit_code == 1 and "not 'bank-b'" in wrong_bank.output
    before = len(read(endpoint.log.path))
    bad = runner.invoke(cli_app, ["query", "--federation", "lab", "--bank", "bank-a", "91110108MA01ABCDE"])
    assert bad.exit_code == 1 and "USCC argument[0]" in bad.output and "18 characters" in bad.output
    assert len(read(endpoint.log.path)) == before  # refused here, before any request
    (endpoint.keys / "coordinator.pub.json").write_text(json.dumps(Identity.generate("coordinator").public.to_dict()))
    forged = runner.invoke(cli_app, ["query", "--federation", "lab", "--bank", "bank-a", ids[1]])
    assert forged.exit_code == 1  # an answer not signed by the key the bank holds is never shown
    assert "0.4" not in forged.output


# --- tokens ----------------------------------------------------------------------------------------------------


def test_token_files_are_private_and_only_digests_are_kept(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    token, path, digests = new_token("bank-a", state)
    second, _, _ = new_token("bank-a", state, tmp_path / "rotated.token")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(digests.stat().st_mode) == 0o600
    assert path.read_text().strip() == token
    text = digests.read_text()
    assert token not in text and second not in text
    known = TokenDigests.load(digests)
    assert known.bank_of(token) == known.bank_of(second) == "bank-a" and known.bank_of(token + "x") is None
    with pytest.raises(FedCreditError, match="written once"):
        new_token("bank-a", state)
    with pytest.raises(FedCreditError, match="node name"):
        new_token("Bank A", state)
    runner = CliRunner()
    made = runner.invoke(cli_app, ["coordinator", "query-token", "bank-b", "--state", str(state)])
    assert made.exit_code == 0 and "bank-b.token" in made.output.replace("\n", "")
    assert TokenDigests.load(digests).banks() == ["bank-a", "bank-b"]


# --- the same loop with the query protocol's own parties (fedcredit.protocols.query) --------------------------

try:
    from fedcredit.protocols import QueryCoordinator, QueryNode, audited
    from fedcredit.protocols import verify_answer as protocol_verify
except ImportError:  # the protocol side (issue 19, qproto) is not merged yet
    QueryCoordinator = None

needs_protocol = pytest.mark.skipif(QueryCoordinator is None, reason="fedcredit.protocols has no QueryCoordinator yet")

NODE_POLICY = ('[policy]\nallowed_tasks = ["train", "score", "query"]\nmin_key_bits = 1024\nmin_population = 1\n'
               'max_jobs_per_day = 1000\nmax_queries_per_day = 3\n')


class WireRelay:
    """Rounds through the parties' ``handle`` with every message encoded and decoded as over Flower; a closed
    audit log's head comes back beside the replies, as the node service sends it."""

    def __init__(self, agents, names):
        self.agents, self.names = agents, names

    def exchange(self, outgoing):
        from fedcredit.common.wire import Message

        replies, heads = [], []
        for m in outgoing:
            agent = self.agents[m.receiver]
            try:
                replies += [Message.from_bytes(r.to_bytes()) for r in agent.handle(Message.from_bytes(m.to_bytes()))]
            except Exception as exc:  # noqa: BLE001
                name = self.names[m.receiver]
                raise node_error(name, f"[{name}] {type(exc).__name__}: {exc}") from None
            head = agent.take_final_head()
            if head is not None:
                heads.append(head)
        return replies, heads

    def abort(self, coordinator, exc):
        from fedcredit.protocols.loop import abort_job

        abort_job(coordinator, self.agents, exc)


@needs_protocol
def test_the_query_protocol_behind_the_endpoint(tmp_path):
    """A trained model served by the real coordinator and nodes: a signed 200, a tax budget refusal as a 403
    naming tax and its rule, and every party's audit log complete and verifiable after the session closes."""
    from rich.console import Console

    from fedcredit.audit.verify import verify_audit
    from fedcredit.data import synth
    from fedcredit.jobs.queries import saved_settings, with_model
    from fedcredit.jobs.runner import run
    from fedcredit.protocols import NodeConfig, publication_for
    from fedcredit.protocols.job import ModelSettings
    from fedcredit.scoring.policy import LimitPolicy

    roles = ["bank", "tax", "utilities"]
    paths = synth.write_nodes(synth.generate(1500, seed=3), tmp_path / "data")
    nodes = [NodeConfig(r, str(paths[r])) for r in roles]
    run(nodes, ModelSettings(key_bits=1024, max_iter=2, bank_only_baseline=False), tmp_path / "train",
        engine="in-process", console=Console(quiet=True), allow_weak_model=True)
    model = json.loads((tmp_path / "train" / "run.json").read_text())["run_id"]
    policy_file = tmp_path / "tax-policy.toml"
    policy_file.write_text(NODE_POLICY)
    served_nodes = with_model([NodeConfig(r, str(paths[r]), policy=str(policy_file) if r == "tax" else None)
                               for r in roles], tmp_path / "train", tmp_path / "session")
    signer = Identity.generate("coordinator")
    audit = tmp_path / "session" / "audit"

    def new_session(n):
        coordinator = QueryCoordinator(f"serve.q{n}", roles, model=model, settings=saved_settings(served_nodes[0].model_dir),
                                       publication=publication_for(LimitPolicy(), signer.fingerprint), signer=signer)
        return audited(coordinator, audit, signer), WireRelay({c.role: QueryNode(c) for c in served_nodes},
                                                              {r: r for r in roles})

    certs = tmp_path / "certs"
    make_certs(certs, "127.0.0.1", roles)
    (tmp_path / "state").mkdir()
    token, _, _ = new_token("bank", tmp_path / "state")
    service = QueryService(new_session)
    service.open()
    app = make_app(service.answer, bank="bank", tokens=TokenDigests.load(tmp_path / "state" / FILE_NAME),
                   log=RequestLog(tmp_path / "requests.jsonl"))
    ids = sorted(pd_ids(paths["bank"]) & pd_ids(paths["tax"]) & pd_ids(paths["utilities"]))[:3]
    with HttpsServer(app, "127.0.0.1", 0, certs / "superlink.pem", certs / "superlink.key") as server:
        serving = threading.Thread(target=service.serve, kwargs={"poll": 0.05}, daemon=True)
        serving.start()
        try:
            e = type("E", (), {"url": server.url, "ca": certs / "ca.pem"})
            ok = post(e, {"uscc": ids[:2]}, token)
            assert ok.status_code == 200, ok.text
            doc = protocol_verify(ok.json(), signer.public)
            assert [r["status"] for r in doc["rows"]] == ["ok", "ok"] and doc["model"] == model
            over = post(e, {"uscc": ids}, token)  # 2 + 3 IDs > tax's daily budget of 3
            assert over.status_code == 403, over.text
            assert (over.json()["node"], over.json()["rule"]) == ("tax", "max_queries_per_day")
            protocol_verify(over.json()["answer"], signer.public)
            assert post(e, {"uscc": ids[:1]}, token).status_code == 200  # within budget: the session goes on
        finally:
            service.stop()
            serving.join(5)
    service.close("test over")
    assert service.sessions == 1
    verdict = verify_audit(audit, signer.public, min_key_bits=1024)
    assert set(verdict.parties) == {"coordinator", *roles}


def pd_ids(path) -> set[str]:
    import pandas as pd

    return set(pd.read_parquet(path)["uscc"].astype(str))


def test_serve_plans_a_signed_query_run_config(tmp_path):
    """``fedcredit serve``'s run config: a scoring submission with task query, the endpoint's address from the
    federation's URL (or --listen) and the coordinator's token digests; every key is one the app declares."""
    from fedcredit.deploy.federations import parse
    from fedcredit.flower.submit import app_defaults, app_dir
    from fedcredit.jobs import serving

    (tmp_path / "certs").mkdir()
    fed = parse("lab", {"superlink": "10.0.0.1:9092", "certs": "certs", "registry": "/srv/state/registry.json",
                        "out": "/srv/runs", "query": "https://10.0.0.1:9443", "query_tokens": "/srv/state/qt.json"},
                "test", tmp_path)
    sub = serving.plan(fed, "3f2c9a1b7e44", "bank-a", tmp_path / "serve")
    cfg = sub.run_config
    assert (cfg["task"], cfg["model-run"], cfg["bank"], cfg["query-listen"], cfg["query-tokens"]) == \
        ("query", "3f2c9a1b7e44", "bank-a", "10.0.0.1:9443", "/srv/state/qt.json")
    assert sub.coordinator_out == "/srv/runs/bank-a/serve" and set(cfg) <= set(app_defaults(app_dir()))
    assert serving.plan(fed, "m", "bank-a", tmp_path / "s", listen="0.0.0.0:9555").run_config["query-listen"] \
        == "0.0.0.0:9555"
    with pytest.raises(FedCreditError, match="https://HOST:PORT"):
        parse("lab", {"superlink": "10.0.0.1:9092", "certs": "certs", "query": "http://10.0.0.1:9443"}, "test", tmp_path)


def test_an_idle_service_watches_for_flowers_stop():
    """While idle the loop asks the grid something every ``watch_s``: a stopped run's error ends ``serve``."""
    calls = []

    class Stopped(BaseException):  # Flower's stop arrives as SystemExit/KeyboardInterrupt or RunNotRunning
        pass

    def watch():
        calls.append(1)
        if len(calls) == 3:
            raise Stopped

    service = QueryService(lambda n: None, watch=watch, watch_s=0.01)
    with pytest.raises(Stopped):
        service.serve(poll=0.01)
    assert len(calls) == 3
    with pytest.raises(Exception, match="stopped"):
        service.answer("q", ["x"])  # a request after the stop is refused, never queued


def test_a_stop_in_the_middle_of_a_query_still_answers_its_request():
    """Flower's stop can arrive while a query's rounds run: that request gets a 502 'stopped', never a hang."""
    from concurrent.futures import Future

    class Stopped(BaseException):
        pass

    service = QueryService(lambda n: None)
    service.ask = lambda query_id, ids: (_ for _ in ()).throw(Stopped())
    done = Future()
    service._queue.put(("q1", ["x"], done))
    with pytest.raises(Stopped):
        service.serve(poll=0.01)
    with pytest.raises(Exception, match="stopped") as failed:
        done.result(timeout=1)
    assert failed.value.status == 502
