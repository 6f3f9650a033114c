"""The coordinator's audit trail: every message it sends or receives, recorded at its end.

Wraps any scripted job coordinator without changing it: replies are recorded on
arrival, outgoing messages before they leave; the nodes' signed chain heads
(checkpoints) that come back with their reports are recorded too, and the
coordinator's own head goes out with the report request, so each side holds a
signed head of the other's log and a truncated log is detectable. A serving run's
coordinator (``QueryCoordinator``) is wrapped the same way; each query it asks is
recorded first (its id and the queried IDs), then its messages.
"""

from __future__ import annotations

from dataclasses import replace

from fedcredit.audit.log import AuditWriter
from fedcredit.protocols.job import REPORT, JobCoordinator
from fedcredit.common.wire import Message


class AuditedCoordinator:
    """``start``/``advance`` of ``inner``, with both directions recorded in ``writer``."""

    def __init__(self, inner: JobCoordinator, writer: AuditWriter):
        self.inner, self.writer = inner, writer
        self._identities_recorded = False

    def __getattr__(self, name):  # result, rounds, done, run_id ... of the wrapped coordinator
        return getattr(self.inner, name)

    def start(self) -> list[Message]:
        return self._send(self.inner.start())

    def advance(self, replies: list[Message]) -> list[Message]:
        for reply in replies:
            self.writer.record(reply, direction="received",
                               paillier_key=self.inner.paillier_fingerprint_for(reply.run_id))
        if not self._identities_recorded and self.inner.identities:
            self.writer.record_identities(self.inner.identities)
            self._identities_recorded = True
        out = self._send(self.inner.advance(replies))
        if self.inner.done and not self.writer.closed:
            self.writer.close()
        return out

    def submit(self, query_id: str, ids: list[str]) -> list[Message]:
        """A serving run's query (``QueryCoordinator.submit``): the IDs asked are recorded, then the messages."""
        out = self.inner.submit(query_id, ids)  # refuses malformed IDs before anything is recorded or sent
        asked = self.inner.query["ids"]
        self.writer.record_query(query_id, asked, ["asked"] * len(asked))
        return self._send(out)

    def finish(self) -> list[Message]:
        """A serving run's last round (``QueryCoordinator.finish``), with the coordinator's head for every node."""
        return self._send(self.inner.finish())

    def abort_messages(self, exc: BaseException) -> list[Message]:
        """The ``job.abort`` messages of a failed job, recorded as sent (``JobCoordinator.abort_messages``)."""
        return self._send(self.inner.abort_messages(exc))

    def close_aborted(self, exc: BaseException) -> None:
        """End the coordinator's log with the signed 'aborted' record: the step and the whole reason."""
        if not self.writer.closed:
            self.writer.abort(self.inner.rounds, str(exc) or type(exc).__name__)

    def record_final_head(self, head: dict) -> None:
        """A node's signed final log head, handed over by the transport beside its last reply."""
        party = head.get("party") if isinstance(head, dict) else None
        self.writer.record_checkpoint(head, public=self.inner.identities.get(party))

    def _send(self, messages: list[Message]) -> list[Message]:
        if any(m.kind == REPORT for m in messages):  # nodes record the coordinator's head with their report
            head = self.writer.checkpoint()
            messages = [replace(m, meta={**m.meta, "checkpoint": head}) if m.kind == REPORT else m for m in messages]
        for m in messages:
            self.writer.record(m, direction="sent", paillier_key=self.inner.paillier_fingerprint_for(m.run_id))
        return messages


def audited(coordinator: JobCoordinator, folder, identity) -> AuditedCoordinator:
    """``coordinator`` recording into ``folder/coordinator.jsonl`` with the coordinator's identity."""
    from pathlib import Path

    return AuditedCoordinator(coordinator, AuditWriter(Path(folder) / f"{identity.name}.jsonl", identity, coordinator.run_id))


def continued(coordinator: JobCoordinator, folder, identity, state: dict) -> AuditedCoordinator:
    """``coordinator`` (replayed to where a killed one stopped) continuing its log in ``folder`` from the
    writer ``state`` saved then (``AuditWriter.state``); a tail written after that state is cut."""
    from pathlib import Path

    from fedcredit.audit.log import AuditWriter

    writer = AuditWriter.resume(Path(folder) / f"{identity.name}.jsonl", identity, coordinator.run_id, state)
    wrapped = AuditedCoordinator(coordinator, writer)
    wrapped._identities_recorded = bool(coordinator.identities)  # recorded with the first replies, before the kill
    return wrapped
