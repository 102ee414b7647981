"""The reconciler's steps for jobs: make a job's server match what the job asks for.

A job's status is where it is, its target (:class:`~uws_hub.states.JobTarget`)
``running`` or ``stopped`` is where the user wants it. Each step (one
:meth:`JobSteps.reconcile` by a worker of :mod:`uws_hub.reconciler`) moves
it on: start the server, notice it answers, stop it, record how it ended.
Starts and stops run as helper tasks of the app's task pool; one that worked
records its outcome itself (the job running, the job's end) in the commit
that ends it, one that did not puts the job back on the queue. After every
scan, missing proxy routes are put back and orphaned resource jobs swept; a
job stuck past a deadline is failed with the reason, logged as an event.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from jupyterhub.spawner import Spawner
from sqlalchemy import Row, select

from ..errors import UWSError
from ..orm import Job, utcnow, write_at_once
from ..reasons import STOPPED_OUTSIDE, exit_reason, from_exception, not_started
from ..reconciler import Key
from ..spawners.mixins import hub_id
from ..states import ACTIVE_JOB_STATUSES, JobStatus, JobTarget
from ..tasks import TaskPool
from ..workqueue import WorkQueue
from .batch import BatchSteps
from .servers import ServerControl
from .service import JobService

#: the statuses of a job on its way to running
STARTING = (JobStatus.pending.value, JobStatus.queued.value)

#: starts that may be in their bookkeeping while the event loop is late (see
#: JobSteps._free_start_slots):
#: some progress however busy the hub is
MIN_STARTS_WHEN_LATE = 2


@dataclass(eq=False)
class _Start:
    """A start under way in this process: what the steps know of it, one record a job
    (``JobSteps._starts``) from the step that makes it until its outcome is taken or no
    longer wanted (``JobSteps._drop_start``). Its start slot is counted from the same
    record until its future is done (``JobSteps._count_start``). One record, not a
    collection a field: every end path had to empty each of those by hand, and one
    missed leaked a slot or left a job marked submitted for good."""

    job_id: int
    future: asyncio.Future
    #: the job's row, held: the session's identity map keeps only what something holds,
    #: and the start's reports, progress messages and steps each looked its job up again
    #: (a query each, on the event loop)
    job: Job
    spawner: Spawner
    #: when it began (left the line for a start slot): a pending job's deadline times its
    #: start, not its wait for a slot (a burst's line can be long)
    began: datetime
    #: its server runs on the hub's machine (a local process)
    local: bool
    #: its resource has taken it (a process started, a batch job submitted): what is left
    #: of it is waiting, not the hub's bookkeeping
    submitted: bool = False
    #: why it failed, found by the watch of its server's process (see JobSteps._check_start)
    error: str | None = None

    @property
    def running(self) -> bool:
        return not self.future.done()

    @property
    def elsewhere(self) -> bool:
        """Submitted to a resource elsewhere (a job in SLURM's queue): it waits, and
        takes none of the hub machine's CPU."""
        return self.submitted and not self.local


class JobSteps:
    """The steps of every job: an interactive job's server here, a batch job's by
    :class:`~uws_hub.jobs.batch.BatchSteps`."""

    kind = "job"

    def __init__(
        self,
        jobs: JobService,
        servers: ServerControl,
        queue: WorkQueue[Key],
        pool: TaskPool,
        log: logging.Logger,
        *,
        batch: BatchSteps,
        pending_timeout: float = 300,
        queued_timeout: float = 0,
        stopping_timeout: float = 120,
        max_attempts: int = 3,
        concurrent_starts: int = 0,
        max_local_starts: int = 0,
        start_poll_interval: float = 0.5,
        loop_lag: Callable[[], float] | None = None,
        max_loop_lag: float = 0,
    ):
        self.jobs = jobs
        self.db = jobs.db
        self.servers = servers
        self.queue = queue
        self.pool = pool
        self.log = log
        self.pending_timeout = pending_timeout
        self.queued_timeout = queued_timeout
        self.stopping_timeout = stopping_timeout
        self.max_attempts = max_attempts
        self.concurrent_starts = concurrent_starts
        #: the most starts that use the hub machine's CPU at once (0: no cap), see
        #: _free_start_slots
        self.max_local_starts = max_local_starts
        #: the event loop's lag now (metrics.LoopLagProbe.lag), and the most at which
        #: starts beyond MIN_STARTS_WHEN_LATE begin (0: starts do not look at it)
        self.loop_lag = loop_lag
        self.max_loop_lag = max_loop_lag
        self.start_poll_interval = start_poll_interval
        self.batch = batch
        #: starts under way in this process whose outcome the steps are to take, by job id
        #: (see _start and _drop_start)
        self._starts: dict[int, _Start] = {}
        #: the start slots held, counted from the starts' records (see _count_start): the
        #: starts whose future is not done yet (a slot each, see ``concurrent_starts``),
        #: of them those that use the hub machine's CPU (``max_local_starts``) and those
        #: in their bookkeeping (while the event loop is late)
        self._starts_running = 0
        self._starts_here = 0
        self._starts_in_bookkeeping = 0
        #: jobs waiting for a start slot: job id -> its ticket (first come, first served)
        self._start_line: dict[int, int] = {}
        self._tickets = itertools.count()
        #: stops under way in this process, by job id
        self._stops: dict[int, asyncio.Future] = {}
        #: starts whose server's process is watched until it answers (see _watch_start),
        #: the one task that watches them, and the checks under way
        self._watched: dict[int, _Start] = {}
        self._watcher: asyncio.Task | None = None
        self._checking: set[int] = set()

    def wake(self, job_id: int) -> None:
        self.queue.put((self.kind, job_id))

    # ---------------------------------------------------------------- the scan
    def unfinished(self) -> list[int]:
        """The jobs the scan looks at: every unfinished one, but

        - the batch jobs that wait for a slot: those are the fair queue's (its own key,
          scanned too), not a step each;
        - the interactive jobs whose start is under way in this process (it wakes them
          as it goes) or that wait for a start slot (the line wakes them), until they
          are past their deadline.

        Thousands of jobs held in SLURM's queue or waiting in the fair queue would
        otherwise cost a step each, every scan."""
        waiting = Job.interactive.is_(False) & Job.submitted_at.is_(None) & (Job.target != JobTarget.stopped.value)
        active = Job.status.in_([s.value for s in ACTIVE_JOB_STATUSES])
        # one query, and only the columns a start's deadline needs: a job's row is not
        # in the session's identity map unless something holds it, so a lookup of each
        # start under way was a query each (5,000 of them every scan: seconds of a
        # stalled event loop with 5,000 jobs held in SLURM's queue)
        rows = self.db.execute(
            select(
                Job.id, Job.interactive, Job.target, Job.status, Job.created_at, Job.queued_at, Job.stopping_at
            ).where(active, ~waiting)
        )
        ids = []
        for job in rows:
            start = self._starts.get(job.id)
            if (
                (job.id in self._start_line or (start is not None and start.running))
                and job.interactive
                and job.target == JobTarget.running.value
                and not self._overdue(job, self._start_timeout(job))
            ):
                continue
            ids.append(job.id)
        return ids

    async def after_scan(self) -> None:
        """Stop the running jobs whose logs take too much disk (all in one look); put back
        proxy routes that went missing; sweep orphaned resource jobs."""
        await self.jobs.stop_logs_too_large()
        # the running servers' rows only, not every unfinished job's (thousands held in a queue)
        running = [
            (job.owner, job.server_name)
            for job in self.db.scalars(
                select(Job).where(Job.interactive.is_(True), Job.status == JobStatus.running.value)
            )
        ]
        if running:
            await self.servers.restore_routes(running)
        await self._sweep_orphans()

    async def _sweep_orphans(self) -> None:
        """Let each spawner class that can (``sweep_orphans``) end resource jobs no job knows.

        A resource shared by several processes (a SLURM cluster) can hold jobs
        of this hub that no job row knows: the hub died between submitting and
        recording one, or started a job anew after losing track of it.
        """
        by_class: dict[type, set[str]] = {}
        for resource, cls in self.servers.spawner_classes.items():
            if hasattr(cls, "sweep_orphans"):
                by_class.setdefault(cls, set()).add(resource)
        if not by_class:
            return
        this_hub = hub_id(self.db.get_bind().engine.url.render_as_string(hide_password=True))
        for cls, resources in by_class.items():

            def known(resources: set[str] = resources) -> dict[int, str | None]:
                rows = self.db.execute(
                    select(Job.id, Job.resource_id).where(
                        Job.status.in_([s.value for s in ACTIVE_JOB_STATUSES]), Job.resource.in_(resources)
                    )
                )
                return {job_id: resource_id for job_id, resource_id in rows}

            try:
                await cls.sweep_orphans(known, hub_id=this_hub, config=self.servers.config, log=self.log)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.exception("Sweeping orphaned jobs of %s failed; continuing", sorted(resources))

    # ---------------------------------------------------------------- one step
    async def reconcile(self, job_id: int) -> None:
        # a job waiting for a start slot steps out of line for its step; it keeps
        # its ticket if it still waits after it (see _take_start_slot)
        ticket = self._start_line.pop(job_id, None)
        try:
            await self._reconcile(job_id, ticket)
        finally:
            if ticket is not None and job_id not in self._start_line:
                self.wake_start_line()  # it left the line (started, stopped, failed): next

    async def _reconcile(self, job_id: int, ticket: int | None) -> None:
        job = Job.find(self.db, job_id)
        if job is None or job.terminal:
            self._forget(job_id)
            return
        if not job.interactive:
            await self.batch.reconcile(job)
            return
        if job.target == JobTarget.running.value and job.status in STARTING and not job.attempts:
            # no start was made for this job yet (it waits for a start slot): the steps
            # of a burst of waiting jobs need no database lookup. A server of the
            # workspace that runs is loaded in this process (JupyterHub loads every
            # server with a Server row at its start, and drops a spawner only once its
            # server is gone); one that is not loaded is stopped, as good as none. A job
            # whose start began (maybe before a restart) looks in the database too.
            spawner = self.servers.live(job.owner, job.server_name)
        elif job.target == JobTarget.stopped and (stop := self._stops.get(job_id)) is not None and stop.done():
            # its stop in this process ended: what is left (recording how) needs no spawner.
            # JupyterHub dropped the stopped server's, and find() would make a new one, a
            # few milliseconds between the server's exit and the job's end
            spawner = self.servers.live(job.owner, job.server_name)
        else:
            spawner = self.servers.find(job.owner, job.server_name)
        if spawner is not None and spawner.lifecycle_listener is None:
            spawner.lifecycle_listener = self._on_report
        if job.target == JobTarget.stopped:
            await self._reconcile_stop(job, spawner)
        elif job.status in STARTING:
            await self._reconcile_start(job, spawner, ticket)
        elif job.status == JobStatus.running.value:
            await self._reconcile_running(job, spawner)

    def _start_timeout(self, job: Job | Row[*tuple[Any, ...]]) -> float:
        """How long a job may take to start in its status (0: no limit)."""
        return self.pending_timeout if job.status == JobStatus.pending.value else self.queued_timeout

    def _overdue(self, job: Job | Row[*tuple[Any, ...]], timeout: float) -> bool:
        if not timeout or (job.status == JobStatus.pending.value and job.id in self._start_line):
            return False  # (a launch waiting for a start slot: its start's deadline has not begun)
        start = self._starts.get(job.id)
        since = {
            JobStatus.pending.value: start.began if start is not None else job.created_at,
            JobStatus.queued.value: job.queued_at,
            JobStatus.stopping.value: job.stopping_at,
        }.get(job.status) or job.created_at
        return utcnow() - since > timedelta(seconds=timeout)

    async def _reconcile_start(self, job: Job, spawner: Spawner | None, ticket: int | None) -> None:
        start = self._starts.get(job.id)
        if start is not None and start.running:
            timeout = self._start_timeout(job)
            if self._overdue(job, timeout):
                self.jobs.stop(job, "hub", not_started("The job", timeout), JobStatus.failed)
            return
        if start is not None:
            # the start finished: it worked, or say why not
            self._drop_start(job.id)
            error = start.error
            if error is None and start.future.cancelled():
                error = "The start was cancelled"
            elif error is None and (failure := start.future.exception()) is not None:
                error = from_exception(failure, start_timeout=getattr(spawner, "start_timeout", None))
            if error is None and spawner is not None and spawner.ready:
                self.jobs.transition(job, JobStatus.running, node=spawner.node)
                self.db.commit()
                return
            if error is None:
                self.log.warning(
                    "Job %s: the start finished but the server is not ready (spawner %s, pending %s, server %s)",
                    job.id,
                    spawner and spawner._log_name,
                    spawner and spawner.pending,
                    spawner and spawner.server,
                )
            await self.servers.stop(job.owner, job.server_name)
            self._fail(job, f"The server failed to start: {error or 'it is not running'}")
            return
        # no start under way in this process
        if spawner is not None and spawner.ready:
            # JupyterHub restored it (hub restart) or it started before we looked
            self.jobs.transition(job, JobStatus.running, node=spawner.node)
            self.db.commit()
            return
        if spawner is not None and spawner.pending:
            if spawner.pending == "stop" and spawner._stop_future is not None:
                # the stop of the workspace's last job, whose end was recorded before
                # JupyterHub's cleanup of the server: this job starts once that is through
                spawner._stop_future.add_done_callback(lambda _, job_id=job.id: self.wake(job_id))
            return
        if job.attempts >= self.max_attempts:
            self._fail(job, f"The server could not be started after {job.attempts} attempts")
            return
        if self.jobs.start_waits_for_group_kill(job):
            return  # (woken once the kill of its workspace's strays ended)
        if not self._take_start_slot(job.id, ticket):
            if ticket is None:
                # it joined the line: say so once (a progress message: no commit)
                ahead = len(self._start_line) - 1
                self.jobs.progress(
                    job,
                    {"message": f"Waiting for a start slot: {ahead} launch{'es' if ahead != 1 else ''} ahead of it"},
                )
            return
        self._start(job)

    # ---------------------------------------------------------------- start slots
    def _free_start_slots(self) -> int:
        """How many more starts may begin now.

        No more than ``concurrent_starts`` (JupyterHub's ``concurrent_spawn_limit``)
        under way; and while the event loop runs later than ``max_loop_lag``, no
        more than :data:`MIN_STARTS_WHEN_LATE` in their bookkeeping (JupyterHub's
        spawn, a dozen commits, the process or ``sbatch``; until the resource has
        taken the job): a burst of those would make every request and event wait.
        Starts under way go on; new ones wait until the loop has caught up, so
        requests come first and starts take the time that is left. A start that
        only waits (a batch job held in SLURM's queue) does not count.

        And no more than ``max_local_starts`` that use the hub machine's CPU: a
        start in its bookkeeping, and a local server's from its process's start
        until it listens (a Python interpreter starting, a CPU's worth each, that
        the hub's loop would wait behind). A start whose job was handed to a
        resource elsewhere (submitted to SLURM) does not count.
        """
        free = (self.concurrent_starts or sys.maxsize) - self._starts_running
        if self.max_local_starts:
            free = min(free, self.max_local_starts - self._starts_here)
        if self.max_loop_lag and self.loop_lag is not None and self.loop_lag() > self.max_loop_lag:
            free = min(free, MIN_STARTS_WHEN_LATE - self._starts_in_bookkeeping)
        return free

    def _count_start(self, start: _Start, sign: int) -> None:
        """Count a start's slot in (1) or out (-1), as its record says now. The only
        place the counts change: when the start begins, around the one change of its
        record (``submitted``), and when its future is done, so that they are always
        the sum of the records of the starts not ended. Counted, not summed over the
        records at each look: thousands of starts wait in SLURM's queue, and a burst
        of launches looks once each."""
        self._starts_running += sign
        self._starts_here += sign * (not start.elsewhere)
        self._starts_in_bookkeeping += sign * (not start.submitted)

    def _take_start_slot(self, job_id: int, ticket: int | None) -> bool:
        """Whether the job may start now (see :meth:`_free_start_slots`); if not, it
        waits in line with its ticket and is woken when a slot frees. Waiting
        costs nothing: a burst of launches over the limit does not make every
        waiting job look again every half second. First come, first served: a
        slot goes to the oldest tickets."""
        free = self._free_start_slots()
        if ticket is None:
            ticket = next(self._tickets)
        if free > 0 and sum(1 for t in self._start_line.values() if t < ticket) < free:
            return True
        self._start_line[job_id] = ticket
        return False

    def _start_ended(self, start: _Start, wake: bool = True) -> None:
        """A start's future is done: its slot frees (its record may still wait for a step)."""
        self._count_start(start, -1)
        if wake:
            self.wake(start.job_id)
        self.wake_start_line()

    def _drop_start(self, job_id: int) -> _Start | None:
        """Take a start's record out: its outcome is recorded (by the start itself or a
        step), or no longer wanted (the job is stopped or finished). The one place a
        record leaves; its slot stays taken until its future is done (_start_ended)."""
        return self._starts.pop(job_id, None)

    def wake_start_line(self) -> None:
        """Wake as many waiting jobs, oldest tickets first, as there are free slots
        (after a start ended, a job left the line, or the event loop caught up)."""
        if not self._start_line:
            return
        free = self._free_start_slots()
        if free > 0:
            for job_id in heapq.nsmallest(free, self._start_line, key=self._start_line.__getitem__):
                self.wake(job_id)

    def _start(self, job: Job) -> None:
        try:
            self.jobs.check_launch(self.jobs.launch_request(job))
        except UWSError as e:
            # e.g. the owner went over a quota while the job waited
            self._fail(job, f"The launch was refused: {e.message}")
            return
        # committed before the start (see launch.retried), with an UPDATE of its own
        write_at_once(self.db, job, {"attempts": job.attempts + 1, "updated_at": utcnow()})
        self.db.commit()
        launch = self.jobs.launch_for(job)
        # a start the hub lost track of (restart) left this behind: the spawner
        # adopts it (a batch job still queued) or cleans it up (a process)
        launch.previous_resource_id = job.resource_id
        if job.resource_id:
            launch.resource_uid = self.jobs.resource_uid(job)
        # a start the hub was killed in before it recorded a resource id left no trace
        # in the row: the spawner looks for what it may have left (a local process)
        launch.retried = job.attempts > 1
        job_id = job.id
        recorded = False

        def started() -> None:
            # the start worked: the job runs, recorded in the commit that ends the start,
            # not by one more step after the start's end woke the job (its trip through
            # the queue). Synchronous, in the start's own task: a step of this job that
            # runs meanwhile finds the start under way and leaves it be.
            nonlocal recorded
            current = self.db.get(Job, job_id)  # held in the start's record: no query
            if (
                current is None
                or current.target != JobTarget.running.value
                or current.status not in STARTING
                or self._starts.get(job_id) is not start
            ):
                return  # (stopped meanwhile: the steps see to it)
            self._drop_start(job_id)
            self.jobs.transition(current, JobStatus.running, node=start.spawner.node)
            recorded = True

        def ended(f: asyncio.Future) -> None:
            # (recorded, but the start failed after it: the commit did, and was rolled back)
            self._start_ended(start, wake=not recorded or f.cancelled() or f.exception() is not None)

        future = self.servers.start(
            job.owner, job.server_name, job.resource, launch, self._on_report, lambda: self.wake(job_id), then=started
        )
        start = self._starts[job_id] = _Start(
            job_id=job_id,
            future=future,
            job=job,
            spawner=self.servers.find(job.owner, job.server_name),
            began=utcnow(),
            local=getattr(self.servers.spawner_classes.get(job.resource), "runs_on_hub_machine", False),
        )
        self._count_start(start, 1)
        future.add_done_callback(ended)
        self.pool.spawn(self._forward_progress(job_id, start.spawner, future))
        self._watch_start(start)

    async def _release_leftover(self, job: Job) -> None:
        """A start this process does not know of left a resource behind (hub restart): release it."""
        spawner = self.servers.spawner(job.owner, job.server_name, job.resource)
        self.log.warning("Job %s: releasing resource %s left by an interrupted start", job.id, job.resource_id)
        await spawner.release_leftover(job.id, job.resource_id, self.jobs.resource_uid(job))
        job.resource_id = job.resource_uid = None
        self.db.commit()

    def _watch_start(self, start: _Start) -> None:
        """Fail a start at once if the server's process exits before it answers.

        JupyterHub would otherwise wait ``Spawner.http_timeout`` for a server
        that is already gone. One task looks at every start under way each
        ``start_poll_interval`` and polls those whose server JupyterHub waits
        for, not a task and a timer per start: thousands of jobs held in
        SLURM's queue each woke the event loop twice a second for nothing.
        """
        self._watched[start.job_id] = start
        start.future.add_done_callback(lambda f: self._unwatch(start))
        if self._watcher is None or self._watcher.done():
            self._watcher = self.pool.spawn(self._watch_starts(), "start-watcher")

    def _unwatch(self, start: _Start) -> None:
        if self._watched.get(start.job_id) is start:
            del self._watched[start.job_id]

    async def _watch_starts(self) -> None:
        """The watch of :meth:`_watch_start`; it ends when no start is left to watch."""
        while self._watched:
            await asyncio.sleep(self.start_poll_interval)
            for job_id, start in list(self._watched.items()):
                # (a stop under way is JupyterHub's own, after the server did not answer in
                # time: that is the reason, not the exit the stop itself causes)
                if (
                    job_id in self._checking
                    or not start.running
                    or not start.spawner._waiting_for_response
                    or start.spawner._stop_pending
                ):
                    continue
                self._checking.add(job_id)
                self.pool.spawn(self._check_start(start))

    async def _check_start(self, start: _Start) -> None:
        try:
            status = await start.spawner.poll()
            if status is not None and start.running:
                start.error = exit_reason("it", status, when=" before it answered")
                start.future.cancel()
        finally:
            self._checking.discard(start.job_id)

    async def _forward_progress(self, job_id: int, spawner: Spawner, future: asyncio.Future) -> None:
        try:
            async for event in self.servers.progress(spawner, future):
                job = Job.find(self.db, job_id)
                if job is None or job.terminal:
                    return
                self.jobs.progress(job, event)
        except asyncio.CancelledError:
            raise
        except Exception:
            if self.pool.closed:
                # the hub shuts down: JupyterHub's iterate_until cannot close a progress
                # generator that is mid-step when it is cancelled ("already running")
                return
            self.log.exception("Forwarding spawn progress of job %s failed", job_id)

    async def _reconcile_running(self, job: Job, spawner: Spawner | None) -> None:
        if spawner is None or not spawner.active:
            ended = getattr(spawner, "exit_status", None)
            self._fail(job, exit_reason("The server", ended) if ended else "The server is no longer running")
            return
        if spawner.pending:
            return
        exit_status = await spawner.poll()
        if exit_status is not None:
            if job.target == JobTarget.stopped:
                # the spawner reported how its resource ended the job ("ended"): the stop records it
                return
            # asked before the stop, which clears what the spawner knows of the server
            why = await asyncio.to_thread(spawner.over_memory, exit_status) if exit_status != 0 else None
            await self.servers.stop(job.owner, job.server_name)
            if exit_status == 0:
                self.jobs.transition(job, JobStatus.completed, "The server exited")
                self.db.commit()
            elif why is not None:
                memory = (job.resources or {}).get("memory")
                self._fail(
                    job,
                    f"The server went over its memory limit of {memory}: {why}; it exited with status {exit_status}",
                )
            else:
                self._fail(job, exit_reason("The server", exit_status))
            return
        if job.url is None:
            # running since before the hub stored where jobs answer (an upgrade)
            job.url, job.node = self.jobs.url_of(job), spawner.node
            self.db.commit()
        limit = self.jobs.time_limit_seconds(job)
        if limit and job.running_at and utcnow() - job.running_at > timedelta(seconds=limit):
            self.jobs.stop(job, "hub", f"The job reached its time limit of {limit:g} s", JobStatus.failed)

    async def _reconcile_stop(self, job: Job, spawner: Spawner | None) -> None:
        if job.status != JobStatus.stopping.value:
            self.jobs.transition(job, JobStatus.stopping, job.reason)
            self.db.commit()
        start = self._drop_start(job.id)
        if start is not None and start.running:
            start.future.cancel()
        stop = self._stops.get(job.id)
        if stop is not None and not stop.done():
            if self._overdue(job, self.stopping_timeout):
                self._stops.pop(job.id)
                self._fail(job, f"The server did not stop within {self.stopping_timeout:g} s")
            return
        if stop is not None:
            self._stops.pop(job.id)
            if (failure := stop.exception()) is not None:
                self._fail(job, f"Stopping failed: {from_exception(failure)}")
                return
        elif spawner is not None and (spawner.active or spawner.server is not None):
            self._stop(job)
            return
        elif job.resource_id and job.running_at is None:
            await self._release_leftover(job)
        self._record_end(job)
        self.db.commit()

    def _stop(self, job: Job) -> None:
        """Stop the job's server in a helper task; the job's end is recorded as soon as
        the server has stopped, in the commit that ends JupyterHub's stop (see
        ``ServerControl.stop``'s ``then``), not by a step of the reconciler after it: the
        key's trip through the queue and the job's lookup cost a stop ~3 ms. A stop that
        did not record it (it failed, maybe in the commit of the end; someone else's stop
        was under way) wakes the job, whose next step does, as before."""
        job_id = job.id
        recorded = False

        def stopped() -> None:
            # (synchronous, in the stop's own task: a step of this job that runs meanwhile
            # waits for this stop, and then finds the job finished)
            nonlocal recorded
            current = self.db.get(Job, job_id)  # the row this closure holds: no query
            if current is not None and current.target != JobTarget.stopped.value:
                return
            self._forget(job_id)
            if current is not None and not current.terminal:
                self._record_end(current)
            recorded = True

        async def stop() -> None:
            await self.servers.stop(job.owner, job.server_name, then=stopped)

        def done(future: asyncio.Future) -> None:
            # (recorded, but the stop failed after it: the commit did, and was rolled back)
            if not recorded or future.cancelled() or future.exception() is not None:
                self.wake(job_id)

        future = self._stops[job_id] = self.pool.spawn(stop())
        future.add_done_callback(done)

    def _record_end(self, job: Job) -> None:
        """The end of a job whose server is stopped (the caller commits): the outcome a
        stop asked for, else completed (it ran) or cancelled (it never did)."""
        outcome = (
            JobStatus(job.outcome) if job.outcome else (JobStatus.completed if job.running_at else JobStatus.cancelled)
        )
        self.jobs.transition(job, outcome)

    def _forget(self, job_id: int) -> None:
        """Drop what this process keeps of a job that is finished."""
        self._drop_start(job_id)
        self._stops.pop(job_id, None)
        self.batch.forget(job_id)

    def _fail(self, job: Job, reason: str) -> None:
        self.jobs.transition(job, JobStatus.failed, reason)
        self.db.commit()

    # ---------------------------------------------------------------- spawner reports
    def _on_report(self, spawner: Spawner, event: str, info: dict[str, Any]) -> None:
        """Lifecycle reports from the spawner (see WorkspaceSpawnerMixin.report)."""
        launch = spawner.launch
        if launch is None:
            return
        job = Job.find(self.db, launch.job_id)
        if job is None or job.terminal:
            return
        if event == "queued":
            # the checkpoint: from now on the hub knows the resource's own id
            # (only while the start is under way: a report after its end counted its slot
            # out, before the step that drops the ended start, would count it out again,
            # one more start past max_local_starts each time)
            start = self._starts.get(job.id)
            if start is not None and start.running and not start.submitted:
                self._count_start(start, -1)
                start.submitted = True
                self._count_start(start, 1)
                self.wake_start_line()  # its bookkeeping is done: room for a start while the loop is late
            if info.get("resource_id"):
                # the uid it runs as comes with its id (a later report of the same id, a
                # SLURM job's pending reason, may leave it out)
                if "resource_uid" in info or info["resource_id"] != job.resource_id:
                    job.resource_uid = info.get("resource_uid")
                job.resource_id = info["resource_id"]
            if job.status == JobStatus.pending.value:
                self.jobs.transition(job, JobStatus.queued, info.get("reason"))
            elif job.status == JobStatus.queued.value and info.get("reason"):
                # the resource's view of the waiting job, e.g. SLURM's pending reason
                job.reason = info["reason"]
            self.db.commit()
        elif event == "ended" and job.target == JobTarget.running:
            # the resource ended the job and says how (a time limit, a node failure, scancel)
            self.jobs.stop(
                job, job.resource, info.get("reason") or "The job ended", JobStatus(info.get("outcome") or "failed")
            )
        elif event == "stopping" and job.target == JobTarget.running and job.status == JobStatus.running.value:
            self.jobs.stop(job, "jupyterhub", STOPPED_OUTSIDE)
