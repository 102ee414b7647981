"""Quotas: limits per user, usage measured in the background, and enforcement.

Limits (:class:`Limits`, ``None`` = unlimited) come from the hub's defaults
(``UWSHub.quota_*``), overridden per field by the overrides of the user's
groups (the most generous one wins) and then by the user's own override.

Usage:

- disk: the sum of the user's workspaces' measured sizes
  (``uws_workspaces.disk_usage_bytes``, kept current by the usage loop and by
  the hub's own writes), plus the space its writes in progress hold
  (``uws_disk_reservations``);
- core-hours: for every job of the user that ran in the current period
  (``UWSHub.quota_period``), its cpus (``resources["cpus"]``, 1 by default)
  times the part of its running time inside the period, in whole
  core-seconds (64-bit). The ended jobs' part is a sum kept as they end
  (:class:`~uws_hub.orm.EndedCoreUsage`, in the transaction of each end, so a
  hub restart loses nothing and counts nothing twice), to which a launch's
  check (:meth:`QuotaService.core_seconds_used`) and the accounting loop
  (:meth:`QuotaService.account`) add the running jobs' time so far. Deleting a
  finished job or a workspace does not take its run time out of the sum: what
  was computed was consumed (as SLURM's accounting keeps purged jobs' usage);
  usage starts again from zero with the next period;
- concurrent jobs: the user's unfinished jobs that hold a slot (interactive
  ones, and batch jobs that left the fair queue: waiting batch jobs do not).

Jobs in a workspace shared with collaborators count against its owner's
quota, whoever launched them: an editor's job runs as the editor's account
(:func:`uws_hub.access.launcher_of`) but is one of the workspace's, which the
owner shares (and can stop sharing) knowing what it costs them.

Enforcement: :meth:`QuotaService.check_launch` is one of the job service's
launch checks (at the request and again right before the start); every write
the hub makes into a user's workspaces (uploads, seed files, copies) first
reserves its room with :meth:`QuotaService.reserve_disk` (atomically, in the
database, so parallel writes cannot share the same free bytes), grows it as a
streamed body arrives, and ends in :meth:`~QuotaService.commit_disk` (the
bytes become usage) or :meth:`~QuotaService.release_disk`; :meth:`account`, run by a
background loop, stops the running jobs of users who used up their core-hours
and sends a warning once a period at ``quota_warning_fraction``. Every refusal
is a :class:`QuotaExceeded` (HTTP 422) that names the limit and the excess.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from jupyterhub import orm as hub_orm
from sqlalchemy import ColumnElement, bindparam, case, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from ..errors import Unprocessable
from ..events.notify import Notifier
from ..jobs.launch import LaunchRequest
from ..jobs.limits import memory_bytes
from ..orm import DiskReservation, EndedCoreUsage, Job, QuotaOverride, Usage, Workspace, isoformat, utcnow
from ..states import ACTIVE_JOB_STATUSES, JobStatus, JobTarget
from .limits import LIMIT_FIELDS, Limits, Reservation, UserUsage, fmt_bytes, fmt_hours, job_cpus, period_start

#: how far ahead a streamed write reserves disk space (fewer transactions per chunk;
#: what it does not use goes back when it ends)
RESERVE_AHEAD_BYTES = 4 * 1024**2


#: a user's jobs that hold their running time open: unfinished, started (each of the owner
#: index's kinds named, so that SQLite looks them up in it by status, not through every job
#: the owner ever had)
_RUNNING_JOBS = select(Job.running_at, Job.resources).where(
    Job.owner_id == bindparam("owner_id"),
    Job.interactive.in_([False, True]),
    Job.status.in_([s.value for s in sorted(ACTIVE_JOB_STATUSES)]),
    Job.running_at.is_not(None),
)
_ENDED_USAGE = select(EndedCoreUsage.period, EndedCoreUsage.period_start, EndedCoreUsage.core_microseconds).where(
    EndedCoreUsage.user_id == bindparam("user_id")
)
_ADD_ENDED = (
    update(EndedCoreUsage)
    .where(
        EndedCoreUsage.user_id == bindparam("owner"),
        EndedCoreUsage.period == bindparam("quota_period"),
        EndedCoreUsage.period_start == bindparam("start"),
    )
    .values(core_microseconds=EndedCoreUsage.core_microseconds + bindparam("added"))
)


def core_microseconds(cpus: int, running_at: datetime, end: datetime, start: datetime) -> int:
    """cpus × the microseconds of [running_at, end] inside the period from ``start`` (≥ 0)."""
    ran = end - max(running_at, start)
    return max(0, cpus * ((ran.days * 86400 + ran.seconds) * 1_000_000 + ran.microseconds))


#: what the owner of workspaces over their disk quota can do
FREE_DISK_SPACE = "Delete files or workspaces you no longer need, or ask an administrator for more."


class QuotaExceeded(Unprocessable):
    """A request that would go over a quota (422), with which limit and by how much,
    and what the reader can do about it (only what they can do)."""

    @classmethod
    def of(cls, owner: hub_orm.User, say: Callable[[str, bool], str]) -> QuotaExceeded:
        """A refusal about ``owner``'s quota, said of them (``say("alice's", False)``)
        and to them (``say("your", True)``): the owner reads "your jobs", a
        collaborator "alice's jobs" (:meth:`UWSError.message_for`)."""
        return cls(say(f"{owner.name}'s", False), about=owner.name, to_them=say("your", True))


class QuotaService:
    def __init__(
        self,
        db: Session,
        notifier: Notifier,
        log: logging.Logger,
        *,
        defaults: Limits,
        period: str,
        warning_fraction: float,
    ):
        self.db = db
        self.notifier = notifier
        self.log = log
        self.defaults = defaults
        self.period = period
        self.warning_fraction = warning_fraction
        #: the users who may have an override (None: not read yet): a launch, a page and a
        #: quota check of anyone else need no query for theirs. Only :meth:`set_override`
        #: adds or removes them (ids join before the commit, leave after it: a superset,
        #: never missing one); a user's deletion takes their override with it (a
        #: leftover id costs one query).
        self._override_users: set[int] | None = None

    # ---------------------------------------------------------------- limits
    def _may_have_override(self, user_id: int) -> bool:
        if self._override_users is None:
            self._override_users = set(
                self.db.scalars(select(QuotaOverride.user_id).where(QuotaOverride.user_id.is_not(None)))
            )
        return user_id in self._override_users

    def override_for(
        self, *, user: hub_orm.User | None = None, group: hub_orm.Group | None = None
    ) -> QuotaOverride | None:
        if user is not None:
            if not self._may_have_override(user.id):
                return None
            return self.db.scalar(select(QuotaOverride).where(QuotaOverride.user_id == user.id))
        assert group is not None
        return self.db.scalar(select(QuotaOverride).where(QuotaOverride.group_id == group.id))

    def limits_for(self, user: hub_orm.User) -> Limits:
        group_ids = [g.id for g in user.groups]
        group_overrides = (
            list(self.db.scalars(select(QuotaOverride).where(QuotaOverride.group_id.in_(group_ids))))
            if group_ids
            else []
        )
        limits = self.defaults
        if group_overrides:
            from_groups = {
                name: Limits.most_generous([getattr(o, name) for o in group_overrides]) for name in LIMIT_FIELDS
            }
            limits = limits.merged(Limits(**from_groups))
        return limits.merged(Limits.of(self.override_for(user=user)))

    def set_override(
        self, limits: Limits, actor: str, *, user: hub_orm.User | None = None, group: hub_orm.Group | None = None
    ) -> QuotaOverride | None:
        """Replace the override of a user or a group (all fields None: remove it)."""
        override = self.override_for(user=user, group=group)
        if all(getattr(limits, name) is None for name in LIMIT_FIELDS):
            if override is not None:
                self.db.delete(override)
            self.db.commit()
            if user is not None and self._override_users is not None:
                self._override_users.discard(user.id)
            return None
        if override is None:
            override = QuotaOverride(user_id=user.id if user else None, group_id=group.id if group else None)
            self.db.add(override)
            if user is not None and self._override_users is not None:  # (read by override_for)
                self._override_users.add(user.id)
        for name in LIMIT_FIELDS:
            setattr(override, name, getattr(limits, name))
        override.updated_by = actor
        override.updated_at = utcnow()
        self.db.commit()
        return override

    # ---------------------------------------------------------------- usage
    def current_period_start(self) -> datetime:
        return period_start(utcnow(), self.period)

    def disk_used(self, user_id: int) -> int:
        return int(
            self.db.scalar(
                select(func.coalesce(func.sum(Workspace.disk_usage_bytes), 0)).where(Workspace.owner_id == user_id)
            )
            or 0
        )

    def active_jobs(self, user_id: int, excluding: int | None = None, *, slots: bool = False) -> int:
        """The user's unfinished jobs; with ``slots``, only those that hold a slot of their
        concurrent-job quota (interactive ones, and batch ones out of the queue)."""
        where = [Job.owner_id == user_id, Job.status.in_([s.value for s in ACTIVE_JOB_STATUSES])]
        if slots:
            where.append(Job.interactive.is_(True) | Job.submitted_at.is_not(None))
        if excluding is not None:
            where.append(Job.id != excluding)
        return self.db.scalar(select(func.count(Job.id)).where(*where)) or 0

    def concurrent_limit(self, user_id: int) -> int | None:
        """The user's concurrent-job quota (the fair queue's bound of their running jobs)."""
        user = self.db.get(hub_orm.User, user_id)
        return None if user is None else self.limits_for(user).concurrent_jobs

    def core_seconds_by_user(self, now: datetime) -> dict[int, int]:
        """Every user's core-seconds in the current period at ``now``, counted as
        :meth:`core_seconds_used` counts one user's (deleted jobs included): the kept sums
        of this period, the ended jobs of users without one, and the running jobs."""
        start = period_start(now, self.period)
        used: dict[int, int] = {
            user_id: int(micro)
            for user_id, micro in self.db.execute(
                select(EndedCoreUsage.user_id, EndedCoreUsage.core_microseconds).where(*self._kept_of(start))
            )
        }
        unkept = select(EndedCoreUsage.user_id).where(EndedCoreUsage.user_id == Job.owner_id, *self._kept_of(start))
        ended = select(Job.owner_id, Job.running_at, Job.finished_at, Job.resources).where(
            Job.running_at.is_not(None), Job.finished_at.is_not(None), Job.finished_at > start, ~unkept.exists()
        )
        running = select(Job.owner_id, Job.running_at, Job.resources).where(
            Job.status.in_([s.value for s in sorted(ACTIVE_JOB_STATUSES)]), Job.running_at.is_not(None)
        )
        for owner_id, running_at, end, resources in [
            *self.db.execute(ended),
            *((owner_id, running_at, now, resources) for owner_id, running_at, resources in self.db.execute(running)),
        ]:
            if running_at < now:
                added = core_microseconds(job_cpus(resources or {}), running_at, end, start)
                used[owner_id] = used.get(owner_id, 0) + added
        return {user_id: micro // 1_000_000 for user_id, micro in used.items()}

    def _kept_of(self, start: datetime) -> list[ColumnElement[bool]]:
        """The kept sums that are of the period from ``start`` (of this ``quota_period``)."""
        return [EndedCoreUsage.period == self.period, EndedCoreUsage.period_start == start]

    def core_seconds_used(self, user_id: int) -> int:
        """The user's core-seconds in the current period: their ended jobs' (kept as they
        end) and their running jobs' so far; as many rows read for 10 jobs as for 10,000."""
        now = utcnow()
        start = period_start(now, self.period)
        used = self._ended_core_microseconds(user_id, start)
        for running_at, resources in self.db.execute(_RUNNING_JOBS, {"owner_id": user_id}):
            if running_at < now:
                used += core_microseconds(job_cpus(resources or {}), running_at, now, start)
        return used // 1_000_000

    def _ended_core_microseconds(self, user_id: int, start: datetime) -> int:
        """The core-microseconds of the user's ended jobs in the period from ``start``: their
        kept sum, or, if there is none of this period (kept from the period's first end on),
        the sum of the jobs. Read only: a check or a page takes no write lock."""
        kept = self._kept_sum(user_id, start)
        return kept if kept is not None else self._jobs_ended_sum(user_id, start)

    def _jobs_ended_sum(self, user_id: int, start: datetime) -> int:
        """The core-microseconds of the user's ended jobs there are, in the period from ``start``."""
        return self._sum_ended(self.db.execute(self._ended_jobs(user_id, start)), start)

    def _kept_sum(self, user_id: int, start: datetime) -> int | None:
        """The user's kept sum if it is of the period from ``start`` (of this ``quota_period``)."""
        row = self.db.execute(_ENDED_USAGE, {"user_id": user_id}).first()
        if row is not None and row.period == self.period and row.period_start == start:
            return int(row.core_microseconds)
        return None

    def _ended_jobs(self, user_id: int, start: datetime, excluding: int | None = None):
        where = [Job.owner_id == user_id, Job.running_at.is_not(None), Job.finished_at.is_not(None)]
        where.append(Job.finished_at > start)
        if excluding is not None:
            where.append(Job.id != excluding)
        return select(Job.running_at, Job.finished_at, Job.resources).where(*where)

    @staticmethod
    def _sum_ended(rows, start: datetime) -> int:
        return sum(
            core_microseconds(job_cpus(resources or {}), running_at, finished_at, start)
            for running_at, finished_at, resources in rows
        )

    def record_job_end(self, job: Job) -> None:
        """``job`` just ended (its ``finished_at`` is set): add its run time in the period to
        its owner's kept sum, in the transaction of its end. The period's first end (or a
        deletion's, :meth:`keep_ended_usage`) makes the sum from the owner's other ended jobs.

        On the session's connection: not a reason to flush the job's end through the ORM
        (a batch job's steps write its row with statements of their own). The other jobs
        that ended in this transaction were recorded as they ended, so the sum the first
        end makes has them whether or not the ORM wrote their rows yet."""
        if job.running_at is None or job.finished_at is None:
            return
        start = period_start(utcnow(), self.period)
        added = core_microseconds(job_cpus(job.resources or {}), job.running_at, job.finished_at, start)
        conn = self.db.connection()
        key = {"owner": job.owner_id, "quota_period": self.period, "start": start}
        result: CursorResult = conn.execute(_ADD_ENDED, {**key, "added": added})
        if result.rowcount:
            return
        others = self._sum_ended(conn.execute(self._ended_jobs(job.owner_id, start, excluding=job.id)), start)
        if not self._put_kept_sum(job.owner_id, start, others + added):
            # another transaction made this period's sum since the update above (a second
            # hub process on PostgreSQL): added to, as any later end is
            conn.execute(_ADD_ENDED, {**key, "added": added})

    def _put_kept_sum(self, user_id: int, start: datetime, core_microseconds: int) -> bool:
        """Make the user's kept sum of the period from ``start``, or replace one of an earlier
        period (or of another ``quota_period``); returns whether it did. Never one of this
        period (made meanwhile by another transaction: replaced, the ends it had counted
        were lost) nor of a later one (the clock stepped back across a period's start)."""
        values = {"period": self.period, "period_start": start, "core_microseconds": core_microseconds}
        insert = {"postgresql": postgresql_insert, "sqlite": sqlite_insert}[self.db.get_bind().dialect.name]
        replaceable = or_(EndedCoreUsage.period != self.period, EndedCoreUsage.period_start < start)
        result: CursorResult = self.db.connection().execute(
            insert(EndedCoreUsage)  # type: ignore[attr-defined]
            .values(user_id=user_id, **values)
            .on_conflict_do_update(index_elements=[EndedCoreUsage.user_id], set_=values, where=replaceable)
        )
        return bool(result.rowcount)

    def keep_ended_usage(self, user_id: int) -> None:
        """Ended jobs of the user are about to be deleted (a job, a workspace): their run time
        stays in the kept sum, which deleting them does not change; if there is none of this
        period yet, it is made now from the jobs, those about to go included. In the
        deletion's transaction, before it: compute consumed is consumed, and a user over
        their core-hours gets none back by deleting what used them."""
        start = period_start(utcnow(), self.period)
        if self._kept_sum(user_id, start) is None:
            self._put_kept_sum(user_id, start, self._jobs_ended_sum(user_id, start))

    def usage_of(self, user: hub_orm.User) -> UserUsage:
        return UserUsage(
            disk_bytes=self.disk_used(user.id),
            core_seconds=self.core_seconds_used(user.id),
            active_jobs=self.active_jobs(user.id),
            period_start=self.current_period_start(),
        )

    # ---------------------------------------------------------------- checks
    def check_launch(self, request: LaunchRequest) -> None:
        """A launch check (JobService.launch_checks): per-job sizes, concurrent jobs, core-hours."""
        owner = request.owner
        limits = self.limits_for(owner)
        resources = request.resources
        cpus = job_cpus(resources)
        if limits.max_cpus is not None and cpus > limits.max_cpus:
            raise QuotaExceeded(
                f"CPU limit per job: {cpus} cpus requested, the limit is {limits.max_cpus}"
                f" (over by {cpus - limits.max_cpus}). Request at most {limits.max_cpus}."
            )
        # SLURM's units, as the job type's limits and sbatch read them (a bare number is megabytes)
        memory = memory_bytes(resources["memory"]) if resources.get("memory") else None
        if limits.max_memory_bytes is not None and memory is not None and memory > limits.max_memory_bytes:
            raise QuotaExceeded(
                f"Memory limit per job: {fmt_bytes(memory)} requested, the limit is"
                f" {fmt_bytes(limits.max_memory_bytes)} (over by {fmt_bytes(memory - limits.max_memory_bytes)})."
                f" Request at most {fmt_bytes(limits.max_memory_bytes)}."
            )
        gpus = int(resources.get("gpus") or 0)
        if limits.max_gpus is not None and gpus > limits.max_gpus:
            raise QuotaExceeded(
                f"GPU limit per job: {gpus} GPUs requested, the limit is {limits.max_gpus}"
                f" (over by {gpus - limits.max_gpus})."
                + (f" Request at most {limits.max_gpus}." if limits.max_gpus else " Request no GPUs.")
            )
        # a batch job never is refused a slot: it waits for one in the fair queue (uws_hub.jobs.queue)
        if limits.concurrent_jobs is not None and request.job_type.interactive:
            running = self.active_jobs(owner.id, excluding=request.job.id if request.job else None, slots=True)
            if running + 1 > limits.concurrent_jobs:
                limit = limits.concurrent_jobs

                def jobs(whose: str, to_them: bool) -> str:
                    counts = f"{whose} unfinished jobs would be {running + 1}, the limit is {limit} (over by {running + 1 - limit})"
                    if running == 0:
                        # nothing to stop: only an administrator can help
                        then = "Ask an administrator to raise it" if to_them else "An administrator can raise it"
                    else:
                        then = f"Stop one of {whose} jobs first" if to_them else f"One of {whose} jobs must end first"
                    return f"Concurrent job quota: {counts}. {then}."

                raise QuotaExceeded.of(owner, jobs)
        if limits.core_seconds is not None:
            used = self.core_seconds_used(owner.id)
            if used >= limits.core_seconds:
                raise QuotaExceeded.of(owner, lambda whose, to_them: self._core_hours_used(whose, used, limits))

    # ---------------------------------------------------------------- disk space
    def _disk_state(self, owner: hub_orm.User, *, lock: bool) -> tuple[int, int, int] | None:
        """(bytes in use, bytes reserved, limit) of ``owner``'s disk quota, or None without a limit.

        ``lock``: first take the lock of the owner's reservation row (made if
        missing), held until the session commits. PostgreSQL waits here for a
        write of the same owner that holds it, and the statements after it see
        what that write committed (READ COMMITTED takes a snapshot per
        statement); SQLite takes the database's write lock with the insert.
        Either way nobody changes the owner's reservations or the usage of a
        committing write between this read and our commit.
        """
        limit = self.limits_for(owner).disk_bytes
        if limit is None:
            return None
        reserved = select(DiskReservation.reserved_bytes).where(DiskReservation.user_id == owner.id)
        if lock:
            insert = {"postgresql": postgresql_insert, "sqlite": sqlite_insert}[self.db.get_bind().dialect.name]
            self.db.execute(
                insert(DiskReservation).values(user_id=owner.id, reserved_bytes=0).on_conflict_do_nothing()  # type: ignore[attr-defined]
            )
            reserved = reserved.with_for_update()
        return self.disk_used(owner.id), self.db.scalar(reserved) or 0, limit

    def disk_room(self, owner: hub_orm.User) -> int | None:
        """Bytes ``owner`` may still add (not in use, not reserved), or None without a limit."""
        state = self._disk_state(owner, lock=False)
        return None if state is None else state[2] - state[0] - state[1]

    @staticmethod
    def _disk_exceeded(owner: hub_orm.User, after: int, reserved: int, limit: int, *, at_least: bool) -> QuotaExceeded:
        held = f", {reserved} of them reserved by uploads and copies in progress" if reserved else ""
        over = "over by at least" if at_least else "over by"

        def disk(whose: str, to_them: bool) -> str:
            usage = (
                f"{whose} workspaces would use {fmt_bytes(after)} ({after} bytes{held}),"
                f" the limit is {fmt_bytes(limit)} ({limit} bytes); {over} {fmt_bytes(after - limit)}"
                f" ({after - limit} bytes)"
            )
            return f"Disk quota: {usage}. {FREE_DISK_SPACE}" if to_them else f"Disk quota: {usage}."

        return QuotaExceeded.of(owner, disk)

    def check_disk(self, owner: hub_orm.User, incoming_bytes: int) -> None:
        """Refuse at once what cannot fit now (a copy accept); the write itself reserves its room."""
        state = self._disk_state(owner, lock=False)
        if state is None:
            return
        used, reserved, limit = state
        if used + reserved + incoming_bytes > limit:
            raise self._disk_exceeded(owner, used + reserved + incoming_bytes, reserved, limit, at_least=False)

    def reserve_disk(self, owner: hub_orm.User, incoming_bytes: int, replaced_bytes: int = 0) -> Reservation:
        """Room for writing ``incoming_bytes`` (replacing a file of ``replaced_bytes``) to
        ``owner``'s workspaces, held before the first byte is written; QuotaExceeded if it
        does not fit beside what is in use and what other writes hold.

        Every path of the write then ends in :meth:`commit_disk` or :meth:`release_disk`.
        """
        reservation = Reservation(owner, replaced_bytes)
        self.grow_disk(reservation, incoming_bytes)
        return reservation

    def grow_disk(self, reservation: Reservation, written_bytes: int, *, streamed: bool = False) -> None:
        """Make ``reservation`` cover ``written_bytes`` in all, or QuotaExceeded (it keeps what it held).

        ``streamed``: the write's size is not known yet (a body without
        ``Content-Length``): take up to :data:`RESERVE_AHEAD_BYTES` more while
        there is room, so that not every chunk costs a transaction, and say
        "at least" when refusing.
        """
        need = written_bytes - reservation.replaced_bytes - reservation.held_bytes
        if need <= 0:
            return
        state = self._disk_state(reservation.owner, lock=True)
        if state is None:
            return
        used, reserved, limit = state
        free = limit - used - reserved
        if need > free:
            self.db.commit()
            raise self._disk_exceeded(reservation.owner, used + reserved + need, reserved, limit, at_least=streamed)
        take = min(free, need + RESERVE_AHEAD_BYTES) if streamed else need
        self._change_reserved(reservation.owner.id, take)
        self.db.commit()
        reservation.held_bytes += take

    def commit_disk(self, reservation: Reservation, ws: Workspace, written_bytes: int) -> None:
        """The write is in place in ``ws``: its bytes become the workspace's usage and its
        reservation goes, in one transaction (which also commits the caller's changes)."""
        if reservation.held_bytes:
            self._change_reserved(reservation.owner.id, -reservation.held_bytes)
        self._add_usage(ws, written_bytes - reservation.replaced_bytes)
        reservation.held_bytes = 0
        self.check_disk_warning(reservation.owner)

    def record_freed(self, ws: Workspace, freed_bytes: int) -> None:
        """The hub removed ``freed_bytes`` from ``ws`` (a delete, a file a move replaced):
        they are no longer in use, at once, so that an owner over the quota who deletes
        can write again without waiting for the next measurement."""
        if freed_bytes:
            self._add_usage(ws, -freed_bytes)
            self.check_disk_warning(ws.owner)

    def _add_usage(self, ws: Workspace, delta: int) -> None:
        """Change ``ws``'s usage by ``delta`` bytes (never below 0) in the database, and commit.

        In SQL, not from the loaded row: writes that end at the same time all
        count. A measurement that walked the directory meanwhile is then not
        stored (:meth:`record_measured`)."""
        usage = Workspace.disk_usage_bytes + delta
        self.db.execute(
            update(Workspace)
            .where(Workspace.id == ws.id)
            .values(disk_usage_bytes=case((usage > 0, usage), else_=0))
            .execution_options(synchronize_session="fetch")
        )
        self.db.commit()

    def release_disk(self, reservation: Reservation) -> None:
        """The write failed or was cut: give its room back (once; later calls do nothing)."""
        if reservation.held_bytes:
            self._change_reserved(reservation.owner.id, -reservation.held_bytes)
            self.db.commit()
            reservation.held_bytes = 0

    def _change_reserved(self, user_id: int, delta: int) -> None:
        self.db.execute(
            update(DiskReservation)
            .where(DiskReservation.user_id == user_id)
            .values(reserved_bytes=DiskReservation.reserved_bytes + delta)
        )

    def clear_disk_reservations(self) -> None:
        """At startup: no write of an earlier run is still going, so nothing is reserved."""
        self.db.execute(delete(DiskReservation))
        self.db.commit()

    def record_measured(self, ws: Workspace, before: int, measured: int, *, settled: bool = True) -> bool:
        """Store a measurement of ``ws``'s directory, unless it may be off: a write of its
        owner completed while the directory was walked (the usage is no longer ``before``),
        or one is still under way (its temporary file was counted, and its reservation too).
        The workspace is measured again next time.

        Without ``settled`` (the measurement right after a job's end) the usage is
        stored but not when it was measured: the workspace stays one the next pass
        measures, in case the walk came before a shared filesystem showed all the
        job wrote (its folders' times, which the walk trusts, may lag on NFS)."""
        writing = select(DiskReservation.user_id).where(
            DiskReservation.user_id == Workspace.owner_id, DiskReservation.reserved_bytes > 0
        )
        result: CursorResult = self.db.execute(  # type: ignore[assignment]
            update(Workspace)
            .where(Workspace.id == ws.id, Workspace.disk_usage_bytes == before, ~writing.exists())
            .values(disk_usage_bytes=measured, **({"usage_measured_at": utcnow()} if settled else {}))
            .execution_options(synchronize_session="fetch")
        )
        stored = result.rowcount == 1
        self.db.commit()
        return stored

    @property
    def period_name(self) -> str:
        return "period" if self.period == "all" else self.period

    # ---------------------------------------------------------------- the loop
    def account(self) -> list[tuple[Job, str]]:
        """Measure core-hours of every user, warn at the threshold; returns the jobs to
        stop (over budget), each with the reason (the caller stops them: quotas know
        no job service).

        Idempotent: usage is read again each time, as a launch's check reads it
        (:meth:`core_seconds_by_user`: deleted jobs' run time included).
        """
        over: list[tuple[Job, str]] = []
        now = utcnow()
        start = period_start(now, self.period)
        used = self.core_seconds_by_user(now)
        rows = {u.user_id: u for u in self.db.scalars(select(Usage))}
        for user_id in set(used) | set(rows):
            row = rows.get(user_id)
            if row is None:
                row = rows[user_id] = Usage(user_id=user_id)
                self.db.add(row)
            if row.period_start != start:
                row.period_start = start
                row.core_warned_period = None
            row.core_seconds = used.get(user_id, 0)
            row.measured_at = now
        self.db.commit()
        for user_id, seconds in used.items():
            user = self.db.get(hub_orm.User, user_id)
            if user is None:
                continue
            limit = self.limits_for(user).core_seconds
            if limit is None:
                continue
            row = rows[user_id]
            if seconds >= limit:
                over += self._over_budget(user, seconds, limit)
            if seconds >= limit * self.warning_fraction and row.core_warned_period != start:
                row.core_warned_period = start
                self.notifier.notify(
                    user,
                    "Core-hour quota almost used up" if seconds < limit else "Core-hour quota used up",
                    f"Your jobs used {fmt_hours(seconds)} of your {fmt_hours(limit)} core-hours this"
                    f" {self.period_name} ({100 * seconds / limit if limit else 100:.0f}%)."
                    + (
                        " Running jobs were stopped and new ones are refused until the next period."
                        if seconds >= limit
                        else ""
                    ),
                    link="workspaces",
                    data={"quota": "core_hours", "used": seconds / 3600, "limit": limit / 3600},
                )
        self.db.commit()
        return over

    def _over_budget(self, user: hub_orm.User, seconds: int, limit: int) -> list[tuple[Job, str]]:
        running = self.db.scalars(
            select(Job).where(
                Job.owner_id == user.id,
                Job.status.in_([JobStatus.running.value, JobStatus.queued.value, JobStatus.pending.value]),
                Job.target == JobTarget.running.value,
            )
        )
        reason = (
            f"Core-hour quota used up: {user.name}'s jobs used {fmt_hours(seconds)} core-hours this"
            f" {self.period_name}, the limit is {fmt_hours(limit)} (over by {fmt_hours(seconds - limit)})."
        )
        return [(job, reason) for job in running]

    def _core_hours_used(self, whose: str, used: int, limits: Limits) -> str:
        limit = limits.core_seconds or 0
        renews = f" It renews at the start of the next {self.period}." if self.period != "all" else ""
        return (
            f"Core-hour quota: {whose} jobs used {fmt_hours(used)} core-hours this {self.period_name},"
            f" the limit is {fmt_hours(limit)} (over by {fmt_hours(used - limit)}).{renews}"
        )

    def check_disk_warning(self, user: hub_orm.User) -> None:
        """Warn once when a user's disk usage crosses the threshold (cleared when it drops below)."""
        limit = self.limits_for(user).disk_bytes
        if limit is None or limit <= 0:
            return
        used = self.disk_used(user.id)
        row = self.db.get(Usage, user.id)
        if row is None:
            row = Usage(user_id=user.id, period_start=self.current_period_start(), core_seconds=0, measured_at=utcnow())
            self.db.add(row)
        if used >= limit * self.warning_fraction:
            if row.disk_warned_at is None:
                row.disk_warned_at = utcnow()
                self.notifier.notify(
                    user,
                    "Disk quota almost used up" if used < limit else "Disk quota used up",
                    f"Your workspaces use {fmt_bytes(used)} of your {fmt_bytes(limit)} disk quota"
                    f" ({100 * used / limit:.0f}%). Uploads and copies over the quota are refused.",
                    link="workspaces",
                    data={"quota": "disk_bytes", "used": used, "limit": limit},
                )
        elif row.disk_warned_at is not None:
            row.disk_warned_at = None
        self.db.commit()

    # ---------------------------------------------------------------- reports
    def usage_list(
        self, where: ColumnElement[bool], sort: str, descending: bool, offset: int, limit: int
    ) -> tuple[list[dict[str, Any]], int]:
        """Usage of the users matching ``where`` (a condition on users), one query for the page.

        Core-hours are those of the last accounting run (``measured_at``).
        """
        start = self.current_period_start()
        disk = (
            select(Workspace.owner_id.label("uid"), func.sum(Workspace.disk_usage_bytes).label("bytes"))
            .group_by(Workspace.owner_id)
            .subquery()
        )
        active = (
            select(Job.owner_id.label("uid"), func.count(Job.id).label("jobs"))
            .where(Job.status.in_([s.value for s in ACTIVE_JOB_STATUSES]))
            .group_by(Job.owner_id)
            .subquery()
        )
        disk_bytes = func.coalesce(disk.c.bytes, 0)
        core = case((Usage.period_start == start, Usage.core_seconds), else_=0)
        core_seconds = func.coalesce(core, 0)
        jobs = func.coalesce(active.c.jobs, 0)
        columns = {"name": hub_orm.User.name, "disk_bytes": disk_bytes, "core_hours": core_seconds, "active_jobs": jobs}
        key = columns[sort]
        query = (
            select(hub_orm.User, disk_bytes, core_seconds, jobs, Usage.measured_at)
            .outerjoin(disk, disk.c.uid == hub_orm.User.id)
            .outerjoin(active, active.c.uid == hub_orm.User.id)
            .outerjoin(Usage, Usage.user_id == hub_orm.User.id)
            .where(where)
            .order_by(key.desc() if descending else key.asc(), hub_orm.User.name)
            .offset(offset)
            .limit(limit)
        )
        total = self.db.scalar(select(func.count(hub_orm.User.id)).where(where)) or 0
        overridden = {
            uid for (uid,) in self.db.execute(select(QuotaOverride.user_id).where(QuotaOverride.user_id.is_not(None)))
        }
        items = []
        for user, used_bytes, seconds, active_jobs, measured_at in self.db.execute(query):
            items.append(
                {
                    "user": user.name,
                    "disk_bytes": int(used_bytes),
                    "core_hours": int(seconds) / 3600,
                    "active_jobs": int(active_jobs),
                    "limits": self.limits_for(user).to_model(),
                    "override": user.id in overridden,
                    "measured_at": isoformat(measured_at),
                }
            )
        return items, total

    def usage_model(self, user: hub_orm.User) -> dict[str, Any]:
        usage = self.usage_of(user)
        limits = self.limits_for(user)
        return {
            "user": user.name,
            "period": self.period,
            "period_start": isoformat(usage.period_start),
            "disk_bytes": usage.disk_bytes,
            "core_hours": usage.core_seconds / 3600,
            "active_jobs": usage.active_jobs,
            "limits": limits.to_model(),
        }
