"""Node policies and consent lists (docs/governance.md), on the in-process engine.

Every rule refuses a job at the node that holds it: the error names the node and the rule,
the node's audit log ends as aborted naming the rule, and the run leaves only its status and
aborted logs. An allowed job runs; the consent filter shrinks the tax node's side of the
alignment; the budget counts per UTC day; bad policy and consent files are refused naming
the file and the key, line or column. The deployed path (node.toml [policy] → node config →
NodeConfig) enforces the same rules without Flower.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedcredit.audit.verify import read_log
from fedcredit.cli import app
from fedcredit.common.errors import FedCreditError
from fedcredit.data import synth
from fedcredit.data.validate import load_node
from fedcredit.governance import (
    DEFAULT_POLICY, BudgetLedger, JobFacts, NodePolicy, PolicyRefusal, load_consent, load_policy)
from fedcredit.governance.consent import ConsentSet
from fedcredit.jobs.jobfile import read_job

runner = CliRunner()
MODEL = "[model]\nkey_bits = 1024\nmax_iter = 3\nbank_only_baseline = false\n"
PERMISSIVE = "[policy]\nmin_key_bits = 1024\nmin_population = 20\nmax_jobs_per_day = 1000\n"
TODAY = date.today()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("policy-data")
    synth.write_nodes(synth.generate(1200, seed=7), root, "parquet")
    return root


def _job(folder: Path, data: Path, tax_policy: str | None, *, purpose: str | None = None, model: str = MODEL) -> Path:
    """A job whose tax node carries ``tax_policy`` (a [policy] table's text), the others none."""
    folder.mkdir(parents=True, exist_ok=True)
    text = model + (f'[job]\npurpose = "{purpose}"\n' if purpose else "")
    for role in ("bank", "tax", "utilities"):
        text += f"[nodes.{role}]\ndata = '{data / f'{role}.parquet'}'\n"
        if role == "tax" and tax_policy is not None:
            (folder / "tax_policy.toml").write_text(tax_policy)
            text += 'policy = "tax_policy.toml"\n'
    (folder / "job.toml").write_text(text)
    return folder / "job.toml"


def _run(job: Path, out: Path, *extra: str):
    return runner.invoke(app, ["train", "--job", str(job), "--out", str(out), "--engine", "in-process", *extra],
                         env={"COLUMNS": "2000"})


def _assert_refused(result, out: Path, rule: str) -> dict:
    """The refusal as the coordinator shows it, the refusing node's log, and nothing else left behind."""
    assert result.exit_code == 1, result.output
    status = json.loads((out / "status.json").read_text())
    assert status["ok"] is False and f"node tax refused the job: policy rule {rule}:" in status["error"], status
    assert f"policy rule {rule}" in result.output and "Traceback" not in result.output
    left = {str(p.relative_to(out)) for p in out.rglob("*")}
    assert not left & {"metrics.json", "run.json", "model", "scores.parquet", "report.html", "limits.parquet", "work"}
    assert {"status.json", "audit", "audit/tax.jsonl"} <= left, left
    log = read_log(out / "audit" / "tax.jsonl")  # chain and signatures check
    last = log.records[-1]
    assert last["type"] == "aborted" and f"policy rule {rule}" in last["reason"], last
    for other in (out / "audit").glob("*.jsonl"):  # no other node's log learns the rule
        if other.stem not in ("tax", "coordinator"):
            assert "policy rule" not in other.read_text()
    return status


@pytest.mark.parametrize("rule,table", [
    ("allowed_banks", 'allowed_banks = ["bank-of-qinghai"]'),
    ("allowed_banks", 'allowed_banks = [{name = "bank", keys = ["sha256:00ff"]}]'),  # local runs have no submitter
    ("allowed_models", 'allowed_models = ["secureboost"]'),
    ("allowed_tasks", 'allowed_tasks = ["score"]'),
    ("allowed_columns", 'allowed_columns = ["vat_paid_12m"]'),
    ("min_key_bits", "min_key_bits = 2048"),
    ("min_population", "min_population = 100000"),
])
def test_each_rule_refuses_a_job_at_the_node(data, tmp_path, rule, table):
    policy = PERMISSIVE.replace(f"{table.split(' =')[0]} =", "#") + table + "\n"
    status = _assert_refused(_run(_job(tmp_path / "job", data, policy), tmp_path / "out"), tmp_path / "out", rule)
    if rule == "min_population":  # refused after the alignment, before any feature left the node
        assert "needs at least 100000" in status["error"]
        kinds = [r.get("kind") for r in read_log(tmp_path / "out" / "audit" / "tax.jsonl").records]
        assert "job.split" in kinds and "woe.stats" not in " ".join(map(str, kinds)) and "job.prepared" not in kinds
    else:  # refused at the job's first message, before the node read its file
        assert [r["type"] for r in read_log(tmp_path / "out" / "audit" / "tax.jsonl").records] == \
            ["header", "message", "aborted"]


def test_an_allowed_job_runs_and_the_budget_refuses_the_next(data, tmp_path):
    policy = PERMISSIVE.replace("max_jobs_per_day = 1000", "max_jobs_per_day = 1") + \
        'allowed_banks = ["bank"]\nallowed_models = ["scorecard_lr"]\nallowed_tasks = ["train"]\n'
    job = _job(tmp_path / "job", data, policy)
    first = _run(job, tmp_path / "out1")
    assert first.exit_code == 0, first.output
    assert (tmp_path / "out1" / "metrics.json").exists()
    ledger = json.loads((tmp_path / "job" / "tax_policy.toml.ledger.json").read_text())
    assert list(ledger["days"]) and sum(len(v) for v in ledger["days"].values()) == 1
    _assert_refused(_run(job, tmp_path / "out2"), tmp_path / "out2", "max_jobs_per_day")


def test_a_scoring_run_beyond_the_daily_scored_budget_is_refused(data, tmp_path, demo_run):
    model = demo_run[0]  # a model trained without any policy: the session's demo run (tests/conftest.py)
    job = _job(tmp_path / "score", data, PERMISSIVE + "max_scored_per_day = 100\n")
    result = runner.invoke(app, ["score", "--job", str(job), "--model", str(model), "--out",
                                 str(tmp_path / "out"), "--engine", "in-process"], env={"COLUMNS": "2000"})
    status = _assert_refused(result, tmp_path / "out", "max_scored_per_day")
    assert "this node allows 100 per day" in status["error"]


def _consent_rows(tax_ids: list[str]) -> tuple[str, set[str]]:
    """A consent file for the tax node: 600 valid rows, and expired, other-bank and other-purpose ones."""
    later, earlier = (TODAY + timedelta(days=30)).isoformat(), (TODAY - timedelta(days=1)).isoformat()
    valid, expired = tax_ids[:600], tax_ids[600:700]
    rows = [f"{i.lower()},bank,credit-scoring,{later}" for i in valid]  # IDs are compared upper-cased
    rows += [f"{i},bank,credit-scoring,{earlier}" for i in expired]
    rows += [f"{i},bank-of-qinghai,credit-scoring,{later}" for i in tax_ids[700:800]]
    rows += [f"{i},bank,marketing,{later}" for i in tax_ids[800:900]]
    rows += [f"{tax_ids[0]},bank,credit-scoring,{TODAY.isoformat()}"]  # valid through today
    return "id,bank,purpose,expires\n" + "\n".join(rows) + "\n", set(valid)


def test_consent_filter_keeps_only_valid_authorizations_for_the_jobs_bank_and_purpose(data, tmp_path):
    ids = {role: set(load_node(data / f"{role}.parquet", _schema(role)).ids) for role in ("bank", "tax", "utilities")}
    tax_ids = sorted(ids["tax"])
    text, valid = _consent_rows(tax_ids)
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "consent.csv").write_text(text)
    job = _job(tmp_path / "job", data, PERMISSIVE + 'consent = "consent.csv"\n')
    result = _run(job, tmp_path / "out")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["intersection"] == len(ids["bank"] & valid & ids["utilities"])
    assert metrics["intersection"] < len(ids["bank"] & ids["tax"] & ids["utilities"])
    consent = [r for r in read_log(tmp_path / "out" / "audit" / "tax.jsonl").records if r["type"] == "consent"]
    assert consent == [{**consent[0], "consent_count": len(valid),
                        "consent_digest": ConsentSet(frozenset(valid)).digest}]
    assert not any(r["type"] == "consent" for r in read_log(tmp_path / "out" / "audit" / "bank.jsonl").records)
    verify = runner.invoke(app, ["audit", "verify", str(tmp_path / "out"), "--min-key-bits", "1024"])
    assert verify.exit_code == 0, verify.output
    # another purpose: no enterprise of the tax node has consented to it, so too few are aligned
    other = _run(_job(tmp_path / "job", data, PERMISSIVE + 'consent = "consent.csv"\n', purpose="marketing-x"),
                 tmp_path / "out2")
    assert other.exit_code == 1 and "only 0 enterprises are known to every node" in other.output


