"""One run, one set of figures: wall time, rounds and the centralized AUC read the same in the console,
metrics.json, run.json and the bank's report."""

from __future__ import annotations

import json
import re

from typer.testing import CliRunner

from fedcredit.cli import app


def test_console_files_and_report_state_the_same_figures(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--out", str(out), "--rows", "1500", "--key-bits", "1024",
                                      "--engine", "in-process"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    run = json.loads((out / "run.json").read_text())
    report = (out / "report.html").read_text()
    assert (run["seconds"], run["rounds"]) == (metrics["seconds"], metrics["rounds"])
    assert metrics["total_seconds"] >= metrics["seconds"]
    console = " ".join(result.output.split())
    assert re.search(rf"seconds │ {metrics['seconds']:.1f} │", console), result.output
    assert re.search(rf"message rounds │ {metrics['rounds']} │", console), result.output
    assert re.search(rf"centralized_auc │ {metrics['centralized_auc']:.4f} │", console), result.output
    assert f"{metrics['seconds']:,.1f} s (" in report
    assert re.search(rf"<th[^>]*>rounds</th>\s*<td[^>]*>{metrics['rounds']:,}</td>", report)
    assert re.search(rf"AUC, centralized reference</th>\s*<td[^>]*>{metrics['centralized_auc']:.4f}</td>", report)
    assert re.search(rf"AUC \(test\)</th>\s*<td[^>]*>{metrics['test_auc']:.4f}</td>", report)
