"""SecureBoost end to end from the CLI: demo, lossless against the central reference, saved parts score, job files."""

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from fedcredit.cli import app
from fedcredit.common.errors import FedCreditError
from fedcredit.jobs.jobfile import read_job

runner = CliRunner()
NODES = "[nodes.bank]\ndata = '{d}/bank.parquet'\n[nodes.tax]\ndata = '{d}/tax.parquet'\n[nodes.utilities]\ndata = '{d}/utilities.parquet'\n"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("sbdemo")
    result = runner.invoke(app, ["demo", "--model", "secureboost", "--out", str(out), "--rows", "2500",
                                 "--key-bits", "1024", "--engine", "in-process"])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_demo_secureboost_is_lossless_against_the_central_reference(demo):
    out, output = demo
    metrics = json.loads((out / "metrics.json").read_text())
    assert "Federated SecureBoost" in output and "trees in the model" in output
    # the same trees grown centrally on the joined bins: the AUC is identical, not merely close
    assert metrics["test_auc"] == metrics["centralized_auc"] and metrics["test_auc"] > 0.75
    assert metrics["test_auc"] > metrics["bank_only_auc"] and metrics["trees"] == 30
    run = json.loads((out / "run.json").read_text())
    assert run["settings"]["model"] == "secureboost" and run["key_fingerprints"]["paillier"]
    assert [h["tree"] for h in run["history"]] == list(range(1, 31)) and all(h["loss"] > 0 for h in run["history"])
    for role in ("bank", "tax", "utilities"):
        assert (out / "model" / role / "secureboost.json").exists()
    report = (out / "report.html").read_text()
    assert "ROC curve" in report and "federated SecureBoost report" in report and "Feature importance" in report


def test_demo_outputs_verify(demo):
    out, _ = demo
    key = str(out / "keys" / "coordinator.pub.json")
    ok = runner.invoke(app, ["limits", "verify", str(out / "limits.parquet"), "--key", key])
    assert ok.exit_code == 0, ok.output
    audit = runner.invoke(app, ["audit", "verify", str(out), "--key", key, "--min-key-bits", "1024"])
    assert audit.exit_code == 0 and "OK" in audit.output, audit.output
    limits = pd.read_parquet(out / "limits.parquet")
    codes = [c for row in limits["reason_codes"] for c in row.split(";") if c]
    assert {c.split(":")[0] for c in codes} == {"bank", "tax", "utilities"}


def test_saved_model_scores_like_training_and_scores_new_enterprises(demo, tmp_path):
    out, _ = demo
    (tmp_path / "same.toml").write_text("[model]\ntype = 'secureboost'\n" + NODES.format(d=out / "data"))
    same = runner.invoke(app, ["score", "--job", str(tmp_path / "same.toml"), "--model", str(out),
                               "--out", str(tmp_path / "same"), "--engine", "in-process"])
    assert same.exit_code == 0, same.output
    trained = pd.read_parquet(out / "scores.parquet").set_index("id")["score"]
    rescored = pd.read_parquet(tmp_path / "same" / "scores.parquet").set_index("id")["score"]
    assert len(rescored) == len(trained)
    assert (rescored.sort_index() == trained.loc[rescored.index].sort_index()).all()

    assert runner.invoke(app, ["synth", "--out", str(tmp_path / "new"), "--rows", "1500", "--seed", "77"]).exit_code == 0
    (tmp_path / "new.toml").write_text("[model]\ntype = 'secureboost'\n" + NODES.format(d=tmp_path / "new"))
    new = runner.invoke(app, ["score", "--job", str(tmp_path / "new.toml"), "--model", str(out),
                              "--out", str(tmp_path / "new-out"), "--engine", "in-process"])
    assert new.exit_code == 0, new.output
    metrics = json.loads((tmp_path / "new-out" / "metrics.json").read_text())
    assert metrics["test_auc"] > 0.7 and metrics["trees"] == 30

    (tmp_path / "lr.toml").write_text(NODES.format(d=tmp_path / "new"))
    wrong = runner.invoke(app, ["score", "--job", str(tmp_path / "lr.toml"), "--model", str(out),
                                "--out", str(tmp_path / "wrong"), "--engine", "in-process"])
    assert wrong.exit_code == 1 and "is secureboost, the job asks for scorecard_lr" in wrong.output


@pytest.mark.parametrize("model, expect", [
    ("type = 'secureboost'\nfeatures = 'standardized'", "binned"),
    ("type = 'secureboost'\npatience = 3\nvalidation = 0.0", "validation"),
    ("type = 'secureboost'\nmax_depth = 0", "max_depth"),
    ("type = 'secureboost'\ntrees = '30'", "trees must be int"),
    ("type = 'xgboost'", "secureboost"),
])
def test_bad_secureboost_job_files(tmp_path, model, expect):
    path = tmp_path / "job.toml"
    path.write_text(f"[model]\n{model}\n" + NODES.format(d="data"))
    with pytest.raises(FedCreditError, match=expect):
        read_job(path)


def test_secureboost_job_file_settings(tmp_path):
    path = tmp_path / "job.toml"
    path.write_text("[model]\ntype = 'secureboost'\ntrees = 50\nmax_depth = 5\nlearning_rate = 0.05\ngoss_top = 0.2\n"
                    "goss_other = 0.1\nbank_first_tree = true\npatience = 5\n" + NODES.format(d="data"))
    cfg = read_job(path).settings.sb_config()
    assert (cfg.n_trees, cfg.max_depth, cfg.learning_rate, cfg.goss_top, cfg.goss_other, cfg.bank_first_tree,
            cfg.patience) == (50, 5, 0.05, 0.2, 0.1, True, 5)


@pytest.mark.parametrize("name, model", [("job.toml", "scorecard_lr"), ("job_secureboost.toml", "secureboost")])
def test_shipped_job_files_parse(name, model):
    from pathlib import Path

    job = read_job(Path(__file__).resolve().parent.parent / "examples" / name)
    assert job.settings.model == model and job.roles == ["bank", "tax", "utilities"]


def test_python_api_secureboost_parts(tmp_path):
    from fedcredit.api import Federation

    fed = Federation.synthetic(rows=1500, out=tmp_path, model="secureboost", trees=3, max_depth=3, key_bits=1024,
                               bank_only_baseline=False).fit()
    assert fed.evaluate()["test_auc"] == fed.evaluate()["centralized_auc"]
    tax = fed.model("tax")
    assert {"record", "feature", "bin", "name", "rule"} <= set(tax.columns) and len(tax)
    bank = fed.model("bank")
    assert set(bank["tree"]) == {0, 1, 2} and {"bank", "tax", "utilities"} >= set(bank["party"].dropna())
    host_splits = bank[bank["party"].isin(["tax", "utilities"])]
    assert len(host_splits) and host_splits["record"].notna().all()  # a host split is known by its record number
    assert "rule" not in bank.columns and "name" not in bank.columns  # no host feature name or threshold at the bank
