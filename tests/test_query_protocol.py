"""Online limit queries on the in-process transport (issue #19, point 3): the protocol and node side.

One model is trained (1024-bit test keys, few iterations) and scored by a scoring run;
serving runs over the same nodes and data then answer queries whose score, pd, grade, limit
and reason codes equal the scoring run's publication bit for bit. Unknown enterprises get
the limit policy's missing answer, unconsented ones are refused, node policies refuse a
serving run or a query over budget (the run goes on), malformed USCCs never leave the
coordinator, answers are signed, and every party's audit log lists the queried IDs.
"""

from __future__ import annotations

import copy
import json
import pickle
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from fedcredit.audit.verify import read_log, verify_audit
from fedcredit.common.wire import Message
from fedcredit.crypto import Identity
from fedcredit.data import synth
from fedcredit.data.uscc import check_character
from fedcredit.governance import PolicyRefusal, load_policy
from fedcredit.jobs.queries import run_local_queries, with_model
from fedcredit.jobs.runner import run
from fedcredit.protocols.errors import InputError
from fedcredit.protocols.job import ModelSettings, NodeConfig
from fedcredit.protocols.job.gate import utc_today
from fedcredit.protocols.job.outputs import publication_for
from fedcredit.protocols.loop import drive
from fedcredit.protocols.query import AnswerError, QueryCoordinator, QueryError, QueryNode, check_ids, verify_answer
from fedcredit.scoring.policy import LimitPolicy, PolicyError

ROLES = ("bank", "tax", "utilities")
SETTINGS = ModelSettings(key_bits=1024, max_iter=4, bank_only_baseline=False)
CAPACITY = {"capacity": {"node": "tax", "column": "declared_revenue_cny", "multiple": 0.3}}
ALLOW = ('[policy]\nallowed_tasks = ["train", "score", "query"]\nmin_key_bits = 1024\nmin_population = 1\n'
         'max_jobs_per_day = 1000\n')


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A trained model, its scoring run's publication, and the nodes' files."""
    root = tmp_path_factory.mktemp("query")
    paths = synth.write_nodes(synth.generate(2000, seed=11), root / "data")
    nodes = [NodeConfig(r, str(paths[r])) for r in ROLES]
    policy = LimitPolicy.from_dict(CAPACITY, "test")
    run(nodes, SETTINGS, root / "train", engine="in-process", console=Console(quiet=True), policy=policy,
        allow_weak_model=True)
    run(nodes, SETTINGS, root / "score", engine="in-process", console=Console(quiet=True), policy=policy,
        model=root / "train")
    published = pd.read_parquet(root / "score" / "limits.parquet").set_index("uscc")
    ids = {r: set(pd.read_parquet(paths[r])["uscc"]) for r in ROLES}
    model = json.loads((root / "train" / "run.json").read_text())["run_id"]
    return {"root": root, "nodes": nodes, "policy": policy, "published": published, "ids": ids, "model": model,
            "signer": Identity.generate("coordinator")}


def _serve(served, folder: Path, batches, *, policy=None, nodes=None, **kw):
    """One serving run over ``batches``; every party's audit log in ``folder``/audit."""
    nodes = with_model(nodes or served["nodes"], served["root"] / "train", folder)
    return run_local_queries(nodes, served["model"], batches, policy or served["policy"], served["signer"],
                             audit=folder / "audit", **kw)


def _queried(folder: Path, party: str) -> list[tuple[str, list, list]]:
    return [(r["query_id"], r["ids"], r["verdicts"]) for r in read_log(folder / "audit" / f"{party}.jsonl").records
            if r["type"] == "query"]


def _unknown_to_all() -> str:
    body = "91310115MA1K0000Q"
    return body + check_character(body)


