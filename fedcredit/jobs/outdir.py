"""A local run's output folder: nothing half-written, whatever fails.

A run writes into a staging folder inside ``--out`` and moves its outputs into place
only when it has finished. A run that fails before any message leaves ``--out`` as it
was, apart from ``status.json`` (ok: false and the error). One that fails after messages
flowed keeps only its audit logs, each closed with a signed "aborted" record, and the
coordinator's public key to verify them; no model part, score, limit, private key or node
state of a failed run remains. A folder that holds something other than a fedcredit run
is refused before anything starts, so a run never mixes its files with someone else's.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from pathlib import Path

from fedcredit.audit.verify import verify_command
from fedcredit.common.atomic import atomic_write_json
from fedcredit.common.errors import FedCreditError

STATUS = "status.json"
# everything a run writes into --out (a new run replaces all of it; other files are left alone)
OUTPUTS = ("metrics.json", "run.json", "scores.parquet", "report.html", "limits.parquet", "limits.csv",
           "limits.sig.json", "model", "audit", "work", "aborted", "monitor", STATUS)
KEYS = "keys"
PRIVATE_KEY, PUBLIC_KEY = "coordinator.key.json", "coordinator.pub.json"


def previous_run(out: Path, own: tuple[str, ...] = ()) -> str | None:
    """What ``out`` holds: None (new or empty), "finished" or "failed" (an earlier fedcredit run).

    Raises FedCreditError, before anything starts, when it holds anything else. ``own`` names
    entries the caller itself made for this run (the demo's ``data/``).
    """
    out = Path(out)
    if not out.exists():
        return None
    if not out.is_dir():
        raise FedCreditError(f"--out {out}: is a file; expected a directory for the run's outputs")
    entries = sorted(e.name for e in out.iterdir() if e.name not in own)
    if not entries:
        return None
    status = _json_dict(out / STATUS)
    if status is not None:
        return "finished" if status.get("ok") is True else "failed"
    if _json_dict(out / "run.json") is not None:  # a run from before status.json
        return "finished"
    shown = ", ".join(entries[:5]) + (", …" if len(entries) > 5 else "")
    raise FedCreditError(f"--out {out}: not empty and not a fedcredit run (it holds {shown}); expected a new or "
                         f"empty folder, or the folder of an earlier run (with its {STATUS} or run.json)")


def _json_dict(path: Path) -> dict | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def write_status(out: Path, doc: dict) -> None:
    """``status.json``: ok, the error if any, and when (every local run ends with one)."""
    Path(out).mkdir(parents=True, exist_ok=True)
    doc = {"ok": doc["ok"], "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **doc}
    atomic_write_json(Path(out) / STATUS, doc)


class Staging:
    """The folder a run writes into before its outputs are moved into ``out``."""

    def __init__(self, out: Path, run_id: str | None = None):
        self.out = Path(out)
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.dir = self.out / f".staging-{self.run_id}"

    def keys(self) -> Path:
        """Where the coordinator's signing identity lives: the folder's own when it has one (every run of a
        folder is signed by the same key), else a new one staged with this run."""
        kept = self.out / KEYS
        return kept if (kept / PRIVATE_KEY).is_file() else self.dir / KEYS

    def start(self) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        self.dir.mkdir()
        return self.dir

    def commit(self) -> None:
        """The run finished: its outputs replace the previous run's, node state is dropped."""
        shutil.rmtree(self.dir / "work", ignore_errors=True)
        for name in OUTPUTS:
            _remove(self.out / name)
        for entry in self.dir.iterdir():
            target = self.out / entry.name
            if entry.name == KEYS:
                target.mkdir(exist_ok=True)
                for f in entry.iterdir():
                    f.replace(target / f.name)
                continue
            _remove(target)
            entry.replace(target)
        shutil.rmtree(self.dir)
        write_status(self.out, {"ok": True, "run_id": self.run_id})

    def fail(self, exc: BaseException, finished_before: bool, key_bits: int) -> dict:
        """The run failed: keep its audit logs (closed as aborted by the engine) when messages flowed, drop the
        rest, write ``status.json``; returns the status written. A finished run already in ``out`` stays
        whole: the failed run's logs then go to ``out/aborted/<run id>/``."""
        audit = self.dir / "audit"
        flowed = audit.is_dir() and any(p.stat().st_size for p in audit.glob("*.jsonl"))
        status = {"ok": False, "run_id": self.run_id, "error": str(exc) or type(exc).__name__}
        if flowed:
            home = self.out / "aborted" / self.run_id if finished_before else self.out
            if not finished_before:
                for name in OUTPUTS:
                    _remove(self.out / name)
            home.mkdir(parents=True, exist_ok=True)
            audit.replace(home / "audit")
            public = self.keys() / PUBLIC_KEY
            if public.is_file() and public.parent.parent == self.dir:  # a key made by this run: keep only its public half
                (home / KEYS).mkdir(exist_ok=True)
                public.replace(home / KEYS / PUBLIC_KEY)
                public = home / KEYS / PUBLIC_KEY
            status.update(audit=str(home / "audit"),
                          verify=verify_command(home, key_bits, public))
        shutil.rmtree(self.dir, ignore_errors=True)
        write_status(self.out, status)
        return status


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
