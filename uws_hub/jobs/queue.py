"""The fair queue of batch jobs: who starts next when a slot frees.

A batch launch is never refused for want of a slot: the job waits
``queued`` until its owner has a free slot of their concurrent-job quota
(``concurrent_jobs``, counting their running batch jobs and unfinished
interactive jobs) and, on the local resource, the hub has one of its
``max_running_batch_jobs``. Slots go **round-robin across users, FIFO within
a user**: each free slot goes to the user with the fewest slots held (ties:
the one who started a job least recently, then the oldest waiting job), and
that user's oldest waiting job starts. So one user's 500 jobs never starve
another's one, and each user's jobs start in the order they were launched.

:func:`plan_starts` is the rule (pure, tested without a hub);
:class:`QueueSteps` applies it as one more kind of the reconciler's keys
(``("batch-queue", 0)``): woken by every batch launch and every end of a job,
and by each scan while jobs wait. It chooses: it marks the chosen jobs
``submitted_at`` and, in the same commit, lets the batch steps
(:meth:`uws_hub.jobs.batch.BatchSteps.hand_over`) check each again and count
its attempt; after the commit their hand-overs to their runners start (no
step of each job in between: a slot freed is a job started, at once).

A step's work does not grow with the queue: it keeps, from step to step, the
jobs it marked ``queued`` that still wait (only the queue does: a job enters
the queue ``pending``), by owner and resource in launch order, and reads of
them only the first few of each (as many as there are free slots), checked
in one query, besides the fresh ones (``pending``). A restarted hub's first
step reads the whole queue, as do the first after each of the reconciler's
scans and every step while a resource has no limit.
"""

from __future__ import annotations

import bisect
import logging
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BindParameter, bindparam, func, select, union_all

from ..orm import Job, utcnow, write_changes_at_once
from ..states import ACTIVE_JOB_STATUSES, JobStatus, JobTarget
from .service import JobService

#: the reconciler key of the queue
QUEUE_KEY = ("batch-queue", 0)


@dataclass(frozen=True)
class Waiting:
    job_id: int
    owner_id: int
    resource: str


def plan_starts(
    waiting: list[Waiting],
    held: dict[int, int],
    last_start: dict[int, datetime],
    user_limit: Callable[[int], int | None],
    room: dict[str, int | None],
) -> list[int]:
    """The waiting jobs to start now, in order.

    ``waiting``: in launch order. ``held``: slots each user holds. ``last_start``:
    when each user last had a job started. ``user_limit(user)``: their
    concurrent-job quota (None: none). ``room``: free slots per resource (None:
    no hub limit; a resource missing from it has none). Within a user, jobs of
    a resource without room keep their place and the user's next job of
    another resource may start (FIFO per user and resource).
    """
    queues: dict[int, deque[Waiting]] = defaultdict(deque)
    for job in waiting:
        queues[job.owner_id].append(job)
    held = dict(held)
    room = dict(room)
    last = dict(last_start)
    order: list[int] = []
    never = datetime.min

    def next_job(user: int) -> Waiting | None:
        limit = user_limit(user)
        if limit is not None and held.get(user, 0) >= limit:
            return None
        for job in queues[user]:
            free = room.get(job.resource, 0)
            if free is None or free > 0:
                return job
        return None

    while True:
        candidates = []
        for user in queues:
            found = next_job(user)
            if found is not None:
                candidates.append((held.get(user, 0), last.get(user, never), found.job_id, user, found))
        if not candidates:
            return order
        _, _, _, user, job = min(candidates)
        queues[user].remove(job)
        order.append(job.job_id)
        held[user] = held.get(user, 0) + 1
        last[user] = utcnow()
        free = room.get(job.resource)
        if free is not None:
            room[job.resource] = free - 1


def _waiting_where(*statuses: JobStatus) -> tuple:
    """The jobs waiting for a slot (of ``statuses``: ``pending`` and ``queued`` if none)."""
    return (
        Job.interactive.is_(False),
        Job.submitted_at.is_(None),
        Job.target == JobTarget.running.value,
        Job.status.in_([s.value for s in statuses or (JobStatus.pending, JobStatus.queued)]),
    )


