"""A self-contained HTML page about a run's exchange logs: verdict, protection glossary, messages
per kind, timeline and flow per step, every message shown once end to end (fedcredit.audit.flow).

The page embeds its timeline as a PNG data URI and links nothing external, so it can be
mailed or archived as one file. It is rendered even when verification fails (the verdict
then names the problem) from whatever records can be parsed.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections import defaultdict
from datetime import datetime
from pathlib import Path

from fedcredit.common.atomic import atomic_write_bytes
from fedcredit.audit.flow import FAMILIES, OTHER, family, per_class, per_kind, per_step, transmissions
from fedcredit.audit.glossary import BASE_CLASSES, describe, generic
from fedcredit.audit.log import AuditError
from fedcredit.audit.verify import audit_files, verify_audit
from fedcredit.common.wire import COORDINATOR

_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f3f3f3}td.n{text-align:right}td:first-child{white-space:nowrap}.ok{color:#17692e;font-weight:bold}.bad{color:#b00020;font-weight:bold}
code{background:#f6f6f6;padding:0 3px}"""


def _records(folder) -> list[dict]:
    """Every parseable record of every log (tolerant: a damaged line is skipped, the verdict reports it)."""
    out = []
    for path in audit_files(folder):
        for line in path.read_bytes().split(b"\n"):
            try:
                rec = json.loads(line)
            except (ValueError, UnicodeDecodeError):
                continue
            if isinstance(rec, dict) and isinstance(rec.get("type"), str):
                out.append({**rec, "file": path.name})
    return out


def _time(rec) -> datetime | None:
    try:
        return datetime.fromisoformat(str(rec.get("time", "")).replace("Z", "+00:00"))
    except ValueError:
        return None


_FAMILY_COLOURS = {"job": "#7f8c8d", "psi": "#2471a3", "woe": "#d68910", "lr": "#c0392b", "sb": "#1e8449",
                   OTHER: "#8e44ad"}


def timeline_series(messages: list[dict]) -> dict[str, list[tuple[float, str]]]:
    """The timeline's series: one per protocol family, each ``[(seconds since the first record, party)]``.

    Every record of every party is a point (a relayed message shows at all four places);
    grouping by family rather than by class and direction keeps the plot to a handful of
    series that follow the job's phases.
    """
    timed = [(t, r) for r in messages if (t := _time(r)) is not None]
    if not timed:
        return {}
    t0 = min(t for t, _ in timed)
    out: dict[str, list] = {}
    for t, r in timed:
        out.setdefault(family(r.get("kind")), []).append(((t - t0).total_seconds(), str(r.get("party"))))
    return {f: out[f] for f in (*FAMILIES, OTHER) if f in out}


