"""The auditor's HTML report: a glossary of every class, each message once end to end, a readable timeline."""

from __future__ import annotations

import json
import re
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest

from fedcredit.audit import classes, render_audit_report
from fedcredit.audit.classes import _KINDS
from fedcredit.audit.glossary import BASE_CLASSES, describe, generic
from fedcredit.audit.report import timeline_series
from fedcredit.common.wire import COORDINATOR

from test_audit_log import _copy, build_run


class _Tables(HTMLParser):
    """Each ``<table>`` after an ``<h2>`` as rows of cell texts, keyed by the heading."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._heading, self._in_h2, self._cell = "", False, None

    def handle_starttag(self, tag, attrs):
        if tag == "h2":
            self._in_h2, self._heading = True, ""
        elif tag == "table":
            self.tables[self._heading] = []
        elif tag == "tr":
            self.tables[self._heading].append([])
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag == "h2":
            self._in_h2 = False
        elif tag in ("td", "th"):
            self.tables[self._heading][-1].append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._in_h2:
            self._heading += data
        elif self._cell is not None:
            self._cell += data


def _tables(path: Path) -> dict[str, list[dict[str, str]]]:
    parser = _Tables()
    parser.feed(path.read_text("utf-8"))
    return {h: [dict(zip(rows[0], r)) for r in rows[1:]] for h, rows in parser.tables.items()}


def _records(folder: Path) -> list[dict]:
    return [json.loads(line) for p in sorted((folder / "audit").glob("*.jsonl")) for line in p.read_text().splitlines()]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_run(tmp_path_factory.mktemp("auditreport"))


@pytest.fixture(scope="module")
def page(built, tmp_path_factory) -> Path:
    return render_audit_report(built.folder, tmp_path_factory.mktemp("page") / "audit.html", built.ids[COORDINATOR].public)


def test_every_class_the_verifier_can_compute_is_explained():
    constants = {v for k, v in vars(classes).items() if k.isupper() and isinstance(v, str)}
    computed = constants | {classes.paillier(2048), classes.paillier(2048, masked=True),
                            classes.paillier(2048, backend="mock")}
    assert {generic(c) for c in computed} <= set(BASE_CLASSES)
    for c in [*BASE_CLASSES, "paillier-3072", "paillier-1024+masked", "mock-paillier-2048"]:
        assert "Unknown class" not in describe(c), c
    assert "Unknown class" in describe("rot13")
    assert "3072-bit" in describe("paillier-3072") and "masks" in describe("paillier-2048+masked")


def test_glossary_lists_each_class_present_with_its_count(built, page):
    records = _records(built.folder)
    origin = Counter(r["protection"] for r in records
                     if r["type"] == "message" and r["direction"] == "sent" and r["party"] == r["sender"])
    glossary = {row["class"]: row for row in _tables(page)["Protection classes"]}
    assert set(origin) <= set(glossary)
    for cls, n in origin.items():
        assert int(glossary[cls]["messages"]) == n, cls
        assert glossary[cls]["what it means"] == describe(cls)
    assert glossary["plaintext"]["messages"] == "0"  # classes not used are still explained


def test_messages_per_kind_come_before_the_steps_and_count_every_message_once(built, page):
    text = page.read_text("utf-8")
    assert text.index("<h2>Messages per kind</h2>") < text.index("<h2>Message flow per step</h2>")
    records = [r for r in _records(built.folder) if r["type"] == "message"]
    sent = Counter(r["kind"] for r in records if r["direction"] == "sent" and r["party"] == r["sender"])
    size = Counter()
    for r in records:
        if r["direction"] == "sent" and r["party"] == r["sender"]:
            size[r["kind"]] += r["size"]
    rows = {row["kind"]: row for row in _tables(page)["Messages per kind"]}
    assert set(rows) == set(sent)
    for kind, n in sent.items():
        assert int(rows[kind]["messages"]) == n, kind
        assert int(rows[kind]["bytes"].replace(",", "")) == size[kind], kind
    assert rows["lr.labels"]["from → to"] == "bank → coordinator → tax, utilities"
    assert rows["lr.labels"]["protection"] == "x25519-aesgcm"
    assert rows["job.hello"]["from → to"] == "coordinator → bank, tax, utilities"
    assert rows["lr.gradient"]["from → to"] == "bank, tax, utilities → coordinator"


def test_relayed_messages_show_sender_to_receiver_with_all_four_legs(page):
    steps = _tables(page)["Message flow per step"]
    labels = [r for r in steps if r["kind"] == "lr.labels"]
    assert {r["route (end to end)"] for r in labels} == {"bank → coordinator → tax", "bank → coordinator → utilities"}
    assert {r["legs recorded"] for r in labels} == {"4 of 4"}
    direct = next(r for r in steps if r["kind"] == "lr.share" and r["route (end to end)"].startswith("bank"))
    assert direct["route (end to end)"] == "bank → coordinator" and direct["legs recorded"] == "2 of 2"
    assert not any(r["route (end to end)"].endswith("→ coordinator") and r["kind"] == "psi.blind" for r in steps)


def test_a_missing_relay_leg_is_named(built, tmp_path):
    folder = _copy(built, tmp_path / "cut")
    log = folder / "audit" / f"{COORDINATOR}.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    i = next(i for i, line in enumerate(lines) if '"kind":"lr.labels"' in line and '"direction":"received"' in line)
    log.write_text("".join(lines[:i] + lines[i + 1:]))
    out = render_audit_report(folder, tmp_path / "cut.html")
    assert "FAILED" in out.read_text("utf-8")
    legs = {r["legs recorded"] for r in _tables(out)["Message flow per step"] if r["kind"] == "lr.labels"}
    assert legs == {"4 of 4", "3 of 4 — missing"}


def test_the_timeline_has_one_series_per_protocol_family():
    records = [{"kind": kind, "party": party, "direction": direction, "time": f"2024-05-01T10:00:{i % 60:02d}.000000Z"}
               for i, kind in enumerate(_KINDS) for party, direction in (("bank", "sent"), (COORDINATOR, "received"))]
    series = timeline_series(records)
    assert 1 < len(series) <= 7
    assert set(series) == {"job", "psi", "woe", "lr", "sb", "query"}
    assert sum(len(points) for points in series.values()) == len(records)
    assert all(0 <= x <= 59 for points in series.values() for x, _ in points)


def test_the_page_embeds_the_timeline_and_stays_self_contained(page):
    text = page.read_text("utf-8")
    assert re.search(r"<img alt='timeline' src='data:image/png;base64,[A-Za-z0-9+/=]{500,}'>", text)
    assert "src='http" not in text and 'src="http' not in text and "<script" not in text


def test_an_aborted_run_reads_aborted_not_verified(tmp_path):
    run = build_run(tmp_path / "aborted", finish=False)
    for role in ("bank", "tax", "utilities"):
        run.writers[role].abort(7, "node stopped")
    run.writers[COORDINATOR].abort(7, "a node failed")
    out = render_audit_report(run.folder, tmp_path / "aborted.html", run.ids[COORDINATOR].public)
    text = out.read_text("utf-8")
    assert "ABORTED: run run-audit-1 aborted at step 7" in text and "VERIFIED" not in text
    from typer.testing import CliRunner

    from fedcredit.cli.audit import audit_app

    result = CliRunner().invoke(audit_app, ["report", str(run.folder), "--out", str(tmp_path / "cli.html")])
    assert result.exit_code == 1 and "ABORTED" in result.output and (tmp_path / "cli.html").exists()