class _Queries:
    """The queue's queries, built once: a step runs several, and SQLAlchemy takes longer to
    build one than SQLite to answer it."""

    def __init__(self) -> None:
        columns = (Job.id, Job.owner_id, Job.resource, Job.status)
        self.any_waiting = select(Job.id).where(*_waiting_where()).limit(1)
        # the slots held, by owner, resource and kind: the hub's (its batch jobs per
        # resource) and each owner's (both kinds) from one look at the jobs holding one,
        # each kind read through the index of status, kind and hand-over (not the queue)
        active = Job.status.in_([s.value for s in ACTIVE_JOB_STATUSES])
        held = (Job.owner_id, Job.resource, Job.interactive, func.count(Job.id))
        groups = (Job.owner_id, Job.resource, Job.interactive)
        self.holders = union_all(
            select(*held).where(active, Job.interactive.is_(True)).group_by(*groups),
            select(*held).where(active, Job.interactive.is_(False), Job.submitted_at.is_not(None)).group_by(*groups),
        )
        self.waiting = select(*columns).where(*_waiting_where()).order_by(Job.id)
        # the fresh ones, as the rows they are changed in (through the index of status, kind
        # and hand-over), and which of some jobs marked queued still wait
        self.fresh = select(Job).where(*_waiting_where(JobStatus.pending)).order_by(Job.id)
        owners: BindParameter[int] = bindparam("owners", expanding=True)
        ids: BindParameter[int] = bindparam("ids", expanding=True)
        self.still_queued = select(*columns).where(Job.id.in_(ids), *_waiting_where(JobStatus.queued))
        self.jobs = select(Job).where(Job.id.in_(ids))
        self.last_starts = (
            select(Job.owner_id, func.max(Job.submitted_at))
            .where(Job.owner_id.in_(owners), Job.submitted_at.is_not(None))
            .group_by(Job.owner_id)
        )