def _schema(role: str):
    from fedcredit.protocols import NodeConfig

    return NodeConfig(role, "x").schema()


def test_consent_digest_and_expiry_rules():
    cs = ConsentSet(frozenset({"B", "A"}))
    import hashlib

    assert cs.count == 2 and cs.digest == hashlib.sha256(b"A\nB\n").hexdigest()


@pytest.mark.parametrize("text,expect", [
    ("[policy]\nallowed_bankz = []\n", r"unknown key\(s\) \['allowed_bankz'\] in \[policy\]"),
    ("[policy]\nmin_key_bits = '2048'\n", r"\[policy\] min_key_bits must be a whole number"),
    ("[policy]\nallowed_tasks = ['train', 'predict']\n", r"\[policy\] allowed_tasks must be a list of 'train'"),
    ("[policy]\nallowed_banks = [{name = 'bank', key = []}]\n", r"allowed_banks: unknown key\(s\) \['key'\]"),
    ("[policy]\nallowed_banks = 'bank'\n", r"\[policy\] allowed_banks must be a list"),
    ("[policy]\nconsent = 'missing.csv'\n", r"\[policy\] consent: file .*missing.csv not found"),
    ("[policy]\n[other]\n", r"unknown section\(s\) \['other'\]"),
    ("min_key_bits = 2048\n", r"no \[policy\] table"),
])
def test_a_bad_policy_file_is_refused_naming_file_and_key(tmp_path, data, text, expect):
    path = tmp_path / "tax_policy.toml"
    path.write_text(text)
    with pytest.raises(FedCreditError, match=expect) as err:
        load_policy(path)
    assert str(path) in str(err.value)
    with pytest.raises(FedCreditError, match=expect):  # the job file checks it when read
        read_job(_job(tmp_path, data, text))


