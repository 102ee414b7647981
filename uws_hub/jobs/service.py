"""Jobs: what a launch or a stop request does, and the one way a status changes.

Requests only record what the user wants: a launch creates the job
(``pending``, target ``running``), a stop sets the target to ``stopped``
(status ``stopping``); both return at once and wake the reconciler
(:mod:`uws_hub.reconciler`), which makes it so. Every status change goes
through :meth:`JobService.transition`: checked against the transition table,
timestamped, mirrored in the workspace's status, and stored as an event; a
job that ends there has its server's tokens revoked.

A job's reason is a line for everyone who may read the job. What the job's
server printed is not part of it: it can hold secrets (a kernel that prints
its environment prints the server's token), so it is read only by the job's
owner and admins (:meth:`JobService.output`), with credentials redacted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import stat
from collections.abc import Callable
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..accounts.system import SystemAccounts
from ..errors import Conflict, TooManyRequests
from ..events.bus import EventBus, transient_event
from ..metrics import JOB_LAUNCH_DURATION_SECONDS
from ..orm import Job, Workspace, utcnow
from ..redaction import redact
from ..spawners.mixins import WorkspaceLaunch
from ..states import ACTIVE_JOB_STATUSES, JobStatus, JobTarget, WorkspaceStatus, check_job_transition
from ..workspaces.service import WorkspaceService
from .launch import LaunchRequest
from .servers import ServerControl
from .types import JobType, pick

_TIMESTAMPS = {
    JobStatus.queued: "queued_at",
    JobStatus.running: "running_at",
    JobStatus.stopping: "stopping_at",
    JobStatus.completed: "finished_at",
    JobStatus.failed: "finished_at",
    JobStatus.cancelled: "finished_at",
}


#: how much of the end of a job's output its owner can read
OUTPUT_TAIL_BYTES = 16 * 1024


def tail(path: str, max_bytes: int) -> str:
    """The last lines of a job's output file ('' if there is none, or it is not a regular file).

    Opened without following a symlink and without blocking: in single-account
    mode a job runs as the hub's account and could swap its file for a link
    or a FIFO.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return ""
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - max_bytes))
        text = f.read().decode("utf-8", "replace")
    if size > max_bytes:
        text = text.split("\n", 1)[-1]
    return text.strip()


