"""``fedcredit validate`` checks a node's file with the settings a job would use (custom layouts, own IDs, a job file)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fedcredit.cli import app
from fedcredit.data import synth

runner = CliRunner()


@pytest.fixture(scope="module")
def court(tmp_path_factory):
    """A bank with its own column names and a court node with its own ID column, plus a job naming both."""
    root = tmp_path_factory.mktemp("court")
    tables = synth.generate(600, seed=3)
    bank = tables["bank"].to_pandas().rename(columns={"uscc": "credit_code", "default_12m": "bad_flag",
                                                      "max_dpd_24m": "worst_arrears_days"})
    bank[["credit_code", "bad_flag", "worst_arrears_days", "loan_balance_cny"]].to_parquet(root / "bank.parquet")
    rng = np.random.default_rng(0)
    ids = tables["tax"].column("uscc").to_pylist()
    pd.DataFrame({"enterprise_code": ids, "lawsuits_36m": rng.poisson(0.3, len(ids)),
                  "listed": rng.choice(["yes", "no"], len(ids)), "region": "north"}).to_csv(root / "court.csv", index=False)
    (root / "job.toml").write_text(
        "[nodes.bank]\ndata = 'bank.parquet'\nlayout = 'custom'\nid_column = 'credit_code'\nlabel = 'bad_flag'\n"
        "extra = ['worst_arrears_days:int', 'loan_balance_cny:float']\n"
        "[nodes.court]\ndata = 'court.csv'\nlayout = 'custom'\nid_column = 'enterprise_code'\n"
        "extra = ['lawsuits_36m:int', 'listed:category', 'region:category']\ncategorical = ['listed']\n")
    return root


def test_a_custom_layout_is_checked_with_its_own_columns(court):
    result = runner.invoke(app, ["validate", str(court / "bank.parquet"), "--role", "bank", "--layout", "custom",
                                 "--id-column", "credit_code", "--label", "bad_flag", "--extra", "worst_arrears_days:int",
                                 "--extra", "loan_balance_cny:float"])
    assert result.exit_code == 0, result.output
    assert "valid bank data" in result.output and "2 feature columns" in result.output
    standard = runner.invoke(app, ["validate", str(court / "bank.parquet"), "--role", "bank"])
    assert standard.exit_code == 1 and "'uscc'" in standard.output  # the built-in layout expects other columns


def test_a_node_of_a_job_file_is_checked_with_its_settings(court):
    result = runner.invoke(app, ["validate", "--job", str(court / "job.toml"), "--node", "court"])
    assert result.exit_code == 0, result.output
    assert "'region': the same value ('north') in every row" in result.output and "left out" in result.output
    assert "2 feature columns" in result.output


def test_a_whole_job_is_checked_with_its_overlap(court):
    result = runner.invoke(app, ["validate", "--job", str(court / "job.toml")])
    assert result.exit_code == 0, result.output
    banks, courts = len(pd.read_parquet(court / "bank.parquet")), len(pd.read_csv(court / "court.csv"))
    common = len(set(pd.read_parquet(court / "bank.parquet")["credit_code"]) & set(pd.read_csv(court / "court.csv")["enterprise_code"]))
    assert f"bank {banks:,}, court {courts:,} rows" in result.output, result.output
    assert f"{common:,} enterprises known to every node" in result.output


def test_validate_options_that_do_not_fit_are_refused(court):
    both = runner.invoke(app, ["validate", str(court / "court.csv"), "--job", str(court / "job.toml")])
    assert both.exit_code == 1 and "drop FILE" in both.output
    node = runner.invoke(app, ["validate", "--job", str(court / "job.toml"), "--node", "tax"])
    assert node.exit_code == 1 and "no [nodes.tax] section" in node.output and "bank, court" in node.output
    alone = runner.invoke(app, ["validate", "--node", "court"])
    assert alone.exit_code == 1 and "--job" in alone.output
