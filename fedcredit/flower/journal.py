"""The coordinator's journal: what a killed ServerApp needs to continue its job, bit for bit.

The job coordinator is a generator script (``fedcredit.protocols.script``), which cannot be
pickled. It needs no pickling: its state is a function of its settings, its Paillier
keys (its only randomness) and the replies it has received. So the journal keeps exactly
those, in ``OUT/journal/`` of the coordinator's output folder (a 0700 folder):

* ``run.json`` — the job's run id, the Flower run that started it (the nodes keep their
  state under that id), the settings, roles and task;
* ``paillier-*.json`` (0600) and their index ``keys.json`` — the private Paillier keys the
  coordinator generated, written before any message under them leaves;
* ``pending.bin`` (0600, replaced each round) — the round in flight: its number, every
  node's delivery number before it, the exact bytes of its messages and the state of the
  coordinator's audit writer after it recorded them;
* ``replies.bin`` (0600, append-only, fsync'd) — each round's replies and the nodes'
  final log heads, appended when the round's last reply has arrived; a torn last entry
  (killed mid-write) is ignored.

Resuming rebuilds the coordinator with the same keys and replays it through the
journaled replies (same key, same replies: same state), sends nothing while doing so,
and continues its audit log from the pending round's saved writer state (a tail written
after it is cut). The pending round then goes out again with its original bytes and
delivery numbers: a node that had completed it answers from its checkpoint. The whole
folder is deleted when the run ends, finished or failed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
from dataclasses import asdict
from pathlib import Path

from fedcredit.common.atomic import atomic_write_bytes
from fedcredit.common.errors import FedCreditError
from fedcredit.common.wire import join_messages, split_messages
from fedcredit.crypto import PaillierKeypair

FOLDER = "journal"
_FRAME = b"FCJ1"
_SIZES = struct.Struct(">IQ")  # header bytes, data bytes


def _frame(header: dict, data: bytes) -> bytes:
    head = json.dumps({**header, "sha256": hashlib.sha256(data).hexdigest()}, sort_keys=True).encode()
    return _FRAME + _SIZES.pack(len(head), len(data)) + head + data


def _frames(raw: bytes, what: Path) -> list[tuple[dict, bytes]]:
    """The complete frames of ``raw``; a torn last frame (killed mid-write) is left out."""
    out, pos = [], 0
    while pos < len(raw):
        start = pos + len(_FRAME) + _SIZES.size
        if raw[pos:pos + len(_FRAME)] != _FRAME:
            raise FedCreditError(f"coordinator journal {what} is damaged at byte {pos} (not a journal entry)")
        if start > len(raw):
            break
        hlen, dlen = _SIZES.unpack(raw[pos + len(_FRAME):start])
        if start + hlen + dlen > len(raw):
            break
        header = json.loads(raw[start:start + hlen])
        data = raw[start + hlen:start + hlen + dlen]
        if hashlib.sha256(data).hexdigest() != header.get("sha256"):
            raise FedCreditError(f"coordinator journal {what} is damaged at byte {pos} (an entry's digest differs)")
        out.append((header, data))
        pos = start + hlen + dlen
    return out


class CoordinatorJournal:
    """One job's journal in ``folder``; ``resume`` says whether this ServerApp continues it."""

    def __init__(self, folder: Path, flower_run: int | str | None = None, resume: bool = False, *,
                 index: Path | None = None, run_config: dict | None = None):
        self.folder = Path(folder)
        self.resume = resume
        # the coordinator's list of unfinished jobs (``STATE/unfinished/``): a restarted coordinator resumes them
        self.index, self.run_config = (Path(index) if index else None), dict(run_config or {})
        self.origin = str(flower_run) if flower_run is not None else None  # the nodes' name for the run
        self._keys: set[str] = set()
        exists = (self.folder / "run.json").exists()
        if resume and not exists:
            raise FedCreditError(f"nothing to resume: {self.folder} holds no unfinished job (no run.json)")
        if not resume and exists:
            raise FedCreditError(f"{self.folder.parent} holds an unfinished job (its coordinator stopped); resume it "
                                 "(fedcredit train --resume, or restart fedcredit coordinator start) or use another "
                                 "output folder")
        if resume:
            self.run = json.loads((self.folder / "run.json").read_text())
            self.origin = self.run.get("origin")

    # -- writing --------------------------------------------------------------------
    def begin(self, run_id: str, settings, roles: list[str], task: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.folder, 0o700)
        self.run = {"run_id": run_id, "origin": self.origin, "settings": asdict(settings), "roles": list(roles),
                    "task": task}
        (self.folder / "replies.bin").unlink(missing_ok=True)
        atomic_write_bytes(self.folder / "run.json", json.dumps(self.run, indent=1).encode(), mode=0o600)
        if self.index is not None:
            entry = {"out": str(self.folder.parent.resolve()), "run_id": run_id,
                     "run_config": {k: v for k, v in self.run_config.items() if k != "resume"}}
            atomic_write_bytes(self._entry(), json.dumps(entry, indent=1).encode(), mode=0o600)

    def _entry(self) -> Path:
        """One entry per output folder (a folder holds one unfinished job at most)."""
        return self.index / f"{hashlib.sha256(str(self.folder.parent.resolve()).encode()).hexdigest()[:16]}.json"

    def check(self, settings, roles: list[str], task: str) -> str:
        """The journaled job's run id, once its settings, roles and task are those of this submission."""
        now = {"settings": asdict(settings), "roles": list(roles), "task": task}
        for key, value in now.items():
            if json.loads(json.dumps(value)) != self.run.get(key):
                raise FedCreditError(f"cannot resume job {self.run.get('run_id')}: its {key} differ from this "
                                     f"submission's ({self.run.get(key)!r} journaled, {value!r} now)")
        return str(self.run["run_id"])

    def save_keys(self, keypairs: dict) -> None:
        """The coordinator's private keys (each 0600), before any message under a new one leaves."""
        if set(keypairs) == self._keys:
            return
        index = {}
        for run_id, kp in keypairs.items():
            index[run_id] = f"paillier-{hashlib.sha256(run_id.encode()).hexdigest()[:16]}.json"
            kp.save(self.folder / index[run_id])
        atomic_write_bytes(self.folder / "keys.json", json.dumps(index).encode(), mode=0o600)
        self._keys = set(keypairs)

    def keypairs(self) -> dict:
        path = self.folder / "keys.json"
        index = json.loads(path.read_text()) if path.exists() else {}
        self._keys = set(index)
        return {run_id: PaillierKeypair.load(self.folder / name) for run_id, name in index.items()}

    def write_pending(self, round_no: int, seqs: dict[str, int], messages, audit_state: dict | None) -> None:
        data, sizes = join_messages(messages)
        header = {"round": round_no, "seqs": seqs, "sizes": sizes, "audit": audit_state}
        atomic_write_bytes(self.folder / "pending.bin", _frame(header, data), mode=0o600)

    def append_replies(self, round_no: int, messages, heads: list[dict]) -> None:
        data, sizes = join_messages(messages)
        fd = os.open(self.folder / "replies.bin", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, _frame({"round": round_no, "sizes": sizes, "heads": heads}, data))
            os.fsync(fd)
        finally:
            os.close(fd)

    def finish(self) -> None:
        """The run ended (finished or failed): the journal, with the coordinator's private keys, goes."""
        shutil.rmtree(self.folder, ignore_errors=True)
        if self.index is not None:
            self._entry().unlink(missing_ok=True)

    # -- reading --------------------------------------------------------------------
    def pending(self) -> tuple[int, dict[str, int], list, dict | None]:
        frames = _frames((self.folder / "pending.bin").read_bytes(), self.folder / "pending.bin")
        if len(frames) != 1:
            raise FedCreditError(f"{self.folder / 'pending.bin'} is incomplete; the job cannot be resumed")
        header, data = frames[0]
        return int(header["round"]), dict(header["seqs"]), split_messages(data, header["sizes"]), header["audit"]

    def replies(self) -> list[tuple[list, list[dict]]]:
        path = self.folder / "replies.bin"
        frames = _frames(path.read_bytes(), path) if path.exists() else []
        for i, (header, _) in enumerate(frames, 1):
            if header.get("round") != i:
                raise FedCreditError(f"{path}: entry {i} is for round {header.get('round')}; the journal is damaged")
        return [(split_messages(data, header["sizes"]), list(header["heads"])) for header, data in frames]

    # -- resuming -------------------------------------------------------------------
    def replay(self, make, audit=None):
        """The coordinator rebuilt by ``make(run_id, keypairs)`` and replayed through the journaled replies up
        to the pending round, sending nothing; with ``audit`` (folder, identity) its log continues from
        the pending round's saved state.

        Returns (coordinator, the pending round's original messages, every node's delivery number
        before that round by role, that round's journaled replies or None), or None when no round
        had gone out yet (the job then starts afresh under its journaled run id).
        """
        from fedcredit.protocols import continued

        run_id = str(self.run["run_id"])
        if not (self.folder / "pending.bin").exists():
            if audit is not None:  # only its header can be there: nothing had been sent
                (Path(audit[0]) / f"{audit[1].name}.jsonl").unlink(missing_ok=True)
            return None
        round_no, seqs, outgoing, audit_state = self.pending()
        entries = self.replies()
        if not round_no - 1 <= len(entries) <= round_no:
            raise FedCreditError(f"coordinator journal {self.folder}: {len(entries)} rounds of replies, but round "
                                 f"{round_no} was pending; the job cannot be resumed")
        inner = make(run_id, self.keypairs())
        shown, inner.on_event = inner.on_event, (lambda kind, info: None)  # the replay shows nothing again
        try:
            inner.start()
            for messages, _heads in entries[:round_no - 1]:
                inner.advance(messages)
        finally:
            inner.on_event = shown
        coordinator = inner
        if audit is not None:
            if audit_state is None:
                raise FedCreditError(f"coordinator journal {self.folder} holds no audit state; it cannot continue "
                                     "the coordinator's audit log")
            coordinator = continued(inner, audit[0], audit[1], audit_state)
        return coordinator, outgoing, seqs, entries[round_no - 1] if len(entries) == round_no else None


def unfinished(index: Path) -> list[dict]:
    """The unfinished jobs a coordinator's state folder lists (``out``, ``run_id``, ``run_config``), oldest first;
    an entry whose journal is gone (the job ended meanwhile) is dropped."""
    found = []
    for path in sorted(Path(index).glob("*.json"), key=lambda p: p.stat().st_mtime):
        entry = json.loads(path.read_text())
        if (Path(entry["out"]) / FOLDER / "run.json").exists():
            found.append(entry)
        else:
            path.unlink(missing_ok=True)
    return found
