"""``fedcredit score`` names its figures honestly (issue #15, point 6, console and metrics.json).

Scoring the training population again: its AUC is in-sample (the saved model trained on
most of those rows), so the console and metrics.json call it the scored population's AUC
and give the test AUC separately, over the rows the saved model never trained or validated on.
"""

from __future__ import annotations

import json

import pandas as pd
from rich.console import Console
from typer.testing import CliRunner

from fedcredit.cli import app
from fedcredit.data import synth
from fedcredit.jobs.jobfile import load_job
from fedcredit.jobs.runner import run


def test_scoring_the_training_population_says_in_sample_and_reports_test_rows_apart(tmp_path):
    synth.write_nodes(synth.generate(1500, seed=5), tmp_path / "data")
    job = tmp_path / "job.toml"
    job.write_text('[model]\nkey_bits = 1024\nmax_iter = 6\nbank_only_baseline = false\n\n'
                   '[nodes.bank]\ndata = "data/bank.parquet"\n\n[nodes.tax]\ndata = "data/tax.parquet"\n')
    nodes, settings = load_job(job)
    trained = run(nodes, settings, tmp_path / "train", engine="in-process", console=Console(quiet=True))
    split = pd.read_parquet(tmp_path / "train" / "scores.parquet")["split"]

    result = CliRunner().invoke(app, ["score", "--job", str(job), "--model", str(tmp_path / "train"),
                                      "--out", str(tmp_path / "scored"), "--engine", "in-process"])
    assert result.exit_code == 0, result.output
    in_sample = int(split.isin(["train", "validation"]).sum())
    text = " ".join(result.output.split())
    assert (f"AUC on the scored population (in-sample: {in_sample:,} of its rows were training/validation rows "
            f"of the saved model): ") in text
    assert f"test AUC over the other {int((split == 'test').sum()):,} rows (the saved model's test rows" in text
    metrics = json.loads((tmp_path / "scored" / "metrics.json").read_text())
    assert metrics["in_sample_rows"] == in_sample and metrics["test_rows"] == int((split == "test").sum())
    assert abs(metrics["test_auc"] - trained["test_auc"]) < 1e-9  # the same model on the same test rows
    assert "test_ks" in metrics and "scored_gini" in metrics
