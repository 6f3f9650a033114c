"""A node's daily budget: the jobs it accepted and the enterprises it scored or was asked about in online
queries, per UTC day, kept at the node.

The ledger is a small JSON file (a deployed node's in its work/state folder; a local run's
beside its policy file), rewritten atomically after each change, so a crash leaves the
previous count, never half a file. Entries are keyed by run id: a node that handles a
message again (after a crash, from its checkpoint) does not count the same job twice, and a
query is counted under its serving run by its query id (a serving run answering queries on a
day counts as one of that day's jobs). Only the last ``KEEP_DAYS`` days are kept.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

from fedcredit.common.atomic import atomic_write_json
from fedcredit.common.errors import FedCreditError
from fedcredit.governance.policy import NodePolicy, PolicyRefusal

FORMAT = "fedcredit-policy-ledger"
KEEP_DAYS = 31


class BudgetLedger:
    """``{"format", "days": {ISO day: {run id: {"scored": n, "queried": {query id: n}}}}}`` at ``path``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def _read(self) -> dict[str, dict[str, dict]]:
        if not self.path.exists():
            return {}
        try:
            doc = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            raise FedCreditError(f"{self.path}: the node's budget ledger cannot be read ({exc}); "
                                 "restore it or remove it to start counting afresh") from None
        days = doc.get("days") if isinstance(doc, dict) and doc.get("format") == FORMAT else None
        if not isinstance(days, dict) or not all(isinstance(v, dict) for v in days.values()):
            raise FedCreditError(f"{self.path}: not a {FORMAT} file")
        return days

    def _write(self, days: dict) -> None:
        kept = dict(sorted(days.items())[-KEEP_DAYS:])
        atomic_write_json(self.path, {"format": FORMAT, "days": kept})

    def used(self, today: date, run_id: str) -> tuple[int, int]:
        """(jobs, scored enterprises) of ``today`` other than run ``run_id``'s."""
        runs = {r: v for r, v in self._read().get(today.isoformat(), {}).items() if r != run_id}
        return len(runs), sum(int(v.get("scored", 0)) for v in runs.values())

    def admit_job(self, policy: NodePolicy, node: str, run_id: str, today: date) -> None:
        """``max_jobs_per_day``: refuse, or count this job for ``today``."""
        jobs, _ = self.used(today, run_id)
        if jobs >= policy.max_jobs_per_day:
            raise PolicyRefusal(node, "max_jobs_per_day", f"this node has taken part in {jobs} job(s) today (UTC "
                                                          f"{today.isoformat()}); it allows {policy.max_jobs_per_day}")
        self._record(today, run_id, None)

    def admit_scored(self, policy: NodePolicy, node: str, run_id: str, scored: int, today: date) -> None:
        """``max_scored_per_day``: refuse a scoring run over ``scored`` enterprises, or count them for ``today``."""
        _, used = self.used(today, run_id)
        if used + scored > policy.max_scored_per_day:
            raise PolicyRefusal(node, "max_scored_per_day", f"the job would score {scored} enterprises, {used} were "
                                                            f"scored today (UTC {today.isoformat()}); this node allows "
                                                            f"{policy.max_scored_per_day} per day")
        self._record(today, run_id, scored)

    def admit_queried(self, policy: NodePolicy, node: str, run_id: str, query_id: str, asked: int,
                      today: date) -> None:
        """``max_queries_per_day``: refuse an online query about ``asked`` enterprises, or count them for ``today``
        (under the serving run ``run_id`` and its ``query_id``: a query handled again is not counted twice)."""
        day = self._read().get(today.isoformat(), {})
        used = sum(int(n) for r, v in day.items() for q, n in (v.get("queried") or {}).items()
                   if (r, q) != (run_id, query_id))
        if used + asked > policy.max_queries_per_day:
            raise PolicyRefusal(node, "max_queries_per_day", f"the query asks about {asked} enterprise(s), {used} "
                                                             f"were queried today (UTC {today.isoformat()}); this node "
                                                             f"allows {policy.max_queries_per_day} per day")
        days = self._read()
        entry = days.setdefault(today.isoformat(), {}).setdefault(run_id, {"scored": 0})
        entry.setdefault("queried", {})[query_id] = int(asked)
        self._write(days)

    def _record(self, today: date, run_id: str, scored: int | None) -> None:
        days = self._read()
        entry = days.setdefault(today.isoformat(), {}).setdefault(run_id, {"scored": 0})
        if scored is not None:
            entry["scored"] = int(scored)
        self._write(days)