@pytest.mark.parametrize("text,expect", [
    ("id,bank,purpose\nX,bank,credit-scoring\n", r"line 1: consent columns are"),
    ("id,bank,purpose,expires\nX,bank,credit-scoring,2030-01-01\nY,bank,credit-scoring,31/12/2030\n",
     r"line 3, column expires: '31/12/2030' is not an ISO date"),
    ("id,bank,purpose,expires\nX,,credit-scoring,2030-01-01\n", r"line 2, column bank: empty"),
    ("id,bank,purpose,expires\nX,bank,credit-scoring\n", r"line 2: 3 fields, expected 4"),
])
def test_a_bad_consent_file_is_refused_naming_file_row_and_column(tmp_path, text, expect):
    path = tmp_path / "consent.csv"
    path.write_text(text)
    with pytest.raises(FedCreditError, match=expect) as err:
        load_consent(path)
    assert str(path) in str(err.value)


def test_the_budget_counts_per_utc_day_and_each_run_once(tmp_path):
    policy = replace(DEFAULT_POLICY, max_jobs_per_day=2, max_scored_per_day=500)
    ledger, day = BudgetLedger(tmp_path / "ledger.json"), date(2025, 3, 1)
    ledger.admit_job(policy, "tax", "run-1", day)
    ledger.admit_job(policy, "tax", "run-1", day)  # the same run again (a replayed message) counts once
    ledger.admit_job(policy, "tax", "run-2", day)
    with pytest.raises(PolicyRefusal, match="max_jobs_per_day: this node has taken part in 2 job"):
        ledger.admit_job(policy, "tax", "run-3", day)
    ledger.admit_job(policy, "tax", "run-3", day + timedelta(days=1))  # a new UTC day
    ledger.admit_scored(policy, "tax", "run-1", 400, day)
    with pytest.raises(PolicyRefusal, match="would score 200 enterprises, 400 were scored today"):
        ledger.admit_scored(policy, "tax", "run-2", 200, day)
    assert ledger.used(day, "") == (2, 400)