def test_answers_equal_the_scoring_run_and_are_signed_and_audited(served, tmp_path):
    published = served["published"]
    batch = sorted(published.index)[:100]
    wire: list[bytes] = []
    answers = _serve(served, tmp_path, [batch[:1], batch], tap=wire.append)
    assert [a["query_id"] for a in answers] == ["q1", "q2"]
    for answer in answers:
        assert verify_answer(answer, served["signer"].public) is answer
        assert answer["model"] == served["model"] and answer["bank"] == "bank"
    rows = answers[1]["rows"]
    assert [r["uscc"] for r in rows] == batch and {r["status"] for r in rows} == {"ok"}
    for row in answers[0]["rows"] + rows:  # bit for bit: the same model on the same data
        want = published.loc[row["uscc"]]
        assert (row["score"], row["pd"], row["grade"], row["limit"], row["reason_codes"]) == \
               (float(want.score), float(want.pd), want.grade, int(want.limit), want.reason_codes), row["uscc"]
    assert any(r["limit"] < served["policy"].caps[r["grade"]] for r in rows)  # the capacity term binds somewhere
    blob, checked = b"".join(wire), 0  # no node's feature value crosses a node boundary, not even the capacity column
    for role, column in (("tax", "declared_revenue_cny"), ("bank", "loan_balance_cny")):
        table = pd.read_parquet(served["nodes"][ROLES.index(role)].data).set_index("uscc")
        for value in table.loc[table.index.intersection(batch[:20]), column].dropna():  # (distinctive ones)
            if abs(value) < 1000:
                continue
            assert repr(float(value)).encode() not in blob and f"{value:.2f}".encode() not in blob, (column, value)
            checked += 1
    assert checked >= 10 and b"query.ask" in blob
    verdict = verify_audit(tmp_path / "audit", served["signer"].public, min_key_bits=1024)
    assert set(verdict.parties) == {"coordinator", *ROLES}
    for party in ROLES:  # the data holder can check every queried ID against its consent
        assert _queried(tmp_path, party) == [("q1", batch[:1], ["ok"]), ("q2", batch, ["ok"] * 100)]
    assert [q[:2] for q in _queried(tmp_path, "coordinator")] == [("q1", batch[:1]), ("q2", batch)]


@pytest.mark.parametrize("answer", ["refer", "decline"])
def test_an_enterprise_a_node_does_not_know_gets_the_policys_missing_answer(served, tmp_path, answer):
    ids = served["ids"]
    not_at_tax = sorted(ids["bank"] & ids["utilities"] - ids["tax"])[0]
    known = sorted(served["published"].index)[0]
    policy = LimitPolicy.from_dict({**CAPACITY, "missing": {"answer": answer}}, "test")
    (result,) = _serve(served, tmp_path, [[known, not_at_tax.lower(), _unknown_to_all()]], policy=policy)
    ok, tax_lacks, nobody = result["rows"]
    assert ok["status"] == "ok" and ok["limit"] == int(served["published"].loc[known].limit)
    for row in (tax_lacks, nobody):
        assert row["status"] == "missing" and row["score"] is None and row["pd"] is None and row["grade"] is None
        assert row["limit"] == (0 if answer == "decline" else None)
        assert f"[missing] answer = '{answer}'" in row["why"]
    assert tax_lacks["uscc"] == not_at_tax and tax_lacks["why"].startswith("tax holds no data on this enterprise")
    assert nobody["why"].startswith("bank and tax and utilities hold no data")
    assert _queried(tmp_path, "tax")[0][2] == ["ok", "unknown", "unknown"]
    assert _queried(tmp_path, "bank")[0][2] == ["ok", "ok", "unknown"]


def _policy_node(served, folder: Path, table: str, consented: list[str] | None = None) -> list[NodeConfig]:
    """The nodes with a policy at tax (``table`` after ALLOW) and, given ``consented``, its consent list."""
    folder.mkdir(parents=True, exist_ok=True)
    text = ALLOW + table
    if consented is not None:
        rows = "".join(f"{i},bank,credit-scoring,2099-12-31\n" for i in consented)
        (folder / "consent.csv").write_text("id,bank,purpose,expires\n" + rows + "X,other-bank,credit-scoring,2099-12-31\n")
        text += 'consent = "consent.csv"\n'
    (folder / "tax.toml").write_text(text)
    return [replace(n, policy=str(folder / "tax.toml"), ledger=str(folder / "ledger.json")) if n.role == "tax" else n
            for n in served["nodes"]]


def test_without_consent_for_the_bank_an_enterprise_is_refused(served, tmp_path):
    first, second = sorted(served["published"].index)[:2]
    nodes = _policy_node(served, tmp_path / "policy", "", consented=[first])
    (result,) = _serve(served, tmp_path, [[first, second]], nodes=nodes)
    ok, refused = result["rows"]
    assert ok["status"] == "ok" and ok["score"] == float(served["published"].loc[first].score)
    assert refused["status"] == "refused" and refused["limit"] is None and refused["score"] is None
    assert "no consent at tax for this bank and purpose" in refused["why"]
    assert _queried(tmp_path, "tax") == [("q1", [first, second], ["ok", "no-consent"])]
    verify_audit(tmp_path / "audit", served["signer"].public, min_key_bits=1024)


