"""Named federations and `fedcredit train --federation`: resolution, the run config that is sent, the record.

No Flower process runs here: ``fedcredit.flower.submit.submit`` is replaced by a fake that
keeps what it was given (the end-to-end run is in tests/test_deployment.py).
"""

from __future__ import annotations

import json
import stat
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedcredit.cli import app
from fedcredit.deploy import federations as F
from fedcredit.common.errors import FedCreditError
from fedcredit.flower.deployment import (SETTINGS_KEYS, policy_from_run_config, run_config_from_settings,
                                         settings_from_run_config)
from fedcredit.jobs.jobfile import load_job, read_job
from fedcredit.protocols.job import ModelSettings
from fedcredit.scoring.policy import LimitPolicy

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()

JOB = """
[job]
seed = 11
[model]
features = "standardized"
n_bins = 6
l2 = 0.01
max_iter = 3
key_bits = 1024
train = 0.5
validation = 0.25
bank_only_baseline = false
[nodes.bank]
data = "/secret/bank.parquet"
label = "default_12m"
[nodes.tax]
data = "/secret/tax.parquet"
features = ["vat_paid_12m"]
[nodes.courts]
[federations.pilot]
superlink = "10.0.0.5:9092"
certs = "pilot-certs"
registry = "state/registry.json"
out = "/srv/fedcredit/runs"
"""


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv(F.HOME_ENV, str(tmp_path / "fchome"))
    return tmp_path / "fchome"


