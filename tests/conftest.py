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
