"""The reconciler's steps of job destruction: a job past its destruction time is destroyed.

A job may be given a time at which the hub destroys it (UWS's destruction
time, :meth:`JobService.set_destruction`). Each scan looks for jobs past it:
one still running is stopped first (its end wakes it again), an ended one is
archived: its results folder and log are deleted, its record is kept
(:meth:`JobService.archive`).
"""

from __future__ import annotations

from ..orm import Job, utcnow
from .service import JobService


class DestructionSteps:
    kind = "destruction"

    def __init__(self, jobs: JobService):
        self.jobs = jobs

    def unfinished(self) -> list[int]:
        return self.jobs.due_for_destruction()

    async def reconcile(self, job_id: int) -> None:
        job = Job.find(self.jobs.db, job_id)
        if job is None or job.archived_at is not None or job.destroy_at is None or job.destroy_at > utcnow():
            return
        await self.jobs.destroy(job, "hub")

    async def after_scan(self) -> None:
        pass
