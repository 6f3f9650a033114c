"""The model document's development section: a node's own bins, WoE, IV, selection, model use, CSI."""

from __future__ import annotations

import html
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedcredit.common.errors import FedCreditError
from fedcredit.scoring.development import (
    MAX_WOE_PLOTS, Development, characteristic_stability, development_section, interpret_iv, iv_figure,
    render_development_report,
)
from fedcredit.scoring.report import ReportData, render_report

BANK_FEATURES = ("repayment_ontime_rate", "overdue_days_12m", "utilization_ratio", "account_age_months",
                 "loan_balance_cny", "deposit_avg_cny", "inquiries_6m", "credit_lines", "collateral_ratio",
                 "transfer_volume_cny", "guarantor_count", "branch_region_code")
CORRELATED = "transfer_volume_cny"  # dropped by the correlation filter though its IV passes
PDO_FACTOR = 20 / math.log(2)


def _feature_bins(name: str, strength: float, n_bins: int, rng) -> pd.DataFrame:
    """Bins of one feature from a share and a bad rate per bin: WoE = ln(good% / bad%), IV terms (good% - bad%) * WoE."""
    share = rng.dirichlet(np.full(n_bins, 8.0))
    bad_rate = 0.06 * np.exp(strength * np.linspace(1, -1, n_bins))  # monotone: riskier bins first
    goods, bads = share * (1 - bad_rate), share * bad_rate
    goods, bads = goods / goods.sum(), bads / bads.sum()
    woe = np.log(goods / bads)
    edges = np.round(np.sort(rng.uniform(0, 100, n_bins - 1)), 1)
    ranges = [f"≤ {edges[0]:g}"] + [f"({a:g}, {b:g}]" for a, b in zip(edges, edges[1:])] + [f"> {edges[-1]:g}"]
    return pd.DataFrame({"feature": name, "bin": np.arange(n_bins), "range": ranges, "share": share, "woe": woe,
                         "iv": (goods - bads) * woe})


def example_bank(model: str = "scorecard_lr", seed: int = 5) -> Development:
    """A realistic bank: 12 features, three dropped (two weak, one correlated), LR points, two hosts."""
    rng = np.random.default_rng(seed)
    strengths = np.linspace(1.6, 0.05, len(BANK_FEATURES))
    bins = pd.concat([_feature_bins(n, s, int(rng.integers(3, 8)), rng) for n, s in zip(BANK_FEATURES, strengths)],
                     ignore_index=True)
    iv = bins.groupby("feature", sort=False)["iv"].sum()
    selection = pd.DataFrame({"feature": iv.index, "iv": iv.to_numpy(),
                              "bins": bins.groupby("feature", sort=False).size().to_numpy(),
                              "trend": "ascending"})  # WoE rises bin by bin
    selection["kept"] = (selection["iv"] >= 0.02) & (selection["feature"] != CORRELATED)
    selection["reason"] = [
        f"IV {v:.4f} < min_iv 0.02" if v < 0.02 else
        ("correlated with deposit_avg_cny (ρ = 0.91)" if n == CORRELATED else f"IV {v:.4f} ≥ 0.02")
        for n, v in zip(selection["feature"], selection["iv"])]
    kept_names = set(selection.loc[selection["kept"], "feature"])
    importance = None
    if model == "scorecard_lr":
        coefficient = bins["feature"].map({n: -0.6 - 0.05 * i for i, n in enumerate(BANK_FEATURES)})
        bins = bins.assign(coefficient=np.where(bins["feature"].isin(kept_names), coefficient, np.nan))
        bins["points"] = -PDO_FACTOR * bins["coefficient"] * bins["woe"]
    else:
        importance = pd.DataFrame({"feature": sorted(kept_names), "splits": rng.integers(3, 40, len(kept_names)),
                                   "gain": rng.uniform(1, 50, len(kept_names))})
    n_bins = bins.groupby("feature", sort=False).size()
    train = np.column_stack([rng.integers(0, k, 4000) for k in n_bins])
    scored = train.copy()
    scored[:1500, 1] = 0  # one feature's population moves into its first bin
    stability = characteristic_stability(train, scored, list(n_bins), list(n_bins.index))
    tax = pd.DataFrame({"feature": [f"feature {i}" for i in range(9)],
                        "iv": [0.41, 0.22, 0.15, 0.09, 0.05, 0.031, 0.012, 0.004, 0.001],
                        "kept": [True] * 6 + [False] * 3,
                        "reason": ["IV ≥ 0.02"] * 6 + ["IV < min_iv 0.02"] * 3})
    utilities = pd.DataFrame({"feature": ["power_kwh_growth", "water_arrears_months", "gas_bill_cny"],
                              "iv": [0.18, 0.07, 0.01], "kept": [True, True, False],
                              "reason": ["IV ≥ 0.02", "IV ≥ 0.02", "IV < min_iv 0.02"],
                              "range": ["≤ 987654.321"] * 3})  # the host's thresholds: never shown
    return Development(role="bank", selection=selection, bins=bins.reset_index(drop=True), model=model,
                       importance=importance, stability=stability, hosts={"tax": tax, "utilities": utilities},
                       base_points=512.3 if model == "scorecard_lr" else None)


