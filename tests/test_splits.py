"""Every split setting a job file accepts runs to the end, audit verification included.

(model) × (validation 0 / > 0) × (patience 0 / > 0 where it is valid) × (bank-only baseline
on / off), each through ``fedcredit.jobs.runner.run`` on the in-process engine, which
verifies the audit trail as the last step (where a ``validation = 0`` scorecard once failed:
``lr.sigmoid`` without masked validation scores).
"""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from fedcredit.data import synth
from fedcredit.jobs.jobfile import load_job
from fedcredit.jobs.runner import run

CASES = [("scorecard_lr", v, 0, b) for v in (0.0, 0.2) for b in (True, False)]
CASES += [("secureboost", v, p, b) for v, p in ((0.0, 0), (0.2, 0), (0.2, 2)) for b in (True, False)]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("splits")
    synth.write_nodes(synth.generate(900, seed=3), out)
    return out


def _job(path, data_dir, model: str, validation: float, patience: int, baseline: bool):
    fast = "max_iter = 4" if model == "scorecard_lr" else f"trees = 3\nmax_depth = 2\npatience = {patience}"
    path.write_text(f"""
[model]
type = "{model}"
key_bits = 1024
n_bins = 4
train = 0.6
validation = {validation}
bank_only_baseline = {str(baseline).lower()}
{fast}

[nodes.bank]
data = "{data_dir / 'bank.parquet'}"

[nodes.tax]
data = "{data_dir / 'tax.parquet'}"
""")
    return path


@pytest.mark.parametrize("model,validation,patience,baseline", CASES,
                         ids=[f"{m}-val{v}-pat{p}-{'base' if b else 'nobase'}" for m, v, p, b in CASES])
def test_every_split_setting_runs_to_the_end(tmp_path, data_dir, model, validation, patience, baseline):
    nodes, settings = load_job(_job(tmp_path / "job.toml", data_dir, model, validation, patience, baseline))
    out = tmp_path / "out"
    metrics = run(nodes, settings, out, engine="in-process", console=Console(quiet=True), allow_weak_model=True)
    assert metrics["audit_records"] > 0  # run() verified the audit trail of every node
    assert (out / "limits.parquet").exists() and (out / "scores.parquet").exists()
    assert (metrics["bank_only_auc"] is not None) == baseline
    run_doc = json.loads((out / "run.json").read_text())
    assert run_doc["settings"]["validation"] == validation
    gate = run_doc["quality_gate"]  # judged on validation rows, or on test rows when there are none
    assert gate["rows"] == ("validation" if validation else "test") and gate["n"] > 0
    assert (gate["bank_only_auc"] is not None) == baseline