def _timeline_png(messages: list[dict], parties: list[str]) -> str | None:
    series = timeline_series(messages)
    if not series:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11.5, 0.55 * len(parties) + 1.9), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    rows = {p: i for i, p in enumerate(parties)}
    for name, points in series.items():
        xs = [x for x, _ in points]
        ys = [rows.get(p, -1) for _, p in points]
        ax.scatter(xs, ys, marker="|", s=260, linewidths=1.2, color=_FAMILY_COLOURS[name], alpha=0.6,
                   label=f"{FAMILIES.get(name, 'other kinds')} ({len(points):,} records)")
    ax.set_yticks(range(len(parties)), parties)
    ax.set_ylim(-0.6, len(parties) - 0.4)
    ax.set_xlabel("seconds since the first record")
    ax.set_title("Records per party over time, by protocol family (each tick: one message sent or received)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=len(series), frameon=False)
    ax.grid(axis="x", alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _table(head: list[str], rows: list[list], numeric=()) -> str:
    out = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for row in rows:
        out.append("<tr>" + "".join(
            f"<td class='n'>{html.escape(str(v))}</td>" if i in numeric else f"<td>{html.escape(str(v))}</td>"
            for i, v in enumerate(row)) + "</tr>")
    return "".join(out) + "</table>"


def _glossary(by_class: dict) -> str:
    """Every class the logs hold, with its counts and meaning; then the classes this run did not use."""
    rows = [[c, t.messages, f"{t.bytes:,}", describe(c)] for c, t in by_class.items()]
    used = {generic(c) for c in by_class}
    rows += [[c, 0, "0", describe(c)] for c in BASE_CLASSES if c not in used]
    return _table(["class", "messages", "bytes", "what it means"], rows, (1, 2))


def _kinds(by_kind: dict) -> str:
    rows = [[k, t.messages, f"{t.bytes:,}", t.ciphertexts, ", ".join(sorted(t.classes)), t.route_text()]
            for k, t in by_kind.items()]
    return _table(["kind", "messages", "bytes", "ciphertexts", "protection", "from → to"], rows, (1, 2, 3))


def _steps(by_step: dict) -> str:
    rows = [[run, step, kind, route, t.messages, f"{t.bytes:,}", t.ciphertexts, ", ".join(sorted(t.classes)),
             f"{t.legs_held} of {t.legs_expected}" + ("" if t.complete else " — missing")]
            for (run, step, kind, route), t in by_step.items()]
    return _table(["run", "step", "kind", "route (end to end)", "messages", "bytes", "ciphertexts", "protection",
                   "legs recorded"], rows, (1, 4, 5, 6))


def render_audit_report(folder, out_path, coordinator_key=None, *, min_key_bits: int = 2048) -> Path:
    """Write the HTML report for the logs in ``folder`` to ``out_path``; return its path.

    ``min_key_bits`` is the verifier's smallest accepted Paillier key (runs with 1024-bit
    test keys verify only with 1024).
    """
    try:
        verdict, problem = verify_audit(folder, coordinator_key, min_key_bits=min_key_bits), None
    except AuditError as exc:
        verdict, problem = None, str(exc)
    records = _records(folder)
    messages = [r for r in records if r.get("type") == "message"]
    parties = sorted({r.get("party") for r in records if isinstance(r.get("party"), str)},
                     key=lambda p: (p != COORDINATOR, p))
    run_id = next((r.get("run_id") for r in records if r.get("type") == "header"), "?")

    if verdict is None:
        head = f"<p class='bad'>FAILED — {html.escape(problem)}</p>"
    else:  # intact logs of an aborted run say ABORTED (the summary's first word), not verified
        ok = verdict.aborted is None
        head = f"<p class='{'ok' if ok else 'bad'}'>{'VERIFIED — ' if ok else ''}{html.escape(verdict.summary())}</p>"
        if verdict.notes:
            head += "<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in verdict.notes) + "</ul>"

    per_party = defaultdict(lambda: [0, 0, 0, 0])
    for r in messages:
        i = 0 if r.get("direction") == "sent" else 2
        per_party[r.get("party")][i] += 1
        per_party[r.get("party")][i + 1] += int(r.get("size") or 0)
    party_rows = [[p, per_party[p][0], f"{per_party[p][1]:,}", per_party[p][2], f"{per_party[p][3]:,}",
                   sum(1 for r in records if r.get("party") == p)] for p in parties]

    sent = transmissions(messages)
    relayed = sum(t.count for t in sent if t.relayed)
    png = _timeline_png(messages, parties)
    timeline = f"<img alt='timeline' src='{png}'>" if png else "<p>No timestamps to plot.</p>"
    body = f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>Audit report — run {html.escape(str(run_id))}</title>
<style>{_CSS}</style></head><body>
<h1>Exchange audit — run <code>{html.escape(str(run_id))}</code></h1>
<h2>Verdict</h2>{head}
<h2>Parties</h2>
<p>Records each party's log holds; a relayed message counts at its sender, twice at the coordinator and at its receiver.</p>
{_table(["party", "sent", "bytes sent", "received", "bytes received", "records"], party_rows, (1, 2, 3, 4, 5))}
<h2>Protection classes</h2>
<p>How each message's payload is protected, computed by the verifier from the message itself (never from what a
party claims). Counts: each message once, end to end.</p>
{_glossary(per_class(sent))}
<h2>Messages per kind</h2>
<p>Each message once, end to end: {sum(t.count for t in sent):,} messages, {relayed:,} of them node to node,
sealed by their sender and relayed by the coordinator (shown as sender → coordinator → receiver).</p>
{_kinds(per_kind(sent))}
<h2>Timeline</h2>{timeline}
<h2>Message flow per step</h2>
<p>Each message once, with its whole route. "Legs recorded" counts the records that hold it: 2 per direct message
(sender sent, receiver received), 4 per relayed one (plus the coordinator's received and sent).</p>
{_steps(per_step(sent))}
<p>Generated by <code>fedcredit audit report</code> from {len(records)} records in {len(parties)} logs;
schema and checks: docs/audit.md.</p>
</body></html>"""
    out_path = Path(out_path)
    atomic_write_bytes(out_path, body.encode("utf-8"))
    return out_path