def example_host(seed: int = 6) -> Development:
    """A host's own page: its real feature names, its bins and points, no hosts' summaries."""
    rng = np.random.default_rng(seed)
    names = ("vat_revenue_growth", "tax_arrears_count", "invoice_volume_cny", "filing_delay_days")
    bins = pd.concat([_feature_bins(n, s, 5, rng) for n, s in zip(names, (1.2, 0.8, 0.4, 0.05))], ignore_index=True)
    bins["coefficient"] = -0.7
    bins["points"] = -PDO_FACTOR * bins["coefficient"] * bins["woe"]
    iv = bins.groupby("feature", sort=False)["iv"].sum()
    selection = pd.DataFrame({"feature": iv.index, "iv": iv.to_numpy(), "bins": 5, "trend": "ascending",
                              "kept": iv.to_numpy() >= 0.02})
    selection["reason"] = np.where(selection["kept"], "IV ≥ min_iv 0.02", "IV < min_iv 0.02")
    train = rng.integers(0, 5, (3000, len(names)))
    scored = np.where(rng.random(train.shape) < 0.15, 4, train)  # a drift towards the last bins
    stability = characteristic_stability(train, scored, [5] * len(names), list(names))
    return Development(role="tax", selection=selection, bins=bins, model="scorecard_lr", stability=stability)


def _minimal(**extra) -> ReportData:
    return ReportData(title="run", y_test=np.array([0, 1, 0, 1]), score_test=np.array([0.1, 0.9, 0.2, 0.6]), **extra)