@pytest.fixture
def certs(tmp_path):
    folder = tmp_path / "certs"
    folder.mkdir()
    (folder / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    return folder


@pytest.fixture
def job(tmp_path):
    path = tmp_path / "job.toml"
    path.write_text(JOB)
    (tmp_path / "pilot-certs").mkdir()
    (tmp_path / "pilot-certs" / "ca.pem").write_text("x")
    return path


@pytest.fixture
def fake_submit(monkeypatch):
    calls = []

    def submit(superlink, certs, out, run_config=None, *, echo=print, timeout=3600.0, coordinator_out=None, home=None,
               submitter_key=None):
        calls.append({"superlink": superlink, "certs": Path(certs), "out": Path(out), "run_config": dict(run_config),
                      "coordinator_out": coordinator_out, "timeout": timeout, "submitter_key": submitter_key})
        echo("PSI: 1,234 enterprises known to every node")
        return {"ok": True, "metrics": {"test_auc": 0.81234, "rounds": 24}, "submit_seconds": 1.5}

    monkeypatch.setattr("fedcredit.flower.submit.submit", submit)
    return calls


# -- the user's federations file ---------------------------------------------------------------------------------


def test_home_is_overridable_and_defaults_under_the_config_folder(monkeypatch, tmp_path):
    monkeypatch.delenv(F.HOME_ENV, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert F.user_file() == tmp_path / "xdg" / "fedcredit" / "federations.toml"
    monkeypatch.setenv(F.HOME_ENV, str(tmp_path / "mine"))
    assert F.user_file() == tmp_path / "mine" / "federations.toml"


def test_federation_add_list_remove(home, certs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["federation", "add", "prod", "--superlink", "coord.bank.example:9092", "--certs", "certs",
                              "--registry", "state/registry.json", "--keys", "/srv/fc/keys"])
    assert res.exit_code == 0, res.output
    path = home / "federations.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not [p for p in home.iterdir() if p.name != "federations.toml"], "no temporary file left behind"
    stored = tomllib.loads(path.read_text())["federations"]["prod"]
    assert stored == {"superlink": "coord.bank.example:9092", "certs": str(certs),
                      "registry": str(tmp_path / "state" / "registry.json"), "keys": "/srv/fc/keys"}
    assert runner.invoke(app, ["federation", "add", "test", "--superlink", "127.0.0.1:9100", "--certs",
                               str(certs)]).exit_code == 0

    again = runner.invoke(app, ["federation", "add", "prod", "--superlink", "other:1", "--certs", str(certs)])
    assert again.exit_code == 1 and "already exists" in again.output
    assert runner.invoke(app, ["federation", "add", "prod", "--superlink", "other:1", "--certs", str(certs),
                               "--replace"]).exit_code == 0
    assert F.load_file()["prod"].superlink == "other:1" and F.load_file()["prod"].registry is None

    listed = runner.invoke(app, ["federation", "list"], env={"COLUMNS": "250"})
    assert listed.exit_code == 0 and "prod" in listed.output and "127.0.0.1:9100" in listed.output

    assert runner.invoke(app, ["federation", "remove", "test"]).exit_code == 0
    assert set(F.load_file()) == {"prod"}
    gone = runner.invoke(app, ["federation", "remove", "test"])
    assert gone.exit_code == 1 and "known: ['prod']" in gone.output


@pytest.mark.parametrize("args,expect", [
    (["bad name", "--superlink", "h:1"], "a federation name"),
    (["x", "--superlink", "no-port"], "'superlink' must be HOST:PORT"),
    (["x", "--superlink", "h:99999"], "'superlink' must be HOST:PORT"),
])
def test_federation_add_refuses_bad_values(home, certs, args, expect):
    res = runner.invoke(app, ["federation", "add", *args, "--certs", str(certs)])
    assert res.exit_code == 1 and expect in res.output
    assert not (home / "federations.toml").exists()


def test_federation_add_needs_the_ca_here(home, tmp_path):
    res = runner.invoke(app, ["federation", "add", "x", "--superlink", "h:1", "--certs", str(tmp_path / "nowhere")])
    assert res.exit_code == 1 and "ca.pem is missing" in res.output


@pytest.mark.parametrize("text,expect", [
    ('[federations.a]\nsuperlink = "h:1"\ncerts = "c"\nport = 3\n', r"\[federations.a\]: unknown key\(s\) \['port'\]"),
    ('[federations.a]\ncerts = "c"\n', r"\[federations.a\]: 'superlink' is required"),
    ('[federations.a]\nsuperlink = "h:1"\ncerts = 3\n', r"\[federations.a\]: 'certs' must be a non-empty string"),
    ('[servers.a]\n', r"unknown section\(s\) \['servers'\]"),
    ('[federations.a\n', "not valid TOML"),
])
def test_a_bad_federations_file_names_file_and_key(home, text, expect):
    home.mkdir()
    (home / "federations.toml").write_text(text)
    with pytest.raises(FedCreditError, match=expect) as err:
        F.load_file()
    assert str(home / "federations.toml") in str(err.value)


# -- the job file ------------------------------------------------------------------------------------------------


def test_job_file_federations_resolve_relative_to_the_job_and_win_over_the_users_file(home, job, certs):
    F.add(F.parse("pilot", {"superlink": "elsewhere:1", "certs": str(certs)}, "t", certs))
    F.add(F.parse("prod", {"superlink": "prod:1", "certs": str(certs)}, "t", certs))
    spec = read_job(job)
    assert spec.roles == ["bank", "courts", "tax"]
    pilot = F.resolve("pilot", spec.federations)
    assert pilot.superlink == "10.0.0.5:9092" and pilot.source == str(job)
    assert pilot.certs == job.parent / "pilot-certs" and pilot.registry == str(job.parent / "state" / "registry.json")
    assert F.resolve("prod", spec.federations).superlink == "prod:1"
    with pytest.raises(FedCreditError, match=r"unknown federation 'nope'; known: pilot \(.*job.toml\), prod \("):
        F.resolve("nope", spec.federations)


def test_node_sections_without_data_are_fine_for_a_federation_but_not_locally(job):
    assert read_job(job).local_settings() == {"bank": ["data", "label"], "tax": ["data", "features"]}
    with pytest.raises(FedCreditError, match=r"\[nodes.courts\]: 'data' .* is required"):
        load_job(job)


@pytest.mark.parametrize("line,expect", [
    ('[model]\nmax_iter = "30"\n', r"\[model\] max_iter must be int, got '30'"),
    ('[model]\nbank_only_baseline = 1\n', r"\[model\] bank_only_baseline must be bool"),
    ('[job]\nseed = 1.5\n', r"\[job\] seed must be int"),
    ('[federations.x]\nsuperlink = "h"\ncerts = "c"\n', r"\[federations.x\]: 'superlink' must be HOST:PORT"),
    ('[nodes."a,b"]\n', r"\[nodes.a,b\]: a node name"),
])
def test_bad_job_values_name_file_and_key(tmp_path, line, expect):
    path = tmp_path / "job.toml"
    path.write_text(line + '[nodes.bank]\ndata = "b"\n[nodes.tax]\ndata = "t"\n')
    with pytest.raises(FedCreditError, match=expect) as err:
        read_job(path)
    assert str(path) in str(err.value)


# -- what is sent ------------------------------------------------------------------------------------------------


def test_run_config_round_trips_and_every_key_exists_in_the_flower_app_config():
    settings = ModelSettings(mode="standardized", n_bins=6, l2=0.5, max_iter=2, key_bits=1024, seed=9, train=0.5,
                             validation=0.3, bank_only_baseline=False)
    cfg = run_config_from_settings(settings, ["bank", "courts", "tax"])
    assert settings_from_run_config(cfg) == (settings, ["bank", "courts", "tax"])
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    # flwr refuses a run-config key the app does not declare, so everything the submitter may send is declared
    assert set(cfg) | {"out", "policy", "registry", "keys"} <= set(declared)
    assert set(SETTINGS_KEYS) | {"roles", "bank", "purpose"} == set(cfg) and cfg["purpose"] == "credit-scoring"
    with pytest.raises(FedCreditError, match="'mock' crypto backend is for local runs only"):
        run_config_from_settings(ModelSettings(backend="mock"), ["bank", "tax"])
    trees = ModelSettings(model="secureboost", trees=7, max_depth=5, learning_rate=0.2, tree_l2=2.0, goss_top=0.2,
                          goss_other=0.1, bank_first_tree=True, patience=3)
    assert settings_from_run_config(run_config_from_settings(trees, ["bank", "tax"])) == (trees, ["bank", "tax"])


def test_policy_travels_as_text_or_as_a_coordinator_path(tmp_path):
    text = (ROOT / "examples" / "limits.toml").read_text().replace("A = 5_000_000", "A = 4_000_000")
    (tmp_path / "p.toml").write_text(text)
    inline = policy_from_run_config(text)
    assert inline.caps == LimitPolicy.load(tmp_path / "p.toml").caps and inline.caps["A"] == 4_000_000
    assert inline.source.startswith("policy sent with the job, sha256 ")
    assert policy_from_run_config(str(tmp_path / "p.toml")).source == str(tmp_path / "p.toml")
    assert policy_from_run_config("").caps == LimitPolicy().caps
    with pytest.raises(FedCreditError, match="policy text sent with the job"):
        policy_from_run_config("lgd = \n[bands\n")


def test_train_on_a_federation_sends_settings_roles_and_coordinator_paths_but_no_node_data(job, home, fake_submit,
                                                                                            tmp_path):
    out = tmp_path / "run-7"
    res = runner.invoke(app, ["train", "--job", str(job), "--federation", "pilot", "--out", str(out),
                              "--timeout", "99"], env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    (call,) = fake_submit
    cfg = call["run_config"]
    assert call["superlink"] == "10.0.0.5:9092" and call["certs"] == job.parent / "pilot-certs" and call["timeout"] == 99
    assert call["coordinator_out"] == "/srv/fedcredit/runs/bank/run-7"  # one folder per bank under the federation's
    assert cfg == {"roles": "bank,courts,tax", "bank": "bank", "purpose": "credit-scoring", "seed": 11, "mode": "standardized", "n-bins": 6, "l2": 0.01,
                   "max-iter": 3, "key-bits": 1024, "train": 0.5, "validation": 0.25, "bank-only-baseline": False,
                   "model": "scorecard_lr", "trees": 30, "max-depth": 4, "learning-rate": 0.1, "tree-l2": 1.0,
                   "min-child-weight": 1.0, "gamma": 0.0, "goss-top": 0.0, "goss-other": 0.0, "bank-first-tree": False,
                   "patience": 0, "binning": "quantile", "trend": "auto", "min-bin-share": 0.05, "min-iv": 0.02,
                   "top-k": 0, "max-correlation": 1.0, "l2-grid": "", "tree-monotone": False,
                   "registry": str(job.parent / "state" / "registry.json")}
    assert "/secret" not in json.dumps(cfg) and "vat_paid" not in json.dumps(cfg)
    assert "Not sent" in res.output and "[nodes.tax] data, features" in res.output
    assert "PSI: 1,234" in res.output and "test AUC 0.8123" in res.output
    record = json.loads((out / "submission.json").read_text())
    assert record["federation"] == "pilot" and record["run_config"] == cfg and record["status"]["ok"] is True
    assert record["policy"] == {"builtin": True} and record["coordinator_out"] == "/srv/fedcredit/runs/bank/run-7"


def test_train_on_a_federation_sends_the_submitters_policy_as_text(home, certs, fake_submit, tmp_path):
    F.add(F.parse("local", {"superlink": "127.0.0.1:9092", "certs": str(certs), "policy": "/srv/p.toml"}, "t", certs))
    job = tmp_path / "job.toml"
    job.write_text("[nodes.bank]\n[nodes.tax]\n")
    args = ["train", "--job", str(job), "--federation", "local", "--out", str(tmp_path / "o")]
    assert runner.invoke(app, args).exit_code == 0
    assert fake_submit[-1]["run_config"]["policy"] == "/srv/p.toml"  # the federation's default, on the coordinator
    assert fake_submit[-1]["coordinator_out"] == str(tmp_path / "o")  # no federation out: the submitter's folder
    res = runner.invoke(app, args + ["--policy", str(ROOT / "examples" / "limits.toml")])
    assert res.exit_code == 0, res.output
    assert fake_submit[-1]["run_config"]["policy"] == (ROOT / "examples" / "limits.toml").read_text()
    record = json.loads((tmp_path / "o" / "submission.json").read_text())
    assert len(record["policy"]["sha256"]) == 64
    bad = tmp_path / "bad.toml"
    bad.write_text("[caps_cny]\nA = -1\n")
    n = len(fake_submit)
    res = runner.invoke(app, args + ["--policy", str(bad)])
    assert res.exit_code == 1 and str(bad) in res.output and len(fake_submit) == n, "a bad policy is refused before sending"


def test_a_failed_run_exits_1_and_is_recorded(job, home, monkeypatch, tmp_path):
    def failing(*a, **k):
        raise FedCreditError("the federated run failed: connected roles ['bank', 'tax'] do not match")

    monkeypatch.setattr("fedcredit.flower.submit.submit", failing)
    out = tmp_path / "failed"
    res = runner.invoke(app, ["train", "--job", str(job), "--federation", "pilot", "--out", str(out)])
    assert res.exit_code == 1 and "do not match" in res.output
    assert json.loads((out / "submission.json").read_text())["status"] == {
        "ok": False, "error": "the federated run failed: connected roles ['bank', 'tax'] do not match"}


@pytest.mark.parametrize("extra,expect", [
    (["--engine", "in-process"], "--engine is for local runs"),
    (["--centralized"], "--centralized is for local runs"),
    (["--federation", "nope"], "unknown federation 'nope'; known: pilot"),
])
def test_train_federation_refusals(job, home, fake_submit, tmp_path, extra, expect):
    args = ["train", "--job", str(job), "--out", str(tmp_path / "o"), "--federation", "pilot", *extra]
    res = runner.invoke(app, args)
    assert res.exit_code == 1 and expect in res.output and not fake_submit


def test_a_mock_backend_job_is_refused_for_a_federation(tmp_path, home, certs, fake_submit):
    job = tmp_path / "job.toml"
    job.write_text(f'[model]\nbackend = "mock"\n[nodes.bank]\n[nodes.tax]\n'
                   f'[federations.f]\nsuperlink = "h:1"\ncerts = "{certs}"\n')
    res = runner.invoke(app, ["train", "--job", str(job), "--federation", "f", "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "[model] backend" in res.output and not fake_submit


def test_missing_ca_is_named_before_anything_is_sent(tmp_path, home, fake_submit):
    job = tmp_path / "job.toml"
    job.write_text('[nodes.bank]\n[nodes.tax]\n[federations.f]\nsuperlink = "h:1"\ncerts = "nocerts"\n')
    res = runner.invoke(app, ["train", "--job", str(job), "--federation", "f", "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "[federations.f] certs" in res.output and "ca.pem is missing" in res.output
    assert not fake_submit


# -- the submitter against a fake `flwr` (no SuperLink) --------------------------------------------------------


@pytest.fixture
def fake_flwr(tmp_path, monkeypatch):
    """A `flwr` that starts run 12345 and then behaves as $FAKE_RUN says; `stop` and `ls` are recorded."""
    calls = tmp_path / "flwr-calls.txt"
    fake = tmp_path / "flwr"
    fake.write_text(f"""#!/bin/sh
echo "$@" >> {calls}
case "$1" in
  run) echo "Successfully started run 12345"; echo "fedcredit job: roles bank,tax"
       if [ "$FAKE_RUN" = hang ]; then exec sleep 30; fi ;;
  ls) echo '{{"success": true, "runs": [{{"run-id": 12345, "status": "finished:failed"}}]}}' ;;
esac
""")
    fake.chmod(0o755)
    monkeypatch.setattr("fedcredit.flower.submit.flower_bin", lambda name: str(fake))
    monkeypatch.setattr("fedcredit.deploy.processes.flower_bin", lambda name: str(fake))
    return calls


def test_a_silent_run_times_out_and_is_stopped_at_the_coordinator(tmp_path, certs, fake_flwr, monkeypatch):
    from fedcredit.flower.submit import submit

    monkeypatch.setenv("FAKE_RUN", "hang")
    lines = []
    with pytest.raises(FedCreditError, match="did not finish within 2 s; Flower run 12345 stopped"):
        submit("127.0.0.1:1", certs, tmp_path / "o", {"roles": "bank,tax"}, timeout=1.5, echo=lines.append)
    assert lines == ["Successfully started run 12345", "fedcredit job: roles bank,tax"]
    assert fake_flwr.read_text().splitlines()[-1] == "stop 12345 fedcredit"


def test_a_coordinator_output_folder_out_of_sight_takes_the_verdict_from_flower(tmp_path, certs, fake_flwr,
                                                                              monkeypatch):
    from fedcredit.flower.submit import submit

    monkeypatch.setenv("FAKE_RUN", "done")
    with pytest.raises(FedCreditError, match="Flower reports run 12345 as 'finished:failed'"):
        submit("127.0.0.1:1", certs, tmp_path / "o", {}, coordinator_out="/nonexistent/coordinator/run-1", echo=print)
    config = tomllib.loads((tmp_path / "o" / ".flwr-home" / "run-config.toml").read_text())
    assert config["out"] == "/nonexistent/coordinator/run-1"
    assert "ls fedcredit --run-id 12345 --format json" in fake_flwr.read_text()