def test_policy_check_names_what_was_asked_and_what_is_allowed():
    facts = JobFacts("tax", "bank", "credit-scoring", "query", "scorecard_lr", 2048, ("vat_paid_12m",))
    with pytest.raises(PolicyRefusal, match=r"node tax refused the job: policy rule allowed_tasks: the job's task is "
                                            r"'query'; this node allows 'train', 'score'"):
        DEFAULT_POLICY.check(facts)
    signed = NodePolicy(allowed_banks=(load_policy_grant(),), min_key_bits=1024)
    signed.check(replace(facts, task="train", submitter={"name": "bank", "fingerprint": "sha256:ab"}))
    with pytest.raises(PolicyRefusal, match="was submitted with key sha256:cd; this node allows only bank"):
        signed.check(replace(facts, task="train", submitter={"name": "bank", "fingerprint": "sha256:cd"}))


def load_policy_grant():
    from fedcredit.governance import BankGrant

    return BankGrant("bank", ("sha256:ab",))


def test_the_deployed_node_config_path_loads_and_enforces_the_policy(data, tmp_path):
    """node.toml [policy] → kitconfig's node config → the node service's NodeConfig: the same gate, no Flower."""
    from fedcredit.deploy import kitconfig
    from fedcredit.jobs.in_process import run_job
    from fedcredit.node.config import node_from_config
    from fedcredit.protocols import ModelSettings

    toml = tmp_path / "node.toml"
    toml.write_text(f'[node]\nrole = "tax"\ndata = "{data / "tax.parquet"}"\n[columns]\nid_column = "uscc"\n'
                    + PERMISSIVE + 'allowed_models = ["secureboost"]\n')
    _, node_config = kitconfig.load_node_config(toml)
    assert node_config["policy"] == str(toml.resolve())
    tax, work = node_from_config({"role": "tax", "data": str(data / "tax.parquet"), "work-dir": str(tmp_path / "state"),
                                  "out-dir": str(tmp_path / "out"), **node_config}, "r1")
    assert tax.policy == str(toml.resolve()) and tax.ledger == str((tmp_path / "state" / "policy-ledger.json").resolve())
    assert load_policy(tax.policy).allowed_models == ("secureboost",)
    others = [node_from_config({"role": r, "data": str(data / f"{r}.parquet"), "out-dir": str(tmp_path / "out"),
                                **({"label": "default_12m"} if r == "bank" else {})}, "r1")[0] for r in ("bank", "utilities")]
    settings = ModelSettings(key_bits=1024, max_iter=2, bank_only_baseline=False)
    with pytest.raises(PolicyRefusal, match="node tax refused the job: policy rule allowed_models"):
        run_job([others[0], tax, others[1]], settings, run_id="r1")
    assert read_log(tmp_path / "out" / "run-r1" / "audit" / "tax.jsonl").records[-1]["type"] == "aborted"

    # a node.toml without [policy] runs under the default policy: 1024-bit test keys are refused
    toml.write_text(toml.read_text().split("[policy]")[0])
    _, node_config = kitconfig.load_node_config(toml)
    assert "policy" not in node_config
    cfg = {"role": "tax", "data": str(data / "tax.parquet"), "work-dir": str(tmp_path / "state2"), "policy": "default"}
    tax, _ = node_from_config(cfg, "r2")
    others = [replace(n, out_dir=None) for n in others]
    with pytest.raises(PolicyRefusal, match="min_key_bits: the job's Paillier keys have 1024 bits; this node needs "
                                            "at least 2048"):
        run_job([others[0], tax, others[1]], settings, run_id="r2")
    assert not (tmp_path / "state2" / "policy-ledger.json").exists()  # a refused job is not counted


