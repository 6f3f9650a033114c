"""The query endpoint end to end on one machine: real uvicorn with TLS in front of the serving loop.

A query session (``fedcredit.flower.serving.QueryService``) runs the query protocol's own
parties (``QueryCoordinator``, audited, and one ``QueryNode`` per node on a trained model's
saved parts) over an in-process relay that encodes every message as over Flower; every
request goes through HTTPS with the federation's CA. The answers, refusals and request-log
lines are what a bank and an auditor see; the CLI (``fedcredit query``) is run against the
same endpoint. Every server started is stopped.
"""

from __future__ import annotations

import json
import ssl
import stat
import threading

import httpx
import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

from fedcredit.audit.verify import verify_audit
from fedcredit.cli import app as cli_app
from fedcredit.common.errors import FedCreditError
from fedcredit.common.wire import Message
from fedcredit.crypto import Identity
from fedcredit.data import synth
from fedcredit.data.uscc import check_character
from fedcredit.deploy.certs import make_certs
from fedcredit.flower.serving import QueryService, _request_line
from fedcredit.jobs.queries import saved_settings, with_model
from fedcredit.jobs.runner import run
from fedcredit.protocols import NodeConfig, QueryCoordinator, QueryNode, audited, publication_for, verify_answer
from fedcredit.protocols.job import ModelSettings
from fedcredit.protocols.loop import abort_job
from fedcredit.scoring.policy import LimitPolicy
from fedcredit.serving.api import make_app
from fedcredit.serving.errors import QueryRefused, node_error
from fedcredit.serving.requestlog import RequestLog, read
from fedcredit.serving.requests import MAX_IDS
from fedcredit.serving.server import HttpsServer
from fedcredit.serving.tokens import FILE_NAME, TokenDigests, new_token

ROLES = ["bank", "tax", "utilities"]
TAX_POLICY = ('[policy]\nallowed_tasks = ["train", "score", "query"]\nmin_key_bits = 1024\nmin_population = 1\n'
              'max_jobs_per_day = 1000\nmax_queries_per_day = 5\n')


class WireRelay:
    """Rounds through the parties' ``handle`` with every message encoded and decoded as over Flower; a closed
    audit log's head comes back beside the replies, as the node service sends it; a party's exception comes
    back as the deployed node's error text."""

    def __init__(self, agents):
        self.agents = agents

    def exchange(self, outgoing):
        replies, heads = [], []
        for m in outgoing:
            agent = self.agents[m.receiver]
            try:
                replies += [Message.from_bytes(r.to_bytes()) for r in agent.handle(Message.from_bytes(m.to_bytes()))]
            except Exception as exc:  # noqa: BLE001
                raise node_error(m.receiver, f"[{m.receiver}] {type(exc).__name__}: {exc}") from None
            head = agent.take_final_head()
            if head is not None:
                heads.append(head)
        return replies, heads

    def abort(self, coordinator, exc):
        abort_job(coordinator, self.agents, exc)


# --- fixtures --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A scorecard model trained in-process on 1,500 enterprises (1024-bit test keys, 2 iterations)."""
    root = tmp_path_factory.mktemp("trained")
    paths = synth.write_nodes(synth.generate(1500, seed=3), root / "data")
    run([NodeConfig(r, str(paths[r])) for r in ROLES], ModelSettings(key_bits=1024, max_iter=2, bank_only_baseline=False),
        root / "train", engine="in-process", console=Console(quiet=True), allow_weak_model=True)
    known = set.intersection(*(set(pd.read_parquet(paths[r])["uscc"].astype(str)) for r in ROLES))
    body = "91310115MA1K0000Q"
    return {"root": root, "paths": paths, "model": json.loads((root / "train" / "run.json").read_text())["run_id"],
            "ids": sorted(known)[:5] + [body + check_character(body)]}  # the last one no node knows


@pytest.fixture
def ids(trained):
    return trained["ids"]


