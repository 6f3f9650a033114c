"""A failed run leaves nothing half-written: only status.json, or its audit logs closed as aborted.

The failures here happen after messages flowed (the limit policy's capacity term names a
column the tax node does not hold, so the tax node refuses it at publication, after
training), on the in-process engine and on Flower's simulation engine, whose nodes close
their logs through the ClientApp's abort query.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedcredit.audit.verify import verify_audit
from fedcredit.cli import app
from fedcredit.data import synth

runner = CliRunner()
JOB = ("[model]\nkey_bits = 1024\nmax_iter = 4\nbank_only_baseline = false\n"
       "[nodes.bank]\ndata = 'data/bank.parquet'\n[nodes.tax]\ndata = 'data/tax.parquet'\n"
       "[nodes.utilities]\ndata = 'data/utilities.parquet'\n")
BAD_CAPACITY = '[capacity]\nnode = "tax"\ncolumn = "no_such_column"\nmultiple = 0.3\n'


@pytest.fixture(scope="module")
def job_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("failed")
    synth.write_nodes(synth.generate(1200, seed=5), root / "data", "parquet")
    (root / "job.toml").write_text(JOB)
    (root / "bad_policy.toml").write_text(BAD_CAPACITY)
    return root


def _train(job_dir: Path, out: Path, *extra: str):
    return runner.invoke(app, ["train", "--job", str(job_dir / "job.toml"), "--out", str(out), *extra])


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.mark.parametrize("engine", ["in-process", pytest.param("simulation", marks=pytest.mark.slow)])
def test_a_run_failing_after_messages_keeps_only_its_aborted_audit_logs(job_dir, tmp_path, engine):
    out = tmp_path / "out"
    result = _train(job_dir, out, "--engine", engine, "--policy", str(job_dir / "bad_policy.toml"))
    assert result.exit_code == 1, result.output
    assert "no_such_column" in result.output and "Traceback" not in result.output
    status = json.loads((out / "status.json").read_text())
    assert status["ok"] is False and "no_such_column" in status["error"]
    files = _tree(out)
    assert files == {"status.json", "audit", "keys", "keys/coordinator.pub.json",
                     *(f"audit/{p}.jsonl" for p in ("coordinator", "bank", "tax", "utilities"))}, files
    verdict = verify_audit(out, out / "keys" / "coordinator.pub.json", min_key_bits=1024)
    assert verdict.aborted["party"] == "coordinator" and "no_such_column" in verdict.aborted["reason"]
    assert verdict.aborted["step"] > 10  # after training
    for role in ("bank", "tax", "utilities"):  # every node closed its own log as aborted, and said so to the coordinator
        last = json.loads((out / "audit" / f"{role}.jsonl").read_text().splitlines()[-1])
        assert last["type"] == "aborted" and "no_such_column" not in last["reason"]  # nodes learn no error text
    assert not verdict.notes or all("pinned" in n or "checkpoint of the coordinator" in n for n in verdict.notes)
    cli = runner.invoke(app, ["audit", "verify", str(out), "--key", str(out / "keys" / "coordinator.pub.json"),
                              "--min-key-bits", "1024"])
    assert cli.exit_code == 1 and f"aborted at step {verdict.aborted['step']}" in cli.output, cli.output
    assert status["verify"].startswith("fedcredit audit verify")


def test_an_aborted_log_that_is_cut_is_still_truncated(job_dir, tmp_path):
    out = tmp_path / "out"
    _train(job_dir, out, "--engine", "in-process", "--policy", str(job_dir / "bad_policy.toml"))
    log = out / "audit" / "bank.jsonl"
    log.write_bytes(b"".join(log.read_bytes().splitlines(keepends=True)[:-1]))
    cli = runner.invoke(app, ["audit", "verify", str(out), "--min-key-bits", "1024"])
    assert cli.exit_code == 1 and "truncated" in cli.output


@pytest.fixture(scope="module")
def finished(job_dir, tmp_path_factory):
    """A run that finished (in-process); tests that change it work on a copy."""
    out = tmp_path_factory.mktemp("finished") / "out"
    result = _train(job_dir, out, "--engine", "in-process")
    assert result.exit_code == 0, result.output
    return out


def test_a_failed_rerun_leaves_the_finished_run_whole(job_dir, finished, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    before = {p: (out / p).read_bytes() for p in ("limits.parquet", "metrics.json", "run.json", "scores.parquet")}
    result = _train(job_dir, out, "--engine", "in-process", "--policy", str(job_dir / "bad_policy.toml"))
    assert result.exit_code == 1
    assert {p: (out / p).read_bytes() for p in before} == before
    status = json.loads((out / "status.json").read_text())
    aborted = out / "aborted" / status["run_id"]
    assert _tree(aborted) >= {"audit/coordinator.jsonl", "audit/bank.jsonl"}
    assert verify_audit(aborted, out / "keys" / "coordinator.pub.json", min_key_bits=1024).aborted is not None
    assert not list(out.glob(".staging-*")) and not (out / "work").exists()


def test_a_folder_that_is_not_a_run_is_refused_before_anything_starts(job_dir, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    result = _train(job_dir, out)
    assert result.exit_code == 1 and "not a fedcredit run" in result.output and "notes.txt" in result.output
    assert _tree(out) == {"notes.txt"}


def test_a_finished_run_leaves_no_node_state_or_staging(finished):
    out = finished
    names = {p.name for p in out.iterdir()}
    assert names == {"audit", "keys", "limits.csv", "limits.parquet", "limits.sig.json", "metrics.json", "model",
                     "monitor", "report.html", "run.json", "scores.parquet", "status.json"}, names
    assert json.loads((out / "status.json").read_text())["ok"] is True


def test_the_coordinator_names_the_overlap_it_found(tmp_path):
    """On a real federation no pre-flight sees every file: the coordinator's own refusal names the figures."""
    import pandas as pd

    from fedcredit.jobs.in_process import run_job
    from fedcredit.protocols.errors import InputError
    from fedcredit.protocols.job import ModelSettings, NodeConfig

    tables = synth.generate(600, seed=9)
    bank = tables["bank"].to_pandas()
    tax = tables["tax"].to_pandas()
    tax = pd.concat([tax[tax["uscc"].isin(bank["uscc"])].head(5), tax[~tax["uscc"].isin(bank["uscc"])]])
    bank.to_parquet(tmp_path / "bank.parquet", index=False)
    tax.to_parquet(tmp_path / "tax.parquet", index=False)
    nodes = [NodeConfig("bank", str(tmp_path / "bank.parquet")), NodeConfig("tax", str(tmp_path / "tax.parquet"))]
    with pytest.raises(InputError) as err:
        run_job(nodes, ModelSettings(key_bits=1024))
    text = str(err.value)
    assert "only 5 enterprises are known to every node" in text and "at least 20" in text
    assert f"bank {len(bank):,} rows, tax {len(tax):,} rows" in text
