"""The monitoring page: warnings, the grade migration matrix as a heat table, score PSI and each node's feature CSI.

Self-contained like the job report (``fedcredit.scoring.report``: its page shell, tables
and plot helpers): inline CSS, plots as base64 PNG, no scripts, every text from data escaped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fedcredit.scoring.monitor import feature_name
from fedcredit.scoring.report import _e, _figure, _img, _kv, _note, _section, _table, write_page

SHOWN_WARNINGS = 25  # red and amber enterprises listed on the page (all are in warnings.parquet)
LISTED = 20  # enterprises named per side when only one publication holds them
_VERDICT_CLASS = {"stable": "stable", "watch": "moderate", "shifted": "significant"}
_WARNING_COLOURS = {"red": "#c0392b", "amber": "#d68910", "green": "#1e8449"}
_VERDICT_COLOURS = {"stable": "#1e8449", "watch": "#d68910", "shifted": "#c0392b"}


def render_monitoring(summary: dict, matrix: pd.DataFrame, warnings: pd.DataFrame, path: Path) -> Path:
    """Write the page for a monitoring ``summary`` (see ``fedcredit.scoring.monitor.monitor``)."""
    body = "\n".join([_overview(summary), _migration(matrix), _csi_section(summary),
                      _warning_section(summary, warnings), _publications(summary)])
    return write_page("fedcredit — monitoring: NEW publication vs the previous one", body, path)


def _verdict(value: float, verdict: str) -> str:
    return f'<b>{value:.4f}</b> — <span class="{_VERDICT_CLASS[verdict]}">{_e(verdict)}</span>'


def _overview(s: dict) -> str:
    counts, n = s["warnings"], s["enterprises"]
    chips = " ".join(f'<span style="color:{_WARNING_COLOURS[w]};font-weight:600">{_e(w)} {counts[w]:,}</span>'
                     for w in ("red", "amber", "green"))
    t = s["thresholds"]
    rows = [("warnings", chips),
            ("score PSI (OLD scores as reference)", _verdict(s["psi"]["value"], s["psi"]["verdict"])),
            ("enterprises in both", f"{n['both']:,}"),
            ("only in OLD / only in NEW", f"{n['only_old']:,} / {n['only_new']:,}")]
    rules = (f"Rules ({s['policy']}): red when the grade falls {t['red_grade_drop']} or more, into the last grade, or "
             f"the new PD exceeds {t['red_pd']:g}; amber when it falls {t['amber_grade_drop']} or more; green otherwise. "
             f"PSI/CSI: stable below {t['psi_watch']:g}/{t['csi_watch']:g}, watch up to {t['psi_shifted']:g}/"
             f"{t['csi_shifted']:g}, shifted above.")
    notes = "".join(_note(line) for line in s["notes"])
    return _section("Summary", _kv(rows) + _note(rules) + notes)


def _warning_section(s: dict, warnings: pd.DataFrame) -> str:
    flagged = warnings[warnings["warning"] != "green"].copy()
    flagged["order"] = flagged["warning"].map({"red": 0, "amber": 1})
    shown = flagged.sort_values(["order", "uscc"]).head(SHOWN_WARNINGS).drop(columns="order")
    shown["reasons"] = shown["reasons"].str.replace(";", "; ")  # the page wraps them
    text = _note(f"{len(flagged):,} red or amber enterprises; the first {min(len(flagged), SHOWN_WARNINGS)} are shown, "
                 "all are in warnings.parquet with their reasons (rules that fired, then NEW's reason codes).")
    grid = _table(shown, {}, left=("uscc", "warning", "reasons")) if len(shown) else _note("no red or amber enterprise")
    listed = []
    for side in ("only_old", "only_new"):
        ids = s[side]
        if ids:
            more = f" and {len(ids) - LISTED:,} more (monitoring.json lists all)" if len(ids) > LISTED else ""
            where = "OLD only (no longer published)" if side == "only_old" else "NEW only (newly published)"
            listed.append(_note(f"{where}: {', '.join(ids[:LISTED])}{more}"))
    return _section("Early warnings", text + grid + "".join(listed), "warnings")


def _migration(matrix: pd.DataFrame) -> str:
    """Old grade (rows) × new grade (columns): the diagonal grey, downgrades red and upgrades green, darker for more."""
    counts = matrix.to_numpy()
    top = max(int(counts.max()), 1)
    head = "".join(f"<th>{_e(g)}</th>" for g in matrix.columns)
    rows = []
    for i, grade in enumerate(matrix.index):
        cells = []
        for j in range(len(matrix.columns)):
            v = int(counts[i, j])
            shade = 0.12 + 0.78 * np.sqrt(v / top) if v else 0.0
            rgb = (127, 140, 141) if i == j else (192, 57, 43) if j > i else (30, 132, 73)
            ink = "#fff" if shade > 0.55 else "#1c2833"
            cells.append(f'<td style="background:rgba({rgb[0]},{rgb[1]},{rgb[2]},{shade:.2f});color:{ink};'
                         f'text-align:center;min-width:64px">{v:,}</td>')
        rows.append(f"<tr><th>{_e(grade)}</th>{''.join(cells)}</tr>")
    table = (f'<table class="grid"><thead><tr><th>old \\ new</th>{head}</tr></thead>'
             f'<tbody>{"".join(rows)}</tbody></table>')
    down = int(np.triu(counts, 1).sum())
    up = int(np.tril(counts, -1).sum())
    note = _note(f"Rows: grade in OLD; columns: grade in NEW (best first). {down:,} enterprises downgraded (red, "
                 f"right of the diagonal), {up:,} upgraded (green), {int(np.trace(counts)):,} unchanged.")
    return _section("Grade migration", table + note, "migration")


def csi_figure(csi: dict, watch: float, shifted: float):
    """One horizontal bar per node feature (grouped by node), coloured by verdict, with the watch and shift lines."""
    labels, values, colours = [], [], []
    for role in sorted(csi):
        for label, doc in sorted(csi[role].items(), key=lambda kv: -kv[1]["csi"]):
            labels.append(feature_name(role, label))
            values.append(doc["csi"])
            colours.append(_VERDICT_COLOURS[doc["verdict"]])
    fig, ax = _figure(11.0, max(2.5, 0.24 * len(labels) + 1.2))
    y = np.arange(len(labels))
    ax.barh(y, values, color=colours, height=0.7)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    for x, name, style in ((watch, f"watch {watch:g}", "--"), (shifted, f"shifted {shifted:g}", "-")):
        ax.axvline(x, color="#566573", linestyle=style, linewidth=1)
        ax.annotate(name, (x, 1), xycoords=("data", "axes fraction"), xytext=(3, 3), textcoords="offset points",
                    fontsize=8, color="#566573")
    ax.set_xlim(0, max(max(values, default=0.0), shifted) * 1.12)
    ax.set(xlabel="CSI (previous publication's bin shares vs this run's, computed at each feature's node)")
    ax.grid(alpha=0.3, axis="x")
    return fig


def _csi_section(s: dict) -> str:
    csi, t = s["csi"], s["thresholds"]
    if not any(csi.values()):
        return _section("Feature stability (CSI)", _note("no per-feature CSI for NEW (see the notes above)"), "csi")
    worst = sorted(((doc["csi"], role, label) for role, feats in csi.items() for label, doc in feats.items()),
                   reverse=True)[:5]
    text = _note("Each node computed its features' CSI against its own bin shares of the previous publication; "
                 "only the index left the node. Most shifted: "
                 + "; ".join(f"{feature_name(role, label)} {value:.3f}" for value, role, label in worst))
    return _section("Feature stability (CSI)", text + _img(csi_figure(csi, t["csi_watch"], t["csi_shifted"]),
                                                          "CSI per node feature"), "csi")


def _publications(s: dict) -> str:
    rows = []
    for side in ("old", "new"):
        doc = s[side]
        chain = doc.get("publication") or {}
        rows.append((side.upper(), f"<code>{_e(doc['folder'])}</code> — {doc['rows']:,} rows, model "
                                   f"{_e(doc['model_version'])}, version {_e(chain.get('version', '–'))}, signer "
                                   f"<code>{_e(doc['signer'][:16])}</code>, rows digest <code>{_e(doc['digest'][:16])}"
                                   "</code>"))
    return _section("Publications compared", _kv(rows) + _note("Both signatures were verified before use."),
                    "publications")
