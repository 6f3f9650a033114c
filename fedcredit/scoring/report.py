"""The job report: one self-contained HTML file a risk team can open, mail or archive.

Why self-contained: the report travels (e-mail, tickets, audit archives) and is opened on
machines with no network access to the federation, so it carries everything inline: CSS
in a ``<style>`` block, plots as base64 PNG ``data:`` URIs, no JavaScript, no fonts or
scripts fetched from anywhere. All text that comes from data (titles, node names, run
settings) goes through ``html.escape``.

Plots use matplotlib's Agg canvas directly (``Figure`` + ``FigureCanvasAgg``), not pyplot:
rendering a report from a notebook must neither switch the notebook's backend nor leave
figures in pyplot's registry.

``render_report`` is pure apart from writing its one file (atomically, so a reader never
sees half a report).
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter
from sklearn.metrics import auc as area_under, roc_curve

from fedcredit.common.atomic import atomic_write_bytes
from fedcredit.scoring.stability import MODERATE, STABLE, interpret_psi, psi_table

if TYPE_CHECKING:  # development.py builds on this module's helpers, so it is imported where used
    from fedcredit.scoring.development import Development

SECTIONS = (
    "Run summary", "Metrics", "ROC curve", "KS curve", "Score distribution by outcome",
    "Grade table", "Limit distribution", "Population stability (PSI)", "Model development",
    "Participating nodes", "Run time and rounds", "Key fingerprints",
)
"""Section headings, in page order (tests and docs refer to them)."""

BAD, GOOD = "#c0392b", "#2471a3"


@dataclass
class ReportData:
    """Everything the report shows; only ``title``, ``y_test`` and ``score_test`` are required.

    Scores are probabilities of default (higher = riskier). ``score_train`` and ``scores``
    must be on the same scale: the PSI compares them. Missing pieces (``None``, empty
    dicts) render as a short "not available" note, never as an error.

    ``y_test``/``score_test`` are the labelled rows the figures are measured on: held-out
    test rows, or — ``in_sample=True``, a scoring run with a saved model — the scored
    population itself, which may include the rows the model was trained on; every label then
    says so ("AUC on the scored population (in-sample)"), never "test".
    ``grades`` is the calibration per grade on those rows (``grade_table``), ``loss_table``
    the limits and expected loss per grade over the scored population
    (``LimitPolicy.expected_loss_table``). ``run["model"]`` should hold only the settings of
    the model used (``ModelSettings.used_settings()``). ``centralized_auc``: the pooled-data
    reference, shown when computed.
    """

    title: str
    y_test: np.ndarray
    score_test: np.ndarray
    run: dict[str, Any] = field(default_factory=dict)
    nodes: dict[str, dict[str, int]] = field(default_factory=dict)
    intersection_size: int | None = None
    fingerprints: dict[str, Any] = field(default_factory=dict)
    score_train: np.ndarray | None = None
    grades: pd.DataFrame | None = None
    limits: np.ndarray | None = None
    scores: np.ndarray | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)
    importance: pd.DataFrame | None = None  # trees: the bank's own features (party, feature, splits, gain)
    quality: dict | None = None  # the quality gate's verdict and the grade-order warnings (one notice block)
    loss_table: pd.DataFrame | None = None
    centralized_auc: float | None = None
    in_sample: bool = False
    development: Development | None = None  # this node's own features: bins, WoE, IV, selection, stability

    @property
    def rows_name(self) -> str:
        """What the labelled rows are, for titles and notes: ``test rows`` or the scored population."""
        return "scored population (in-sample)" if self.in_sample else "test rows"


def render_report(data: ReportData, path) -> Path:
    """Write the report for ``data`` to ``path`` (HTML, UTF-8) and return the path."""
    body = "\n".join([
        _summary(data), _quality(data), _metrics(data), f'<div class="pair">{_roc(data)}{_ks(data)}</div>', _distribution(data),
        _grades(data), _limits(data), _psi(data), _development(data), _importance(data), _nodes(data), _runtime(data),
        _fingerprints(data),
    ])
    return write_page(data.title, body, path)


def write_page(title: str, body: str, path) -> Path:
    """The one page shell of every report: ``body`` (escaped HTML) under ``title``, CSS inline, nothing external."""
    title = _e(title)
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{title}</title><style>{_CSS}</style></head>\n"
            f"<body><main><h1>{title}</h1>\n{body}\n"
            f'<footer>Generated by fedcredit. Self-contained: no external resources.</footer>'
            f"</main></body></html>\n")
    return atomic_write_bytes(path, page.encode("utf-8"))


def _development(data: ReportData) -> str:
    from fedcredit.scoring.development import development_section

    if data.development is None:
        return _section("Model development", _note("no development summary (bins, WoE, IV, selection) for this run"))
    return development_section(data.development)


# ---------------------------------------------------------------- formatting

def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _int(value) -> str:
    return f"{int(round(float(value))):,}"


def _cny(value) -> str:
    return f"{float(value):,.0f} CNY"


def _pct(value) -> str:
    return f"{100 * float(value):.2f}%"


def _num(value) -> str:
    """Human form of an arbitrary value: thousands separators, 4 significant decimals."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_num(v)}" for k, v in value.items())
    return str(value)


