"""Jobs: launch them in workspaces, follow their servers' real life, stop them.

Every status change goes through :meth:`JobService.transition` (and so
through the transition table in :mod:`uws_hub.states`). The status follows
what really happens to the job's JupyterHub server:

- ``pending``: the job row exists and JupyterHub's spawn has been asked for;
- ``queued``: the spawner reports the resource has it (a process id, a batch
  job id) but the server does not answer yet;
- ``running``: JupyterHub's spawn finished and the proxy route is in;
- ``failed`` with a reason when the spawn fails or the server exits before it
  answers (its exit status and the tail of its output), ``completed`` /
  ``cancelled`` after a stop, ``failed`` or ``completed`` when a running
  server exits on its own.

:meth:`JobService.reconcile` compares unfinished jobs with their servers and
repairs what events missed (a hub restart, a server that died).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, Awaitable, Callable

from jupyterhub import orm as hub_orm
from jupyterhub.spawner import Spawner
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .errors import Conflict
from .jobtypes import JobType, pick
from .orm import Job, Workspace, utcnow
from .servers import ServerControl
from .spawners.mixins import WorkspaceLaunch
from .states import ACTIVE_JOB_STATUSES, JobStatus, WorkspaceStatus, check_job_transition
from .workspaces import Accounts, WorkspaceService

#: JupyterHub's ``spawn_single_user(user, server_name, options=...)``, bound to a request
SpawnFunction = Callable[..., Awaitable[None]]

_TIMESTAMPS = {
    JobStatus.queued: "queued_at",
    JobStatus.running: "running_at",
    JobStatus.stopping: "stopping_at",
    JobStatus.completed: "finished_at",
    JobStatus.failed: "finished_at",
    JobStatus.cancelled: "finished_at",
}


def tail(path: str, max_bytes: int = 2000) -> str:
    """The last lines of a job's output file ('' if there is none)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    if size > max_bytes:
        text = text.split("\n", 1)[-1]
    return text.strip()