def test_a_node_policy_without_queries_refuses_the_serving_run(served, tmp_path):
    folder = tmp_path / "policy"
    folder.mkdir()
    (folder / "tax.toml").write_text("[policy]\nmin_key_bits = 1024\nmin_population = 1\n")
    nodes = [replace(n, policy=str(folder / "tax.toml"), ledger=str(folder / "ledger.json")) if n.role == "tax" else n
             for n in served["nodes"]]
    known = sorted(served["published"].index)[0]
    with pytest.raises(PolicyRefusal, match="node tax refused the job: policy rule allowed_tasks: the job's task "
                                            "is 'query'"):
        _serve(served, tmp_path, [[known]], nodes=nodes)
    last = read_log(tmp_path / "audit" / "tax.jsonl").records[-1]
    assert last["type"] == "aborted" and "policy rule allowed_tasks" in last["reason"]


def test_a_query_over_the_daily_budget_is_refused_and_the_run_goes_on(served, tmp_path):
    a, b, c, d, e = sorted(served["published"].index)[:5]
    nodes = _policy_node(served, tmp_path / "policy", "max_queries_per_day = 3\n")
    day = [date(2030, 1, 1)]
    clock = lambda: day[0]  # noqa: E731
    first, over, within = _serve(served, tmp_path / "day1", [[a, b], [c, d], [e]], nodes=nodes, clock=clock)
    assert {r["status"] for r in first["rows"] + within["rows"]} == {"ok"}
    assert [r["status"] for r in over["rows"]] == ["refused", "refused"]
    assert all(r["limit"] is None and r["why"].startswith("node tax refused the query: policy rule "
                                                          "max_queries_per_day: the query asks about 2 enterprise(s), "
                                                          "2 were queried today (UTC 2030-01-01)") for r in over["rows"])
    assert [v for _, _, v in _queried(tmp_path / "day1", "tax")] == [["ok", "ok"], ["refused"] * 2, ["ok"]]
    assert [v for _, _, v in _queried(tmp_path / "day1", "bank")] == [["ok", "ok"], ["ok", "ok"], ["ok"]]
    verify_audit(tmp_path / "day1" / "audit", served["signer"].public, min_key_bits=1024)
    day[0] += timedelta(days=1)  # a new UTC day: a new budget
    (again,) = _serve(served, tmp_path / "day2", [[c, d]], nodes=nodes, clock=clock)
    assert [r["limit"] for r in again["rows"]] == [int(served["published"].loc[i].limit) for i in (c, d)]
    ledger = json.loads((tmp_path / "policy" / "ledger.json").read_text())["days"]
    counted = {when: sum(sum(v.get("queried", {}).values()) for v in runs.values()) for when, runs in ledger.items()}
    assert {when: n for when, n in counted.items() if n} == {"2030-01-01": 3, "2030-01-02": 2}


def _ready(served, folder: Path, nodes=None, **kw):
    nodes = with_model(nodes or served["nodes"], served["root"] / "train", folder)
    agents = {n.role: QueryNode(n) for n in nodes}
    coordinator = QueryCoordinator("serve-1", list(ROLES), model=served["model"], signer=served["signer"], settings=SETTINGS,
                                   publication=publication_for(served["policy"], served["signer"].fingerprint), **kw)
    drive(coordinator, agents)
    assert coordinator.ready
    return coordinator, agents


def test_each_query_reads_the_nodes_current_data(served, tmp_path):
    """A node reads its data file as it is when a query arrives (the same serving run, the file rewritten)."""
    tax = tmp_path / "tax.parquet"
    table = pd.read_parquet(served["nodes"][1].data)
    table.to_parquet(tax, index=False)
    nodes = [replace(n, data=str(tax)) if n.role == "tax" else n for n in served["nodes"]]
    coordinator, agents = _ready(served, tmp_path / "serve", nodes)
    known = sorted(served["published"].index)[:2]
    drive(coordinator, agents, first=coordinator.submit("before", known))
    assert [r["limit"] for r in coordinator.answer["rows"]] == [int(served["published"].loc[i].limit) for i in known]
    table[table["uscc"] != known[0]].to_parquet(tax, index=False)  # the tax office no longer holds the first
    drive(coordinator, agents, first=coordinator.submit("after", known))
    assert [r["status"] for r in coordinator.answer["rows"]] == ["missing", "ok"]


def test_malformed_or_too_many_ids_are_refused_before_any_message(served, tmp_path):
    coordinator, agents = _ready(served, tmp_path, max_batch=3)
    good = sorted(served["published"].index)[:4]
    bad = good[1][:-1] + ("0" if good[1][-1] != "0" else "1")
    for ids, says in (([good[0], bad], f"USCC {bad!r} has a wrong check character"),
                      ([good[0], "91-NOT-A-USCC"], "is not 18 characters long"),
                      (good, "at most 3 USCCs, got 4"), ([good[0], good[0]], "listed twice"), ([], "at least one")):
        with pytest.raises(QueryError, match=says):
            coordinator.submit("q-bad", ids)
    assert all(a.last_seq == 0 for a in agents.values())  # nothing reached a node
    drive(coordinator, agents, first=coordinator.submit("q-good", good[:3]))
    assert [r["status"] for r in coordinator.answer["rows"]] == ["ok"] * 3
    with pytest.raises(QueryError, match="was used before"):
        coordinator.submit("q-good", good[:1])
    with pytest.raises(QueryError, match="nothing was asked"):
        run_local_queries(with_model(served["nodes"], served["root"] / "train", tmp_path / "x"), served["model"],
                          [[bad]], served["policy"], served["signer"])
    assert not (tmp_path / "x").exists()  # the serving run never started


