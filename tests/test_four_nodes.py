"""examples/job_four_nodes.toml: a fourth data holder (a court) with its own column names, as
docs/add-a-data-holder.md describes — the file parses, its data (from the documented
``fedcredit synth --with-court``) validates, and a job over four nodes uses the court's features."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from fedcredit.cli import app
from fedcredit.data import synth, synth_court
from fedcredit.data.validate import ValidationError, load_node
from fedcredit.jobs.in_process import run_job
from fedcredit.jobs.jobfile import read_job
from fedcredit.protocols.job.outputs import publication_for
from fedcredit.scoring import metrics
from fedcredit.scoring.policy import LimitPolicy

ROOT = Path(__file__).resolve().parent.parent
JOB = ROOT / "examples" / "job_four_nodes.toml"
ROWS = 3000


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """The example job file next to data made by the command its header documents."""
    root = tmp_path_factory.mktemp("four")
    shutil.copy(JOB, root / JOB.name)
    res = CliRunner().invoke(app, ["synth", "--out", str(root / "data"), "--rows", str(ROWS), "--seed", "4", "--with-court"])
    assert res.exit_code == 0, res.output
    return read_job(root / JOB.name)


def test_the_job_file_declares_the_court_as_the_generator_writes_it():
    job = read_job(JOB)
    assert job.roles == ["bank", "court", "tax", "utilities"]
    court = job.nodes["court"]
    assert court["layout"] == "custom" and court["id_column"] == synth_court.ID_COLUMN and court["id_type"] == "uscc"
    assert court["extra"] == synth_court.extra_declarations()
    assert "fedcredit synth --out examples/data --rows 20000 --with-court\n" in JOB.read_text()


def test_every_node_of_the_example_validates_against_its_schema(example):
    loaded = {n.role: load_node(n.data, n.schema()) for n in example.node_configs()}
    assert list(loaded["court"].features.columns) == list(synth_court.COLUMNS)
    assert loaded["court"].label is None and loaded["bank"].label is not None
    assert 0.85 * ROWS < len(loaded["court"]) < 0.95 * ROWS
    # the court's IDs are the same enterprises' USCCs under its own column name
    assert len(set(loaded["court"].ids) & set(loaded["bank"].ids)) > 0.8 * len(loaded["court"])


def test_validate_checks_the_court_as_the_page_shows(example):
    """docs/add-a-data-holder.md's two commands: the job's court node, and the file with the same options."""
    court = {n.role: n for n in example.node_configs()}["court"]
    res = CliRunner().invoke(app, ["validate", "--job", str(example.path), "--node", "court"])
    assert res.exit_code == 0 and "valid court data" in res.output, res.output
    options = [arg for decl in synth_court.extra_declarations() for arg in ("--extra", decl)]
    res = CliRunner().invoke(app, ["validate", court.data, "--role", "court", "--layout", "custom",
                                   "--id-column", "enterprise_code", *options])
    assert res.exit_code == 0 and "4 feature columns" in res.output, res.output
    res = CliRunner().invoke(app, ["validate", court.data, "--role", "court"], env={"COLUMNS": "1000"})
    assert res.exit_code == 1 and "'enterprise_code': is not declared for role 'court'" in res.output


def test_the_court_file_needs_its_declarations(example):
    court = {n.role: n for n in example.node_configs()}["court"]
    with pytest.raises(ValidationError) as err:  # without `extra` every column is undeclared
        load_node(court.data, replace(court, extra=[]).schema())
    assert {p.column for p in err.value.problems} == set(synth_court.COLUMNS)
    with pytest.raises(ValidationError, match="enterprise_code.*not declared|uscc.*ID column is missing"):
        load_node(court.data, replace(court, id_column="uscc").schema())


def test_the_court_adds_signal_of_its_own():
    """On the same enterprises, the court's columns carry default signal (checked on plain rates,
    fast): listed debtors and defendants default more often."""
    tables = synth.generate(20_000, seed=2, court=True)
    bank = tables["bank"].to_pandas().set_index("uscc")["default_12m"]
    court = tables["court"].to_pandas().set_index(synth_court.ID_COLUMN).join(bank, how="inner")
    listed = court["dishonest_debtor_listed"] == "yes"
    sued = court["lawsuits_as_defendant_36m"] > 0
    assert court.loc[listed, "default_12m"].mean() > 2.5 * court.loc[~listed, "default_12m"].mean()
    assert court.loc[sued, "default_12m"].mean() > 2 * court.loc[~sued, "default_12m"].mean()
    assert court["judgment_amount_cny"].isna().mean() > 0.5  # no judgment: missing, its own bin


def _test_auc(out: Path, ids: set, labels: dict) -> float:
    scores = pq.read_table(out / "scores.parquet").to_pandas()
    rows = scores[scores["id"].isin(ids)]
    assert len(rows) == len(ids)
    return metrics.auc(np.array([labels[i] for i in rows["id"]]), rows["score"].to_numpy())


def test_a_four_node_job_runs_and_uses_the_court(example, tmp_path):
    settings = replace(example.settings, key_bits=1024, max_iter=12, bank_only_baseline=False)
    nodes = [replace(n, out_dir=str(tmp_path / "four")) for n in example.node_configs()]
    four = run_job(nodes, settings, publication=publication_for(LimitPolicy.from_dict({}, "test")))
    assert list(four["nodes"]) == ["bank", "court", "tax", "utilities"] and four["nodes"]["court"]["features"] == 4
    assert 0.5 * ROWS < four["intersection"] < 0.8 * ROWS

    part = tmp_path / "four" / "model" / "court"
    weights = {p["column"]: p["weight"] for p in json.loads((part / "weights.json").read_text())["parameters"]}
    iv = pd.read_csv(part / "iv.csv")  # the court selected its own columns by IV
    kept = set(iv[iv.kept].feature)
    assert set(iv.feature) == set(synth_court.COLUMNS) and len(kept) >= 2
    assert (iv[~iv.kept].iv < settings.min_iv).all()
    assert {c.split(" ")[0] for c in weights} == kept  # its kept columns, each binned
    for name in kept:
        assert max(abs(w) for c, w in weights.items() if c.split(" ")[0] == name) > 1e-3, f"no weight on {name}"
    # published reason codes name the court's own columns, never a value
    features = {n.role: set(load_node(n.data, n.schema()).features.columns) for n in nodes}
    codes = [c for row in four["publication"]["reason_codes"] for c in row.split(";") if c]
    assert {c.partition(":")[0] for c in codes} >= {"bank", "court"}
    assert all(c.partition(":")[2] in features[c.partition(":")[0]] for c in codes)

    # the same enterprises without the court: the split is a hash of each ID, so the four-node
    # test rows are test rows of the three-node run too
    run_job([replace(n, out_dir=str(tmp_path / "three")) for n in nodes if n.role != "court"], settings)
    bank = load_node(nodes[0].data, nodes[0].schema())
    labels = dict(zip(bank.ids, bank.label))
    scores = pq.read_table(tmp_path / "four" / "scores.parquet").to_pandas()
    test_ids = set(scores.loc[scores["split"] == "test", "id"])
    auc = {name: _test_auc(tmp_path / name, test_ids, labels) for name in ("four", "three")}
    print(f"test AUC on the four-node run's {len(test_ids)} test rows: four nodes {auc['four']:.4f}, "
          f"three nodes {auc['three']:.4f}")
    assert auc["four"] > 0.7 and auc["three"] > 0.7
