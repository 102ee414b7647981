"""The reconciler's steps for batch jobs: hand a job to its runner, notice it run and end.

A batch job is ``pending`` when launched, ``queued`` while it waits for a
slot (:mod:`uws_hub.jobs.queue`) and then on its resource (a SLURM queue),
``running`` while its command runs, and ends ``completed`` (exit status 0),
``failed`` (an exit status, a signal, its time or memory limit; the reason
says which) or ``cancelled`` (stopped on request). Its steps:

- given a slot (``submitted_at``), make its results folder and submit it to
  its resource's runner, as a helper task (``attempts`` counts the tries, so
  after a hub restart a job with none is submitted without asking first);
- once submitted, ask the runner where it is: running, ended (then record
  the exit status and the real start and end times, which core-hours are
  counted from), or never started (a hand-over the hub died in: submit again);
- on a stop, cancel it through the runner and record how it ended.

The runner wakes the job whenever it notices a change; each scan asks
again, so a hub restarted while jobs ran finds every outcome.

A job's way from its slot to its end costs few steps, since a burst of short
jobs is bounded by the hub's own work per job: the queue hands the jobs it
chose over in its own commit (:meth:`BatchSteps.hand_over`: checks, attempt
counted, then the submit tasks), and the submit task records what the runner
says right after the hand-over (``running``, its id on the resource) in one
commit, without another step; it wakes the job only when something asked for
it meanwhile (a stop, the command's end) or the hand-over failed. The rows of
the jobs under way are held from their hand-over to their end, so that neither
the submit task nor a step of the job looks its job up again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import timedelta

from ..errors import UWSError
from ..orm import Job, utcnow, write_changes_at_once
from ..reasons import from_exception
from ..spawners.batch import BatchLaunch, BatchRunner, RunState
from ..states import JobStatus, JobTarget
from ..tasks import TaskPool
from .service import JobService

#: the most job rows :class:`BatchSteps` holds (the latest handed over)
MAX_HELD_ROWS = 1000


class BatchSteps:
    def __init__(
        self,
        jobs: JobService,
        runners: dict[str, BatchRunner],
        pool: TaskPool,
        log: logging.Logger,
        *,
        max_attempts: int = 3,
        stopping_timeout: float = 120,
    ):
        self.jobs = jobs
        self.db = jobs.db
        self.runners = runners
        self.pool = pool
        self.log = log
        self.max_attempts = max_attempts
        self.stopping_timeout = stopping_timeout
        #: hand-overs and cancels under way in this process, by job id
        self._submits: dict[int, asyncio.Task] = {}
        self._cancels: dict[int, asyncio.Task] = {}
        #: jobs whose step came while their hand-over was under way: the hand-over wakes them
        self._woken: set[int] = set()
        #: the rows of the jobs handed over and not ended (at most MAX_HELD_ROWS, the latest),
        #: held: the session's identity map keeps only what something holds, and the end of
        #: the hand-over and each step of the job looked it up again (a query each)
        self._rows: dict[int, Job] = {}
        #: what their runners were handed (:meth:`_launch`), by job id, as long as their rows
        self._launches: dict[int, BatchLaunch] = {}

    def forget(self, job_id: int) -> None:
        self._submits.pop(job_id, None)
        self._cancels.pop(job_id, None)
        self._woken.discard(job_id)
        self._rows.pop(job_id, None)
        self._launches.pop(job_id, None)

    def _hold(self, job: Job, launch: BatchLaunch) -> None:
        if job.id not in self._rows and len(self._rows) >= MAX_HELD_ROWS:
            oldest = next(iter(self._rows))
            del self._rows[oldest]
            self._launches.pop(oldest, None)
        self._rows[job.id] = job
        self._launches[job.id] = launch

    def _release_if_ended(self, job: Job) -> None:
        if job.terminal:
            self._rows.pop(job.id, None)
            self._launches.pop(job.id, None)

    def _launch(self, job: Job) -> BatchLaunch:
        """What the job's runner was handed, to ask it about the job: kept from the
        hand-over (its making, the account's look-up and the command's rendering, was a
        tenth of the step that records a short job's end), else made again (after a
        restart)."""
        launch = self._launches.get(job.id)
        return launch if launch is not None else self.jobs.batch_launch(job)

    async def reconcile(self, job: Job) -> None:
        try:
            await self._reconcile(job)
        finally:
            self._release_if_ended(job)

    async def _reconcile(self, job: Job) -> None:
        if job.target == JobTarget.stopped.value:
            await self._stop(job)
            return
        if job.target == JobTarget.held.value:
            return  # not yet asked to run (JobService.run lets it into the queue)
        if job.submitted_at is None:
            # waiting for a slot: the queue decides (and wakes the job)
            self.jobs.wake_queue()
            return
        runner = self.runners[job.resource]
        submit = self._submits.get(job.id)
        if submit is not None:
            if not submit.done():
                self._woken.add(job.id)
                return
            self._submits.pop(job.id)
            if not submit.cancelled() and (failure := submit.exception()) is not None:
                self._fail(job, f"The job could not be started: {from_exception(failure)}")
                return
        elif job.attempts == 0:
            self._submit(job)
            return
        launch = self._launch(job)
        state = await runner.state(launch, job.resource_id, lambda: self.jobs.wake(job.id))
        self._follow(job, state, launch.resource_uid)

    def _follow(self, job: Job, state: RunState, uid: int | None) -> None:
        self._found(job, state, uid)
        if state.phase == "unstarted":
            if job.attempts >= self.max_attempts:
                self._fail(job, f"The job could not be started after {job.attempts} attempts")
            else:
                self.log.warning(
                    "Job %s: its runner has no trace of it (a hand-over the hub died in); submitting again", job.id
                )
                self._submit(job)
            return
        if state.phase == "queued":
            if state.reason and state.reason != job.reason and job.status == JobStatus.queued.value:
                job.reason = state.reason
                self.db.commit()
            return
        if state.phase == "running":
            if job.status == JobStatus.queued.value:
                self.jobs.transition(job, JobStatus.running, node=state.node, at=state.started_at)
                write_changes_at_once(self.db, job)
                self.db.commit()
            return
        self._finish(job, state)

    def _found(self, job: Job, state: RunState, uid: int | None) -> None:
        """Store the job's id on its resource, and the ``uid`` it runs as (the runner's
        ``launch.resource_uid``), when the runner found it by other means (a hand-over the
        hub died in after the resource took the job)."""
        if state.resource_id and state.resource_id != job.resource_id:
            job.resource_id, job.resource_uid = state.resource_id, uid
            self.db.commit()

    def hand_over(self, jobs: list[Job]) -> Callable[[], None]:
        """The queue gave ``jobs`` a slot: check each again and count its attempt, in the
        queue's own transaction (not committed here); the returned call, made once the
        queue committed, starts their hand-overs."""
        ready = [(job, launch) for job in jobs if (launch := self._count_attempt(job, commit=False)) is not None]

        def start() -> None:
            for job, launch in ready:
                self._spawn_submit(job, launch)

        return start

    def _count_attempt(self, job: Job, *, commit: bool = True) -> BatchLaunch | None:
        """Check the launch again and count an attempt; what the runner is handed (None:
        refused, the job failed). The job's log file (the runner's, named by its id) is
        stored with the attempt."""
        try:
            self.jobs.check_launch(self.jobs.launch_request(job))
            # (here: in the queue's transaction, a refusal that raised would fail the queue's
            # step, for every job, at each retry)
            launch = self.jobs.batch_launch(job)
        except UWSError as e:
            # e.g. the owner used up their core-hours while the job waited, or the
            # launcher's system account is gone
            self.jobs.transition(job, JobStatus.failed, f"The launch was refused: {e.message}")
            if commit:
                self.db.commit()
            return None
        job.log_path = launch.log_path
        job.attempts += 1
        # written at once: the queue hands several jobs over in its transaction, and the next
        # one's checks would flush this one's row
        write_changes_at_once(self.db, job)
        self._hold(job, launch)
        if commit:
            self.db.commit()
        return launch

    def _submit(self, job: Job) -> None:
        if (launch := self._count_attempt(job)) is not None:
            self._spawn_submit(job, launch)

    def _spawn_submit(self, job: Job, launch: BatchLaunch) -> None:
        """Hand the job to its runner as a task (its attempt is counted and committed)."""
        job_id = job.id
        runner = self.runners[job.resource]
        wake = lambda: self.jobs.wake(job_id)  # noqa: E731
        results = self.jobs.results_dir_maker(job)

        async def submit() -> None:
            if launch.group is not None:  # an editor's job: see JobService.start_waits_for_group_kill
                await self.jobs.group_kills.wait(launch.workspace_id)
            resource_id = await runner.submit(launch, wake, prepare=results)
            # what the job's next step would ask at once, asked here (a local runner
            # answers from its watch; SLURM's poller from its cache, or its next cycle)
            try:
                state: RunState | None = await runner.state(launch, resource_id, wake)
            except Exception as e:  # the hand-over happened: the job's next step asks again
                self.log.warning("Job %s: submitted, but its state is unknown yet: %s", job_id, from_exception(e))
                state = None
            submitted = Job.find(self.db, job_id)
            if submitted is None:
                return
            submitted.resource_id, submitted.resource_uid = resource_id, launch.resource_uid
            if (
                state is not None
                and state.phase != "unstarted"
                and submitted.target == JobTarget.running.value
                and job_id not in self._woken
            ):
                # nothing asked for the job meanwhile: this is its step (no await from here on)
                self._submits.pop(job_id, None)
                self._follow(submitted, state, launch.resource_uid)
            write_changes_at_once(self.db, submitted)
            self.db.commit()
            self._release_if_ended(submitted)

        def done(task: asyncio.Task) -> None:
            if self._submits.get(job_id) is task or job_id in self._woken:
                self._woken.discard(job_id)
                wake()

        task = self._submits[job_id] = self.pool.spawn(submit())
        task.add_done_callback(done)

    def _finish(self, job: Job, state: RunState) -> None:
        """Record how the job ended (it may have run and ended while nobody looked)."""
        job.exit_code, job.exit_signal = state.exit_code, state.exit_signal
        # a job that completed ran, also when its runner kept no start time (a SLURM job
        # ended between two polls, its record without one): its end, not a start, dates it
        ran = state.started_at is not None or state.outcome == JobStatus.completed.value
        if job.status in (JobStatus.pending.value, JobStatus.queued.value) and ran:
            self.jobs.transition(job, JobStatus.running, at=state.started_at or state.ended_at, node=state.node)
        elif job.running_at is None and state.started_at is not None:
            job.running_at = state.started_at  # it ran: its core-hours count
        if job.target == JobTarget.stopped.value and (state.stopped or state.outcome == JobStatus.cancelled.value):
            if job.status != JobStatus.stopping.value:
                self.jobs.transition(job, JobStatus.stopping)
            self.jobs.transition(job, JobStatus(job.outcome or JobStatus.cancelled.value), at=state.ended_at)
        else:
            self.jobs.transition(
                job, JobStatus(state.outcome or JobStatus.failed.value), state.reason, at=state.ended_at
            )
        write_changes_at_once(self.db, job)
        self.db.commit()

    async def _stop(self, job: Job) -> None:
        """Stop the job; one never handed over ends without its runner (its resource may be
        gone from the configuration since its launch)."""
        if job.status != JobStatus.stopping.value:
            self.jobs.transition(job, JobStatus.stopping, job.reason)
            self.db.commit()
        submit = self._submits.get(job.id)
        if submit is not None and not submit.done():
            return  # the hand-over ends first (its end wakes the job), then the job is cancelled
        self._submits.pop(job.id, None)
        if job.submitted_at is None or (job.attempts == 0 and job.resource_id is None):
            self.jobs.transition(job, JobStatus(job.outcome or JobStatus.cancelled.value))
            self.db.commit()
            return
        runner = self.runners[job.resource]
        launch = self._launch(job)
        state = await runner.state(launch, job.resource_id, lambda: self.jobs.wake(job.id))
        self._found(job, state, launch.resource_uid)
        if state.phase == "ended":
            self._finish(job, state)
            return
        if state.phase == "unstarted":
            self.jobs.transition(job, JobStatus(job.outcome or JobStatus.cancelled.value))
            self.db.commit()
            return
        cancel = self._cancels.get(job.id)
        failure = cancel.exception() if cancel is not None and cancel.done() and not cancel.cancelled() else None
        if failure is not None:
            self.log.warning("Job %s: cancelling failed (%s); trying again", job.id, from_exception(failure))
            del self._cancels[job.id]
        if job.id not in self._cancels:
            job_id = job.id
            task = self._cancels[job_id] = self.pool.spawn(runner.cancel(launch, job.resource_id))
            task.add_done_callback(lambda t: self.jobs.wake(job_id))
        elif job.stopping_at and utcnow() - job.stopping_at > timedelta(seconds=self.stopping_timeout):
            self._fail(job, f"The job did not stop within {self.stopping_timeout:g} s")

    def _fail(self, job: Job, reason: str) -> None:
        self.jobs.transition(job, JobStatus.failed, reason)
        self.db.commit()
