"""What a user gets from `fedcredit demo --key-bits 1024`: a verify command that works as printed, and reports.

One small in-process run (1024-bit test keys) shared by the tests of this module.
"""

from __future__ import annotations

import json
import shlex
import re

import pytest
from typer.testing import CliRunner

from fedcredit.cli import app
from fedcredit.audit.verify import verify_command
from fedcredit.protocols.job.settings import TREE_SETTINGS

cli = CliRunner()


@pytest.fixture(scope="module")
def demo(demo_run):
    """The session's demo run (tests/conftest.py): its folder's path holds a space."""
    return demo_run


def _printed_verify(output: str, which: int = 0) -> list[str]:
    """The printed verify command of the training run (0) or of the re-rating a month later (1)."""
    lines = [line.strip() for line in output.splitlines() if line.strip().startswith("fedcredit audit verify ")]
    assert len(lines) == 2, output
    return shlex.split(lines[which])


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
    later = _printed_verify(output, 1)  # the month-2 run, signed with the same coordinator key
    assert later[3] == str(out / "month-2") and later[5] == str(out / "keys" / "coordinator.pub.json")
    result = cli.invoke(app, later[1:])
    assert result.exit_code == 0 and result.output.startswith("OK: run "), result.output


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


def test_console_files_and_report_state_the_same_figures(demo):
    """Wall time, rounds and the centralized AUC read the same in the console, metrics.json, run.json and the report."""
    out, output = demo
    metrics = json.loads((out / "metrics.json").read_text())
    run = json.loads((out / "run.json").read_text())
    report = (out / "report.html").read_text()
    assert (run["seconds"], run["rounds"]) == (metrics["seconds"], metrics["rounds"])
    assert metrics["total_seconds"] >= metrics["seconds"]
    console = " ".join(output.split())
    assert re.search(rf"seconds │ {metrics['seconds']:.1f} │", console), output
    assert re.search(rf"message rounds │ {metrics['rounds']} │", console), output
    assert re.search(rf"centralized_auc │ {metrics['centralized_auc']:.4f} │", console), output
    assert f"{metrics['seconds']:,.1f} s (" in report
    assert re.search(rf"<th[^>]*>rounds</th>\s*<td[^>]*>{metrics['rounds']:,}</td>", report)
    assert re.search(rf"AUC, centralized reference</th>\s*<td[^>]*>{metrics['centralized_auc']:.4f}</td>", report)
    assert re.search(rf"AUC \(test\)</th>\s*<td[^>]*>{metrics['test_auc']:.4f}</td>", report)
