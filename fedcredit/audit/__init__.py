"""Auditable exchange log: signed, hash-chained records of every message at both ends.

``AuditWriter`` writes one party's log for one run; ``verify_audit`` checks a run's logs
offline with public keys only; ``render_audit_report`` and ``export_parquet`` present
them. Schema and checks: docs/audit.md.
"""

from fedcredit.audit.classes import ALLOWED, protection_class
from fedcredit.audit.log import AuditError, AuditWriter
from fedcredit.audit.verify import AuditVerdict, export_parquet, verify_audit


def render_audit_report(folder, out_path, coordinator_key=None, *, min_key_bits: int = 2048):
    """Self-contained HTML report of a run's logs (see fedcredit.audit.report)."""
    from fedcredit.audit.report import render_audit_report as render

    return render(folder, out_path, coordinator_key, min_key_bits=min_key_bits)


__all__ = ["ALLOWED", "AuditError", "AuditVerdict", "AuditWriter", "export_parquet", "protection_class",
           "render_audit_report", "verify_audit"]
