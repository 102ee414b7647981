"""Jobs: what a launch, a stop or a delete request does, and the one way a status changes.

Requests only record what the user wants: a launch creates the job
(``pending``, target ``running``), a stop sets the target to ``stopped``
(status ``stopping``); both return at once and wake the reconciler
(:mod:`uws_hub.reconciler`), which makes it so. A batch launch's parameters
are checked here (:mod:`.parameters`) and the job waits for a slot in the
fair queue (:mod:`.queue`), never refused for want of one. Every status change goes
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
import functools
import logging
import os
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from jupyterhub import orm as hub_orm
from sqlalchemy import ColumnElement, bindparam, func, insert, or_, select
from sqlalchemy import event as sa_event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from ..accounts.system import SystemAccounts
from ..errors import Conflict, TooManyRequests, Unprocessable
from ..events.bus import EventBus, transient_event
from ..filethreads import in_file_thread
from ..metrics import JOB_LAUNCH_DURATION_SECONDS
from ..orm import Job, Workspace, as_stored, isoformat, users_being_deleted, utcnow
from ..redaction import redact
from ..sharing import posixgroups
from ..sharing.kills import GroupKills
from ..spawners.batch import BatchLaunch, BatchRunner
from ..spawners.mixins import WorkspaceLaunch
from ..states import ACTIVE_JOB_STATUSES, JobStatus, JobTarget, WorkspaceStatus, check_job_transition
from ..workspaces.service import WorkspaceService
from .launch import LaunchRequest
from .limits import MAX_TIME_LIMIT_DAYS, format_time_limit, memory_bytes, time_limit_seconds
from .logs import logs_taking_more, open_log
from .parameters import path_values, render_argv, render_env, validate_parameters
from .servers import ServerControl
from .types import JobType, pick

#: where a batch job's results go, relative to its workspace: ``results/<job id>``
RESULTS_FOLDER = "results"

_TIMESTAMPS = {
    JobStatus.queued: "queued_at",
    JobStatus.running: "running_at",
    JobStatus.stopping: "stopping_at",
    JobStatus.completed: "finished_at",
    JobStatus.failed: "finished_at",
    JobStatus.cancelled: "finished_at",
}


#: the session's list of jobs stopped while it flushed (woken once it committed)
_STOPPED_IN_FLUSH = "uws_jobs_stopped_in_flush"
#: a launch's INSERT of its job, built once (its row comes back, defaults and id included)
_INSERT_JOB = insert(Job).returning(*Job.__table__.columns)
#: an owner's unfinished batch jobs, counted at every batch launch: built once (building it
#: cost twice what the database took to count them in its index)
_UNFINISHED_BATCH_JOBS = select(func.count(Job.id)).where(
    Job.owner_id == bindparam("owner_id"),
    Job.interactive.is_(False),
    Job.status.in_([s.value for s in sorted(ACTIVE_JOB_STATUSES)]),
)

#: how much of the end of a job's output its owner can read
OUTPUT_TAIL_BYTES = 16 * 1024


def tail(path: str, owner_uid: int, max_bytes: int) -> str:
    """The last lines of a job's output file ('' if there is none, or it is not a regular
    file of ``owner_uid``).

    Opened as the log reader opens it (:func:`.logs.open_log`: no link followed, the file
    or its folder, no blocking): a SLURM job's output is in a folder its account writes,
    and a job running as the hub's account (single-account mode) writes its own; either
    could put a link, a FIFO or a hard link to another's file in its place.
    """
    fd = open_log(path, owner_uid)
    if fd is None:
        return ""
    with os.fdopen(fd, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - max_bytes))
        text = f.read().decode("utf-8", "replace")
    if size > max_bytes:
        text = text.split("\n", 1)[-1]
    return text.strip()


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def account_holder(user: hub_orm.User) -> str:
    """The hub user a system account is for, as one person over time: ``<id>@<created>``.
    Not its uid, which ``useradd`` gives again to the next account made, nor its id
    alone, which SQLite gives again to the next user once the last one is deleted."""
    created = user.created.isoformat() if user.created else ""
    return f"{user.id}@{created}"


def make_home(home: str | None) -> str | None:
    """Make the HOME of a job of the hub's own account (:meth:`JobService.home_of`) if it
    has one (blocking); returns it."""
    if home is not None:
        os.makedirs(home, mode=0o700, exist_ok=True)
    return home


#: the values of ACTIVE_JOB_STATUSES
ACTIVE_STATUS_VALUES = frozenset(s.value for s in ACTIVE_JOB_STATUSES)


def after_this_turn(wake: Callable[[], None]) -> None:
    """Call ``wake`` (a wake-up of other work) in the event loop's next turn, after what
    this one does and wakes; at once outside a running loop (scripts, synchronous tests)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        wake()
        return
    loop.call_soon(wake)


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
        job_env: Callable[[JobType], dict[str, str]],
        runners: dict[str, BatchRunner] | None = None,
        wake_queue: Callable[[], None] = lambda: None,
        wake_destruction: Callable[[int], None] = lambda job_id: None,
        job_ended: Callable[[int], None] = lambda workspace_id: None,
        record_end: Callable[[Job], None] = lambda job: None,
        keep_ended: Callable[[int], None] = lambda owner_id: None,
        active_server_limit: int = 0,
        retry_after_seconds: tuple[float, float] = (30, 60),
        max_unfinished_batch_jobs: int = 0,
        max_log_bytes: int = 0,
        posix_group_prefix: str | None = None,
        group_kills: GroupKills | None = None,
    ):
        self.db = db
        #: ``UWSHub.share_posix_group_prefix`` with system users (shared workspaces' groups), else None
        self.posix_group_prefix = posix_group_prefix
        #: the kills of workspaces' strays under way (the share service's), which the
        #: starts of editors' jobs wait for (:meth:`start_waits_for_group_kill`)
        self.group_kills = group_kills or GroupKills()
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
        #: ``UWSHub.max_unfinished_batch_jobs_per_user`` (0: none)
        self.max_unfinished_batch_jobs = max_unfinished_batch_jobs
        #: ``UWSHub.max_job_log_bytes`` (0: none)
        self.max_log_bytes = max_log_bytes
        #: called with a job id whenever the job needs the reconciler's attention
        self.wake = wake
        #: rules a launch must pass (quotas, per-type limits): each is called with a
        #: :class:`LaunchRequest` and raises a UWSError (a 4xx) to refuse it. They run
        #: when the launch is asked for and again right before the server starts,
        #: so a launch that became over quota while it waited is refused too.
        self.launch_checks = launch_checks
        #: a job's environment from its job type's ``env`` and web app (with the
        #: configuration of jobs' Jupyter servers, see uws_hub.serverconfig)
        self.job_env = job_env
        #: the batch runner of each resource that has one
        self.runners = runners or {}
        #: called when a batch job waits for a slot, or a slot may have freed
        self.wake_queue = wake_queue
        #: called with a job id when the job is due for destruction
        self.wake_destruction = wake_destruction
        #: called with a workspace's id when one of its jobs ended: what the job
        #: wrote counts toward its owner's disk quota soon, not at the next pass
        self.job_ended = job_ended
        #: called with a job as it ends (its ``finished_at`` set), in the transaction of its
        #: end: its run time joins its owner's core-hours (QuotaService.record_job_end)
        self.record_end = record_end
        #: called with an owner's id before their ended jobs are deleted: their run time
        #: stays in the owner's core-hours (QuotaService.keep_ended_usage)
        self.keep_ended = keep_ended

    # ---------------------------------------------------------------- status
    def transition(
        self,
        job: Job,
        new: JobStatus,
        reason: str | None = None,
        actor: str = "hub",
        *,
        node: str | None = None,
        at: datetime | None = None,
    ) -> None:
        """The only way a job's status changes: checked, timestamped, stored as an event.

        A job that starts running gets its URL through the proxy (an
        interactive job) and ``node`` (the host its resource put it on, if it
        says) stored. ``at``: when it happened, if earlier than now (a batch
        job that ran or ended while the hub was away: its core-hours count
        its real run time).
        """
        previous = job.status
        new = check_job_transition(previous, new)
        job.status = new.value
        if new in _TIMESTAMPS:
            setattr(job, _TIMESTAMPS[new], min(at, utcnow()) if at is not None else utcnow())
        if reason is not None or new == JobStatus.running:
            # a running job has no reason; a queue's note (e.g. SLURM's pending reason) ends here
            job.reason = reason
        if new == JobStatus.running:
            job.url = self.url_of(job) if job.interactive else None
            job.node = node
        if new == JobStatus.running and job.created_at is not None and job.running_at is not None:
            JOB_LAUNCH_DURATION_SECONDS.labels(resource=job.resource).observe(
                (job.running_at - job.created_at).total_seconds()
            )
        if new.terminal:
            self.record_end(job)
            job.target = JobTarget.stopped.value
            job.url = job.node = None
            if job.interactive:
                # every end of a job passes here: whatever printed or leaked the
                # server's tokens, they open nothing any more
                self.servers.revoke_tokens(job.owner, job.server_name)
            ws = job.workspace
            if ws.status == WorkspaceStatus.active.value and not Job.any_unfinished_in(self.db, ws.id, excluding=job):
                self.workspaces.set_status(ws, WorkspaceStatus.idle, actor=actor)
            # a slot of its owner (and of its resource) may be free: the queue looks; what the
            # job wrote is measured soon. Both in the loop's next turn: the commit of the end
            # (most often right after this, in the same callback) wakes the streams that send
            # its event, which then go first, not after the queue's step and the usage worker
            # (~1.5 ms of a stop's end to its event)
            after_this_turn(self.wake_queue)
            after_this_turn(functools.partial(self.job_ended, job.workspace_id))
            if job.destroy_at is not None and job.destroy_at <= utcnow():
                self.wake_destruction(job.id)
        # a batch job's event at once (its steps commit right after: a burst of short jobs
        # is bounded by the hub's work per job), unless that would put it before another
        self._record(job, previous, reason, actor, at_once=self._event_at_once(job))
        self.log.info(
            "Job %s (%s in workspace %s): %s -> %s%s",
            job.id,
            job.job_type,
            job.workspace_id,
            previous,
            new.value,
            f" ({reason})" if reason else "",
        )

    def _event_at_once(self, job: Job) -> bool:
        """Whether a change of ``job`` is stored as an event with an INSERT of its own
        (:meth:`EventBus.insert`; the ORM's flush of the event costs the loop a fifth of a
        step that records a change and commits): for a batch job already stored, when no
        event of the transaction waits for the flush (the new one's id would come before
        that one's: events are published in the order of their ids)."""
        return not job.interactive and job.id is not None and self.events.recorded_in_order(self.db)

    def _record(
        self,
        job: Job,
        previous: str | None,
        reason: str | None,
        actor: str,
        status: str | None = None,
        *,
        at_once: bool = False,
        **extra: Any,
    ) -> None:
        """Store a change of the job (its status, or ``status`` e.g. ``deleted``) as an event
        (``at_once``: see :meth:`EventBus.insert`)."""
        data: dict[str, Any] = {"job_type": job.job_type, "resource": job.resource, **extra}
        if job.status == JobStatus.running.value and job.interactive:
            data["url"] = job.url
        if not job.interactive and job.terminal:
            data.update(exit_code=job.exit_code, exit_signal=job.exit_signal)
        self.events.change(
            self.db,
            "job",
            owner_id=job.owner_id,
            workspace_id=job.workspace_id,
            job_id=job.id,
            actor=actor,
            status=status or job.status,
            previous=previous,
            reason=reason,
            data=data,
            at_once=at_once,
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
        """A page of jobs, newest first, with their workspaces (a job's model names its
        workspace: one more query for the page, not one per job)."""
        query = select(Job).where(where).order_by(Job.id.desc()).offset(offset).limit(limit)
        return list(self.db.scalars(query.options(selectinload(Job.workspace), selectinload(Job.launched_by))))

    def active_jobs(self, workspace_ids: list[int]) -> dict[int, Job]:
        """The unfinished interactive job of each of these workspaces (one query for a page of them)."""
        if not workspace_ids:
            return {}
        rows = self.db.scalars(
            select(Job).where(
                Job.workspace_id.in_(workspace_ids),
                Job.interactive.is_(True),
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

    def active_and_latest_jobs(self, workspace_ids: list[int]) -> tuple[dict[int, Job], dict[int, Job]]:
        """:meth:`active_jobs` and :meth:`latest_jobs` of these workspaces in one query: a
        running job is usually both, read once. A workspace's latest job has the highest
        id of its jobs, so it is the highest of those read for it."""
        if not workspace_ids:
            return {}, {}
        latest_ids = select(func.max(Job.id)).where(Job.workspace_id.in_(workspace_ids)).group_by(Job.workspace_id)
        unfinished = (
            Job.workspace_id.in_(workspace_ids)
            & Job.interactive.is_(True)
            & Job.status.in_([s.value for s in ACTIVE_JOB_STATUSES])
        )
        active: dict[int, Job] = {}
        latest: dict[int, Job] = {}
        for job in self.db.scalars(select(Job).where(Job.id.in_(latest_ids) | unfinished)):
            if job.interactive and job.status in ACTIVE_STATUS_VALUES:
                active[job.workspace_id] = job
            if job.workspace_id not in latest or job.id > latest[job.workspace_id].id:
                latest[job.workspace_id] = job
        return active, latest

    def url_of(self, job: Job) -> str:
        """Where the job's server answers through the proxy once it runs."""
        job_type = self.job_types.get(job.job_type)
        default_url = job_type.default_url.lstrip("/") if job_type is not None else ""
        return self.servers.user(job.owner).server_url(job.server_name) + default_url

    def time_limit_seconds(self, job: Job) -> float:
        """The hub's limit of a job's run time: its job type's, or its launch's
        ``time_limit`` (a batch job), whichever is shorter, as the batch job's resource
        really applies it (SLURM: in whole minutes); 0: none."""
        job_type = self.job_types.get(job.job_type)
        limits = [job_type.time_limit_seconds if job_type else 0]
        if not job.interactive and (job.resources or {}).get("time_limit"):
            limits.append(time_limit_seconds(job.resources["time_limit"]))
        limit = min((limit for limit in limits if limit), default=0)
        runner = None if job.interactive else self.runners.get(job.resource)
        return runner.granted_time_limit(limit) if limit and runner is not None else limit

    def launch_request(self, job: Job) -> LaunchRequest:
        """The launch checks' request for a job launched before, checked again at its start: its
        type and resource as offered now, a 422 if no longer (removed from the configuration
        while the job waited; a KeyError here failed the fair queue's step for every job)."""
        job_type, resource = pick(self.job_types, job.job_type, job.resource)
        return LaunchRequest(job.workspace, job_type, resource, dict(job.resources), job)

    def launch_for(self, job: Job) -> WorkspaceLaunch:
        """What the spawner needs to run ``job`` (command, directory, account, env): it runs
        as its launcher's account (:attr:`Job.launcher`), and its server lets only the
        launcher use it fully (``UWS_LAUNCHER``, see uws_hub.serverconfig.uws_server_auth)."""
        ws = job.workspace
        job_type = self.job_types[job.job_type]
        system_user = self.accounts.system_user(job.launcher.name)
        as_root = system_user is None and os.geteuid() == 0
        # (its folders are made by the spawner, in its start's thread: WorkspaceLaunch.make_folders)
        return WorkspaceLaunch(
            job_id=job.id,
            workspace_id=ws.id,
            directory=ws.directory,
            cmd=job_type.server_cmd + (job_type.args_as_root if as_root else []),
            default_url=job_type.default_url,
            env={**self.job_env(job_type), "UWS_LAUNCHER": job.launcher.name},
            resources=dict(job.resources),
            system_user=system_user,
            launcher=job.launcher.name,
            account_holder=account_holder(job.launcher),
            group=self.editor_group(job),
            share_group_prefix=self.posix_group_prefix,
            home=self.home_of(job),
            log_path=self.log_path(job),
            job_log_dir=self.job_log_dir,
            memory_bytes=self.memory_bytes(job),
        )

    def editor_group(self, job: Job) -> str | None:
        """The shared workspace's POSIX group of a job its editor launched (see
        :attr:`WorkspaceLaunch.group`); None for the owner's jobs and without one."""
        if self.posix_group_prefix is None or job.launcher.id == job.workspace.owner_id:
            return None
        name = posixgroups.group_name(self.posix_group_prefix, job.workspace.id)
        return name if posixgroups.gid_of(name) is not None else None

    def start_waits_for_group_kill(self, job: Job) -> bool:
        """Whether the start of ``job`` waits for a kill of its workspace's strays under
        way (:class:`~uws_hub.sharing.kills.GroupKills`); the job is woken at its end. An
        editor's job only: it gets the workspace's group, and its launcher may have been
        made an editor after the kill read who may hold the group."""
        if self.posix_group_prefix is None or job.launcher_id in (None, job.workspace.owner_id):
            return False
        return self.group_kills.call_after(job.workspace_id, functools.partial(self.wake, job.id))

    @staticmethod
    def memory_bytes(job: Job) -> int | None:
        """The memory a job may use, in bytes, for resources that apply it themselves."""
        memory = (job.resources or {}).get("memory")
        return memory_bytes(memory) if memory else None

    def resource_uid(self, job: Job) -> int | None:
        """The uid ``job``'s resource runs as, where the hub takes over or releases it by
        its stored id: the uid recorded with the id, or for one from before uids were
        recorded (None) the uid its launcher's account has now (the hub's own in
        single-account mode). Unknown, the id alone was taken: SLURM gives a forgotten
        job's id again, and a restarted hub took another account's job under it for its
        own, cancelling it as root. The account given another uid since (rare) leaves the
        hub's job unknown to it, for the orphan sweep to cancel; one with no account now
        stays unknown (None). (An account looked up, as
        :meth:`launch_for` does.)"""
        if job.resource_uid is not None:
            return job.resource_uid
        try:
            uid = self.accounts.owner(job.launcher.name).uid
        except Conflict as e:
            # (no account now, e.g. deleted: unknown, its id alone as before)
            self.log.warning("Job %s: the uid of its resource %s is unknown: %s", job.id, job.resource_id, e.message)
            return None
        return uid if uid is not None else os.geteuid()

    def home_of(self, job: Job) -> str | None:
        """HOME of a job that runs as the hub's own account (single-account mode): per
        workspace owner, as before launchers were recorded; None with system users (the
        launcher's account has its own). Only its path: made where the job is prepared
        (:func:`make_home` in a batch runner's thread, :meth:`WorkspaceLaunch.make_folders`
        in a server's start's), not here, where a request reading a batch job's log renders
        its launch (for its log's owner) on the event loop, and a hung workspace disk
        held the whole hub."""
        ws = job.workspace
        if self.accounts.system_user(job.launcher.name) is not None:
            return None
        return os.path.join(self.workspaces.storage.root, ws.owner.name, ".home")

    def batch_launch(self, job: Job) -> BatchLaunch:
        """What a runner needs to run batch ``job``: its command rendered from the job
        type's argv template with the job's parameters, and its environment."""
        ws = job.workspace
        job_type = self.job_types[job.job_type]
        results_dir = os.path.join(ws.directory, RESULTS_FOLDER, str(job.id))
        builtins = {"job_id": job.id, "workspace_dir": ws.directory, "results_dir": results_dir}
        values = {**path_values(job_type.parameters, job.parameters or {}, ws.directory), **builtins}
        env = render_env(job_type.env, values)
        env.update(
            UWS_JOB_ID=str(job.id),
            UWS_WORKSPACE_ID=str(ws.id),
            UWS_WORKSPACE_DIR=ws.directory,
            UWS_RESULTS_DIR=results_dir,
        )
        launch = BatchLaunch(
            job_id=job.id,
            workspace_id=ws.id,
            directory=ws.directory,
            argv=render_argv(job_type.cmd, values),
            env=env,
            resources=dict(job.resources or {}),
            memory_bytes=self.memory_bytes(job),
            time_limit_seconds=self.time_limit_seconds(job),
            system_user=self.accounts.system_user(job.launcher.name),
            resource_uid=job.resource_uid,
            account_holder=account_holder(job.launcher),
            group=self.editor_group(job),
            share_group_prefix=self.posix_group_prefix,
            home=self.home_of(job),
        )
        launch.log_path = job.log_path or self.runners[job.resource].log_path(launch)
        return launch

    def results_dir_maker(self, job: Job) -> Callable[[], None]:
        """What makes batch ``job``'s results folder (``results/<id>``, its launcher's; in the
        workspace's group when it is shared, from the setgid folder above) and its HOME if
        the hub's account runs it (:meth:`home_of`): a call that blocks briefly, for the
        runner to make in its own thread before it starts the job."""
        ws = job.workspace
        owner = self.accounts.owner(job.launcher.name)
        results = functools.partial(
            self.workspaces.storage.make_dirs, ws.directory, f"{RESULTS_FOLDER}/{job.id}", owner
        )
        home = self.home_of(job)

        def make() -> None:
            make_home(home)
            results()

        return make

    def results_path(self, job: Job) -> str | None:
        """A batch job's results folder, relative to its workspace."""
        return None if job.interactive else f"{RESULTS_FOLDER}/{job.id}"

    async def results(self, job: Job) -> list[dict[str, Any]] | None:
        """The files in a batch job's results folder: path (in the workspace), size, type."""
        relpath = self.results_path(job)
        if relpath is None:
            return None
        return await in_file_thread(self.workspaces.storage.files_under, job.workspace.directory, relpath)

    async def stop_logs_too_large(self) -> list[int]:
        """Stop, failed, every running job whose log takes more than
        ``UWSHub.max_job_log_bytes`` of disk; the ids of those stopped. Run at each
        reconciler scan, for all running jobs at once: one query, and one thread call
        that looks at every log (a ``stat`` each), whatever the number of jobs.

        The log lies outside the workspace, on the hub's disk (or the job log
        directory's), and counts on no quota: without a bound, a job printing at full
        speed filled that disk for everyone. Its blocks count, not its size: a job may
        make its log a hole of any size at no cost to anyone."""
        most = self.max_log_bytes
        if not most:
            return []
        running = self.db.scalars(
            select(Job).where(Job.status == JobStatus.running.value, Job.target == JobTarget.running.value)
        )
        paths = {job.id: self.log_path(job) for job in running}
        if not paths:
            return []
        over = await asyncio.to_thread(logs_taking_more, paths, most)
        reason = f"The job's output took more than {most} bytes of the hub's disk (UWSHub.max_job_log_bytes)"
        stopped = []
        for job_id in over:
            job = Job.find(self.db, job_id)  # (the thread's time: a stop may have come)
            if job is not None and job.target == JobTarget.running.value:
                self.stop(job, "hub", reason, JobStatus.failed)
                stopped.append(job_id)
        return stopped

    def log_path(self, job: Job) -> str:
        """The file the job writes its output to (a server's, or a batch job's command's:
        its runner's, stored at its hand-over to it)."""
        if job.log_path:
            return job.log_path
        runner = None if job.interactive else self.runners.get(job.resource)
        if runner is not None:
            return runner.log_path(self.batch_launch(job))
        return self._server_log_path(job.id)

    def kept_log_path(self, job_id: int, log_path: str | None, interactive: bool) -> str | None:
        """A job's log file as its row says, without the job (a user's deletion lists
        theirs): its ``log_path``, else a server's; None for a batch job never handed over
        to its runner (it has none)."""
        if log_path:
            return log_path
        return self._server_log_path(job_id) if interactive else None

    def server_output_path(self, job: Job, workspace: str) -> str | None:
        """The file a server's resource had it write its output to itself, beside the hub's
        log file of the job (a SLURM server's, in its account's folder: the hub keeps its
        tail, :meth:`kept_log_path`); None if it has none (its resource's runner makes no
        such file, or it was never submitted). ``workspace``: the job's workspace's folder."""
        if not job.interactive or job.resource_id is None or job.resource_uid is None:
            return None
        server_output = getattr(self.runners.get(job.resource), "server_output", None)
        return server_output(job.id, job.resource_id, job.resource_uid, workspace) if server_output else None

    def _server_log_path(self, job_id: int) -> str:
        return os.path.join(self.job_log_dir, f"job-{job_id}.log")

    def log_owner(self, job: Job) -> int:
        """The uid a batch job's log file must belong to (see :mod:`uws_hub.jobs.logs`)."""
        return self.runners[job.resource].log_owner(self.batch_launch(job))

    async def output(self, job: Job) -> str:
        """The end of what the job's server printed, credentials redacted (for its owner and admins)."""
        if not job.interactive and not job.log_path:
            # a batch job's log file is stored at its hand-over to its runner: not handed
            # over (waiting, refused, cancelled while waiting), it printed nothing, and its
            # launch (which names the file) is not rendered for nothing (its job type may
            # be gone from the configuration since)
            return ""
        # a server's output is the hub's own file (its spawner writes it, or the tail it keeps)
        owner = os.geteuid() if job.interactive else self.log_owner(job)
        return redact(await in_file_thread(tail, self.log_path(job), owner, OUTPUT_TAIL_BYTES))

    # ---------------------------------------------------------------- requests
    def check_launch(self, request: LaunchRequest) -> None:
        """Run every launch check (raises the first refusal, a 4xx)."""
        self.check_active_servers(request)
        for check in self.launch_checks:
            check(request)

    def check_unfinished_batch_jobs(self, owner: hub_orm.User) -> None:
        """``UWSHub.max_unfinished_batch_jobs_per_user``: a batch launch is a 429 while the
        workspace's ``owner`` has that many batch jobs unfinished (held, waiting or running).

        A batch launch is never refused for want of a slot (it waits in the fair
        queue), so without this one account launching in a loop would add rows to
        the database, events to every stream and jobs to the queue's planning for
        as long as it liked. Checked when the launch is asked for, not again before
        the job starts (it counts itself then).
        """
        limit = self.max_unfinished_batch_jobs
        if not limit:
            return
        if self.db.connection().execute(_UNFINISHED_BATCH_JOBS, {"owner_id": owner.id}).scalar_one() >= limit:
            seconds = round(random.uniform(*self.retry_after_seconds))
            raise TooManyRequests(
                f"{owner.name} has {limit} batch jobs unfinished already, the most at once"
                " (UWSHub.max_unfinished_batch_jobs_per_user); launch more once some have ended",
                seconds,
            )

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
        self,
        ws: Workspace,
        job_type_name: str,
        resource: str | None,
        resources: dict[str, Any],
        actor: str,
        parameters: dict[str, Any] | None = None,
        *,
        launcher: hub_orm.User | None = None,
        held: bool = False,
        run_id: str | None = None,
    ) -> Job:
        """Record a launch (``pending``, target ``running``); the reconciler starts it.

        ``launcher``: the user whose account the job runs as (see
        :func:`uws_hub.access.launcher_of`); the workspace's owner if None.

        A batch job type's ``parameters`` are checked (422 naming each bad
        one); an interactive job type takes none. A ``held`` batch job is
        recorded but waits, out of the queue, until :meth:`run` (UWS's
        PENDING); ``run_id`` is its client's label.
        """
        job_type, resource = pick(self.job_types, job_type_name, resource)
        if job_type.interactive and parameters:
            raise Unprocessable(f"Job type {job_type.name!r} is interactive and takes no parameters")
        values = validate_parameters(job_type.parameters, parameters or {}) if not job_type.interactive else {}
        if not job_type.interactive and resource not in self.runners:
            raise Unprocessable(f"Resource {resource!r} cannot run batch jobs")
        if ws.status not in (WorkspaceStatus.idle.value, WorkspaceStatus.active.value):
            raise Conflict(f"Workspace {ws.slug!r} is {ws.status}; jobs can start only in a ready workspace")
        launcher = launcher or ws.owner
        # (a job of a user being deleted ran on untracked once its row went with them)
        self.workspaces.deletions.check(ws.owner, launcher)
        self.accounts.system_user(launcher.name)  # refuse now if the account is missing
        resources = job_type.resources_for(resources)
        if job_type.interactive:
            self.check_launch(LaunchRequest(ws, job_type, resource, resources, job=None))
        else:
            # JupyterHub's limit of servers is not for batch jobs: they wait for a slot
            self.check_unfinished_batch_jobs(ws.owner)
            for check in self.launch_checks:
                check(LaunchRequest(ws, job_type, resource, resources, job=None))
        created_at = utcnow()
        row = dict(
            workspace_id=ws.id,
            owner_id=ws.owner_id,
            launcher_id=launcher.id,
            job_type=job_type.name,
            resource=resource,
            interactive=job_type.interactive,
            status=JobStatus.pending.value,
            target=(JobTarget.held if held and not job_type.interactive else JobTarget.running).value,
            server_name=ws.slug,
            resources=resources,
            parameters=values,
            run_id=run_id,
            created_at=created_at,
            updated_at=created_at,
        )
        with self._one_active_job(ws):
            # the job's row and its event with statements of their own, not through the ORM's
            # flush (it cost a launch request three times as much, a burst of them waiting in
            # turn); a batch job's log file, named by its id, is stored at its hand-over (see log_path)
            # the row as stored (every column came back): in the session without reading it again
            job = as_stored(self.db, Job, self.db.connection().execute(_INSERT_JOB, row).one())
            self._record(job, None, None, actor, at_once=True)
            self.workspaces.launched_in(ws, created_at, actor)
            self.db.commit()
        if job.interactive:
            self.wake(job.id)
        elif job.target == JobTarget.running.value:
            self.wake_queue()
        return job

    @contextmanager
    def _one_active_job(self, ws: Workspace) -> Iterator[None]:
        """A 409 when the insert in it adds a second unfinished job in ``ws``
        (a unique index: two launches at once cannot both pass).

        Any failure in it rolls the session back: its statements leave the shared session
        nothing dirty, so JupyterHub's handler would not, and the next request's commit
        would store the job and publish its event."""
        try:
            yield
        except IntegrityError:
            self.db.rollback()
            active = Job.active_in(self.db, ws.id)
            raise Conflict(
                f"Workspace {ws.slug!r} already has a {active.status if active else 'running'} job"
                f"{f' (id {active.id})' if active else ''}; stop it first."
            ) from None
        except BaseException:
            self.db.rollback()
            raise

    # ---------------------------------------------------------------- held batch jobs
    def _check_held(self, job: Job, what: str) -> None:
        if job.target != JobTarget.held.value or job.status != JobStatus.pending.value:
            raise Conflict(f"Job {job.id} was started already: {what}")

    def run(self, job: Job, actor: str) -> Job:
        """Let a held batch job into the queue (409 if it is not held)."""
        self._check_held(job, "it can be run only once")
        self.workspaces.deletions.check(job.owner, job.launched_by)
        job.target = JobTarget.running.value
        self._record(job, job.status, None, actor, target=job.target)
        self.db.commit()
        self.wake_queue()
        return job

    def set_parameters(self, job: Job, given: dict[str, Any], actor: str) -> Job:
        """Change some of a held batch job's parameters (checked with the others as at launch)."""
        self._check_held(job, "its parameters can be changed only before it starts")
        job_type = self.job_types[job.job_type]
        job.parameters = validate_parameters(job_type.parameters, {**(job.parameters or {}), **given})
        self._record(job, job.status, None, actor, parameters=sorted(given))
        self.db.commit()
        return job

    def set_time_limit(self, job: Job, seconds: int, actor: str) -> Job:
        """Set a held batch job's time limit; 0 asks for none.

        What is asked for beyond the job type's ``limits.time_limit`` (or for
        none, where it has one) gets that limit instead: the job is told what
        it got rather than refused, as UWS lets a server do. The job type's
        own ``time_limit_seconds`` applies on top (:meth:`time_limit_seconds`).
        """
        self._check_held(job, "its time limit can be changed only before it starts")
        most = self.job_types[job.job_type].limits.time_limit
        most_seconds = time_limit_seconds(most) if most else MAX_TIME_LIMIT_DAYS * 86400
        resources = dict(job.resources or {})
        if seconds:
            resources["time_limit"] = format_time_limit(min(seconds, most_seconds))
        elif most:
            resources["time_limit"] = most
        else:
            resources.pop("time_limit", None)
        job.resources = resources
        self._record(job, job.status, None, actor, time_limit=resources.get("time_limit"))
        self.db.commit()
        return job

    def set_destruction(self, job: Job, at: datetime | None, actor: str) -> Job:
        """When the hub destroys the job (None: never); see :meth:`archive`."""
        if job.archived_at is not None:
            raise Conflict(f"Job {job.id} has been destroyed already")
        job.destroy_at = at
        self._record(job, job.status, None, actor, destroy_at=isoformat(at))
        self.db.commit()
        if at is not None and at <= utcnow():
            self.wake_destruction(job.id)
        return job

    def due_for_destruction(self) -> list[int]:
        """The jobs past their destruction time and not yet archived."""
        return list(
            self.db.scalars(
                select(Job.id).where(Job.destroy_at <= utcnow(), Job.archived_at.is_(None)).order_by(Job.id)
            )
        )

    async def destroy(self, job: Job, actor: str) -> None:
        """Destroy a job at its destruction time: stop it if it runs (then look again once
        it ended), else :meth:`archive` it."""
        if not job.terminal:
            self.stop(job, actor, "Destroyed at its destruction time")
            return
        await self.archive(job, actor)

    async def archive(self, job: Job, actor: str) -> None:
        """Delete a finished job's results and log, and keep its record, archived."""
        if not job.terminal:
            raise Conflict(f"Job {job.id} is {job.status}; it can be archived once it ended")
        await self._remove_files(job, results=True)
        job.archived_at = utcnow()
        self._record(job, job.status, None, actor, "archived", results_deleted=True)
        self.db.commit()

    def stop(self, job: Job, actor: str, reason: str = "Stopped on request", outcome: JobStatus | None = None) -> Job:
        """Ask for the job to stop; idempotent, returns at once (status ``stopping``).

        ``outcome`` is the status it ends in: by default ``cancelled`` if it
        never ran, and if it ran its resource's ``stopped_outcome``
        (``completed``; ``cancelled`` for a SLURM job, which is cancelled).
        """
        if self._request_stop(job, actor, reason, outcome):
            self.db.commit()
            self.wake(job.id)
        return job

    def _request_stop(self, job: Job, actor: str, reason: str, outcome: JobStatus | None = None) -> bool:
        """:meth:`stop` in the session, not committed: False if there is nothing to stop."""
        if job.terminal or job.target == JobTarget.stopped.value:
            return False
        if outcome is None:
            outcome = JobStatus.cancelled
            if job.status == JobStatus.running.value and job.interactive:
                spawner_class = self.servers.spawner_classes.get(job.resource)
                outcome = JobStatus(getattr(spawner_class, "stopped_outcome", JobStatus.completed.value))
        job.target = JobTarget.stopped.value
        job.outcome = outcome.value
        self.transition(job, JobStatus.stopping, reason, actor)
        return True

    # ---------------------------------------------------------------- deleted launchers
    def attach(self, db: Session) -> None:
        """Stop the jobs of a user who is deleted, in the same commit (see :meth:`_before_flush`)."""
        sa_event.listen(db, "before_flush", self._before_flush)
        sa_event.listen(db, "after_commit", self._after_commit)

    def _before_flush(self, db: Session, flush_context: Any, instances: Any) -> None:
        """A JupyterHub user is being deleted: stop the unfinished jobs they launched in
        others' workspaces (they run as their account), before the database forgets who
        launched them (``ON DELETE SET NULL``, after which a job counts as its owner's and
        must never start, or start again, as the owner). The delete is refused while one of
        them is under way (:meth:`check_user_deletable`): left are the held ones, and one
        launched between that check and this commit."""
        gone = users_being_deleted(db)
        if not gone:
            return
        # their workspaces and jobs the database deletes (ON DELETE CASCADE), unseen by the
        # session: its loaded rows of them (the rows of batch jobs under way are held, see
        # BatchSteps) leave it, so that the next step of such a job finds it gone, as it
        # would without them, instead of writing to a row that is no more (StaleDataError)
        for state in list(db.identity_map.all_states()):
            obj = state.obj()
            # (owner_id as loaded: no query)
            if isinstance(obj, Job | Workspace) and state.persistent and state.dict.get("owner_id") in gone:
                db.expunge(obj)
        with db.no_autoflush:
            jobs = db.scalars(
                select(Job).where(
                    Job.launcher_id.in_(gone),
                    Job.owner_id.not_in(gone),
                    Job.status.in_([s.value for s in ACTIVE_JOB_STATUSES]),
                )
            ).all()
            for job in jobs:
                name = job.launcher.name
                self._request_stop(job, "hub", f"stopped: {name}'s account was deleted", JobStatus.cancelled)
                job.launched_by = None
                db.info.setdefault(_STOPPED_IN_FLUSH, []).append(job.id)

    def _after_commit(self, db: Session) -> None:
        for job_id in db.info.pop(_STOPPED_IN_FLUSH, []):
            self.wake(job_id)

    def check_user_deletable(self, user: hub_orm.User) -> None:
        """Refuse (409) to delete a user with a job that has not ended: one they own or
        launched (as an editor in another's workspace), batch or interactive, pending (its
        hand-over may be under way), queued, running or stopping. Refused first, the
        delete changes nothing.

        An owned job's row goes with the user (``ON DELETE CASCADE``): the hub forgot a
        batch job whose process (local, as the account) or SLURM job ran on, writing into
        the folders the deletion had just set aside (:mod:`uws_hub.workspaces.former`);
        and JupyterHub cannot remove a server that runs (its delete failed half-way, a
        500, after the authenticator had forgotten the user). Stopping them first is the
        admin's choice, as for a workspace with a server (:meth:`WorkspaceService.delete`).
        A held batch job (never asked to run: nothing of it exists outside its row) does
        not count: it goes with the user, or is cancelled in the deletion's commit if it
        is in another's workspace (:meth:`_before_flush`)."""
        ids = self.db.scalars(
            select(Job.id)
            .where(
                or_(Job.owner_id == user.id, Job.launcher_id == user.id),
                Job.status.in_([s.value for s in ACTIVE_JOB_STATUSES]),
                ~((Job.status == JobStatus.pending.value) & (Job.target == JobTarget.held.value)),
            )
            .order_by(Job.id)
        ).all()
        if ids:
            raise Conflict(
                f"{user.name}'s jobs that have not ended: {len(ids)} (ids {', '.join(map(str, ids))});"
                " stop or cancel them first, then delete the user."
            )

    def stop_launched_by(self, ws: Workspace, user_ids: set[int], actor: str) -> list[Job]:
        """Stop (or cancel, if they never ran) the unfinished jobs in ``ws`` that these users
        launched: their editor access to it ended, and their jobs run as their accounts with
        the workspace's group. The owner's jobs, and other editors', run on."""
        user_ids = user_ids - {ws.owner_id}
        if not user_ids:
            return []
        stopped = []
        for job in self.db.scalars(
            select(Job).where(
                Job.workspace_id == ws.id,
                Job.launcher_id.in_(user_ids),
                Job.status.in_([s.value for s in ACTIVE_JOB_STATUSES]),
            )
        ):
            name = job.launcher.name
            if self._request_stop(job, actor, f"stopped: {name}'s editor access to this workspace was revoked"):
                stopped.append(job)
        if stopped:
            self.db.commit()  # one commit for all of them, then each to the reconciler
            for job in stopped:
                self.wake(job.id)
        return stopped

    async def delete(self, job: Job, actor: str, *, results: bool = False) -> None:
        """Forget a finished job: its row and its log (its events stay); its results folder
        too if ``results``. Refused (409) while it is unfinished."""
        if not job.terminal:
            raise Conflict(f"Job {job.id} is {job.status}; stop it and wait for it to end before deleting it")
        await self._remove_files(job, results=results)
        self._record(job, job.status, None, actor, "deleted", results_deleted=results)
        self.keep_ended(job.owner_id)  # (its run time stays used)
        self.db.delete(job)
        self.db.commit()

    async def forget_logs_in(self, workspace_id: int) -> None:
        """Remove the logs of a workspace's jobs, before its row (and theirs, ``ON DELETE
        CASCADE``) goes: they outlived it, in the job's account's folder (SLURM) owned by
        its uid, which ``useradd`` gives to the next account made once the user is gone.
        A log that cannot be removed is logged, and the workspace goes all the same."""
        jobs = self.db.scalars(select(Job).where(Job.workspace_id == workspace_id, Job.archived_at.is_(None))).all()
        for job in jobs:
            try:
                await self._remove_files(job, results=False)
            except Exception:
                self.log.exception("Could not remove the log of job %s of deleted workspace %s", job.id, workspace_id)

    async def _remove_files(self, job: Job, *, results: bool) -> None:
        """Remove an ended job's log (what its runner kept of it), and its results folder if ``results``."""
        ws = job.workspace
        if not job.interactive and job.resource in self.runners:
            runner = self.runners[job.resource]
            await in_file_thread(runner.forget, self.batch_launch(job))
        elif job.interactive:
            await in_file_thread(_unlink, self.log_path(job))
        if results and not job.interactive:
            self.workspaces.check_writable(ws)
            await in_file_thread(self.workspaces.storage.remove_under, ws.directory, f"{RESULTS_FOLDER}/{job.id}")
            ws.usage_measured_at = None  # measured again at the next pass

    # ---------------------------------------------------------------- shutdown
    async def stop_all(self, reason: str) -> None:
        """Stop every unfinished interactive job's server and record it (hub shutdown with
        cleanup_servers). Batch jobs run on: they are no servers, and the hub finds them
        again when it starts."""
        jobs = [job for job in Job.unfinished(self.db) if job.interactive]
        for job in jobs:
            self.stop(job, "hub", reason, JobStatus.cancelled)
        await asyncio.gather(*(self.servers.stop(job.owner, job.server_name) for job in jobs), return_exceptions=True)
        for job in jobs:
            if not job.terminal:
                self.transition(job, JobStatus(job.outcome or JobStatus.cancelled.value))
        self.db.commit()
