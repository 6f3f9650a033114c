"""The bad-input matrix a new user met: each case's exit code, a message naming the file, column, row or key and
what was expected, no traceback, and exactly what ``--out`` holds afterwards.

Failures found before any message leave ``--out`` as it was apart from ``status.json``
(errors in the command's own job or policy file leave it untouched: nothing started);
a folder that is not a run is refused untouched; a failure after messages keeps only the
aborted audit logs and the public key that verifies them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fedcredit.cli import app
from fedcredit.data import synth

runner = CliRunner()
ROLES = ("bank", "tax", "utilities")
FINISHED = {"audit", "keys", "limits.csv", "limits.parquet", "limits.sig.json", "metrics.json", "model", "monitor",
            "report.html", "run.json", "scores.parquet", "status.json"}
STATUS_ONLY = {"status.json"}
ABORTED = {"audit", "keys", "status.json"}
UNTOUCHED = None  # --out was never created
FAST = "[model]\nkey_bits = 1024\nmax_iter = 4\nbank_only_baseline = false\n"


@dataclass
class Case:
    """One bad input: how to make it, what the command must answer, what --out holds afterwards."""

    make: Callable[[Path], list[str]]  # writes the inputs under a folder, returns extra CLI arguments
    exit: int
    needles: tuple[str, ...]           # all in the output: where the problem is and what was expected
    out: set[str] | None
    engine: str = "simulation"         # failures found before the engine starts are run on the default engine
    seconds: float | None = 20.0       # ... and must come back this fast (no Flower or Ray start-up)
    extra: dict = field(default_factory=dict)


def _frame(root: Path, role: str) -> pd.DataFrame:
    return pd.read_parquet(root / "data" / f"{role}.parquet")


def _job(root: Path, model: str = FAST, nodes: dict[str, str] | None = None) -> list[str]:
    paths = {r: f"data/{r}.parquet" for r in ROLES} | (nodes or {})
    sections = "".join(f"[nodes.{r}]\n" + (f"data = '{p}'\n" if p else "id_column = 'uscc'\n") for r, p in paths.items())
    (root / "job.toml").write_text(model + sections)
    return ["--job", str(root / "job.toml")]


def _replace(role: str, change: Callable[[pd.DataFrame], pd.DataFrame], suffix: str = "parquet"):
    def make(root: Path) -> list[str]:
        frame = change(_frame(root, role).copy())
        path = root / "data" / f"{role}_bad.{suffix}"
        frame.to_parquet(path, index=False) if suffix == "parquet" else frame.to_csv(path, index=False)
        return _job(root, nodes={role: f"data/{path.name}"})
    return make


def _write(role: str, name: str, content: bytes):
    def make(root: Path) -> list[str]:
        (root / "data" / name).write_bytes(content)
        return _job(root, nodes={role: f"data/{name}"})
    return make


def _bad_check_character(frame: pd.DataFrame) -> pd.DataFrame:
    code = frame.loc[4, "uscc"]
    frame.loc[4, "uscc"] = code[:-1] + ("0" if code[-1] != "0" else "1")
    return frame


def _keep_rows(role: str, rows: int):
    def make(root: Path) -> list[str]:
        others = set.intersection(*(set(_frame(root, r)["uscc"]) for r in ROLES if r != role))
        frame = _frame(root, role)
        shared = frame[frame["uscc"].isin(others)].head(rows)
        foreign = frame[~frame["uscc"].isin(set(_frame(root, "bank")["uscc"]))]
        path = root / "data" / f"{role}_few.parquet"
        pd.concat([shared, foreign]).to_parquet(path, index=False)
        return _job(root, nodes={role: f"data/{path.name}"})
    return make


def _noise_host(root: Path) -> list[str]:
    """800 rows; 500 columns of pure noise at a host, a bank whose only feature is noise too (the gate's own case)."""
    from test_quality_gate import _population

    return ["--job", str(_population(root / "noise", 800, 500, 0.0, seed=11))]


def _policy(text: str):
    def make(root: Path) -> list[str]:
        (root / "policy.toml").write_text(text)
        return _job(root) + ["--policy", str(root / "policy.toml")]
    return make


def _out_with(files: dict[str, str]):
    def make(root: Path) -> list[str]:
        out = root / "out"
        out.mkdir()
        for name, text in files.items():
            (out / name).write_text(text)
        return _job(root)
    return make


def _finished_out(root: Path) -> list[str]:
    args = _job(root)
    first = runner.invoke(app, ["train", *args, "--out", str(root / "out"), "--engine", "in-process"])
    assert first.exit_code == 0, first.output
    return args


CASES = {
    "missing file": Case(lambda r: _job(r, nodes={"tax": "data/nope.parquet"}), 1,
                         ("[nodes.tax]", "nope.parquet", "file not found"), STATUS_ONLY),
    "empty file": Case(_write("tax", "empty.csv", b""), 1, ("[nodes.tax]", "empty.csv", "file is empty"), STATUS_ONLY),
    "missing ID column": Case(_replace("tax", lambda f: f.drop(columns="uscc")), 1,
                              ("tax_bad.parquet", "'uscc'", "ID column is missing"), STATUS_ONLY),
    "duplicate IDs": Case(_replace("utilities", lambda f: pd.concat([f, f.head(3)])), 1,
                          ("utilities_bad.parquet", "'uscc'", "duplicate IDs", "first rows: 1"), STATUS_ONLY),
    "bad USCC check character": Case(_replace("tax", _bad_check_character), 1,
                                     ("tax_bad.parquet", "'uscc'", "check character", "first rows: 5"), STATUS_ONLY),
    "label 2": Case(_replace("bank", lambda f: f.assign(default_12m=f["default_12m"].where(f.index != 7, 2))), 1,
                    ("bank_bad.parquet", "'default_12m'", "expected 0 or 1", "first rows: 8"), STATUS_ONLY),
    "label yes": Case(_replace("bank", lambda f: f.assign(default_12m=np.where(f["default_12m"] == 1, "yes", "no")), "csv"),
                      1, ("bank_bad.csv", "'default_12m'", "expected labels 0 or 1"), STATUS_ONLY),
    "label column missing": Case(_replace("bank", lambda f: f.drop(columns="default_12m")), 1,
                                 ("bank_bad.parquet", "'default_12m'", "label column is missing"), STATUS_ONLY),
    "all-missing column": Case(_replace("utilities", lambda f: f.assign(gas_m3_12m=np.nan)), 0,
                               ("utilities_bad.parquet", "'gas_m3_12m'", "every value is missing", "left out"), FINISHED,
                               engine="in-process", seconds=None),
    "constant column": Case(_replace("tax", lambda f: f.assign(tax_arrears_cny=0.0)), 0,
                            ("tax_bad.parquet", "'tax_arrears_cny'", "the same value (0.0) in every row", "left out"),
                            FINISHED, engine="in-process", seconds=None),
    "text in a numeric column": Case(_replace("tax", lambda f: f.astype({"vat_paid_cny": object}).assign(
        vat_paid_cny=lambda g: g["vat_paid_cny"].where(g.index != 2, "twelve")), "csv"), 1,
        ("tax_bad.csv", "'vat_paid_cny'", "has text where a number is expected", "3 (line 4)"), STATUS_ONLY),
    "job key typo": Case(lambda r: _job(r, model=FAST + "max_iterations = 5\n"), 1,
                         ("job.toml", "max_iterations", "[model]", "allowed"), UNTOUCHED),
    "wrong type": Case(lambda r: _job(r, model=FAST.replace("key_bits = 1024", "key_bits = '1024'")), 1,
                       ("job.toml", "key_bits must be int", "'1024'"), UNTOUCHED),
    "unknown model": Case(lambda r: _job(r, model=FAST + "type = 'xgboost'\n"), 1,
                          ("job.toml", "type must be one of", "xgboost"), UNTOUCHED),
    "missing data path": Case(lambda r: _job(r, nodes={"tax": None}), 1, ("job.toml", "[nodes.tax]", "'data'", "required"),
                              UNTOUCHED),
    "negative cap": Case(_policy("[caps_cny]\nA = -5\nB = 2_000_000\nC = 500_000\nD = 0\n"), 1,
                         ("policy.toml", "caps_cny", "-5"), UNTOUCHED),
    "unsorted bands": Case(_policy("[bands]\ngrades = ['A', 'B', 'C', 'D']\nmin_points = [560, 590, 620]\n"), 1,
                           ("policy.toml", "bands", "strictly decreasing", "560"), UNTOUCHED),
    "zero overlap": Case(_keep_rows("utilities", 0), 1,
                         ("only 0 enterprises are known to every node", "at least 20", "bank ∩ utilities: 0"), STATUS_ONLY),
    "5-row overlap": Case(_keep_rows("tax", 5), 1,
                          ("only 5 enterprises are known to every node", "at least 20", "bank ∩ tax: 5", "tax "), STATUS_ONLY),
    "garbage CSV": Case(_write("tax", "garbage.csv", b"\x00\xff\xfe binary \x00 junk\n\x01,\x02\x03\n\x04\n"), 1,
                        ("[nodes.tax]", "garbage.csv"), STATUS_ONLY),
    "garbage Parquet": Case(_write("tax", "garbage.parquet", b"PAR1 this is not parquet at all"), 1,
                            ("[nodes.tax]", "garbage.parquet", "cannot be read as parquet"), STATUS_ONLY),
    "wrong-schema Parquet": Case(lambda r: _job(r, nodes={"bank": "data/tax.parquet"}), 1,
                                 ("[nodes.bank]", "tax.parquet", "'default_12m'", "label column is missing",
                                  "'industry'", "is not declared for role 'bank'"), STATUS_ONLY),
    "non-empty out": Case(_out_with({"notes.txt": "mine"}), 1, ("not a fedcredit run", "notes.txt"), {"notes.txt"}),
    "finished run's out": Case(_finished_out, 0, ("test_auc",), FINISHED, engine="in-process", seconds=None),
    "500 noise columns at a host": Case(_noise_host, 1, ("quality gate", "AUC", "--allow-weak-model"), ABORTED,
                                        engine="in-process", seconds=None),
    "validation = 0": Case(lambda r: _job(r, model=FAST + "validation = 0.0\n"), 0, ("test_auc",), FINISHED,
                           engine="in-process", seconds=None),
}


@pytest.fixture(scope="module")
def population(tmp_path_factory):
    root = tmp_path_factory.mktemp("population")
    synth.write_nodes(synth.generate(1500, seed=11), root / "data", "parquet")
    return root


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, population, tmp_path):
    case = CASES[name]
    (tmp_path / "data").symlink_to(population / "data", target_is_directory=True)
    args = case.make(tmp_path)
    out = tmp_path / "out"
    started = time.perf_counter()
    result = runner.invoke(app, ["train", *args, "--out", str(out), "--engine", case.engine])
    seconds = time.perf_counter() - started
    assert result.exit_code == case.exit, result.output
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)
    text = " ".join(result.output.split())
    for needle in case.needles:
        assert needle in text, f"{needle!r} not in: {result.output}"
    if case.out is UNTOUCHED:
        assert not out.exists()
    else:
        assert {p.name for p in out.iterdir()} == case.out
    if case.out == STATUS_ONLY:
        status = json.loads((out / "status.json").read_text())
        assert status["ok"] is False and status["error"] and "verify" not in status
    if case.seconds is not None:
        assert seconds < case.seconds, f"{name}: {seconds:.1f} s; bad input must fail before any engine starts"