class JobService:
    def __init__(
        self,
        db: Session,
        servers: ServerControl,
        workspaces: WorkspaceService,
        accounts: SystemAccounts,
        job_types: dict[str, JobType],
        events: EventBus,
        log: logging.Logger,
        *,
        job_log_dir: str,
        wake: Callable[[int], None],
        launch_checks: list[Callable[[LaunchRequest], None]],
        job_env: Callable[[dict[str, str]], dict[str, str]],
        active_server_limit: int = 0,
        retry_after_seconds: tuple[float, float] = (30, 60),
    ):
        self.db = db
        self.servers = servers
        self.workspaces = workspaces
        self.accounts = accounts
        self.job_types = job_types
        self.events = events
        self.log = log
        self.job_log_dir = job_log_dir
        #: JupyterHub's ``active_server_limit`` (0: none), and its ``spawn_throttle_retry_range``
        self.active_server_limit = active_server_limit
        self.retry_after_seconds = retry_after_seconds
        #: called with a job id whenever the job needs the reconciler's attention
        self.wake = wake
        #: rules a launch must pass (quotas, per-type limits): each is called with a
        #: :class:`LaunchRequest` and raises a UWSError (a 4xx) to refuse it. They run
        #: when the launch is asked for and again right before the server starts,
        #: so a launch that became over quota while it waited is refused too.
        self.launch_checks = launch_checks
        #: a job's environment from its job type's ``env`` (with the configuration of
        #: jobs' Jupyter servers, see uws_hub.serverconfig)
        self.job_env = job_env

    # ---------------------------------------------------------------- status
    def transition(
        self, job: Job, new: JobStatus, reason: str | None = None, actor: str = "hub", *, node: str | None = None
    ) -> None:
        """The only way a job's status changes: checked, timestamped, stored as an event.

        A job that starts running gets its URL through the proxy and ``node``
        (the host its resource put it on, if it says) stored.
        """
        previous = job.status
        new = check_job_transition(previous, new)
        job.status = new.value
        if new in _TIMESTAMPS:
            setattr(job, _TIMESTAMPS[new], utcnow())
        if reason is not None or new == JobStatus.running:
            # a running job has no reason; a queue's note (e.g. SLURM's pending reason) ends here
            job.reason = reason
        if new == JobStatus.running:
            job.url = self.url_of(job)
            job.node = node
        if new == JobStatus.running and job.created_at is not None and job.running_at is not None:
            JOB_LAUNCH_DURATION_SECONDS.labels(resource=job.resource).observe(
                (job.running_at - job.created_at).total_seconds()
            )
        if new.terminal:
            job.target = JobTarget.stopped.value
            job.url = job.node = None
            # every end of a job passes here: whatever printed or leaked the
            # server's tokens, they open nothing any more
            self.servers.revoke_tokens(job.owner, job.server_name)
            ws = job.workspace
            if ws.status == WorkspaceStatus.active.value and Job.active_in(self.db, ws.id) in (None, job):
                self.workspaces.set_status(ws, WorkspaceStatus.idle, actor=actor)
        self._record(job, previous, reason, actor)
        self.log.info(
            "Job %s (%s in workspace %s): %s -> %s%s",
            job.id,
            job.job_type,
            job.workspace_id,
            previous,
            new.value,
            f" ({reason})" if reason else "",
        )

    def _record(self, job: Job, previous: str | None, reason: str | None, actor: str) -> None:
        data: dict[str, Any] = {"job_type": job.job_type, "resource": job.resource}
        if job.status == JobStatus.running.value:
            data["url"] = job.url
        self.events.change(
            self.db,
            "job",
            owner_id=job.owner_id,
            workspace_id=job.workspace_id,
            job_id=job.id,
            actor=actor,
            status=job.status,
            previous=previous,
            reason=reason,
            data=data,
        )

    def progress(self, job: Job, event: dict[str, Any]) -> None:
        """Publish one of JupyterHub's spawn-progress messages.

        Progress messages are not state changes: they are published to live
        subscribers only, without an id, and not stored (a busy hub would
        otherwise write two more rows per launch).
        """
        self.events.publish(
            transient_event(
                kind="progress",
                owner_id=job.owner_id,
                workspace_id=job.workspace_id,
                job_id=job.id,
                status=job.status,
                data={k: event[k] for k in ("progress", "message") if k in event},
            )
        )

    # ---------------------------------------------------------------- queries
    def count(self, where: ColumnElement[bool]) -> int:
        return self.db.scalar(select(func.count(Job.id)).where(where)) or 0

    def page(self, where: ColumnElement[bool], offset: int, limit: int) -> list[Job]:
        return list(self.db.scalars(select(Job).where(where).order_by(Job.id.desc()).offset(offset).limit(limit)))

    def active_jobs(self, workspace_ids: list[int]) -> dict[int, Job]:
        """The unfinished job of each of these workspaces (one query for a page of them)."""
        if not workspace_ids:
            return {}
        rows = self.db.scalars(
            select(Job).where(
                Job.workspace_id.in_(workspace_ids),
                Job.status.in_([s.value for s in ACTIVE_JOB_STATUSES]),
            )
        )
        return {job.workspace_id: job for job in rows}

    def latest_jobs(self, workspace_ids: list[int]) -> dict[int, Job]:
        """The most recent job of each of these workspaces, running or ended (one query)."""
        if not workspace_ids:
            return {}
        latest = select(func.max(Job.id)).where(Job.workspace_id.in_(workspace_ids)).group_by(Job.workspace_id)
        return {job.workspace_id: job for job in self.db.scalars(select(Job).where(Job.id.in_(latest)))}

    def url_of(self, job: Job) -> str:
        """Where the job's server answers through the proxy once it runs."""
        job_type = self.job_types.get(job.job_type)
        default_url = job_type.default_url.lstrip("/") if job_type is not None else ""
        return self.servers.user(job.owner).server_url(job.server_name) + default_url

    def time_limit_seconds(self, job: Job) -> float:
        job_type = self.job_types.get(job.job_type)
        return job_type.time_limit_seconds if job_type else 0

    def launch_request(self, job: Job) -> LaunchRequest:
        return LaunchRequest(job.workspace, self.job_types[job.job_type], job.resource, dict(job.resources), job)

    def launch_for(self, job: Job) -> WorkspaceLaunch:
        """What the spawner needs to run ``job`` (command, directory, account, env)."""
        ws = job.workspace
        job_type = self.job_types[job.job_type]
        system_user = self.accounts.system_user(ws.owner.name)
        as_root = system_user is None and os.geteuid() == 0
        os.makedirs(self.job_log_dir, mode=0o700, exist_ok=True)
        home = None
        if system_user is None:
            home = os.path.join(self.workspaces.storage.root, ws.owner.name, ".home")
            os.makedirs(home, mode=0o700, exist_ok=True)
        return WorkspaceLaunch(
            job_id=job.id,
            workspace_id=ws.id,
            directory=ws.directory,
            cmd=job_type.cmd + (job_type.args_as_root if as_root else []),
            default_url=job_type.default_url,
            env=self.job_env(job_type.env),
            resources=dict(job.resources),
            system_user=system_user,
            home=home,
            log_path=self.log_path(job),
        )

    def log_path(self, job: Job) -> str:
        """The file the job's server writes its output to."""
        return os.path.join(self.job_log_dir, f"job-{job.id}.log")

    async def output(self, job: Job) -> str:
        """The end of what the job's server printed, credentials redacted (for its owner and admins)."""
        return redact(await asyncio.to_thread(tail, self.log_path(job), OUTPUT_TAIL_BYTES))

    # ---------------------------------------------------------------- requests
    def check_launch(self, request: LaunchRequest) -> None:
        """Run every launch check (raises the first refusal, a 4xx)."""
        self.check_active_servers(request)
        for check in self.launch_checks:
            check(request)

    def check_active_servers(self, request: LaunchRequest) -> None:
        """JupyterHub's ``active_server_limit`` for jobs: a 429 with ``Retry-After`` over it.

        JupyterHub's own spawn refuses a server over the limit with a 429,
        and clients of JupyterHub retry after ``Retry-After``; a launch is
        refused the same way, before a job is recorded. Every unfinished
        interactive job counts (its server is starting, running or
        stopping, or will start): counting only JupyterHub's active servers
        would let launches that wait for a start slot go over the limit.
        """
        limit = self.active_server_limit
        if not limit:
            return
        where = Job.interactive.is_(True) & Job.status.in_([s.value for s in ACTIVE_JOB_STATUSES])
        if request.job is not None:
            where &= Job.id != request.job.id
        if self.count(where) >= limit:
            seconds = round(random.uniform(*self.retry_after_seconds))
            raise TooManyRequests(
                f"The hub runs as many jobs as it may at once ({limit}, c.JupyterHub.active_server_limit);"
                f" try again in {seconds} seconds.",
                seconds,
            )

    def launch(
        self, ws: Workspace, job_type_name: str, resource: str | None, resources: dict[str, Any], actor: str
    ) -> Job:
        """Record a launch (``pending``, target ``running``); the reconciler starts it."""
        job_type, resource = pick(self.job_types, job_type_name, resource)
        if ws.status not in (WorkspaceStatus.idle.value, WorkspaceStatus.active.value):
            raise Conflict(f"Workspace {ws.slug!r} is {ws.status}; jobs can start only in a ready workspace")
        self.accounts.system_user(ws.owner.name)  # refuse now if the account is missing
        resources = job_type.resources_for(resources)
        self.check_launch(LaunchRequest(ws, job_type, resource, resources, job=None))
        job = Job(
            workspace=ws,
            owner_id=ws.owner_id,
            job_type=job_type.name,
            resource=resource,
            interactive=job_type.interactive,
            status=JobStatus.pending.value,
            target=JobTarget.running.value,
            server_name=ws.slug,
            resources=resources,
        )
        self.db.add(job)
        try:
            self.db.flush()
        except IntegrityError:
            self.db.rollback()
            active = Job.active_in(self.db, ws.id)
            raise Conflict(
                f"Workspace {ws.slug!r} already has a {active.status if active else 'running'} job"
                f"{f' (id {active.id})' if active else ''}; stop it first."
            ) from None
        self._record(job, None, None, actor)
        if ws.status == WorkspaceStatus.idle.value:
            self.workspaces.set_status(ws, WorkspaceStatus.active, actor=actor)
        self.db.commit()
        self.wake(job.id)
        return job

    def stop(self, job: Job, actor: str, reason: str = "Stopped on request", outcome: JobStatus | None = None) -> Job:
        """Ask for the job to stop; idempotent, returns at once (status ``stopping``).

        ``outcome`` is the status it ends in: by default ``cancelled`` if it
        never ran, and if it ran its resource's ``stopped_outcome``
        (``completed``; ``cancelled`` for a SLURM job, which is cancelled).
        """
        if job.terminal or job.target == JobTarget.stopped.value:
            return job
        if outcome is None:
            outcome = JobStatus.cancelled
            if job.status == JobStatus.running.value:
                spawner_class = self.servers.spawner_classes.get(job.resource)
                outcome = JobStatus(getattr(spawner_class, "stopped_outcome", JobStatus.completed.value))
        job.target = JobTarget.stopped.value
        job.outcome = outcome.value
        self.transition(job, JobStatus.stopping, reason, actor)
        self.db.commit()
        self.wake(job.id)
        return job

    # ---------------------------------------------------------------- shutdown
    async def stop_all(self, reason: str) -> None:
        """Stop every unfinished job's server and record it (hub shutdown with cleanup_servers)."""
        jobs = Job.unfinished(self.db)
        for job in jobs:
            self.stop(job, "hub", reason, JobStatus.cancelled)
        await asyncio.gather(*(self.servers.stop(job.owner, job.server_name) for job in jobs), return_exceptions=True)
        for job in jobs:
            if not job.terminal:
                self.transition(job, JobStatus(job.outcome or JobStatus.cancelled.value))
        self.db.commit()
