"""The quality gate before publication (issue #15, point 4).

A host with 500 pure-noise columns and a bank with one weak feature train to a model that
ranks no better than chance: ``fedcredit train`` publishes nothing and exits non-zero naming
the figures; ``--allow-weak-model`` publishes and records the override in run.json, the
limits signature and the report. A good model passes; the margin over the bank-only model
is enforced; the grade-order check and the policy's ``[quality]`` table are checked alone.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from rich.console import Console
from typer.testing import CliRunner

from fedcredit.cli import app
from fedcredit.data import synth
from fedcredit.data.io import write_table
from fedcredit.jobs.jobfile import load_job
from fedcredit.jobs.runner import run
from fedcredit.scoring.policy import LimitPolicy, PolicyError, QualityPolicy
from fedcredit.scoring.publish import verify_limits
from fedcredit.scoring.quality import QualityGateError, grade_order_warnings, judge, refusal

NOISE_COLUMNS = 500
PUBLISHED = ("limits.parquet", "limits.csv", "limits.sig.json", "scores.parquet", "model", "metrics.json", "report.html")


def _population(root, rows: int, host_columns: int, bank_signal: float, seed: int):
    """A bank (label + one feature carrying ``bank_signal`` × label) and a host of pure noise, in custom layouts."""
    rng = np.random.default_rng(seed)
    ids = synth.generate(int(rows * 1.2), seed=seed)["bank"].column("uscc").to_pylist()[:rows]
    y = (rng.random(rows) < 0.3).astype(np.int64)
    bank = pa.table({"uscc": ids, "default_12m": y, "weak": bank_signal * y + rng.normal(size=rows)})
    host = pa.table({"uscc": ids, **{f"noise_{j:03d}": rng.normal(size=rows) for j in range(host_columns)}})
    write_table(bank, root / "bank.parquet", "parquet")
    write_table(host, root / "noise.parquet", "parquet")
    extra = ", ".join(f'"noise_{j:03d}:float"' for j in range(host_columns))
    job = root / "job.toml"
    job.write_text(f"""
[model]
key_bits = 1024
n_bins = 3
max_iter = 4
bank_only_baseline = true

[nodes.bank]
data = "bank.parquet"
layout = "custom"
extra = ["weak:float"]