def session_factory(trained, folder, signer, tax_policy=TAX_POLICY):
    """``new_session`` for a ``QueryService``: the coordinator (audited) and the nodes, on the trained model."""
    folder.mkdir(parents=True, exist_ok=True)
    policy = folder / "tax-policy.toml"
    policy.write_text(tax_policy)
    made = []

    def new_session(n):  # each session's logs in a folder of its own (session n: folder/s<n>/audit)
        nodes = with_model([NodeConfig(r, str(trained["paths"][r]), policy=str(policy) if r == "tax" else None)
                            for r in ROLES], trained["root"] / "train", folder / f"s{n}")
        coordinator = QueryCoordinator(f"serve.q{n}", ROLES, model=trained["model"], signer=signer,
                                       settings=saved_settings(nodes[0].model_dir),
                                       publication=publication_for(LimitPolicy(), signer.fingerprint))
        made.append(audited(coordinator, folder / f"s{n}" / "audit", signer))
        return made[-1], WireRelay({c.role: QueryNode(c) for c in nodes})

    return new_session, made


@pytest.fixture
def endpoint(tmp_path, trained):
    """A serving loop for bank 'bank' behind HTTPS; yields a namespace with url, tokens, log, ca, ..."""
    certs = tmp_path / "certs"
    make_certs(certs, "127.0.0.1", ROLES)
    state = tmp_path / "state"
    state.mkdir()
    token_a, token_a_file, _ = new_token("bank", state)
    token_b, _, _ = new_token("bank-b", state)
    signer = Identity.generate("coordinator")
    keys = tmp_path / "keys"
    signer.save(keys / "coordinator.key.json", public_path=keys / "coordinator.pub.json")
    new_session, coordinators = session_factory(trained, tmp_path / "session", signer)
    lines = []
    service = QueryService(new_session, say=lines.append)
    service.open()
    log = RequestLog(tmp_path / "out" / "requests.jsonl")
    app = make_app(service.answer, bank="bank", tokens=TokenDigests.load(state / FILE_NAME), log=log,
                   on_request=_request_line(lines.append))
    server = HttpsServer(app, "127.0.0.1", 0, certs / "superlink.pem", certs / "superlink.key").start()
    serving = threading.Thread(target=service.serve, kwargs={"poll": 0.05}, daemon=True)
    serving.start()

    class E:
        pass

    e = E()
    e.url, e.ca, e.token_a, e.token_b, e.token_a_file = server.url, certs / "ca.pem", token_a, token_b, token_a_file
    e.log, e.service, e.signer, e.keys, e.certs, e.coordinators = log, service, signer, keys, certs, coordinators
    e.lines, e.session, e.paths = lines, tmp_path / "session", trained["paths"]
    try:
        yield e
    finally:
        service.stop()
        serving.join(5)
        server.stop()
        assert not serving.is_alive() and not server.thread.is_alive()