class JobService:
    def __init__(
        self,
        db: Session,
        servers: ServerControl,
        workspaces: WorkspaceService,
        accounts: Accounts,
        job_types: dict[str, JobType],
        log: logging.Logger,
        *,
        job_log_dir: str,
        start_poll_interval: float = 0.5,
    ):
        self.db = db
        self.servers = servers
        self.workspaces = workspaces
        self.accounts = accounts
        self.job_types = job_types
        self.log = log
        self.job_log_dir = job_log_dir
        self.start_poll_interval = start_poll_interval
        #: jobs whose launch call is in progress in this process
        self._launching: set[int] = set()
        self._tasks: set[asyncio.Task] = set()

    # ---------------------------------------------------------------- status
    def transition(self, job: Job, new: JobStatus, reason: str | None = None) -> None:
        """The only way a job's status changes: checked, timestamped, workspace kept in step."""
        new = check_job_transition(job.status, new)
        job.status = new.value
        if new in _TIMESTAMPS:
            setattr(job, _TIMESTAMPS[new], utcnow())
        if reason is not None:
            job.reason = reason
        if new.terminal:
            job.target = "stopped"
            ws = job.workspace
            if ws.status == WorkspaceStatus.active.value and Job.active_in(self.db, ws.id) in (None, job):
                self.workspaces.set_status(ws, WorkspaceStatus.idle)
        self.log.info(
            "Job %s (%s in workspace %s): %s%s",
            job.id, job.job_type, job.workspace_id, new.value, f" ({reason})" if reason else "",
        )

    # ---------------------------------------------------------------- queries
    def count(self, where: ColumnElement[bool]) -> int:
        return self.db.scalar(select(func.count(Job.id)).where(where)) or 0

    def list(self, where: ColumnElement[bool], offset: int, limit: int) -> list[Job]:
        return list(
            self.db.scalars(select(Job).where(where).order_by(Job.id.desc()).offset(offset).limit(limit))
        )

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

    def url(self, job: Job) -> str | None:
        """Where the job's server answers through the proxy (running jobs only)."""
        if job.status != JobStatus.running.value:
            return None
        user = self.servers.user(job.owner)
        default_url = ""
        job_type = self.job_types.get(job.job_type)
        if job_type is not None:
            default_url = job_type.default_url.lstrip("/")
        return user.server_url(job.server_name) + default_url

    # ---------------------------------------------------------------- launch
    async def launch(
        self,
        ws: Workspace,
        job_type_name: str,
        resource: str | None,
        resources: dict[str, Any],
        spawn: SpawnFunction,
    ) -> Job:
        """Create the job and ask JupyterHub to start its server; returns at once."""
        job_type, resource = pick(self.job_types, job_type_name, resource)
        if ws.status not in (WorkspaceStatus.idle.value, WorkspaceStatus.active.value):
            raise Conflict(f"Workspace {ws.slug!r} is {ws.status}; jobs can start only when it is idle")
        system_user = self.accounts.system_user(ws.owner.name)
        job = Job(
            workspace=ws,
            owner_id=ws.owner_id,
            job_type=job_type.name,
            resource=resource,
            interactive=job_type.interactive,
            status=JobStatus.pending.value,
            target="running",
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
        if ws.status == WorkspaceStatus.idle.value:
            self.workspaces.set_status(ws, WorkspaceStatus.active)
        self.db.commit()

        launch = self._launch_for(job, ws, job_type, system_user)
        spawner = self.servers.prepare(ws.owner, job.server_name, launch, self._on_report)
        self._launching.add(job.id)
        try:
            await spawn(self.servers.user(ws.owner), job.server_name, options={})
        except Exception as e:
            self.db.rollback()
            spawner.next_launch = None
            self.transition(job, JobStatus.failed, f"The server could not be started: {_message(e)}")
            self.db.commit()
            raise
        finally:
            self._launching.discard(job.id)
        self._follow_start(job.id, spawner)
        return job

    def _launch_for(self, job: Job, ws: Workspace, job_type: JobType, system_user: str | None) -> WorkspaceLaunch:
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
            env=dict(job_type.env),
            resources=dict(job.resources),
            system_user=system_user,
            home=home,
            log_path=self.log_path(job),
        )

    def _follow_start(self, job_id: int, spawner: Spawner) -> None:
        """Finish the job's start when JupyterHub's spawn does, and catch early exits."""
        future = spawner._spawn_future
        if future is None:
            # the spawn finished (or failed) within the call
            self._start_finished(job_id, spawner, None)
            return
        future.add_done_callback(lambda f: self._start_finished(job_id, spawner, f))
        self._background(self._watch_start(job_id, spawner, future))

    def _start_finished(self, job_id: int, spawner: Spawner, future: asyncio.Future | None) -> None:
        job = Job.find(self.db, job_id)
        if job is None or job.terminal or job.status == JobStatus.stopping.value:
            return
        error = None
        if future is not None and future.cancelled():
            error = "The start was cancelled"
        elif future is not None and future.exception() is not None:
            error = _message(future.exception())
        elif not spawner.ready:
            error = "The server started but could not be added to the proxy"
        if error is None:
            self.transition(job, JobStatus.running)
        else:
            self._fail(job, f"The server failed to start: {error}")
        self.db.commit()

    def log_path(self, job: Job) -> str:
        """The file the job's server writes its output to."""
        return os.path.join(self.job_log_dir, f"job-{job.id}.log")

    def _fail(self, job: Job, reason: str) -> None:
        """Fail the job, with the tail of the server's output in the reason."""
        output = tail(self.log_path(job))
        if output:
            reason += f"\n--- last output ---\n{output}"
        self.transition(job, JobStatus.failed, reason)

    async def _watch_start(self, job_id: int, spawner: Spawner, future: asyncio.Future) -> None:
        """While the server starts, notice at once if its process exits.

        JupyterHub would otherwise wait ``Spawner.http_timeout`` for a server
        that is already dead; here the job fails with the exit status and the
        tail of the output within ``start_poll_interval``.
        """
        while not future.done():
            await asyncio.sleep(self.start_poll_interval)
            if future.done() or not spawner._waiting_for_response:
                continue
            status = await spawner.poll()
            if status is None or future.done():
                continue
            job = Job.find(self.db, job_id)
            if job is None or job.terminal:
                return
            self._fail(
                job, f"The server failed to start: it exited with status {status} before it answered"
            )
            self.db.commit()
            future.cancel()
            await self._stop_server(job)
            return

    def _on_report(self, spawner: Spawner, event: str, info: dict[str, Any]) -> None:
        """Lifecycle reports from the spawner (see WorkspaceSpawnerMixin.report)."""
        launch = spawner.launch
        if launch is None:
            return
        job = Job.find(self.db, launch.job_id)
        if job is None or job.terminal:
            return
        if event == "queued":
            job.resource_id = info.get("resource_id") or job.resource_id
            if job.status == JobStatus.pending.value:
                self.transition(job, JobStatus.queued)
        self.db.commit()

    # ---------------------------------------------------------------- stop
    def stop(self, job: Job) -> Job:
        """Ask for the job to stop; idempotent, returns at once (status ``stopping``)."""
        if job.terminal or job.status == JobStatus.stopping.value:
            return job
        job.target = "stopped"
        self.transition(job, JobStatus.stopping)
        self.db.commit()
        self._background(self._finish_stop(job.id))
        return job

    async def _finish_stop(self, job_id: int) -> None:
        job = Job.find(self.db, job_id)
        if job is None:
            return
        was_running = job.running_at is not None
        try:
            await self._stop_server(job)
        except Exception as e:
            self.log.exception("Stopping job %s failed", job_id)
            job = Job.find(self.db, job_id)
            if job is not None and not job.terminal:
                self.transition(job, JobStatus.failed, f"Stopping failed: {_message(e)}")
                self.db.commit()
            return
        job = Job.find(self.db, job_id)
        if job is not None and not job.terminal:
            if was_running:
                self.transition(job, JobStatus.completed, "Stopped on request")
            else:
                self.transition(job, JobStatus.cancelled, "Stopped before it was running")
            self.db.commit()

    async def _stop_server(self, job: Job) -> None:
        await self.servers.stop(job.owner, job.server_name)

    # ---------------------------------------------------------------- reconcile
    async def reconcile(self) -> None:
        """Compare every unfinished job with its server and repair the difference."""
        for job in Job.unfinished(self.db):
            if job.id in self._launching:
                continue
            try:
                await self._reconcile_job(job)
            except Exception:
                self.log.exception("Reconciling job %s failed", job.id)
                self.db.rollback()

    async def _reconcile_job(self, job: Job) -> None:
        spawner = self.servers.find(job.owner, job.server_name)
        if spawner is not None and spawner.lifecycle_listener is None:
            self.servers.attach(spawner, self._on_report)
        if spawner is not None and spawner.pending:
            return
        status = JobStatus(job.status)
        if spawner is not None and spawner.ready:
            exit_status = await spawner.poll()
            if exit_status is None:
                if status in (JobStatus.pending, JobStatus.queued):
                    self.transition(job, JobStatus.running)
                    self.db.commit()
                elif status == JobStatus.stopping:
                    self._background(self._finish_stop(job.id))
                return
            # the server exited on its own: take it out of the proxy, clean up
            await self._stop_server(job)
            job = Job.find(self.db, job.id)
            if job is None or job.terminal:
                return
            if status == JobStatus.stopping:
                self.transition(job, JobStatus.completed, "Stopped on request")
            elif exit_status == 0:
                self.transition(job, JobStatus.completed, "The server exited")
            else:
                self._fail(job, f"The server exited with status {exit_status}")
            self.db.commit()
            return
        # no server running and nothing pending
        if status == JobStatus.stopping:
            self.transition(
                job, JobStatus.completed if job.running_at else JobStatus.cancelled, "Stopped on request"
            )
        elif status == JobStatus.running:
            self.transition(job, JobStatus.failed, "The server is no longer running")
        else:
            self.transition(job, JobStatus.failed, "The launch was interrupted (was the hub restarted?)")
        self.db.commit()

    # ---------------------------------------------------------------- tasks
    def _background(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait_idle(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _message(e: BaseException) -> str:
    """A readable one-line reason from an exception (HTTPError's log_message first)."""
    msg = getattr(e, "log_message", None) or getattr(e, "message", None) or str(e)
    return msg or type(e).__name__
