"""A self-contained HTML page about a run's exchange logs: verdict, message flow, timeline.

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
from fedcredit.audit.log import AuditError
from fedcredit.audit.verify import audit_files, verify_audit
from fedcredit.common.wire import COORDINATOR

_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f3f3f3}td.n{text-align:right}.ok{color:#17692e;font-weight:bold}.bad{color:#b00020;font-weight:bold}
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


def _timeline_png(messages: list[dict], parties: list[str]) -> str | None:
    times = [(_time(r), r) for r in messages]
    times = [(t, r) for t, r in times if t is not None]
    if not times:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = min(t for t, _ in times)
    classes = sorted({r.get("protection", "?") for _, r in times})
    colors = dict(zip(classes, plt.get_cmap("tab10").colors))
    fig, ax = plt.subplots(figsize=(10, 0.6 * len(parties) + 1.8), dpi=100)
    rows = {p: i for i, p in enumerate(parties)}
    for cls in classes:
        for direction, marker in (("sent", ">"), ("received", "o")):
            pts = [((t - t0).total_seconds(), rows.get(r.get("party"), -1)) for t, r in times
                   if r.get("protection") == cls and r.get("direction") == direction]
            if pts:
                xs, ys = zip(*pts)
                ax.scatter(xs, ys, marker=marker, s=22, color=colors[cls], alpha=0.8,
                           label=f"{cls} ({direction})")
    ax.set_yticks(range(len(parties)), parties)
    ax.set_xlabel("seconds since the first record")
    ax.set_title("Messages recorded per party (▶ sent, ● received)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _table(head: list[str], rows: list[list], numeric=()) -> str:
    out = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for row in rows:
        out.append("<tr>" + "".join(
            f"<td class='n'>{html.escape(str(v))}</td>" if i in numeric else f"<td>{html.escape(str(v))}</td>"
            for i, v in enumerate(row)) + "</tr>")
    return "".join(out) + "</table>"


def render_audit_report(folder, out_path, coordinator_key=None) -> Path:
    """Write the HTML report for the logs in ``folder`` to ``out_path``; return its path."""
    try:
        verdict, problem = verify_audit(folder, coordinator_key), None
    except AuditError as exc:
        verdict, problem = None, str(exc)
    records = _records(folder)
    messages = [r for r in records if r.get("type") == "message"]
    parties = sorted({r.get("party") for r in records if isinstance(r.get("party"), str)},
                     key=lambda p: (p != COORDINATOR, p))
    run_id = next((r.get("run_id") for r in records if r.get("type") == "header"), "?")

    if verdict is not None:
        head = f"<p class='ok'>VERIFIED — {html.escape(verdict.summary())}</p>"
        if verdict.notes:
            head += "<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in verdict.notes) + "</ul>"
    else:
        head = f"<p class='bad'>FAILED — {html.escape(problem)}</p>"

    per_party = defaultdict(lambda: [0, 0, 0, 0])
    for r in messages:
        i = 0 if r.get("direction") == "sent" else 2
        per_party[r.get("party")][i] += 1
        per_party[r.get("party")][i + 1] += int(r.get("size") or 0)
    party_rows = [[p, *per_party[p], sum(1 for r in records if r.get("party") == p)] for p in parties]

    flow = defaultdict(lambda: {"n": 0, "bytes": 0, "ct": 0, "classes": set()})
    for r in messages:  # each transmission once: as its sender (or the relaying coordinator) recorded it sent
        if r.get("direction") != "sent":
            continue
        hop = f"{r.get('sender')}→{r.get('receiver')}"
        if r.get("relayed"):
            hop = f"{r.get('sender')}→coordinator" if r.get("party") == r.get("sender") else f"coordinator→{r.get('receiver')}"
        key = (str(r.get("message_run_id")), int(r.get("step") or 0), str(r.get("kind")), hop)
        f = flow[key]
        f["n"] += 1
        f["bytes"] += int(r.get("size") or 0)
        f["ct"] += int(r.get("ciphertexts") or 0)
        f["classes"].add(str(r.get("protection")))
    flow_rows = [[run, step, kind, hop, f["n"], f"{f['bytes']:,}", f["ct"], ", ".join(sorted(f["classes"]))]
                 for (run, step, kind, hop), f in sorted(flow.items())]

    by_class = defaultdict(lambda: [0, 0])
    for r in messages:
        if r.get("direction") == "sent" and r.get("party") == r.get("sender"):
            by_class[r.get("protection")][0] += 1
            by_class[r.get("protection")][1] += int(r.get("size") or 0)
    class_rows = [[c, n, f"{b:,}"] for c, (n, b) in sorted(by_class.items(), key=lambda kv: str(kv[0]))]

    png = _timeline_png(messages, parties)
    timeline = f"<img alt='timeline' src='{png}'>" if png else "<p>No timestamps to plot.</p>"
    body = f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>Audit report — run {html.escape(str(run_id))}</title>
<style>{_CSS}</style></head><body>
<h1>Exchange audit — run <code>{html.escape(str(run_id))}</code></h1>
<h2>Verdict</h2>{head}
<h2>Parties</h2>{_table(["party", "sent", "bytes sent", "received", "bytes received", "records"], party_rows, (1, 2, 3, 4, 5))}
<h2>Protection (messages as sent by their origin)</h2>{_table(["class", "messages", "bytes"], class_rows, (1, 2))}
<h2>Timeline</h2>{timeline}
<h2>Message flow per step</h2>
<p>Each transmission once, as its sender recorded it; relayed messages appear as two hops through the coordinator.</p>
{_table(["run", "step", "kind", "hop", "messages", "bytes", "ciphertexts", "protection"], flow_rows, (1, 4, 5, 6))}
<p>Generated by <code>fedcredit audit report</code> from {len(records)} records in {len(parties)} logs;
schema and checks: docs/audit.md.</p>
</body></html>"""
    out_path = Path(out_path)
    atomic_write_bytes(out_path, body.encode("utf-8"))
    return out_path