def _section(title: str, content: str, anchor: str | None = None) -> str:
    anchor = anchor or title.lower().split(" (")[0].replace(" ", "-")
    return f'<section id="{_e(anchor)}"><h2>{_e(title)}</h2>\n{content}\n</section>'


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _kv(rows: list[tuple[str, str]]) -> str:
    """Two-column table; values are already escaped HTML."""
    cells = "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="kv">{cells}</table>'


def _table(frame: pd.DataFrame, formats: dict[str, Callable[[Any], str]], left: tuple[str, ...] = ()) -> str:
    """A grid of ``frame``; numbers align right, the first column and the text columns named in ``left`` left."""
    head = "".join(f"<th>{_e(str(c).replace('_', ' '))}</th>" for c in frame.columns)
    rows = []
    for _, row in frame.iterrows():
        cells = []
        for c in frame.columns:
            v = row[c]
            text = "–" if v is None or (isinstance(v, float) and math.isnan(v)) else formats.get(c, _num)(v)
            cells.append(f'<td class="l">{_e(text)}</td>' if c in left else f"<td>{_e(text)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="scroll"><table class="grid"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


# ---------------------------------------------------------------- plotting

def _figure(width: float = 6.4, height: float = 4.0) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _img(fig: Figure, alt: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    fig.clear()
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _evaluation(data: ReportData):
    """(y, score, fpr, tpr, thresholds), or a reason why ROC/KS cannot be drawn."""
    y = np.asarray(data.y_test).astype(int).ravel()
    s = np.asarray(data.score_test, dtype=float).ravel()
    if y.size == 0 or y.shape != s.shape:
        return f"labels and scores must be non-empty and of equal length (got {y.size} and {s.size})"
    if len(np.unique(y)) < 2:
        return f"the {data.rows_name} contain only one outcome, so ROC and KS are undefined"
    fpr, tpr, thr = roc_curve(y, s)
    return y, s, fpr, tpr, thr


def _roc(data: ReportData) -> str:
    ev = _evaluation(data)
    if isinstance(ev, str):
        return _section("ROC curve", _note(ev))
    _, _, fpr, tpr, _ = ev
    value = area_under(fpr, tpr)
    fig, ax = _figure(5.2, 4.4)
    ax.plot(fpr, tpr, color=BAD, lw=2, label=f"model (AUC = {value:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="random (AUC = 0.5)")
    ax.set(xlabel="false positive rate (goods flagged)", ylabel="true positive rate (defaults caught)",
           xlim=(0, 1), ylim=(0, 1.01), title=f"ROC curve, {data.rows_name}")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    text = _note(f"AUC {value:.3f}: the probability that a random defaulter gets a higher PD than a random "
                 "non-defaulter. 0.5 is chance, 1.0 perfect ranking.")
    return _section("ROC curve", _img(fig, "ROC curve") + text)


def _ks(data: ReportData) -> str:
    ev = _evaluation(data)
    if isinstance(ev, str):
        return _section("KS curve", _note(ev))
    _, _, fpr, tpr, thr = ev
    finite = np.isfinite(thr)  # roc_curve starts at an infinite threshold
    fpr, tpr, thr = fpr[finite], tpr[finite], thr[finite]
    i = int(np.argmax(tpr - fpr))
    fig, ax = _figure(5.2, 4.4)
    ax.step(thr, tpr, where="post", color=BAD, lw=2, label="defaults with PD ≥ threshold")
    ax.step(thr, fpr, where="post", color=GOOD, lw=2, label="non-defaults with PD ≥ threshold")
    ax.vlines(thr[i], fpr[i], tpr[i], color="black", lw=2, label=f"KS = {tpr[i] - fpr[i]:.3f}")
    if thr.min() > 0:
        ax.set_xscale("log")
    ax.set(xlabel="PD threshold", ylabel="cumulative share", ylim=(0, 1.01), title=f"KS curve, {data.rows_name}")
    ax.legend(loc="lower left")
    ax.grid(alpha=0.3)
    text = _note(f"KS {tpr[i] - fpr[i]:.3f} at PD threshold {thr[i]:.4g}: the largest gap between the share of "
                 "defaulters and of non-defaulters flagged by one cut-off.")
    return _section("KS curve", _img(fig, "KS curve") + text)


def _distribution(data: ReportData) -> str:
    y = np.asarray(data.y_test).astype(int).ravel()
    s = np.asarray(data.score_test, dtype=float).ravel()
    if y.size == 0 or y.shape != s.shape:
        return _section("Score distribution by outcome", _note(f"no scores on the {data.rows_name}"))
    log = bool(s.min() > 0)
    edges = np.geomspace(s.min(), s.max(), 41) if log and s.max() > s.min() else 40
    fig, ax = _figure(9.6, 3.8)
    for label, mask, colour in (("non-defaults", y == 0, GOOD), ("defaults", y == 1, BAD)):
        if mask.any():
            ax.hist(s[mask], bins=edges, density=False, weights=np.full(mask.sum(), 1 / mask.sum()),
                    alpha=0.55, color=colour, label=f"{label} ({mask.sum():,})")
    if log:
        ax.set_xscale("log")
    ax.set(xlabel="probability of default (log scale)" if log else "probability of default",
           ylabel="share of the group", title=f"PD by observed outcome, {data.rows_name}")
    ax.legend()
    ax.grid(alpha=0.3)
    text = _note("Each group's histogram sums to 1. The less the two overlap, the better the model separates them.")
    return _section("Score distribution by outcome", _img(fig, "score distribution by outcome") + text)


def _limits(data: ReportData) -> str:
    if data.limits is None or np.asarray(data.limits).size == 0:
        return _section("Limit distribution", _note("no published limits"))
    limits = np.asarray(data.limits, dtype=float).ravel()
    positive = limits[limits > 0]
    zero = int((limits <= 0).sum())
    rows = [("enterprises scored", _int(limits.size)),
            ("zero limit (declined)", f"{zero:,} ({_pct(zero / limits.size)})"),
            ("total limits", _e(_cny(limits.sum()))),
            ("median positive limit", _e(_cny(np.median(positive))) if positive.size else "–")]
    if not positive.size:
        return _section("Limit distribution", _kv(rows) + _note("every limit is zero"))
    fig, ax = _figure(9.6, 3.6)
    ax.hist(positive, bins=40, color="#1e8449", alpha=0.8)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.set(xlabel="limit (CNY)", ylabel="enterprises",
           title=f"Published limits above zero ({positive.size:,}); {zero:,} enterprises at zero")
    ax.grid(alpha=0.3)
    return _section("Limit distribution", _img(fig, "limit distribution") + _kv(rows))


def _percent(value) -> str:
    return f"{100 * float(value):.2f}"


def _amount(value) -> str:
    return f"{float(value):,.0f}"


def _grade_format(column: str) -> Callable[[Any], str]:
    """Counts as integers, every share, rate and PD in % (one unit), amounts in CNY; units go in the header."""
    name = str(column).split(" (")[0]
    if name in ("enterprises", "defaults"):
        return _int
    if name.endswith("_cny") or name in ("limit_total", "expected_loss_bank"):
        return _amount
    if "share" in name or "rate" in name or name.endswith("pd"):
        return _percent
    return _num


def _grade_header(column: str) -> str:
    """``total_limit_cny`` -> ``total limit (CNY)``, ``mean_pd`` -> ``mean PD (%)``, ``share`` -> ``share (%)``."""
    name, _, suffix = str(column).partition(" (")
    fmt = _grade_format(column)
    text = name.replace("_cny", "").replace("_", " ").replace("pd", "PD")
    text += {_percent: " (%)", _amount: " (CNY)"}.get(fmt, "")
    return text + (f" ({suffix}" if suffix else "")


def _grade_table(frame: pd.DataFrame) -> str:
    shown = frame.rename(columns={c: _grade_header(c) for c in frame.columns})
    return _table(shown, {_grade_header(c): _grade_format(c) for c in frame.columns})


def _grades(data: ReportData) -> str:
    parts = []
    if data.grades is not None and len(data.grades):
        parts.append(f"<h3>Calibration on the {_e(data.rows_name)}</h3>" + _grade_table(data.grades) + _note(
            "Observed default rate should rise from grade to grade and stay close to the mean PD. "
            "Share: the grade's part of the rows."))
    if data.loss_table is not None and len(data.loss_table):
        parts.append("<h3>Limits and expected loss, scored population</h3>" + _grade_table(data.loss_table) + _note(
            "Expected loss = PD × LGD × limit (the whole limit drawn), split between the fund and the bank by "
            "their risk shares."))
    return _section("Grade table", "".join(parts) if parts else _note("no grade table"))


def _importance(data: ReportData) -> str:
    """Trees only: what the bank may see of importance (its own features; a host's splits by opaque record)."""
    if data.importance is None:
        return ""
    shown = data.importance.head(25)
    text = _note(f"The {len(shown)} largest of {len(data.importance)} entries by split gain summed over the model's trees. "
                 "The bank sees its own features by name and each host's splits only by record number: the host holds "
                 "the features and thresholds behind them (published reason codes name some of them; docs/leakage.md).")
    return _section("Feature importance", _table(shown, {"splits": lambda v: f"{int(v):,}"}) + text)


def psi_figure(table: pd.DataFrame, value: float) -> Figure:
    """Training vs scoring shares per score bin, in % like the table below it."""
    fig, ax = _figure(9.6, 3.8)
    x = np.arange(len(table))
    ax.bar(x - 0.2, 100 * table["expected_share"], 0.4, color="#7f8c8d", label="training (expected)")
    ax.bar(x + 0.2, 100 * table["actual_share"], 0.4, color="#d68910", label="scoring (actual)")
    ax.set_xticks(x, table["range"], rotation=30, ha="right", fontsize=8)
    ax.set(ylabel="share of the population (%)", title=f"Score bins (training deciles), PSI = {value:.4f}")
    # the legend sits above the axes, in the title's band: it never covers a bar
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.08), ncol=2, frameon=False)
    ax.grid(alpha=0.3, axis="y")
    return fig


def _psi(data: ReportData) -> str:
    name = "Population stability (PSI)"
    if data.score_train is None or data.scores is None:
        return _section(name, _note("training or scoring scores not supplied"))
    try:
        table = psi_table(data.score_train, data.scores)
    except Exception as exc:  # the report still renders; the note says why PSI is missing
        return _section(name, _note(f"PSI not computed: {exc}"))
    value = float(table["contribution"].sum())
    verdict = interpret_psi(value)
    fig = psi_figure(table, value)
    shown = table[["bin", "range", "expected_share", "actual_share", "contribution"]]
    summary = (f'<p class="big">PSI = <b>{value:.4f}</b> — <span class="{verdict.split()[0]}">{_e(verdict)}</span></p>'
               + _note(f"Reading: below {STABLE} stable; {STABLE}–{MODERATE} moderate shift, investigate; above "
                       f"{MODERATE} significant shift, the scoring population differs from the training one."))
    shown = shown.rename(columns={"expected_share": "expected share (%)", "actual_share": "actual share (%)"})
    table_html = _table(shown, {"bin": _int, "expected share (%)": _percent, "actual share (%)": _percent,
                                "contribution": lambda v: f"{v:.4f}"})
    return _section(name, summary + _img(fig, "PSI by bin") + table_html)


# ---------------------------------------------------------------- text sections

def _summary(data: ReportData) -> str:
    run = data.run
    rows = [(k, _e(_num(run[k]))) for k in ("run_id", "engine") if k in run]
    if data.nodes:
        rows.append(("nodes", _e(", ".join(data.nodes))))
    if data.intersection_size is not None:
        rows.append(("aligned enterprises", _int(data.intersection_size)))
    rows.append(("labelled rows evaluated (scored population, in-sample)" if data.in_sample else "test rows",
                 _int(np.asarray(data.y_test).size)))
    if data.scores is not None:
        rows.append(("scored enterprises", _int(np.asarray(data.scores).size)))
    return _section("Run summary", _kv(rows))


_METRIC_NAMES = {"auc": "AUC", "ks": "KS", "gini": "Gini"}


def _metrics(data: ReportData) -> str:
    """AUC, KS, Gini on the evaluated rows, the bank-only AUC, the centralized AUC when it was computed."""
    where = "on the scored population (in-sample)" if data.in_sample else "(test)"
    values = dict(data.metrics)
    if data.centralized_auc is not None:
        values["centralized_auc"] = data.centralized_auc
    rows = [(f"{name} {where}", values.get(f"test_{key}")) for key, name in _METRIC_NAMES.items()]
    rows.append(("AUC, bank features only", values.get("bank_only_auc")))
    if values.get("centralized_auc") is not None:
        rows.append(("AUC, centralized reference", values["centralized_auc"]))
    known = {f"test_{k}" for k in _METRIC_NAMES} | {"bank_only_auc", "centralized_auc"}
    rows += [(k, v) for k, v in values.items() if k not in known]
    cells = [(label, _e("not available" if v is None else f"{float(v):.4f}")) for label, v in rows]
    text = ("The federated model should beat the bank alone and come close to a centralized model "
            "trained on pooled data (which no party could build in practice).")
    if data.in_sample:
        text += (" These figures are measured on the scored population, which may include the rows the model "
                 "was trained on: they overstate how the model ranks new enterprises.")
    return _section("Metrics", _kv(cells) + _note(text))


def _nodes(data: ReportData) -> str:
    if not data.nodes:
        return _section("Participating nodes", _note("no node information"))
    frame = pd.DataFrame([{"role": role, "rows": info.get("rows"), "features": info.get("features")}
                          for role, info in data.nodes.items()])
    extra = "" if data.intersection_size is None else _note(
        f"Private set intersection aligned {int(data.intersection_size):,} enterprises held by every node.")
    return _section("Participating nodes", _table(frame, {"rows": _int, "features": _int}) + extra)


def _runtime(data: ReportData) -> str:
    run = data.run
    rows = []
    if run.get("seconds") is not None:
        s = float(run["seconds"])
        rows.append(("wall time", _e(f"{s:,.1f} s ({int(s // 3600)}:{int(s % 3600 // 60):02d}:{int(s % 60):02d})")))
    if run.get("rounds") is not None:
        rows.append(("rounds", _e(_num(run["rounds"]))))
    settings = run.get("model") or run.get("settings") or run.get("model_settings")
    if isinstance(settings, dict):
        rows += [(f"model: {k}", _e(_num(v))) for k, v in settings.items()]
    elif settings is not None:
        rows.append(("model", _e(_num(settings))))
    shown = {"run_id", "engine", "seconds", "rounds", "model", "settings", "model_settings"}
    rows += [(k, _e(_num(v))) for k, v in run.items() if k not in shown]
    return _section("Run time and rounds", _kv(rows) if rows else _note("no run information"))


def _flatten(prefix: str, value: Any) -> list[tuple[str, Any]]:
    """Nested dicts ({"identities": {"bank": hex}}) become rows named "identities / bank"."""
    if isinstance(value, dict):
        return [row for k, v in value.items() for row in _flatten(f"{prefix} / {k}" if prefix else str(k), v)]
    return [(prefix, value)]


def _fingerprints(data: ReportData) -> str:
    if not data.fingerprints:
        return _section("Key fingerprints", _note("no key fingerprints"))
    rows = [(k, f"<code>{_e(v)}</code>") for k, v in _flatten("", data.fingerprints)]
    note = _note("Compare these with the fingerprints each node prints for its own keys before trusting "
                 "signatures or encrypted exchanges of this run.")
    return _section("Key fingerprints", _kv(rows) + note)


_CSS = """
body{margin:0;background:#f4f6f7;color:#1c2833;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,
"Noto Sans","DejaVu Sans",sans-serif}
main{max-width:1240px;margin:0 auto;padding:24px 32px 40px;background:#fff;min-height:100vh}
h1{margin:0 0 12px;font-size:26px;border-bottom:3px solid #1e8449;padding-bottom:8px}
h2{margin:28px 0 10px;font-size:19px;color:#145a32}
h3{margin:14px 0 4px;font-size:16px;color:#1c2833}
section{break-inside:avoid}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:20px}
table{border-collapse:collapse;margin:6px 0 10px;font-variant-numeric:tabular-nums}
th,td{padding:4px 10px;border:1px solid #d5dbdb;text-align:left;vertical-align:top}
table.grid td{text-align:right;white-space:nowrap}
.scroll{overflow-x:auto}
table.grid td:first-child,table.grid td.l{text-align:left}
table.grid td.l{white-space:normal}
table.grid thead th{background:#e9f7ef}
table.kv th{background:#f8f9f9;font-weight:600;white-space:nowrap}
code{font:13px/1.3 ui-monospace,"DejaVu Sans Mono",monospace;word-break:break-all}
img{max-width:100%;height:auto;display:block;margin:4px 0}
.note{color:#566573;font-size:13px;margin:4px 0 8px}
.big{font-size:18px}
.stable{color:#1e8449;font-weight:600}.moderate{color:#b9770e;font-weight:600}
.significant{color:#c0392b;font-weight:600}
footer{margin-top:32px;color:#909497;font-size:12px}
h4{margin:2px 0 2px;font-size:15px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(540px,1fr));gap:14px 18px;align-items:start}
.card{border:1px solid #d5dbdb;border-radius:4px;padding:6px 10px;min-width:0}
.card table.grid{font-size:13px}.card th,.card td{padding:3px 8px}
@page{size:A4 landscape;margin:12mm}
@media print{body{background:#fff;font-size:12px}main{max-width:none;padding:0;min-height:0}
.scroll{overflow:visible}table{font-size:11px}th,td{padding:2px 6px}h2,h3{break-after:avoid}
section{break-inside:auto}table,tr,img,.card{break-inside:avoid}.pair{grid-template-columns:1fr 1fr}}
"""


# ---------------------------------------------------------------- quality gate (one notice block)

def _quality(data: ReportData) -> str:
    """The gate's verdict: passed, or failed and published anyway (--allow-weak-model); grade-order warnings."""
    from fedcredit.scoring.quality import describe_warning

    q = data.quality
    if not q:
        return ""
    base = q.get("bank_only_auc")
    figures = (f"{q.get('rows')} AUC {_num(q.get('auc'))} over {_num(q.get('n'))} rows; floor {_num(q.get('min_auc'))}"
               + (f"; bank-only {_num(base)} (margin {_num(q.get('min_margin_over_bank_only'))})" if base is not None else ""))
    lines = [("WARNING: this model FAILED the quality gate and was published anyway (--allow-weak-model): "
              + "; ".join(q.get("failures", []))) if q.get("override") else "The model passed the quality gate."]
    lines.append(figures)
    lines += ["Grade order: " + describe_warning(w, w.get("rows", "held-out")) for w in q.get("grade_order_warnings", [])]
    return _section("Quality gate", "".join(_note(t) for t in lines), "quality")