def post(e, body, token=None, raw=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(verify=ssl.create_default_context(cafile=str(e.ca)), timeout=60) as client:
        if raw is not None:
            return client.post(e.url + "/v1/limits", content=raw, headers=headers)
        return client.post(e.url + "/v1/limits", json=body, headers=headers)


# --- the endpoint ----------------------------------------------------------------------------------------------


def test_answer_is_signed_audited_and_logged_without_ids(endpoint, ids):
    r = post(endpoint, {"uscc": [ids[0], ids[-1].lower()]}, endpoint.token_a)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert verify_answer(doc, endpoint.signer.public) == doc and doc["bank"] == "bank"
    assert [row["uscc"] for row in doc["rows"]] == [ids[0], ids[-1]]  # normalized, in the asked order
    assert [row["status"] for row in doc["rows"]] == ["ok", "missing"]
    doc["rows"][0]["limit"] += 1
    with pytest.raises(FedCreditError, match="signature"):
        verify_answer(doc, endpoint.signer.public)
    (row,) = read(endpoint.log.path)
    assert (row["bank"], row["ids"], row["status"], row["client"]) == ("bank", 2, 200, "127.0.0.1")
    assert ids[0] not in endpoint.log.path.read_text()  # the IDs are in the parties' audit logs, not here
    assert httpx.get(endpoint.url + "/v1/health", verify=ssl.create_default_context(cafile=str(endpoint.ca))).json() \
        == {"ok": True}
    endpoint.service.close("test over")  # the session's last round: every party's log closes and verifies
    verdict = verify_audit(endpoint.session / "s1" / "audit", endpoint.signer.public, min_key_bits=1024)
    assert set(verdict.parties) == {"coordinator", *ROLES}


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


def test_node_budget_refusal_403_names_node_and_rule_and_the_session_goes_on(endpoint, ids):
    over = post(endpoint, {"uscc": ids}, endpoint.token_a)  # 6 IDs > tax's daily budget of 5
    assert over.status_code == 403, over.text
    body = over.json()
    assert (body["node"], body["rule"]) == ("tax", "max_queries_per_day") and "node tax refused" in body["error"]
    verify_answer(body["answer"], endpoint.signer.public)  # the signed refusal, for the bank's records
    assert {row["status"] for row in body["answer"]["rows"]} == {"refused"}
    assert post(endpoint, {"uscc": ids[:1]}, endpoint.token_a).status_code == 200  # within budget
    assert endpoint.service.sessions == 1
    assert [x["status"] for x in read(endpoint.log.path)] == [403, 200]
    assert any("bank bank, 6 id(s) -> 403" in line and "policy rule max_queries_per_day" in line
               for line in endpoint.lines), endpoint.lines


def test_other_node_failure_502_names_node_then_a_new_session_answers(endpoint, ids):
    data = endpoint.paths["utilities"]
    saved = data.read_bytes()
    data.write_bytes(b"not a parquet file")  # the node reads its current data at every query
    try:
        r = post(endpoint, {"uscc": [ids[0]]}, endpoint.token_a)
    finally:
        data.write_bytes(saved)
    assert r.status_code == 502 and r.json()["node"] == "utilities", r.text
    again = post(endpoint, {"uscc": [ids[0]]}, endpoint.token_a)
    assert again.status_code == 200, again.text
    assert endpoint.service.sessions == 2  # the broken session was aborted, a new one answers


def test_a_node_refusing_the_serving_run_is_named_at_setup(tmp_path, trained):
    no_queries = TAX_POLICY.replace('"score", "query"', '"score"')
    new_session, _ = session_factory(trained, tmp_path, Identity.generate("coordinator"), no_queries)
    with pytest.raises(QueryRefused) as refused:
        QueryService(new_session).open()
    assert (refused.value.node, refused.value.rule, refused.value.status) == ("tax", "allowed_tasks", 403)


# --- the CLI ---------------------------------------------------------------------------------------------------


def test_cli_query_verifies_and_prints(endpoint, ids, tmp_path, monkeypatch):
    monkeypatch.setenv("FEDCREDIT_HOME", str(tmp_path / "home"))
    runner = CliRunner()
    added = runner.invoke(cli_app, ["federation", "add", "lab", "--superlink", "127.0.0.1:9092", "--certs",
                                    str(endpoint.certs), "--keys", str(endpoint.keys), "--query", endpoint.url,
                                    "--query-token", str(endpoint.token_a_file), "--submitter-key", "x"])
    assert added.exit_code == 0, added.output
    shown = runner.invoke(cli_app, ["query", "--federation", "lab", "--bank", "bank", ids[0], ids[-1]])
    assert shown.exit_code == 0, shown.output
    assert ids[0] in shown.output and "signature verified (2 row(s))" in shown.output and "missing" in shown.output
    as_json = runner.invoke(cli_app, ["query", "--federation", "lab", "--bank", "bank", ids[1], "--json"])
    assert as_json.exit_code == 0 and 0 < json.loads(as_json.output)["rows"][0]["pd"] < 1
    wrong_bank = runner.invoke(cli_app, ["query", "--federation", "lab", "--bank", "bank-b", ids[1]])
    assert wrong_bank.exit_code == 1 and "not 'bank-b'" in wrong_bank.output
    before = len(read(endpoint.log.path))
    bad = runner.invoke(cli_app, ["query", "--federation", "lab", "--bank", "bank", "91110108MA01ABCDE"])
    assert bad.exit_code == 1 and "USCC argument[0]" in bad.output and "18 characters" in bad.output
    assert len(read(endpoint.log.path)) == before  # refused here, before any request
    (endpoint.keys / "coordinator.pub.json").write_text(json.dumps(Identity.generate("coordinator").public.to_dict()))
    forged = runner.invoke(cli_app, ["query", "--federation", "lab", "--bank", "bank", ids[1]])
    assert forged.exit_code == 1 and "signer" in forged.output  # an answer the bank's key does not verify is not shown


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
