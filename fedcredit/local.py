"""Kept so that ``from fedcredit.local import run_job`` still works: the in-process engine now
lives in ``fedcredit.jobs.in_process`` (use that name in new code)."""

from fedcredit.jobs.in_process import run_job

__all__ = ["run_job"]
