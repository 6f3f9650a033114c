"""The model document's development section: how one node's own features became the model.

A risk committee signs off a scorecard by reading, feature by feature, what went in: the
bins, their weight of evidence (WoE = ln(share of goods / share of bads), so a positive
WoE is a safer bin), the information value (IV) that selected or dropped the feature, the
coefficient or the points each bin earns, and whether the feature's bins still hold the
same shares of the population (characteristic stability, CSI).

Each node documents only its own features: the bank in its ``report.html`` (with each
host's IV summary as far as that host published it: names, or ``feature 3`` when it keeps
them private), a host in its own standalone page (``render_development_report``). The
section reuses the job report's helpers and page shell, so both pages look alike and stay
self-contained; every text that comes from data goes through ``html.escape``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from fedcredit.common.errors import FedCreditError
from fedcredit.scoring.report import (
    BAD, GOOD, _e, _figure, _img, _note, _percent, _section, _table, write_page,
)
from fedcredit.scoring.stability import (MODERATE, STABLE, characteristic_index, feature_bin_shares,
                                         interpret_psi)

MODELS = {"scorecard_lr": "WoE scorecard (logistic regression)", "secureboost": "SecureBoost (gradient-boosted trees)"}

IV_BANDS = (0.02, 0.1, 0.3)
"""Customary IV reading: below 0.02 not predictive, then weak, medium, and strong above 0.3."""

MAX_WOE_PLOTS = 6
"""WoE bar plots are drawn for this many kept features (highest IV first); the rest get tables only."""

MAX_IV_BARS = 40
"""The IV chart shows at most this many features (highest IV first); the selection table lists all."""

PRIVATE_NAME = re.compile(r"feature \d+")
"""How a host that keeps its feature names private labels them in its IV summary."""

KEPT, DROPPED = "#1e8449", "#aab7b8"

_COLUMNS = {
    "selection": ("feature", "iv", "bins", "trend", "kept", "reason"),
    "bins": ("feature", "bin", "range", "share", "woe", "iv"),
    "importance": ("feature", "splits", "gain"),
    "stability": ("feature", "csi"),
    "hosts": ("feature", "iv", "kept", "reason"),
}
_HOST_SHOWN = ("feature", "iv", "bins", "kept", "reason")  # a host summary shows these columns and no others
_TEXT = ("reading", "trend", "kept / dropped", "why")  # text columns, aligned left


@dataclass
class Development:
    """One node's own features: selection, bins, the model's use of them, and their stability.

    ``selection``: one row per feature (feature, iv, bins, trend, kept, reason).
    ``bins``: one row per (feature, bin): feature, bin, range, share of the training rows,
    woe, iv (the bin's term); with the LR scorecard also coefficient and points.
    ``importance`` (trees): feature, splits, gain. ``stability``: feature, csi (reading
    optional, derived when absent). ``hosts`` (bank only): each host's summary as it allowed
    (feature, iv, kept, reason). ``base_points``: the scorecard's base points (bank only).
    """

    role: str
    selection: pd.DataFrame
    bins: pd.DataFrame
    model: str
    importance: pd.DataFrame | None = None
    stability: pd.DataFrame | None = None
    hosts: dict[str, pd.DataFrame] = field(default_factory=dict)
    base_points: float | None = None

    def __post_init__(self):
        if self.model not in MODELS:
            raise FedCreditError(f"Development.model must be one of {sorted(MODELS)}, got {self.model!r}")
        for name in ("selection", "bins", "importance", "stability"):
            _require(name, getattr(self, name), _COLUMNS[name])
        for host, frame in self.hosts.items():
            _require(f"hosts[{host!r}]", frame, _COLUMNS["hosts"])


def _require(name: str, frame: pd.DataFrame | None, columns: tuple[str, ...]) -> None:
    if frame is None and name in ("importance", "stability"):
        return
    if not isinstance(frame, pd.DataFrame):
        raise FedCreditError(f"Development.{name} must be a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise FedCreditError(f"Development.{name} lacks column(s) {missing}; expected {list(columns)}, "
                             f"got {list(frame.columns)}")


# ---------------------------------------------------------------- characteristic stability

def characteristic_stability(train_bins: np.ndarray, other_bins: np.ndarray, n_bins: list[int],
                             names: list[str]) -> pd.DataFrame:
    """CSI per feature: the PSI formula applied to the shares of a feature's bins, training vs other rows.

    ``train_bins``/``other_bins``: bin indices (0 .. n_bins[j] - 1), one row per enterprise and
    one column per feature of ``names``. Same floor, formula and reading as the score PSI
    (``fedcredit.scoring.stability``). Returns columns feature, csi, reading.
    """
    expected = feature_bin_shares("training", train_bins, n_bins, names)
    actual = feature_bin_shares("test/scored", other_bins, n_bins, names)
    rows = []
    for name, e, a in zip(names, expected, actual):
        csi = characteristic_index(e, a, name)
        rows.append({"feature": name, "csi": csi, "reading": interpret_psi(csi)})
    return pd.DataFrame(rows, columns=["feature", "csi", "reading"])


# ---------------------------------------------------------------- rendering

def interpret_iv(value: float) -> str:
    """The customary reading of an IV: 'not predictive', 'weak', 'medium' or 'strong'."""
    low, mid, high = IV_BANDS
    if value < low:
        return "not predictive"
    if value < mid:
        return "weak"
    return "medium" if value <= high else "strong"


def development_section(dev: Development) -> str:
    """The "Model development" section for ``dev`` (HTML, data escaped)."""
    selection = dev.selection.sort_values("iv", ascending=False, kind="stable")
    kept = selection[selection["kept"].astype(bool)]
    intro = _note(f"Features of {dev.role} only: {len(selection)} examined, {len(kept)} kept, "
                  f"{len(selection) - len(kept)} dropped. Model: {MODELS[dev.model]}. WoE = ln(share of goods / share "
                  "of bads) in a bin: positive WoE marks a safer bin. IV reading: below 0.02 not predictive, "
                  "0.02–0.1 weak, 0.1–0.3 medium, above 0.3 strong.")
    parts = [intro, "<h3>Information value and selection</h3>", _iv_chart(selection), _selection_table(selection),
             _bin_cards(dev, kept), _model_use(dev, kept), _stability(dev)]
    if dev.hosts:
        parts.append(_hosts(dev.hosts))
    return _section("Model development", "".join(parts))


def render_development_report(title: str, dev: Development, path) -> Path:
    """A node's standalone development page (a host's report), same shell and style as ``report.html``."""
    return write_page(title, development_section(dev), path)


def _label(name, width: int = 28) -> str:
    """A feature name as plot text: shortened, and ``$`` escaped so matplotlib does not read it as math."""
    text = str(name)
    text = text if len(text) <= width else text[: width - 1] + "…"
    return text.replace("$", r"\$")


def _iv_chart(selection: pd.DataFrame) -> str:
    if selection.empty:
        return _note("no features")
    more = "" if len(selection) <= MAX_IV_BARS else _note(
        f"The chart shows the {MAX_IV_BARS} highest of {len(selection)} features; the table lists all.")
    return _img(iv_figure(selection.head(MAX_IV_BARS)), "information value per feature") + more


def iv_figure(shown: pd.DataFrame) -> Figure:
    """One bar per feature (kept green, dropped grey) over the IV reading bands, highest IV on top."""
    iv = shown["iv"].astype(float).to_numpy()
    kept = shown["kept"].astype(bool).to_numpy()
    fig, ax = _figure(9.6, 1.2 + 0.24 * len(shown))
    y = np.arange(len(shown))
    ax.barh(y, iv, color=np.where(kept, KEPT, DROPPED), height=0.7)
    ax.set_yticks(y, [_label(n) for n in shown["feature"]], fontsize=8)
    ax.invert_yaxis()
    right = max(float(np.nanmax(iv)) if len(iv) else 0.0, IV_BANDS[-1]) * 1.08
    ax.set_xlim(0, right)
    edges = (0.0, *IV_BANDS, right)
    for lo, hi, shade in zip(edges, edges[1:], ("#fbfcfc", "#f4f6f6", "#eaeded", "#dfe3e4")):
        ax.axvspan(lo, hi, color=shade, zorder=0)  # the reading bands, darker as the reading gets stronger
    for band in IV_BANDS:
        ax.axvline(band, color="#566573", ls="--", lw=0.8, zorder=1)
    top = ax.secondary_xaxis("top")
    top.set_xticks(IV_BANDS, [f"{b:g}" for b in IV_BANDS], fontsize=8)
    ax.set_title("Bands: below 0.02 not predictive, 0.02–0.1 weak, 0.1–0.3 medium, above 0.3 strong",
                 loc="left", fontsize=9, color="#566573", pad=16)
    # above the axes, right of the title: never over a bar, however long the bars are
    ax.legend(handles=[Patch(color=KEPT, label="kept"), Patch(color=DROPPED, label="dropped")],
              loc="lower right", bbox_to_anchor=(1.0, 1.04), ncol=2, fontsize=8, frameon=False)
    ax.set_xlabel("information value (IV)")
    return fig


def _kept_text(value) -> str:
    return "kept" if bool(value) else "dropped"


def _selection_table(selection: pd.DataFrame) -> str:
    frame = selection[["feature", "iv", "bins", "trend", "kept", "reason"]].copy()
    frame.insert(2, "reading", [interpret_iv(float(v)) for v in frame["iv"]])
    frame = frame.rename(columns={"iv": "IV", "kept": "kept / dropped", "reason": "why"})
    return _table(frame, {"IV": lambda v: f"{float(v):.4f}", "bins": lambda v: f"{int(v)}",
                          "kept / dropped": _kept_text, "why": str}, left=_TEXT)


def _bin_formats() -> dict:
    return {"bin": lambda v: f"{int(v)}", "range": str, "share (%)": _percent, "WoE": lambda v: f"{float(v):+.3f}",
            "IV": lambda v: f"{float(v):.4f}", "coefficient": lambda v: f"{float(v):.4f}",
            "points": lambda v: f"{float(v):.1f}"}


def _bin_cards(dev: Development, kept: pd.DataFrame) -> str:
    head = "<h3>Bins of the kept features</h3>"
    lr = dev.model == "scorecard_lr" and {"coefficient", "points"} <= set(dev.bins.columns)
    if dev.base_points is not None:
        head += (f'<p class="big">Base points: <b>{_e(f"{float(dev.base_points):.1f}")}</b></p>' + _note(
            "An enterprise's score is the base points plus, for every kept feature of every node, the points of "
            "the bin it falls in."))
    if kept.empty:
        return head + _note("no feature was kept")
    cards = []
    for i, (_, feature) in enumerate(kept.iterrows()):
        rows = dev.bins[dev.bins["feature"] == feature["feature"]].sort_values("bin")
        coefficients = rows["coefficient"].astype(float).unique() if lr else []
        columns = ["bin", "range", "share", "woe", "iv"] + ["coefficient"] * (len(coefficients) > 1) + ["points"] * lr
        caption = (f"IV {float(feature['iv']):.4f} ({interpret_iv(float(feature['iv']))}), {len(rows)} bins"
                   + (f", trend {feature['trend']}" if str(feature["trend"]) not in ("", "nan", "None") else "")
                   + (f", coefficient {coefficients[0]:.4f}" if len(coefficients) == 1 else ""))
        plot = _woe_plot(feature["feature"], rows) if i < MAX_WOE_PLOTS and len(rows) else ""
        table = (_table(rows[columns].rename(columns={"share": "share (%)", "woe": "WoE", "iv": "IV"}), _bin_formats())
                 if len(rows) else _note("no bins supplied for this feature"))
        cards.append(f'<div class="card"><h4>{_e(feature["feature"])}</h4>{_note(caption)}{plot}{table}</div>')
    note = _note(f"One table per kept feature, highest IV first; WoE per bin drawn for the first {MAX_WOE_PLOTS}. "
                 "Share: the bin's part of the training rows.")
    return head + note + f'<div class="cards">{"".join(cards)}</div>'


def _woe_plot(name, rows: pd.DataFrame) -> str:
    woe = rows["woe"].astype(float).to_numpy()
    fig, ax = _figure(4.6, 1.7)
    ax.bar(np.arange(len(woe)), woe, color=np.where(woe >= 0, GOOD, BAD), width=0.7)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(np.arange(len(woe)), [str(int(b)) for b in rows["bin"]], fontsize=8)
    ax.tick_params(axis="y", labelsize=8)
    ax.set_xlabel("bin", fontsize=8)
    ax.set_ylabel("WoE", fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return _img(fig, f"WoE per bin of {name}")


def _model_use(dev: Development, kept: pd.DataFrame) -> str:
    """LR: each kept feature's coefficient and points spread; trees: split counts and gain."""
    if dev.model == "secureboost":
        head = "<h3>Feature importance</h3>"
        if dev.importance is None or dev.importance.empty:
            return head + _note("no importance supplied")
        frame = dev.importance[["feature", "splits", "gain"]].sort_values("gain", ascending=False, kind="stable")
        total = float(frame["gain"].sum())
        frame = frame.assign(**{"gain share (%)": frame["gain"] / total if total > 0 else np.nan})
        return head + _table(frame, {"splits": lambda v: f"{int(v):,}", "gain": lambda v: f"{float(v):.4g}",
                                     "gain share (%)": _percent}) + _note(
            f"Split gain summed over the model's trees, {dev.role}'s own features only.")
    head = "<h3>Coefficients and points</h3>"
    if "coefficient" not in dev.bins.columns or kept.empty:
        return head + _note("no coefficients supplied")
    rows = []
    for name in kept["feature"]:
        bins = dev.bins[dev.bins["feature"] == name]
        coef = bins["coefficient"].astype(float).unique()
        row = {"feature": name, "coefficient": f"{coef[0]:.4f}" if len(coef) == 1 else "per bin"}
        if "points" in bins.columns and len(bins):
            low, high = float(bins["points"].min()), float(bins["points"].max())
            row.update({"lowest points": low, "highest points": high, "points spread": high - low})
        rows.append(row)
    frame = pd.DataFrame(rows)
    spread = "points spread" in frame.columns
    if spread:
        frame = frame.sort_values("points spread", ascending=False, kind="stable")
    points = {c: (lambda v: f"{float(v):.1f}") for c in ("lowest points", "highest points", "points spread")}
    return head + _table(frame, {"coefficient": str, **points}) + _note(
        "One coefficient per feature on its WoE values (\"per bin\" when the model fits one per bin). "
        "The points spread is how much the feature can move a score: its weight in the scorecard.")