def test_the_node_judges_the_submitter_it_verified_itself_not_the_coordinators_word():
    """Deployments: the node checks the run config's signature itself (fedcredit.flower.trust); the policy's
    pinned keys are compared with that signer, and a HELLO naming another submitter is refused."""
    from fedcredit.common.errors import ProtocolError
    from fedcredit.common.wire import COORDINATOR, Message
    from fedcredit.protocols import ModelSettings
    from fedcredit.protocols.job.gate import job_facts
    from fedcredit.protocols.job.settings import NodeConfig

    cfg = NodeConfig(role="tax", data="unused.parquet", features=["vat_paid_12m"])
    settings = ModelSettings(key_bits=2048)
    verified = {"name": "bank", "fingerprint": "sha256:ab"}
    hello = lambda meta: Message("job.hello", COORDINATOR, "tax", "r1", 0, {"bank": "bank", **meta})  # noqa: E731
    policy = NodePolicy(allowed_banks=(load_policy_grant(),))
    # the coordinator says nothing about the submitter: the node's own verification counts
    policy.check(job_facts(cfg, hello({}), settings, verified))
    # without the node's own verification the coordinator's claim alone does not pass a pinned key ...
    with pytest.raises(PolicyRefusal, match="has no verified submitter"):
        policy.check(job_facts(cfg, hello({}), settings))
    # ... and a coordinator naming another signer than the one the node verified is refused
    with pytest.raises(ProtocolError, match="the coordinator names submitter sha256:cd, but this node verified sha256:ab"):
        job_facts(cfg, hello({"submitter": {"name": "bank", "fingerprint": "sha256:cd"}}), settings, verified)
    with pytest.raises(PolicyRefusal, match="was submitted with key sha256:cd"):
        policy.check(job_facts(cfg, hello({}), settings, {"name": "other", "fingerprint": "sha256:cd"}))


@pytest.mark.parametrize("allowed, refused", [("bank-a", False), ("bank-b", True)])
def test_a_local_job_tells_the_nodes_its_banks_name(data, tmp_path, allowed, refused):
    """``[job] bank = "bank-a"``: the label holder plays the protocol role bank, but the hosts' policies judge
    the bank by its name, on the local engines as in a federation."""
    (tmp_path / "tax_policy.toml").write_text(PERMISSIVE + f'allowed_banks = ["{allowed}"]\n')
    job = tmp_path / "job.toml"
    job.write_text(f'[job]\nbank = "bank-a"\n{MODEL}'
                   f'[nodes.bank-a]\ndata = "{data / "bank.parquet"}"\n'
                   f'[nodes.tax]\ndata = "{data / "tax.parquet"}"\npolicy = "tax_policy.toml"\n'
                   f'[nodes.utilities]\ndata = "{data / "utilities.parquet"}"\n')
    out = tmp_path / "out"
    result = _run(job, out)
    if refused:
        body = _assert_refused(result, out, "allowed_banks")
        assert "the job's bank is 'bank-a'" in result.output + json.dumps(body)
    else:
        assert result.exit_code == 0, result.output
        assert json.loads((out / "run.json").read_text())["nodes"]