def test_a_node_refuses_a_reused_query_number_and_unexpected_messages(served, tmp_path):
    coordinator, agents = _ready(served, tmp_path)
    ask = coordinator.submit("q1", sorted(served["published"].index)[:1])
    drive(coordinator, agents, first=ask)
    from fedcredit.common.errors import ProtocolError

    replayed = next(m for m in ask if m.receiver == "tax")
    with pytest.raises(ProtocolError, match="masks are never reused"):
        agents["tax"].handle(Message.from_bytes(replayed.to_bytes()))
    with pytest.raises(ProtocolError, match="unexpected"):
        agents["tax"].handle(Message("lr.score", "coordinator", "tax", "serve-1", 9, {}))
    agents["tax"].clock = utc_today  # (a test's clock may be a lambda; a node's checkpoint pickles it)
    saved = pickle.dumps(agents["tax"])  # a checkpoint holds no data frame: the node reads its file again
    assert len(saved) < 100_000 and pickle.loads(saved)._snapshot is None


def test_a_tampered_answer_fails_verification(served, tmp_path):
    (answer,) = _serve(served, tmp_path, [sorted(served["published"].index)[:3]])
    verify_answer(answer, served["signer"].public)
    changed = copy.deepcopy(answer)
    changed["rows"][1]["limit"] += 1
    with pytest.raises(AnswerError, match="changed after the coordinator"):
        verify_answer(changed, served["signer"].public)
    with pytest.raises(AnswerError, match="names signer"):
        verify_answer(answer, Identity.generate("other").public)
    with pytest.raises(AnswerError, match="not a query answer"):
        verify_answer({k: v for k, v in answer.items() if k != "signed_at"}, served["signer"].public)


def test_secureboost_models_are_refused_at_setup(served):
    with pytest.raises(InputError, match="scorecard LR models only"):
        QueryCoordinator("s", list(ROLES), model="sb-run", settings=ModelSettings(model="secureboost"),
                         publication=publication_for(served["policy"]), signer=served["signer"])


def test_policy_files_take_the_missing_answer_and_the_query_budget(tmp_path):
    assert LimitPolicy().missing_answer == "refer"
    assert LimitPolicy.from_dict({"missing": {"answer": "decline"}}, "p.toml").missing_answer == "decline"
    with pytest.raises(PolicyError, match="p.toml: missing.answer: must be one of refer, decline"):
        LimitPolicy.from_dict({"missing": {"answer": "score-anyway"}}, "p.toml")
    with pytest.raises(PolicyError, match="unknown key"):
        LimitPolicy.from_dict({"missing": {"answr": "refer"}}, "p.toml")
    (tmp_path / "n.toml").write_text("[policy]\nmax_queries_per_day = 50\n")
    assert load_policy(tmp_path / "n.toml").max_queries_per_day == 50
    assert check_ids([f" {_unknown_to_all().lower()} "]) == [_unknown_to_all()]


def test_a_deployed_node_serves_queries_with_its_saved_part(tmp_path):
    """The node service makes a ``QueryNode`` for a serving run's hello and finds its part by the model's run id."""
    from fedcredit.node.service import new_agent
    from fedcredit.protocols import HELLO, NodeAgent

    part = tmp_path / "out" / "run-3"
    (part / "audit").mkdir(parents=True)
    (part / "audit" / "tax.jsonl").write_text(json.dumps({"run_id": "m1", "seq": 0}) + "\n")
    (part / "model" / "tax").mkdir(parents=True)
    cfg = {"role": "tax", "data": str(tmp_path / "tax.parquet"), "out-dir": str(tmp_path / "out")}
    hello = lambda task: [Message(HELLO, "coordinator", "tax", "s1", 0, {"task": task, "model": "m1"})]  # noqa: E731
    agent = new_agent(cfg, "5", hello("query"))
    assert isinstance(agent, QueryNode) and agent.config.model_dir == str(part / "model" / "tax")
    assert agent.config.out_dir == str(tmp_path / "out" / "run-5")
    assert type(new_agent(cfg, "6", hello("train"))) is NodeAgent
