"""The job report: PSI arithmetic, a self-contained page, and a page that really renders."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedcredit.common.errors import FedCreditError
from fedcredit.protocols.job.settings import LR_SETTINGS, TREE_SETTINGS, ModelSettings
from fedcredit.scoring.report import SECTIONS, ReportData, psi_figure, render_report
from fedcredit.scoring.stability import interpret_psi, population_stability_index, psi_table

CHROMIUM = os.environ.get("FEDCREDIT_CHROMIUM", "/usr/bin/chromium")
WIDTH, HEIGHT = 1400, 3000  # the page width the report must fit (issue #15)


# ---------------------------------------------------------------- PSI

def test_identical_populations_are_stable():
    x = np.random.default_rng(1).beta(1, 12, 5_000)
    assert population_stability_index(x, x) == pytest.approx(0.0, abs=1e-12)
    assert interpret_psi(population_stability_index(x, x)) == "stable"


def test_a_shifted_population_is_a_significant_shift():
    rng = np.random.default_rng(2)
    psi = population_stability_index(rng.normal(0, 1, 5_000), rng.normal(1, 1, 5_000))
    assert psi > 0.25
    assert interpret_psi(psi) == "significant shift"


def test_known_small_example():
    # The expected median (1.5) splits two bins holding 50%/50%; the actual has 25%/75%:
    # (0.25-0.5)ln(0.25/0.5) + (0.75-0.5)ln(0.75/0.5)
    expected = 0.25 * np.log(2) + 0.25 * np.log(1.5)
    assert population_stability_index([1, 1, 2, 2], [1, 2, 2, 2], bins=2) == pytest.approx(expected)
    table = psi_table([1, 1, 2, 2], [1, 2, 2, 2], bins=2)
    assert list(table["expected_share"]) == [0.5, 0.5]
    assert list(table["actual_share"]) == [0.25, 0.75]
    assert table["contribution"].sum() == pytest.approx(expected)


def test_an_empty_bin_gives_a_large_finite_index():
    psi = population_stability_index(np.arange(100.0), np.full(50, 1000.0))
    assert np.isfinite(psi) and psi > 1


@pytest.mark.parametrize("expected, actual", [([], [1.0]), ([1.0], []), ([1.0, np.nan], [1.0])])
def test_empty_or_invalid_input_is_a_clear_error(expected, actual):
    with pytest.raises(FedCreditError, match="PSI needs scores|NaN"):
        population_stability_index(expected, actual)


# ---------------------------------------------------------------- report

FINGERPRINTS = {
    "paillier": "a3f1c2d4e5b60718293a4b5c6d7e8f90",
    "identities": {"bank": "b01dfacecafe0001", "tax": "7a0c0ffee0000002", "utilities": "0ddba11000000003"},
    "signing": "5e1f5e1f5e1f5e1f",
}


def _data(title: str = "Pre-credit run <b>42</b>") -> ReportData:
    rng = np.random.default_rng(7)
    n_test, n_train, n_score = 3_000, 6_000, 4_000

    def pd_of(n, shift=0.0):
        return 1 / (1 + np.exp(-(rng.normal(-3 + shift, 1.2, n))))

    score_test = pd_of(n_test)
    y_test = (rng.random(n_test) < score_test * 1.6).astype(int)
    scores = pd_of(n_score, 0.3)
    caps = np.select([scores < 0.02, scores < 0.06, scores < 0.15], [5e6, 2e6, 5e5], 0.0)
    limits = np.round(caps * rng.uniform(0.3, 1.0, n_score), -3)
    grades = pd.DataFrame({  # as grade_table makes it on the test rows
        "grade": ["A", "B", "C", "D"], "enterprises": [1510, 1260, 830, 400], "share": [0.377, 0.315, 0.208, 0.1],
        "mean_pd": [0.011, 0.04, 0.1, 0.24], "defaults": [12, 45, 80, 90],
        "observed_default_rate": [0.008, 0.036, 0.096, 0.225],
    })
    loss_table = pd.DataFrame({  # as LimitPolicy.expected_loss_table makes it on the scored population
        "grade": ["A", "B", "C", "D"], "enterprises": [2010, 1060, 630, 300], "total_limit_cny": [4.1e9, 1.6e9, 2.5e8, 0.0],
        "mean_pd": [0.011, 0.04, 0.1, 0.24], "expected_loss_cny": [20_295_000.0, 28_800_000.0, 11_250_000.0, 0.0],
        "fund_share": [0.8, 0.6, 0.4, 0.0], "bank_share": [0.2, 0.4, 0.6, 1.0],
        "fund_expected_loss_cny": [16_236_000.0, 17_280_000.0, 4_500_000.0, 0.0],
        "bank_expected_loss_cny": [4_059_000.0, 11_520_000.0, 6_750_000.0, 0.0],
    })
    return ReportData(
        title=title, y_test=y_test, score_test=score_test, score_train=pd_of(n_train), scores=scores,
        limits=limits, grades=grades, loss_table=loss_table,
        run={"run_id": "run-20240501-<x>", "engine": "embedded", "seconds": 83.4, "rounds": 12,
             "model": ModelSettings(key_bits=2048).used_settings()},
        nodes={"bank": {"rows": 12_000, "features": 9}, "tax": {"rows": 15_500, "features": 11},
               "utilities": {"rows": 14_200, "features": 6}},
        intersection_size=10_034, fingerprints=FINGERPRINTS,
        metrics={"test_auc": 0.781, "test_ks": 0.43, "test_gini": 0.562, "bank_only_auc": 0.702,
                 "centralized_auc": None},
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    return render_report(_data(), tmp_path_factory.mktemp("report") / "out" / "report.html")


def test_report_is_self_contained(report):
    text = report.read_text("utf-8")
    assert 'src="http' not in text and "src='http" not in text
    assert "<link" not in text.lower()
    assert "<script" not in text.lower()
    assert "url(" not in text and "@import" not in text
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,[A-Za-z0-9+/=]{200,}"', text)) >= 4


def test_report_has_every_section_and_the_facts(report):
    text = report.read_text("utf-8")
    for heading in SECTIONS:
        assert f"<h2>{heading}</h2>" in text, heading
    for fp in ("a3f1c2d4e5b60718293a4b5c6d7e8f90", "b01dfacecafe0001", "7a0c0ffee0000002", "5e1f5e1f5e1f5e1f"):
        assert fp in text
    for role in ("bank", "tax", "utilities"):
        assert role in text
    assert "10,034" in text and "12,000" in text
    assert "4,100,000,000" in text and "total limit (CNY)" in text  # grade A limit total, the unit in the header
    assert "AUC, centralized reference" not in text  # not computed: no row


def test_report_escapes_text(report):
    text = report.read_text("utf-8")
    assert "Pre-credit run &lt;b&gt;42&lt;/b&gt;" in text
    assert "<b>42</b>" not in text
    assert "run-20240501-&lt;x&gt;" in text


def test_report_tolerates_missing_pieces(tmp_path):
    data = ReportData(title="minimal", y_test=np.array([0, 1, 0, 1]), score_test=np.array([0.1, 0.9, 0.2, 0.6]),
                      grades=pd.DataFrame({"grade": ["A"], "mean_pd": [0.01]}))
    text = render_report(data, tmp_path / "r.html").read_text("utf-8")
    for heading in SECTIONS:
        assert f"<h2>{heading}</h2>" in text
    assert "<th>mean PD (%)</th>" in text and "<td>1.00</td>" in text
    assert "AUC, bank features only</th><td>not available" in text


def _grade_tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    section = text[text.index('<section id="grade-table">'):]
    section = section[:section.index("</section>")]
    out = []
    for table in re.findall(r"<table.*?</table>", section, re.S):
        head = re.findall(r"<th>(.*?)</th>", table)
        rows = [re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr>(<td>.*?)</tr>", table)]
        out.append((head, rows))
    return out


def test_grade_tables_put_every_share_rate_and_pd_in_percent(report):
    tables = _grade_tables(report.read_text("utf-8"))
    assert len(tables) == 2  # calibration on the test rows; limits and expected loss
    (head, rows), (loss_head, loss_rows) = tables
    for h in head + loss_head:
        if any(word in h for word in ("share", "rate", "PD")):
            assert h.endswith("(%)"), h
    for row in rows + loss_rows:
        assert not any(cell.endswith("%") for cell in row), row  # the unit is in the header, once
    observed = [row[head.index("observed default rate (%)")] for row in rows]
    assert observed == ["0.80", "3.60", "9.60", "22.50"]
    assert [row[head.index("share (%)")] for row in rows] == ["37.70", "31.50", "20.80", "10.00"]
    assert [row[loss_head.index("bank share (%)")] for row in loss_rows] == ["20.00", "40.00", "60.00", "100.00"]
    assert "bank expected loss (CNY)" in loss_head


def test_the_psi_legend_covers_no_bar():
    rng = np.random.default_rng(3)
    train = rng.beta(1, 12, 4000)
    table = psi_table(train, np.concatenate([train[:2000], rng.beta(1, 6, 2000)]))  # tall bars at the right
    fig = psi_figure(table, float(table["contribution"].sum()))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent(renderer)
    assert legend.y0 >= ax.get_window_extent(renderer).y1  # above the plotting area
    assert not any(legend.overlaps(bar.get_window_extent(renderer)) for bar in ax.patches)


def test_a_scoring_run_labels_its_figures_in_sample(tmp_path):
    data = _data()
    data.in_sample = True
    text = render_report(data, tmp_path / "score.html").read_text("utf-8")
    assert "AUC on the scored population (in-sample)" in text
    assert "AUC (test)" not in text and "test rows" not in text and "(test)" not in text
    assert "Calibration on the scored population (in-sample)" in text
    assert "overstate" in text  # the note says why in-sample figures flatter the model


def test_the_centralized_auc_shows_when_given(tmp_path):
    data = _data()
    data.centralized_auc = 0.7912
    text = render_report(data, tmp_path / "c.html").read_text("utf-8")
    assert "<th>AUC, centralized reference</th><td>0.7912</td>" in text


def test_model_settings_split_into_shared_scorecard_and_tree_families():
    names = set(ModelSettings.__dataclass_fields__)
    assert set(LR_SETTINGS) <= names and set(TREE_SETTINGS) <= names and not set(LR_SETTINGS) & set(TREE_SETTINGS)
    lr = ModelSettings().used_settings()
    trees = ModelSettings(model="secureboost").used_settings()
    assert not set(TREE_SETTINGS) & set(lr) and set(LR_SETTINGS) <= set(lr)
    assert not set(LR_SETTINGS) & set(trees) and set(TREE_SETTINGS) <= set(trees)
    assert set(lr) - set(LR_SETTINGS) == set(trees) - set(TREE_SETTINGS)  # the shared ones, in both


def test_a_scorecard_report_lists_no_tree_settings(report):
    text = report.read_text("utf-8")
    assert "<th>model: l2</th>" in text and "<th>model: max_iter</th>" in text
    for name in TREE_SETTINGS:
        assert f"<th>model: {name}</th>" not in text, name


# ---------------------------------------------------------------- headless browser

def _chromium() -> str:
    if Path(CHROMIUM).exists():
        return CHROMIUM
    message = f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium) to render the report"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _ancestors() -> set[int]:
    """This process and its parents, which must survive the clean-up whatever their command lines say."""
    pids, pid = set(), os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
    return pids


def _processes_mentioning(marker: str) -> list[int]:
    """Live processes whose command line names ``marker`` (this run's unique temporary directory)."""
    pids, ours = [], _ancestors()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in ours:
            continue
        try:
            if marker in (entry / "cmdline").read_bytes().decode(errors="replace") and \
                    (entry / "stat").read_text().rsplit(") ", 1)[1][0] != "Z":
                pids.append(int(entry.name))
        except (OSError, IndexError):
            continue
    return pids


def _screenshot(chromium: str, page: Path, out: Path, work: Path) -> None:
    output, returncode = _run_chromium(chromium, [f"--screenshot={out}"], page, work)
    assert out.exists(), f"chromium wrote no screenshot (exit {returncode}):\n{output.decode(errors='replace')[-2000:]}"


def _run_chromium(chromium: str, action: list[str], page: Path, work: Path, width: int = WIDTH) -> tuple[bytes, int]:
    """Run headless Chromium in its own process group; afterwards nothing of it may remain.

    Killing the group ends the browser and its zygote/renderers; the crash handler starts
    its own session, so any process still naming this run's directory is killed by pid.
    """
    argv = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-crash-reporter", "--hide-scrollbars", f"--user-data-dir={work / 'profile'}",
            f"--window-size={width},{HEIGHT}", *action, page.resolve().as_uri()]
    env = {**os.environ, "HOME": str(work)}  # keep crash reports and caches out of the real home
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        output = b"(timed out after 60 s)"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        for pid in _processes_mentioning(str(work)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return output, proc.returncode


def test_report_renders_in_headless_chromium(report, tmp_path):
    chromium = _chromium()
    shot = tmp_path / "shot.png"
    _screenshot(chromium, report, shot, tmp_path)
    if os.environ.get("FEDCREDIT_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["FEDCREDIT_KEEP_SCREENSHOT"])
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (HEIGHT, WIDTH), "screenshot size differs from the requested window"
    assert pixels.std() > 0.05, "screenshot is a flat colour"
    ink = (pixels < 0.9).any(axis=2)  # text, lines, bars; page and body backgrounds are lighter
    assert ink.mean() > 0.04, f"only {ink.mean():.1%} of the screenshot carries ink"
    colour = pixels.max(axis=2) - pixels.min(axis=2) > 0.25  # the plots' red/blue/green/orange
    assert colour.mean() > 0.01, f"only {colour.mean():.2%} coloured pixels: were the plots drawn?"
    rows = ink.any(axis=1)  # content runs down the whole 3,000-pixel window, not only the header
    assert rows[: HEIGHT // 3].mean() > 0.3 and rows[HEIGHT // 3:].mean() > 0.3


@pytest.mark.parametrize("width", [WIDTH, 1040])  # 1040 px: narrower than an A4 landscape print (report's @page)
def test_every_table_fits_the_page_without_scrolling(report, tmp_path, width):
    """The browser measures each scroll box (the grade tables are the widest) and writes the overflow into the DOM."""
    chromium = _chromium()
    probe = tmp_path / "probe.html"
    script = ("<script>document.body.setAttribute('data-overflow', [...document.querySelectorAll('.scroll')]"
              ".map(d => d.scrollWidth - d.clientWidth).join(','))</script>")
    probe.write_text(report.read_text("utf-8").replace("</body>", script + "</body>"), "utf-8")
    output, code = _run_chromium(chromium, ["--dump-dom"], probe, tmp_path, width)
    found = re.search(rb'data-overflow="([-0-9,]*)"', output)
    assert found, f"chromium printed no DOM (exit {code}): {output[-2000:]!r}"
    overflow = [int(v) for v in found.group(1).decode().split(",")]
    assert len(overflow) >= 4 and max(overflow) <= 0, overflow