class QueueSteps:
    """The reconciler's steps of the fair queue (one key: :data:`QUEUE_KEY`)."""

    kind = QUEUE_KEY[0]

    def __init__(
        self,
        jobs: JobService,
        log: logging.Logger,
        *,
        resources: list[str],
        hub_limits: dict[str, int],
        user_limit: Callable[[int], int | None],
        hand_over: Callable[[list[Job]], Callable[[], None]] | None = None,
    ):
        self.jobs = jobs
        #: the batch steps' hand-over of the chosen jobs (None: each chosen job is woken instead)
        self.hand_over = hand_over
        self.db = jobs.db
        self.log = log
        #: the resources that run batch jobs, and the hub's own limit of running batch jobs
        #: on some of them (``max_running_batch_jobs`` on ``local``)
        self.resources = resources
        self.hub_limits = hub_limits
        self.user_limit = user_limit
        self._queries = _Queries()
        #: when each owner with jobs waiting last had a job started (None: never), see _last_starts
        self._last_start: dict[int, datetime | None] = {}
        #: the ids of the jobs marked queued that wait (and maybe some no longer waiting, found
        #: out when read), by owner and resource, in launch order; None: not known (not yet read)
        self._queued: dict[tuple[int, str], list[int]] | None = None

    def unfinished(self) -> list[int]:
        waiting = self.db.scalar(self._queries.any_waiting)
        return [QUEUE_KEY[1]] if waiting is not None else []

    async def after_scan(self) -> None:
        """The next step reads the whole queue again, as the first does: what the queue keeps
        of it is repaired within a scan, as the reconciler repairs everything else (a job
        marked queued by a commit that went through and raised, not kept, waited for ever).
        Once a scan, not at every step: a burst's cost stays that of its size."""
        self._queued = None

    def _waiting_rows(self, window: int | None) -> tuple[list, dict[int, Job]]:
        """The waiting jobs (id, owner, resource, status) in launch order that the plan
        needs: with ``window`` slots free in all, a user's jobs of a resource past their
        ``window``-th cannot start now, so of those only the fresh ones (``pending``, to be
        marked ``queued``) are read. The jobs marked queued are not looked for: the first
        ``window`` of each owner and resource that this queue knows of are checked, in one
        query (a step read and ranked every waiting job, hundreds in a burst, at each of
        its steps: a burst cost the square of its size). The whole queue is read when
        ``window`` is None (a resource without limit), by the first step and by the
        first after each scan.

        With them, the rows of those of them read whole (the fresh ones, which the step
        changes all: read once, not read for their ids and then loaded)."""
        if window is None or self._queued is None:
            rows = list(self.db.execute(self._queries.waiting).all())
            queued: dict[tuple[int, str], list[int]] = defaultdict(list)
            for job_id, owner, resource, status in rows:
                if status == JobStatus.queued.value:
                    queued[(owner, resource)].append(job_id)
            self._queued = dict(queued)
            return rows, {}
        loaded = {job.id: job for job in self.db.scalars(self._queries.fresh)}
        fresh = [(job.id, job.owner_id, job.resource, job.status) for job in loaded.values()]
        return sorted([*self._first_queued(self._queued, window), *fresh], key=lambda row: row[0]), loaded

    def _first_queued(self, queued: dict[tuple[int, str], list[int]], window: int) -> list:
        """The rows of the first ``window`` jobs of each owner and resource in ``queued``
        that still wait; those found no longer waiting (started, stopped, deleted) are
        forgotten, and the next ones of their owner and resource checked in their place."""
        found: dict[int, Any] = {}
        asked: set[int] = set()
        groups = list(queued)
        while groups:
            ids = [job_id for group in groups for job_id in queued[group][:window] if job_id not in asked]
            if not ids:
                break
            asked.update(ids)
            rows = {row[0]: row for row in self.db.execute(self._queries.still_queued, {"ids": ids})}
            found.update(rows)
            gone = {job_id for job_id in ids if job_id not in rows}
            groups = [group for group in groups if any(job_id in gone for job_id in queued[group][:window])]
            for group in groups:
                queued[group] = [job_id for job_id in queued[group] if job_id not in gone]
                if not queued[group]:
                    del queued[group]
            groups = [group for group in groups if group in queued]
        return list(found.values())

    def _remember(self, waiting: list[Waiting], queued: set[int], started: set[int]) -> None:
        """Keep, once committed, the jobs of ``waiting`` just marked ``queued`` (not
        started) and forget those ``started`` (or refused)."""
        if self._queued is None:
            return
        for w in waiting:
            group = (w.owner_id, w.resource)
            ids = self._queued.get(group)
            if w.job_id in started and ids is not None:
                at = bisect.bisect_left(ids, w.job_id)
                if at < len(ids) and ids[at] == w.job_id:
                    del ids[at]
                    if not ids:
                        del self._queued[group]
            elif w.job_id in queued:
                bisect.insort(self._queued.setdefault(group, []), w.job_id)

    async def reconcile(self, _: int) -> None:
        running_batch: dict[str, int] = defaultdict(int)
        held: dict[int, int] = defaultdict(int)
        for owner, resource, interactive, count in self.db.execute(self._queries.holders):
            held[owner] += count
            if not interactive:
                running_batch[resource] += count
        room: dict[str, int | None] = {
            r: (max(0, self.hub_limits[r] - running_batch.get(r, 0)) if r in self.hub_limits else None)
            for r in self.resources
        }
        window = None if any(free is None for free in room.values()) else sum(room.values())  # type: ignore[arg-type]
        rows, loaded = self._waiting_rows(window)
        if not rows:
            return
        waiting = [Waiting(*row[:3]) for row in rows]
        fresh = {row[0] for row in rows if row[3] == JobStatus.pending.value}
        # of a resource the hub no longer runs batch jobs on (taken out of its configuration
        # while they waited): no slot would ever come, they are refused
        refused = {w.job_id for w in waiting if w.resource not in room}
        owners = {w.owner_id for w in waiting}
        limits = {owner: self.user_limit(owner) for owner in owners}
        # no slot free anywhere (a burst): only the fresh jobs are marked queued, none starts
        plan = plan_starts(waiting, held, self._last_starts(owners), limits.__getitem__, room) if window != 0 else []
        # each its own moment, in the order chosen: submitted_at orders the queue's decisions
        now = utcnow()
        chosen = {job_id: now + timedelta(microseconds=i) for i, job_id in enumerate(plan)}
        # only the jobs that change are loaded, those not read whole already (the chosen of
        # those marked queued), in one query: a step is not O(every waiting job)
        missing = sorted((set(chosen) | fresh | refused) - loaded.keys())
        jobs = (
            {**loaded, **{job.id: job for job in self.db.scalars(self._queries.jobs, {"ids": missing})}}
            if missing
            else loaded
        )
        queued: set[int] = set()
        for w in waiting:
            job = jobs.get(w.job_id)
            if job is None:
                continue
            if w.job_id in refused:
                reason = f"The launch was refused: the hub no longer runs batch jobs on {w.resource!r}"
                self.jobs.transition(job, JobStatus.failed, reason)
            elif w.job_id in chosen:
                job.submitted_at = chosen[w.job_id]
                if job.status == JobStatus.pending.value:
                    self.jobs.transition(job, JobStatus.queued)
            elif job.status == JobStatus.pending.value:
                self.jobs.transition(job, JobStatus.queued, self._why_waiting(w, held, limits, room))
                queued.add(w.job_id)
        # each job's row written by an UPDATE of its own, not by a flush (the commit's, or
        # one before the hand-over's checks read the database: most of the step's cost)
        for job in jobs.values():
            write_changes_at_once(self.db, job)
        started = [jobs[job_id] for job_id in sorted(chosen) if job_id in jobs]
        start = self.hand_over(started) if self.hand_over is not None else None
        self.db.commit()
        self._started(started, chosen)
        self._remember(waiting, queued, set(chosen) | refused)
        if start is not None:
            start()
            return
        for job_id in sorted(chosen):
            self.jobs.wake(job_id)

    def _started(self, jobs: list[Job], when: dict[int, datetime]) -> None:
        """Remember when the owners of ``jobs`` (given a slot at ``when[job.id]``, committed)
        last had one started."""
        for job in jobs:
            last = self._last_start.get(job.owner_id)
            self._last_start[job.owner_id] = when[job.id] if last is None else max(last, when[job.id])

    def _last_starts(self, owners: set[int]) -> dict[int, datetime]:
        """When each of ``owners`` (every owner with a job waiting) last had a job started
        (none: not there). Kept from step to step, since only the queue starts jobs (sets
        ``submitted_at``): each owner's is read once, when they first wait (a query of
        their whole history at every step before), and forgotten when they wait no more
        (so a user deleted, whose id may come back, is read again)."""
        known = self._last_start
        for owner in [owner for owner in known if owner not in owners]:
            del known[owner]
        new = sorted(owners - known.keys())
        if new:
            known.update(dict.fromkeys(new))
            known.update(self.db.execute(self._queries.last_starts, {"owners": new}).all())
        return {owner: when for owner, when in known.items() if when is not None}

    def _why_waiting(
        self, job: Waiting, held: dict[int, int], limits: dict[int, int | None], room: dict[str, int | None]
    ) -> str:
        limit = limits.get(job.owner_id)
        if limit is not None and held.get(job.owner_id, 0) >= limit:
            return (
                f"Waiting for a slot: its owner's jobs use all {limit} of their concurrent job quota;"
                " it starts when one ends"
            )
        if room.get(job.resource) == 0:
            return (
                f"Waiting for a slot: the hub runs its most batch jobs on {job.resource} at once"
                f" ({self.hub_limits[job.resource]}); it starts when one ends, in turn with other users' jobs"
            )
        return "Waiting for its turn in the hub's queue"