@pytest.fixture(scope="module")
def bank_page(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("dev") / "report.html"
    return render_report(_minimal(development=example_bank()), path).read_text("utf-8")


def _section_of(page: str) -> str:
    start = page.index('<section id="model-development">')
    return page[start:page.index("</section>", start)]


def _cells(html_table: str) -> list[list[str]]:
    return [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr>(<td.*?)</tr>", html_table)]


def test_the_section_shows_selection_bins_points_and_stability(bank_page):
    dev = example_bank()
    section = _section_of(bank_page)
    assert "<h2>Model development</h2>" in section
    rows = {r[0]: r for r in _cells(re.findall(r"<table.*?</table>", section, re.S)[0])}  # the selection table
    for _, f in dev.selection.iterrows():  # the selection table: IV, reading, bins, kept/dropped
        row = rows[f["feature"]]
        assert row[1] == f"{f['iv']:.4f}" and row[2] == interpret_iv(f["iv"]) and row[3] == str(f["bins"])
        assert row[5] == ("kept" if f["kept"] else "dropped")
    assert rows[CORRELATED][5] == "dropped" and "correlated with deposit_avg_cny" in rows[CORRELATED][6]
    kept = dev.selection[dev.selection["kept"]]
    headings = re.findall(r"<h4>(.*?)</h4>", section)
    assert headings[:len(kept)] == list(kept.sort_values("iv", ascending=False)["feature"])  # one card per kept feature
    top = dev.bins[dev.bins["feature"] == headings[0]]
    card = section[section.index(f"<h4>{headings[0]}</h4>"):]
    card = card[:card.index("</table>")]
    assert _cells(card) == [[str(b.bin), html.escape(b.range), f"{100 * b.share:.2f}", f"{b.woe:+.3f}", f"{b.iv:.4f}",
                             f"{b.points:.1f}"] for b in top.itertuples()]
    assert f"coefficient {top['coefficient'].iloc[0]:.4f}</p>" in card  # one per feature: in the caption
    assert "Base points: <b>512.3</b>" in section
    assert section.index("Base points") < section.index("<h4>")  # above the points tables
    assert section.count('alt="WoE per bin of') == MAX_WOE_PLOTS
    assert section.count('alt="information value per feature"') == 1
    worst = dev.stability.sort_values("csi", ascending=False).iloc[0]
    assert worst["feature"] == "overdue_days_12m" and worst["reading"] == "significant shift"
    assert f"<td>{worst['feature']}</td><td>{worst['csi']:.4f}</td><td class=\"l\">significant shift</td>" in section
    assert "<h3>Coefficients and points</h3>" in section and "<h3>Feature importance</h3>" not in section


def test_hosts_are_shown_only_as_they_allowed(bank_page):
    section = _section_of(bank_page)
    assert "<h3>Hosts' IV summaries</h3>" in section
    tax = section[section.index("<h4>tax</h4>"):section.index("<h4>utilities</h4>")]
    assert "tax keeps its feature names private" in tax and "<td>feature 3</td>" in tax
    utilities = section[section.index("<h4>utilities</h4>"):]
    assert "utilities published its feature names" in utilities and "<td>power_kwh_growth</td>" in utilities
    assert "keeps its feature names private" not in utilities
    assert "987654" not in bank_page  # a column the summary must not carry (the host's thresholds) stays out


def test_data_text_is_escaped_everywhere(tmp_path):
    dev = example_bank()
    evil = '<script>alert("x")</script> $a$'
    dev.selection.loc[0, "feature"] = evil  # the highest IV: in the chart, the tables and a WoE plot
    dev.bins.loc[dev.bins["feature"] == BANK_FEATURES[0], "feature"] = evil
    dev.bins.loc[dev.bins["feature"] == evil, "range"] = "<i>≤ 3</i>"
    dev.hosts = {"<b>tax</b>": dev.hosts["tax"]}
    page = render_report(_minimal(development=dev), tmp_path / "r.html").read_text("utf-8")
    assert "<script" not in page and "<b>tax</b>" not in page and "<i>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; $a$" in page
    assert "<h4>&lt;b&gt;tax&lt;/b&gt;</h4>" in page and "&lt;i&gt;≤ 3&lt;/i&gt;" in page


def test_csi_equals_a_hand_computation():
    train = np.column_stack([np.repeat([0, 1], [5, 5]), np.repeat([0, 1, 2], [3, 3, 4])])
    other = np.column_stack([np.repeat([0, 1], [3, 7]), np.repeat([0, 1], [5, 5])])
    table = characteristic_stability(train, other, [2, 3], ["a", "b"])
    # a: expected 50/50, actual 30/70. b: expected 30/30/40, actual 50/50/0 (floored at 1e-4)
    a = (0.3 - 0.5) * math.log(0.3 / 0.5) + (0.7 - 0.5) * math.log(0.7 / 0.5)
    b = 2 * (0.5 - 0.3) * math.log(0.5 / 0.3) + (1e-4 - 0.4) * math.log(1e-4 / 0.4)
    assert list(table["feature"]) == ["a", "b"]
    assert table["csi"].tolist() == pytest.approx([a, b], rel=1e-12)
    assert list(table["reading"]) == ["moderate shift", "significant shift"]
    assert characteristic_stability(train, train, [2, 3], ["a", "b"])["csi"].tolist() == [0.0, 0.0]


@pytest.mark.parametrize("train, n_bins, message", [
    (np.array([[0, 3]]), [2, 3], "feature 'b' has 3 bins"),
    (np.array([[0.5, 1]]), [2, 3], "integer bin indices"),
    (np.array([0, 1]), [2, 3], "one column per feature"),
    (np.array([[0, 1]]), [2], "2 feature names but 1 bin counts"),
])
def test_csi_refuses_bad_bins_with_the_reason(train, n_bins, message):
    with pytest.raises(FedCreditError, match=re.escape(message)):
        characteristic_stability(train, np.array([[0, 1]]), n_bins, ["a", "b"])


def test_the_host_page_is_self_contained(tmp_path):
    path = render_development_report("Tax office <model> document", example_host(), tmp_path / "host" / "dev.html")
    page = path.read_text("utf-8")
    assert "<title>Tax office &lt;model&gt; document</title>" in page and "<h2>Model development</h2>" in page
    assert not re.search(r"https?:", page) and "<script" not in page and "<link" not in page and "url(" not in page
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,[A-Za-z0-9+/=]{200,}"', page)) == 1 + 3  # IV, 3 kept WoE
    assert "vat_revenue_growth" in page and "Hosts' IV summaries" not in page and "Base points" not in page


def test_a_tree_model_shows_importance_and_no_points(tmp_path):
    dev = example_bank("secureboost")
    section = development_section(dev)
    assert "<h3>Feature importance</h3>" in section and "gain share (%)" in section
    assert "Coefficients and points" not in section and "<th>points</th>" not in section
    best = dev.importance.sort_values("gain").iloc[-1]
    assert f"<td>{best['feature']}</td><td>{best['splits']:,}</td>" in section


def test_one_hot_coefficients_show_per_bin():
    dev = example_host()
    dev.bins["coefficient"] = np.linspace(-1, 1, len(dev.bins))  # one coefficient per bin, not per feature
    section = development_section(dev)
    assert section.count("<th>coefficient</th>") == 3 + 1  # each kept feature's bin table and the summary
    assert "<td>vat_revenue_growth</td><td>per bin</td>" in section and ", coefficient " not in section


def test_the_iv_legend_covers_no_bar():
    selection = example_bank().selection.assign(iv=np.linspace(0.9, 1.0, 12)[::-1])  # every bar reaches the right
    fig = iv_figure(selection)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent(renderer)
    assert legend.y0 >= ax.get_window_extent(renderer).y1  # above the plotting area
    assert not any(legend.overlaps(bar.get_window_extent(renderer)) for bar in ax.containers[0])


def test_without_development_the_report_says_so(tmp_path):
    page = render_report(_minimal(), tmp_path / "r.html").read_text("utf-8")
    assert "<h2>Model development</h2>" in page and "no development summary" in page


def test_a_frame_missing_a_column_is_refused_by_name():
    dev = example_host()
    with pytest.raises(FedCreditError, match=r"Development.bins lacks column\(s\) \['woe'\]"):
        Development(role="tax", selection=dev.selection, bins=dev.bins.drop(columns="woe"), model="scorecard_lr")
    with pytest.raises(FedCreditError, match="model must be one of"):
        Development(role="tax", selection=dev.selection, bins=dev.bins, model="woe_lr")


def test_the_cards_fit_an_a4_landscape_width(tmp_path):
    """Headless Chromium measures every table box of the bank's page at 1,040 px: none may scroll."""
    from test_report import _chromium, _run_chromium

    chromium = _chromium()
    page = tmp_path / "probe.html"
    script = ("<script>document.body.setAttribute('data-overflow', [...document.querySelectorAll('.scroll')]"
              ".map(d => d.scrollWidth - d.clientWidth).join(','))</script>")
    render_report(_minimal(development=example_bank()), page)
    page.write_text(page.read_text("utf-8").replace("</body>", script + "</body>"), "utf-8")
    output, code = _run_chromium(chromium, ["--dump-dom"], page, tmp_path, 1040)
    found = re.search(rb'data-overflow="([-0-9,]*)"', output)
    assert found, f"chromium printed no DOM (exit {code}): {output[-2000:]!r}"
    overflow = [int(v) for v in found.group(1).decode().split(",")]
    assert len(overflow) >= 12 and max(overflow) <= 0, overflow


if __name__ == "__main__":  # the example pages: python tests/test_development_report.py OUT_DIR
    import sys

    out = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/devreport")
    from test_report import _data  # the job report's example run, now with the bank's development section

    bank = _data("Pre-credit run 42: bank")
    bank.development = example_bank()
    print(render_report(bank, out / "bank.html"))
    print(render_development_report("Model development: tax", example_host(), out / "host.html"))
