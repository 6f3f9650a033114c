"""The command line through typer's test runner: outputs, files and exit codes."""

import pyarrow as pa
from typer.testing import CliRunner

from fedcredit.cli import app
from fedcredit.data.io import read_table, write_table

runner = CliRunner()


def test_synth_writes_three_nodes(tmp_path):
    result = runner.invoke(app, ["synth", "--out", str(tmp_path), "--rows", "500", "--seed", "3", "--format", "csv"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bank.csv", "tax.csv", "utilities.csv"]
    assert "500 enterprises" in result.output
    bank = read_table(tmp_path / "bank.csv", text_columns=["uscc"])
    assert 440 < bank.num_rows < 500 and "default_12m" in bank.column_names


def test_synth_is_deterministic(tmp_path):
    for d in ("a", "b"):
        assert runner.invoke(app, ["synth", "--out", str(tmp_path / d), "--rows", "300", "--seed", "9"]).exit_code == 0
    for role in ("bank", "tax", "utilities"):
        assert read_table(tmp_path / "a" / f"{role}.parquet").equals(read_table(tmp_path / "b" / f"{role}.parquet"))


def test_synth_bad_format_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["synth", "--out", str(tmp_path), "--rows", "100", "--format", "xlsx"])
    assert result.exit_code == 1
    assert "--format must be parquet or csv" in result.output
    assert "Traceback" not in result.output and not list(tmp_path.iterdir())


def test_validate_ok(parquet_dir):
    result = runner.invoke(app, ["validate", "--role", "tax", str(parquet_dir / "tax.parquet")])
    assert result.exit_code == 0, result.output
    assert "valid tax data" in result.output


def test_validate_reports_every_problem_and_exits_nonzero(tables, tmp_path):
    bank = tables["bank"].slice(0, 100)
    ids = bank.column("uscc").to_pylist()
    ids[3] = ids[0]
    bank = bank.set_column(0, "uscc", pa.array(ids)).drop_columns(["default_12m"])
    path = write_table(bank, tmp_path / "bank.csv")
    result = runner.invoke(app, ["validate", "--role", "bank", str(path)])
    assert result.exit_code == 1
    assert "2 problem(s)" in result.output
    assert "column 'default_12m': label column is missing" in result.output
    assert "duplicate IDs" in result.output and "1 (line 2), 4 (line 5)" in result.output
    assert "Traceback" not in result.output


def test_validate_missing_file(tmp_path):
    result = runner.invoke(app, ["validate", "--role", "bank", str(tmp_path / "bank.parquet")])
    assert result.exit_code == 1 and "file not found" in result.output


def test_validate_unknown_role_and_extra_columns(parquet_dir, tmp_path):
    result = runner.invoke(app, ["validate", "--role", "court", str(parquet_dir / "tax.parquet")])
    assert result.exit_code == 1 and "is not declared for role 'court'" in result.output  # a host: declare its columns
    assert "Traceback" not in result.output
    tax = read_table(parquet_dir / "tax.parquet").append_column("patents", pa.array([1] * 10 + [0] * (read_table(parquet_dir / "tax.parquet").num_rows - 10)))
    path = write_table(tax, tmp_path / "tax.parquet")
    assert runner.invoke(app, ["validate", "--role", "tax", str(path)]).exit_code == 1
    result = runner.invoke(app, ["validate", "--role", "tax", "--extra", "patents:int", str(path)])
    assert result.exit_code == 0, result.output


def test_demo_trains_and_writes_every_output(demo_run, tmp_path):
    import json

    demo, output = demo_run  # fedcredit demo --rows 2500 --key-bits 1024 --engine in-process (tests/conftest.py)
    metrics = json.loads((demo / "metrics.json").read_text())
    for key in ("test_auc", "test_ks", "test_gini", "bank_only_auc", "centralized_auc", "rounds", "seconds"):
        assert key in metrics, key
    assert abs(metrics["test_auc"] - metrics["centralized_auc"]) < 0.02 and metrics["test_auc"] > metrics["bank_only_auc"]
    run = json.loads((demo / "run.json").read_text())
    assert set(run["key_fingerprints"]["identities"]) == {"bank", "tax", "utilities"} and run["versions"]["flwr"]
    assert (demo / "scores.parquet").exists() and (demo / "model" / "tax" / "prep.json").exists()
    assert "test_auc" in output and "centralized_auc" in output
    # signed limits verify through the main CLI; one changed limit fails naming the cell
    assert "limits.parquet" in output and "report.html" in output
    key = demo / "keys" / "coordinator.pub.json"
    ok = runner.invoke(app, ["limits", "verify", str(demo / "limits.parquet"), "--key", str(key)])
    assert ok.exit_code == 0 and "OK:" in ok.output, ok.output
    import pandas as pd

    table = pd.read_parquet(demo / "limits.parquet")
    table.loc[3, "limit"] = table.loc[3, "limit"] + 1
    table.to_parquet(tmp_path / "tampered.parquet", index=False)
    (tmp_path / "tampered.sig.json").write_bytes((demo / "limits.sig.json").read_bytes())
    bad = runner.invoke(app, ["limits", "verify", str(tmp_path / "tampered.parquet"), "--key", str(key)])
    assert bad.exit_code != 0 and "limit" in bad.output and "Traceback" not in bad.output
    report = (demo / "report.html").read_text()
    assert "ROC curve" in report and "data:image/png;base64" in report
    # the audit trail verifies without any private key; its HTML report renders
    audit = runner.invoke(app, ["audit", "verify", str(demo), "--key", str(key), "--min-key-bits", "1024"])
    assert audit.exit_code == 0 and "OK" in audit.output, audit.output
    strict = runner.invoke(app, ["audit", "verify", str(demo), "--key", str(key)])
    assert strict.exit_code == 1  # 1024-bit test keys are below the auditor's default minimum
    out = tmp_path / "audit.html"
    assert runner.invoke(app, ["audit", "report", str(demo), "--out", str(out), "--key", str(key)]).exit_code in (0, 1)
    assert out.exists() and "Audit logs" in output


def test_demo_runs_a_woe_scorecard(tmp_path):
    import json

    import pandas as pd

    result = runner.invoke(app, ["demo", "--out", str(tmp_path), "--rows", "2500", "--key-bits", "1024", "--engine",
                                 "in-process", "--features", "woe", "--binning", "monotone"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert abs(metrics["test_auc"] - metrics["centralized_auc"]) < 0.005
    card = pd.read_csv(tmp_path / "model" / "bank" / "scorecard.csv")
    assert card.feature.iloc[0] == "(base points)" and {"woe", "iv", "coefficient", "points"} <= set(card.columns)
    assert json.loads((tmp_path / "run.json").read_text())["settings"]["mode"] == "woe"
    bad = runner.invoke(app, ["demo", "--out", str(tmp_path / "x"), "--features", "optimal"])
    assert bad.exit_code != 0 and "feature mode" in bad.output and "Traceback" not in bad.output


def test_train_with_a_job_file(tmp_path):
    import json

    assert runner.invoke(app, ["synth", "--out", str(tmp_path / "data"), "--rows", "1500", "--format", "csv"]).exit_code == 0
    (tmp_path / "job.toml").write_text(
        "[model]\nkey_bits = 1024\nmax_iter = 8\nbank_only_baseline = false\n"
        "[nodes.bank]\ndata = 'data/bank.csv'\n[nodes.tax]\ndata = 'data/tax.csv'\n[nodes.utilities]\ndata = 'data/utilities.csv'\n")
    result = runner.invoke(app, ["train", "--job", str(tmp_path / "job.toml"), "--out", str(tmp_path / "out"), "--engine", "in-process"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["test_auc"] > 0.6 and metrics["bank_only_auc"] is None


def test_train_with_a_broken_job_file_is_a_clear_error(tmp_path):
    (tmp_path / "job.toml").write_text("[nodes.tax]\ndata='x'\n")
    result = runner.invoke(app, ["train", "--job", str(tmp_path / "job.toml"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and "job.toml" in result.output and "nodes.bank" in result.output
    assert "Traceback" not in result.output


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and "fedcredit" in result.output


def test_score_a_new_population_with_a_saved_model(demo_run, tmp_path):
    import json

    import pandas as pd

    from fedcredit.scoring.publish import verify_limits

    trained = demo_run[0]  # fedcredit demo --rows 2500 --key-bits 1024 --engine in-process (tests/conftest.py)
    assert (trained / "model" / "bank" / "reference_scores.json").exists()
    assert runner.invoke(app, ["synth", "--out", str(tmp_path / "new"), "--rows", "2000", "--seed", "77"]).exit_code == 0
    (tmp_path / "job.toml").write_text("[model]\nkey_bits = 1024\n[nodes.bank]\ndata = 'new/bank.parquet'\n"
                                       "[nodes.tax]\ndata = 'new/tax.parquet'\n[nodes.utilities]\ndata = 'new/utilities.parquet'\n")
    scored = runner.invoke(app, ["score", "--job", str(tmp_path / "job.toml"), "--model", str(trained),
                                 "--out", str(tmp_path / "scored"), "--engine", "in-process"])
    assert scored.exit_code == 0, scored.output
    scores = pd.read_parquet(tmp_path / "scored" / "scores.parquet")
    new_ids = set(pd.read_parquet(tmp_path / "new" / "bank.parquet")["uscc"])
    assert set(scores["split"]) == {"scored"} and set(scores["id"]) <= new_ids
    metrics = json.loads((tmp_path / "scored" / "metrics.json").read_text())
    assert metrics["test_auc"] > 0.7 and metrics["evaluations"] == 0
    key = tmp_path / "scored" / "keys" / "coordinator.pub.json"
    assert runner.invoke(app, ["limits", "verify", str(tmp_path / "scored" / "limits.csv"), "--key", str(key)]).exit_code == 0
    train_run = json.loads((trained / "run.json").read_text())
    chained = verify_limits(tmp_path / "scored" / "limits.parquet", key).metadata["publication"]
    first = verify_limits(trained / "limits.parquet", trained / "keys" / "coordinator.pub.json")
    assert chained["model"] == train_run["run_id"] and chained["version"] == 2  # the model's second publication
    assert chained["previous"]["digest"] == first.digest and chained["previous"]["run_id"] == train_run["run_id"]
    assert set(pd.read_parquet(tmp_path / "scored" / "limits.parquet")["model_version"]) == {train_run["run_id"]}
    assert "Population stability" in (tmp_path / "scored" / "report.html").read_text()
    missing = runner.invoke(app, ["score", "--job", str(tmp_path / "job.toml"), "--model", str(tmp_path / "nope"),
                                  "--out", str(tmp_path / "x"), "--engine", "in-process"])
    assert missing.exit_code == 1 and "no saved model part" in missing.output


def test_demo_rerates_the_same_enterprises_a_month_later(demo_run):
    import json

    import pandas as pd

    from fedcredit.scoring.publish import verify_limits

    out, output = demo_run
    later = out / "month-2"
    key = out / "keys" / "coordinator.pub.json"  # the same coordinator key signs both publications
    first, second = verify_limits(out / "limits.parquet", key), verify_limits(later / "limits.parquet", key)
    assert second.metadata["publication"]["version"] == 2
    assert second.metadata["publication"]["previous"]["digest"] == first.digest
    assert json.loads((later / "run.json").read_text())["task"] == "score"
    warnings = pd.read_parquet(later / "monitoring" / "warnings.parquet")
    assert set(warnings["warning"]) <= {"red", "amber", "green"} and (warnings["warning"] == "red").any()
    assert "A month later" in output and "Early warnings" in output and "red" in output
    assert (later / "monitoring" / "monitoring.html").exists()