[nodes.noise]
data = "noise.parquet"
layout = "custom"
extra = [{extra}]
""")
    return job


@pytest.fixture(scope="module")
def noise_job(tmp_path_factory):
    """800 enterprises; 500 noise columns at the host, a bank whose only feature is noise too."""
    return _population(tmp_path_factory.mktemp("noise"), 800, NOISE_COLUMNS, 0.0, seed=11)


def test_a_weak_model_publishes_nothing_and_names_the_figures(noise_job, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["train", "--job", str(noise_job), "--out", str(out), "--engine", "in-process"])
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert "quality gate: validation AUC 0." in text and "is below the floor 0.55" in text
    assert "bank-only" in text and "margin 0" in text
    assert "nothing published; use --allow-weak-model to publish anyway" in text
    assert "Traceback" not in result.output
    assert not [name for name in PUBLISHED if (out / name).exists()]


def test_allow_weak_model_publishes_and_records_the_override(noise_job, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["train", "--job", str(noise_job), "--out", str(out), "--engine", "in-process",
                                      "--allow-weak-model"])
    assert result.exit_code == 0, result.output
    assert "quality gate FAILED" in result.output and "--allow-weak-model" in result.output
    gate = json.loads((out / "run.json").read_text())["quality_gate"]
    assert gate["override"] is True and gate["passed"] is False and gate["auc"] < 0.55
    assert any("below the floor 0.55" in f for f in gate["failures"])
    report = verify_limits(out / "limits.parquet", out / "keys" / "coordinator.pub.json")
    assert report.metadata["quality_gate"]["override"] is True  # signed: editing it breaks verification
    assert json.loads((out / "metrics.json").read_text())["quality_gate"] == "overridden"
    assert "FAILED the quality gate" in (out / "report.html").read_text()


def test_a_good_model_passes(tmp_path):
    root = tmp_path / "data"
    synth.write_nodes(synth.generate(1500, seed=5), root)
    job = tmp_path / "job.toml"
    job.write_text(f'[model]\nkey_bits = 1024\nmax_iter = 6\n\n[nodes.bank]\ndata = "{root / "bank.parquet"}"\n\n'
                   f'[nodes.tax]\ndata = "{root / "tax.parquet"}"\n')
    nodes, settings = load_job(job)
    metrics = run(nodes, settings, tmp_path / "out", engine="in-process", console=Console(quiet=True))
    gate = json.loads((tmp_path / "out" / "run.json").read_text())["quality_gate"]
    assert gate["passed"] and not gate["override"] and gate["rows"] == "validation"
    assert gate["auc"] >= 0.55 and gate["auc"] >= gate["bank_only_auc"]
    assert metrics["quality_gate"] == "passed"
    assert verify_limits(tmp_path / "out" / "limits.parquet", tmp_path / "out" / "keys" / "coordinator.pub.json"
                         ).metadata["quality_gate"]["passed"] is True


def test_the_margin_over_the_bank_only_model_is_enforced(tmp_path):
    """A strong bank and a host of noise: the joint model cannot beat bank-only by 0.05."""
    job = _population(tmp_path, 800, 5, 1.5, seed=12)
    nodes, settings = load_job(job)
    policy = LimitPolicy.from_dict({"quality": {"min_margin_over_bank_only": 0.05}}, "test policy")
    with pytest.raises(QualityGateError, match=r"does not beat the bank-only model's 0\.\d+ by the margin 0\.05") as err:
        run(nodes, settings, tmp_path / "out", engine="in-process", console=Console(quiet=True), policy=policy)
    assert "below the floor" not in str(err.value)  # the joint model itself is good
    assert not (tmp_path / "out" / "limits.parquet").exists()


def test_judge_and_refusal_name_every_figure():
    policy = QualityPolicy()
    good = judge(policy, {"rows": "validation", "n": 200, "auc": 0.71}, {"rows": "validation", "n": 200, "auc": 0.66})
    assert good["passed"] and not good["failures"]
    weak = judge(policy, {"rows": "test", "n": 300, "auc": 0.48}, {"rows": "test", "n": 300, "auc": 0.66})
    assert weak["failures"] == ["test AUC 0.480 is below the floor 0.55",
                                "test AUC 0.480 does not beat the bank-only model's 0.660 by the margin 0"]
    assert refusal(weak) == ("quality gate: test AUC 0.480 is below the floor 0.55; test AUC 0.480 does not beat the "
                             "bank-only model's 0.660 by the margin 0 (300 test rows): nothing published; "
                             "use --allow-weak-model to publish anyway")
    below = judge(policy, {"rows": "validation", "n": 90, "auc": 0.52}, {"rows": "validation", "n": 90, "auc": 0.50})
    assert "is below the floor 0.55; bank-only 0.500 (margin 0) (90 validation rows)" in refusal(below)
    one_class = judge(policy, {"rows": "validation", "n": 12, "auc": None}, None)
    assert not one_class["passed"] and "hold only one class" in one_class["failures"][0]


def test_grade_order_warns_when_a_better_grade_defaults_more():
    grades = ["A"] * 100 + ["B"] * 100 + ["C"] * 100 + ["D"] * 10
    y = [1] * 8 + [0] * 92 + [1] * 3 + [0] * 97 + [1] * 10 + [0] * 90 + [1] * 10
    found = grade_order_warnings(grades, y, ["A", "B", "C", "D"], tolerance=0.01)
    assert found == [{"better": "A", "worse": "B", "better_rate": 0.08, "worse_rate": 0.03,
                      "better_rows": 100, "worse_rows": 100}]  # D has too few rows to be rated
    assert grade_order_warnings(grades, y, ["A", "B", "C", "D"], tolerance=0.06) == []


def test_policy_quality_table_is_checked():
    policy = LimitPolicy.from_dict({"quality": {"min_auc": 0.6, "grade_order_tolerance": 0.02}})
    assert policy.quality == QualityPolicy(min_auc=0.6, min_margin_over_bank_only=0.0, grade_order_tolerance=0.02)
    assert LimitPolicy().quality == QualityPolicy(0.55, 0.0, 0.01)
    with pytest.raises(PolicyError, match=r"quality\.min_auc: must be a number in \[0, 1\], got 1\.5"):
        LimitPolicy.from_dict({"quality": {"min_auc": 1.5}}, "p.toml")
    with pytest.raises(PolicyError, match=r"unknown key\(s\) quality\.min_acu"):
        LimitPolicy.from_dict({"quality": {"min_acu": 0.6}}, "p.toml")
