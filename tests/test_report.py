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
from fedcredit.scoring.report import SECTIONS, ReportData, render_report
from fedcredit.scoring.stability import interpret_psi, population_stability_index, psi_table

CHROMIUM = os.environ.get("FEDCREDIT_CHROMIUM", "/usr/bin/chromium")
WIDTH, HEIGHT = 1280, 3000


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
    grades = pd.DataFrame({
        "grade": ["A", "B", "C", "D"], "enterprises": [1510, 1260, 830, 400], "defaults": [12, 45, 80, 90],
        "observed_default_rate": [0.008, 0.036, 0.096, 0.225], "mean_pd": [0.011, 0.04, 0.1, 0.24],
        "limit_total": [4.1e9, 1.6e9, 2.5e8, 0.0], "fund_share": [0.8, 0.6, 0.4, np.nan],
        "bank_share": [0.2, 0.4, 0.6, np.nan], "expected_loss_bank": [4_059_000.0, 11_520_000.0, 6_750_000.0, 0.0],
    })
    return ReportData(
        title=title, y_test=y_test, score_test=score_test, score_train=pd_of(n_train), scores=scores,
        limits=limits, grades=grades,
        run={"run_id": "run-20240501-<x>", "engine": "embedded", "seconds": 83.4, "rounds": 12,
             "model": {"kind": "vertical LR", "learning_rate": 0.15, "l2": 0.01, "key_bits": 2048}},
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
    assert "4,100,000,000 CNY" in text  # grade A limit total
    assert "not available" in text  # centralized AUC is None


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
    assert "1.00%" in text


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
    """Run headless Chromium in its own process group; afterwards nothing of it may remain.

    Killing the group ends the browser and its zygote/renderers; the crash handler starts
    its own session, so any process still naming this run's directory is killed by pid.
    """
    argv = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-crash-reporter", "--hide-scrollbars", f"--user-data-dir={work / 'profile'}",
            f"--window-size={WIDTH},{HEIGHT}", f"--screenshot={out}", page.resolve().as_uri()]
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
    assert out.exists(), f"chromium wrote no screenshot (exit {proc.returncode}):\n{output.decode(errors='replace')[-2000:]}"


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
