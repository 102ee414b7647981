"""Pages: a reader's jobs (all of them, in pages, not only a workspace's last 20) and
one job in detail (its times, resources, where it ran, its reason, and its log for
its owner and admins).

Like the other pages they render the REST API's models (``GET /hub/api/jobs``
pages the same way, with ``offset`` and ``limit``) and act through the API.
"""

from __future__ import annotations

from datetime import timedelta

from tornado import web

from .. import access
from ..apihandlers.base import parse_id
from ..errors import BadRequest, NotFound
from ..jobs.limits import memory_bytes, time_limit_seconds
from ..models import job_model
from ..orm import Job, utcnow
from ..quotas.limits import fmt_bytes
from ..scopes import LAUNCH_JOBS, READ_WORKSPACES, requires
from ..states import JobStatus
from ..workspaces.listing import owned_by
from .pages import ADMIN_PAGE_ROWS, UWSPageHandler


class JobsPageHandler(UWSPageHandler):
    """``/hub/jobs``: the jobs of the reader's workspaces, newest first, in pages
    (``?all=1``: every job the reader may see, in shared workspaces too, and an admin
    everyone's; ``?status=``, ``?owner=``, ``?workspace=``)."""

    @web.authenticated
    @requires(READ_WORKSPACES)
    async def get(self):
        user = self.current_user
        everyone = self.argument("all") == "1"
        where = access.workspace_clause(self, READ_WORKSPACES, Job.owner_id, Job.workspace_id)
        if not everyone:
            where = where & (Job.owner_id == user.id)
        workspace = self.argument("workspace")
        if workspace:
            where = where & (Job.workspace_id == parse_id(workspace, "workspace"))
        owner = self.argument("owner")
        if owner:
            where = where & owned_by(Job.owner_id, owner)
        status = self.argument("status")
        statuses = [s.value for s in JobStatus]
        if status:
            if status not in statuses:
                raise BadRequest(f"Unknown status {status!r}; one of {statuses}")
            where = where & (Job.status == status)
        jobs = self.uws.jobs
        paging = self.paging(jobs.count(where), rows=ADMIN_PAGE_ROWS)
        await self.render_page(
            "jobs.html",
            # the API's model names the workspace by its slug; people know it by its name
            jobs=[
                {**job_model(job), "workspace_name": job.workspace.name}
                for job in jobs.page(where, paging["offset"], paging["rows"])
            ],
            everyone=everyone,
            owner=owner or "",
            workspace=workspace or "",
            status=status or "",
            statuses=statuses,
            paging=paging,
        )


class JobPageHandler(UWSPageHandler):
    """``/hub/jobs/<id>``: one job, for whoever may read its workspace."""

    @web.authenticated
    @requires(READ_WORKSPACES)
    async def get(self, job_id):
        last_event_id = self.last_event_id()
        job = Job.find(self.db, parse_id(job_id, "job"))
        if job is None or not access.may_workspace(self, READ_WORKSPACES, job.workspace):
            raise NotFound(f"No such job: {job_id}")
        model = job_model(job)
        job_type = self.uws.job_types.get(job.job_type)
        limit = self.uws.jobs.time_limit_seconds(job)
        elapsed = remaining = None
        if job.running_at is not None:
            elapsed = (job.finished_at or job.stopping_at or utcnow()) - job.running_at
            if limit and not job.terminal:
                remaining = max(timedelta(0), timedelta(seconds=limit) - elapsed)
        await self.render_page(
            "job.html",
            job=model,
            last_event_id=last_event_id,
            workspace_name=job.workspace.name,
            # a batch job's parameters as its launch form names them (a job type since
            # removed from the configuration: by their names)
            parameter_labels={} if job_type is None else {n: s.shown_label(n) for n, s in job_type.parameters.items()},
            elapsed=_duration(elapsed),
            remaining=_duration(remaining),
            time_limit=_duration(timedelta(seconds=limit)) if limit else None,
            resources=resources_in_words(job.resources or {}),
            can_stop=access.may_workspace(self, LAUNCH_JOBS, job.workspace),
            can_read_output=access.may_read_job_output(self, job),
        )


def _duration(span: timedelta | None) -> str | None:
    """``2 h 05 min``, ``3 min 12 s``, ``12 s``."""
    if span is None:
        return None
    seconds = int(span.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {seconds:02d} s"
    return f"{seconds} s"


def resources_in_words(resources: dict[str, object]) -> list[tuple[str, str]]:
    """What a job asked for, as (label, words) for pages: ``("Memory", "1 GiB")`` for
    ``memory: "1G"``, ``("CPUs", "2 CPUs")``, ``("Time limit", "3 h 00 min")`` for
    ``"3:00:00"``; SLURM's notation is for sbatch, not for the people reading the page.
    A value that does not parse (an old job's) is shown as it was asked."""
    shown = []
    for name, value in resources.items():
        label = {"cpus": "CPUs", "gpus": "GPUs"}.get(name) or name.replace("_", " ").capitalize()
        words = str(value)
        try:
            if name == "memory":
                words = fmt_bytes(memory_bytes(str(value)), exact=True)
            elif name == "time_limit":
                words = _duration(timedelta(seconds=time_limit_seconds(str(value)))) or words
            elif name in ("cpus", "gpus"):
                count = int(str(value))
                words = f"{count} {label[:-1] if count == 1 else label}"
        except ValueError:
            pass
        shown.append((label, words))
    return shown


default_handlers = [
    (r"/jobs", JobsPageHandler),
    (r"/jobs/([^/]+)", JobPageHandler),
]
