"""Shared fixtures: one synthetic population per session, written once per format."""

from __future__ import annotations

import pytest

from fedcredit.data import synth


@pytest.fixture(scope="session")
def tables():
    """Synthetic node tables for 20,000 enterprises (seed 7)."""
    return synth.generate(20_000, seed=7)


@pytest.fixture(scope="session")
def parquet_dir(tables, tmp_path_factory):
    out = tmp_path_factory.mktemp("parquet")
    synth.write_nodes(tables, out, "parquet")
    return out


@pytest.fixture(scope="session")
def csv_dir(tables, tmp_path_factory):
    out = tmp_path_factory.mktemp("csv")
    synth.write_nodes(tables, out, "csv")
    return out


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """``fedcredit demo --rows 2500 --key-bits 1024 --engine in-process`` run once: (out folder, console output).

    Several test files check what this one run gives a user; they only read its folder
    (whose path holds a space, so that printed commands must quote it).
    """
    from typer.testing import CliRunner

    from fedcredit.cli import app

    out = tmp_path_factory.mktemp("demo with space") / "run"
    result = CliRunner().invoke(app, ["demo", "--rows", "2500", "--key-bits", "1024", "--engine", "in-process",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, result.output
