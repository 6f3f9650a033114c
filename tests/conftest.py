"""Shared fixtures: one synthetic population per session, written once per format; how ``-n 2`` spreads the tests.

The suite runs on two cores with ``pytest -n 2`` (README). ``pytest_xdist_make_scheduler``
below replaces xdist's ``--dist load`` (the default of ``-n``) with whole work units:

* every test of a module that imports ``lab_federation``, ``test_deployment`` or
  ``fedcredit_netlab`` (network namespaces, Flower deployments, their ``ps``/``ip netns``
  clean-up checks) is in one unit, ``federation``: those tests run one after another on one
  worker, never two federations at once; the unit goes first, as it is the longest stretch
  of the suite, and the other worker takes the remaining units meanwhile;
* every other module is a unit of its own, so its module fixtures are built once (largest
  modules first).

A worker gets the controller's ``COLUMNS``/``LINES`` as the user set them (or none), as a
run without ``-n`` sees them: pytest imports ``readline``, which exports 80x24 into the
environment the workers inherit, and a console made at import (``fedcredit.cli.console``)
would keep that width whatever a test's ``CliRunner(env={"COLUMNS": ...})`` says.

(xdist's own ``--dist loadgroup`` would do the grouping with ``xdist_group`` marks, but
xdist 3.8 renames the test id through ``item._nodeid``, which pytest 9 no longer reads.)
"""

from __future__ import annotations

import os
import re
from collections import Counter
from functools import lru_cache
from pathlib import Path

import pytest

from fedcredit.data import synth

FEDERATION = "federation"
TERMINAL_SIZE = ("COLUMNS", "LINES")
# fedcredit_netlab.ray_head (a loopback Ray cluster of its own temp dir) uses no namespace: not a federation
_USES_NETWORK_LAB = re.compile(r"^\s*(?:from|import)\s+(?:lab_federation|test_deployment|fedcredit_netlab(?!\.ray_head))\b", re.M)


@lru_cache(maxsize=None)
def work_unit(root: Path, nodeid: str) -> str:
    """The unit a test runs in: ``federation``, or its module's path."""
    module = nodeid.split("::", 1)[0]
    path = root / module
    return FEDERATION if path.suffix == ".py" and _USES_NETWORK_LAB.search(path.read_text()) else module


def pytest_collection_modifyitems(config, items):
    """On an xdist worker: the collection in unit order (federation first, then the units with most tests).

    The controller hands out units in the order the workers collected them (it addresses
    tests by their index in that collection, so the order must be set here, alike on every worker).
    """
    if hasattr(config, "workerinput"):
        units = [work_unit(config.rootpath, item.nodeid) for item in items]
        size = Counter(units)
        rank = {id(item): (unit != FEDERATION, -size[unit]) for item, unit in zip(items, units)}
        items.sort(key=lambda item: rank[id(item)])


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist, called only when it runs the tests (-n)
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "load":  # another --dist asked for explicitly
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByUnit(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(config.rootpath, nodeid)

    config.option.loadscopereorder = False  # keep the collection's unit order (xdist would sort by tests per unit)
    return ByUnit(config, log)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """(controller, xdist) What a worker needs of this process's environment as the user set it."""
    node.workerinput["terminal_size"] = {name: os.environ.get(name) for name in TERMINAL_SIZE}


def pytest_configure(config):
    if hasattr(config, "workerinput"):
        for name, value in config.workerinput.get("terminal_size", {}).items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


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
