"""What a user gets from `fedcredit demo --key-bits 1024`: a verify command that works as printed, and reports.

One small in-process run (1024-bit test keys) shared by the tests of this module.
"""

from __future__ import annotations

import shlex

import pytest
from typer.testing import CliRunner

from fedcredit.cli import app
from fedcredit.audit.verify import verify_command
from fedcredit.protocols.job.settings import TREE_SETTINGS

cli = CliRunner()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo with space") / "run"
    result = cli.invoke(app, ["demo", "--rows", "2500", "--key-bits", "1024", "--engine", "in-process",
                              "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, result.output


def _printed_verify(output: str) -> list[str]:
    lines = [line.strip() for line in output.splitlines() if line.strip().startswith("fedcredit audit verify ")]
    assert len(lines) == 1, output
    return shlex.split(lines[0])


def test_the_printed_verify_command_works_as_printed(demo):
    out, output = demo
    argv = _printed_verify(output)
    assert argv[:4] == ["fedcredit", "audit", "verify", str(out)]  # the path survives quoting
    assert argv[-2:] == ["--min-key-bits", "1024"]
    result = cli.invoke(app, argv[1:])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("OK: run ") and "coordinator key pinned" in result.output
    # without the flag the same logs are refused: the printed flag is what makes it work
    result = cli.invoke(app, argv[1:-2])
    assert result.exit_code == 1 and "paillier-1024" in result.output


def test_production_key_sizes_need_no_flag(tmp_path):
    assert "--min-key-bits" not in verify_command(tmp_path, 2048)
    assert "--min-key-bits 1024" in verify_command(tmp_path, 1024)


def test_the_audit_report_of_a_test_key_run_verifies_with_the_same_flag(demo, tmp_path):
    out, _ = demo
    page = tmp_path / "audit.html"
    result = cli.invoke(app, ["audit", "report", str(out), "--out", str(page), "--min-key-bits", "1024",
                              "--key", str(out / "keys" / "coordinator.pub.json")])
    assert result.exit_code == 0, result.output
    text = page.read_text("utf-8")
    assert "VERIFIED" in text and "bank → coordinator → tax" in text and "paillier-1024" in text


def test_the_scorecard_report_lists_only_scorecard_settings(demo):
    out, _ = demo
    text = (out / "report.html").read_text("utf-8")
    assert "<th>model: max_iter</th>" in text and "<th>model: key_bits</th>" in text
    for name in TREE_SETTINGS:
        assert f"<th>model: {name}</th>" not in text, name
    assert "AUC (test)" in text and "in-sample" not in text  # a training run measures on its test rows