def _stability(dev: Development) -> str:
    head = "<h3>Characteristic stability (CSI)</h3>"
    if dev.stability is None or dev.stability.empty:
        return head + _note("not computed: no test or scored rows to compare the training bins with")
    frame = dev.stability[["feature", "csi"]].sort_values("csi", ascending=False, kind="stable")
    frame = frame.assign(reading=[interpret_psi(float(v)) for v in frame["csi"]]).rename(columns={"csi": "CSI"})
    counts = frame["reading"].value_counts()
    summary = ", ".join(f"{int(counts.get(r, 0))} {r}" for r in ("stable", "moderate shift", "significant shift"))
    return head + _table(frame, {"CSI": lambda v: f"{float(v):.4f}"}, left=_TEXT) + _note(
        f"{summary}. CSI: the PSI formula on each feature's bin shares, training rows vs test or scored rows. "
        f"Below {STABLE} stable; {STABLE}–{MODERATE} moderate shift, investigate; above {MODERATE} the feature's "
        "population has moved.")


def _hosts(hosts: dict[str, pd.DataFrame]) -> str:
    cards = []
    for host, summary in hosts.items():
        private = len(summary) > 0 and all(PRIVATE_NAME.fullmatch(str(n)) for n in summary["feature"])
        frame = summary[[c for c in _HOST_SHOWN if c in summary.columns]].sort_values("iv", ascending=False,
                                                                                     kind="stable")
        frame = frame.assign(reading=[interpret_iv(float(v)) for v in frame["iv"]])
        frame = frame[[c for c in ("feature", "iv", "reading", "bins", "kept", "reason") if c in frame.columns]]
        kept = int(frame["kept"].astype(bool).sum())
        who = (f"{host} keeps its feature names private: its features appear by index." if private
               else f"{host} published its feature names.")
        text = _note(f"{who} {len(frame)} features, {kept} kept. Bins, ranges and points stay with {host}.")
        table = _table(frame.rename(columns={"iv": "IV", "kept": "kept / dropped", "reason": "why"}),
                       {"IV": lambda v: f"{float(v):.4f}", "bins": lambda v: f"{int(v)}",
                        "kept / dropped": _kept_text, "why": str}, left=_TEXT)
        cards.append(f'<div class="card"><h4>{_e(host)}</h4>{text}{table}</div>')
    return ("<h3>Hosts' IV summaries</h3>" + _note("What each host chose to share of its features' IV and selection.")
            + f'<div class="cards">{"".join(cards)}</div>')
