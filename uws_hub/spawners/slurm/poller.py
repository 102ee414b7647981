"""The shared SLURM status poller: one ``squeue`` per cycle for every job.

:class:`SlurmPoller` keeps the state of every SLURM job the hub tracks in one
cache, refreshed by **one** ``squeue`` call per cycle for all of them,
whatever their number (kubespawner's reflector, dask-gateway's batched
``squeue``). Spawners read the cache in ``poll()``, so JupyterHub's periodic
polls and the hub's reconciler never run a subprocess per job. Jobs that
disappear from ``squeue`` (it forgets finished jobs after ``MinJobAge``) get
their end state from one batched ``sacct`` call. A failing ``squeue`` is
retried with backoff and never marks a job as finished.

The poller runs only while it tracks jobs, in a task of its own (a plug-in
works without the hub, as JupyterHub's own spawners' poll callbacks do); the
hub closes every shared poller when it shuts down
(:meth:`WorkspaceSlurmSpawner.close_shared`, called by :mod:`uws_hub.tasks`).
This package imports nothing of the hub (see ``tests/unit/test_layering.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from traitlets import Float, List, Unicode
from traitlets.config import LoggingConfigurable

from .commands import CommandResult, SlurmCommandError, run_command
from .metrics import SLURM_POLL_DURATION_SECONDS, SLURM_POLL_FAILURES
from .parsing import ENDING_STATES, SACCT_FIELDS, SQUEUE_FORMAT, JobState, framed, parse_sacct, parse_squeue

#: while something waits for a job SLURM is ending (``COMPLETING`` after a ``scancel``: some
#: tens of ms for a server that exits at once, as long as its shutdown for one that does not),
#: it is followed up every ENDING_POLL_INTERVAL_SECONDS at first, then every ENDING_LATENESS
#: of the time waited so far (up to ``fast_poll_interval_seconds``): the end is seen at most
#: a tenth of the wait late, however long SLURM takes, with a few dozen ``squeue`` calls in
#: all. A follow-up asks SLURM about the ending jobs only (``squeue -j`` of those), between
#: the cycles for all jobs, which keep their own pace.
ENDING_POLL_INTERVAL_SECONDS = 0.01
ENDING_LATENESS = 0.1
#: after an early wake (a new job, a refresh, a job's wake), how long the loop gathers
#: whoever else asks before its cycle starts (asks during a cycle share the next one)
GATHER_SECONDS = 0.005

# ---------------------------------------------------------------- the poller
Listener = Callable[[JobState], None]


@dataclass
class _Waiter:
    job_id: str
    predicate: Callable[[JobState], bool]
    future: asyncio.Future
    since: float = field(default_factory=time.monotonic)


class SlurmPoller(LoggingConfigurable):
    """The state of every SLURM job of this hub, from one ``squeue`` per cycle.

    One poller is shared by all SLURM spawners of a hub process with the same
    settings (:meth:`shared`). It runs only while it tracks jobs. Spawners
    :meth:`track` their job, read it with :meth:`get` (no subprocess), wait
    for a state with :meth:`wait`, or ask for a fresh cycle with
    :meth:`refresh` (concurrent requests share one cycle).
    """

    poll_interval_seconds = Float(
        5.0,
        config=True,
        help="""Seconds between two ``squeue`` calls of the shared SLURM status poller.

        Each call asks about every SLURM job the hub tracks at once (``squeue
        -j id1,id2,...``), however many there are; every spawner's ``poll()``
        reads the result. A job cancelled outside the hub is noticed within
        this time. While a start waits for its job to run (during its first
        ``fast_poll_window_seconds``, or once the job runs and its server is
        awaited) or a stop waits for its job to end, the poller uses
        ``fast_poll_interval_seconds`` instead.

        .. versionadded:: 0.2
        """,
    )

    fast_poll_interval_seconds = Float(
        0.5,
        config=True,
        help="""Seconds between ``squeue`` calls while a start or a stop waits on SLURM.

        Still one call for all jobs. See ``poll_interval_seconds``.

        .. versionadded:: 0.2
        """,
    )

    fast_poll_window_seconds = Float(
        30.0,
        config=True,
        help="""Seconds after a submission during which a pending job is polled fast.

        Jobs on an idle cluster start within a second or two; a job still
        pending after this waits for resources, and is polled every
        ``poll_interval_seconds``.

        .. versionadded:: 0.2
        """,
    )

    command_timeout_seconds = Float(
        30.0,
        config=True,
        help="""Seconds a SLURM command (squeue, sacct, sbatch, scancel, scontrol) may take.

        A command that takes longer is killed and counts as failed: while
        slurmctld is down, client commands hang for a while before failing.

        .. versionadded:: 0.2
        """,
    )

    backoff_max_seconds = Float(
        60.0,
        config=True,
        help="""Longest wait between retries of a failing ``squeue``.

        After a failure the poller waits ``poll_interval_seconds``, then twice
        that, and so on up to this. A failing call never marks a job as
        finished: jobs keep their last known state until SLURM answers again.

        .. versionadded:: 0.2
        """,
    )

    squeue_cmd = List(
        Unicode(),
        ["squeue"],
        config=True,
        help="""The ``squeue`` command (argv list), e.g. ``["/opt/slurm/bin/squeue"]``.

        The poller adds its own arguments (``-h -t all -j <ids> -o <format>``).

        .. versionadded:: 0.2
        """,
    )

    sacct_cmd = List(
        Unicode(),
        ["sacct"],
        config=True,
        help="""The ``sacct`` command (argv list), for the end state of jobs ``squeue`` has forgotten.

        Called once per cycle for all such jobs (``-X -n -P -j <ids>``). Without
        slurmdbd (``AccountingStorageType=accounting_storage/none``) the poller
        switches to ``sacct --completion``, which needs
        ``JobCompType=jobcomp/filetxt``; without either, such jobs end as
        ``failed`` with "no longer known to SLURM".

        .. versionadded:: 0.2
        """,
    )

    #: shared pollers, by event loop and settings
    _registry: ClassVar[dict[tuple, SlurmPoller]] = {}

    @classmethod
    def shared(cls, config=None, log: logging.Logger | None = None) -> SlurmPoller:
        """The poller of this event loop with these settings (created on first use)."""
        probe = cls(config=config, log=log) if log is not None else cls(config=config)
        try:
            loop: object = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        key = (id(loop), probe._settings())
        poller = cls._registry.get(key)
        if poller is None:
            poller = cls._registry[key] = probe
        return poller

    @classmethod
    async def close_all(cls) -> None:
        """Close every shared poller of this event loop (the hub's shutdown)."""
        loop = id(asyncio.get_running_loop())
        for key in [k for k in cls._registry if k[0] == loop]:
            await cls._registry.pop(key).close()

    def _settings(self) -> tuple:
        return tuple(tuple(v) if isinstance(v, list) else v for _, v in sorted(self.trait_values(config=True).items()))

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._states: dict[str, JobState] = {}
        self._listeners: dict[str, list[Listener]] = {}
        #: jobs whose end state must carry the exit code
        self._exit_codes: set[str] = set()
        #: the uid each job was submitted as, where known (see :meth:`track`)
        self._uids: dict[str, int] = {}
        self._waiters: list[_Waiter] = []
        self._cycle_waiters: list[asyncio.Future] = []
        #: jobs this hub cancelled (see :meth:`ending`): SLURM is ending them
        self._cancelled: set[str] = set()
        #: when the next cycle for all jobs is due (time.monotonic()); follow-ups of ending
        #: jobs come in between (see :meth:`_next`)
        self._full_due = 0.0
        #: a cycle for all jobs was asked for since the last one started (else a wake only
        #: makes the loop look at its schedule again: a new follow-up)
        self._full_asked = False
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._closing = False
        self._failures = 0
        self._sacct_completion = False
        #: counters for metrics and benchmarks
        self.stats = {"cycles": 0, "commands": 0, "failures": 0, "last_cycle_seconds": 0.0}

    # ---------------------------------------------------------------- tracking
    def track(
        self,
        job_id: str,
        listener: Listener | None = None,
        *,
        exit_code: bool = False,
        soon: bool = True,
        uid: int | None = None,
    ) -> None:
        """Include ``job_id`` in every cycle; call ``listener(state)`` when its state changes.
        With ``exit_code``, its end state comes with its exit code (``sacct``, batched with
        the jobs ``squeue`` forgot): a batch job's outcome is its command's exit status.
        A job not seen yet brings the next cycle forward, unless not ``soon`` (a batch job
        just submitted, which nothing waits for: a burst of them does not make the poller
        call ``squeue`` back to back while ``sbatch`` and SLURM's scheduler are busy).

        ``uid``: the uid the job was submitted as (None: unknown, a job from before it was
        recorded). SLURM gives a forgotten job's id again, to any account's next job: a
        record of another uid under ``job_id`` is not this job (never taken for it
        running, its end not this job's), which is then gone (``VANISHED``, saying so)."""
        if uid is not None:
            self._uids[job_id] = uid
        if exit_code:
            self._exit_codes.add(job_id)
        listeners = self._listeners.setdefault(job_id, [])
        if listener is not None and listener not in listeners:
            listeners.append(listener)
        if job_id not in self._states:
            self._kick(soon=soon)

    def untrack(self, job_id: str, listener: Listener | None = None) -> None:
        listeners = self._listeners.get(job_id)
        if listeners is None:
            return
        if listener is not None and listener in listeners:
            listeners.remove(listener)
        if listener is None or not listeners:
            self._listeners.pop(job_id, None)
            self._states.pop(job_id, None)
            self._exit_codes.discard(job_id)
            self._cancelled.discard(job_id)
            self._uids.pop(job_id, None)

    @property
    def tracked(self) -> list[str]:
        return sorted(self._listeners, key=lambda i: (len(i), i))

    def get(self, job_id: str) -> JobState | None:
        """The last known state of a tracked job (None until a cycle has seen it)."""
        return self._states.get(job_id)

    # ---------------------------------------------------------------- waiting
    async def refresh(self) -> bool:
        """Wait for a cycle that starts now (shared with concurrent callers).

        Returns whether it succeeded. While ``squeue`` fails (backoff), waits
        for the next scheduled retry instead of forcing one.
        """
        future = asyncio.get_running_loop().create_future()
        self._cycle_waiters.append(future)
        self._kick()
        return await future

    async def wait(self, job_id: str, predicate: Callable[[JobState], bool]) -> JobState:
        """Wait until the tracked job's state satisfies ``predicate``; return that state."""
        state = self._states.get(job_id)
        if state is not None and predicate(state):
            return state
        waiter = _Waiter(job_id, predicate, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        # a job SLURM is ending is followed up (see _next), sooner than a cycle for all
        self._kick(full=not self._ending(job_id))
        try:
            return await waiter.future
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def ending(self, job_id: str) -> None:
        """This hub has just cancelled the tracked job (its ``scancel`` returned): SLURM is
        ending it. A :meth:`wait` for it is then followed up at the pace of a job seen
        ``COMPLETING``, from now on, asking SLURM about it alone, without the next cycle
        for all jobs being brought forward."""
        if job_id in self._listeners:
            self._cancelled.add(job_id)

    def wake(self) -> None:
        """Run a cycle soon, without waiting for it (a job's wake, see
        :meth:`WorkspaceSlurmSpawner.wake`): coalesced with every other request
        that comes before that cycle starts; no effect while ``squeue`` fails."""
        if self._listeners:
            self._kick()

    def _kick(self, *, soon: bool = True, full: bool = True) -> None:
        """Start the loop if needed and (``soon``) let it run a cycle soon: one for all jobs,
        or (not ``full``) the follow-up of a job SLURM is ending (see :meth:`_next`)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # not in the event loop yet (load_state): the first poll() starts it
        if self._wake is None:
            self._wake = asyncio.Event()
        if self._failures == 0 and soon:
            self._full_asked = self._full_asked or full
            self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._loop())

    def _interval(self) -> float:
        """Seconds to the next cycle for all jobs: ``fast_poll_interval_seconds`` while a
        start or a stop waits (see there), else ``poll_interval_seconds``."""
        now = time.monotonic()
        for waiter in self._waiters:
            state = self._states.get(waiter.job_id)
            if state is None or not state.pending or now - waiter.since < self.fast_poll_window_seconds:
                return self.fast_poll_interval_seconds
        return self.poll_interval_seconds

    def _ending(self, job_id: str) -> bool:
        """Whether SLURM is ending the job: this hub cancelled it (:meth:`ending`), or a
        cycle saw it ``COMPLETING``; not once it has ended."""
        state = self._states.get(job_id)
        if state is None:
            return job_id in self._cancelled
        return not state.ended and (job_id in self._cancelled or state.state in ENDING_STATES)

    def _next(self) -> tuple[float, list[str] | None]:
        """When the next cycle is due (time.monotonic()), and for which jobs: the jobs a
        wait follows up that SLURM is ending (see ENDING_LATENESS), if that comes before the
        next cycle for all jobs (None)."""
        now = time.monotonic()
        due = self._full_due
        ids: list[str] | None = None
        for waiter in self._waiters:
            if not self._ending(waiter.job_id):
                continue
            at = now + max(ENDING_POLL_INTERVAL_SECONDS, ENDING_LATENESS * (now - waiter.since))
            if at < due:
                due, ids = at, []
            if ids is not None and waiter.job_id not in ids:
                ids.append(waiter.job_id)
        return due, ids

    # ---------------------------------------------------------------- the loop
    async def _loop(self) -> None:
        assert self._wake is not None
        #: the jobs of the next cycle: all (None), or the ending jobs a follow-up asks about
        only: list[str] | None = None
        while not self._closing and (self._listeners or self._cycle_waiters):
            self._wake.clear()
            self._full_asked = False
            waiters: list[asyncio.Future] = []
            if only is None:
                waiters, self._cycle_waiters = self._cycle_waiters, []
            started = time.perf_counter()
            try:
                await self.cycle(only)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self._failures += 1
                self.stats["failures"] += 1
                SLURM_POLL_FAILURES.inc()
                self.log.warning("SLURM status poll failed (%s failure(s) in a row): %s", self._failures, e)
                ok = False
            else:
                self._failures = 0
                ok = True
            self.stats["cycles"] += 1
            self.stats["last_cycle_seconds"] = time.perf_counter() - started
            SLURM_POLL_DURATION_SECONDS.observe(self.stats["last_cycle_seconds"])
            for future in waiters:
                if not future.done():
                    future.set_result(ok)
            if not (self._listeners or self._cycle_waiters):
                break
            if self._failures:
                backoff = min(self.backoff_max_seconds, self.poll_interval_seconds * 2 ** (self._failures - 1))
                self._full_due = time.monotonic() + backoff
            elif only is None:
                self._full_due = time.monotonic() + self._interval()
            while True:
                due, only = (self._full_due, None) if self._failures else self._next()
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a
                # cancellation (close()) that arrives as the event is set
                try:
                    async with asyncio.timeout(max(0.0, due - time.monotonic())):
                        await self._wake.wait()
                except TimeoutError:
                    break
                if self._full_asked:
                    # woken early (new job, refresh, wake): gather whoever else asks right now
                    only = None
                    await asyncio.sleep(GATHER_SECONDS)
                    break
                # a new follow-up (see wait): look at the schedule again
                self._wake.clear()
        self._task = None

    async def cycle(self, only: list[str] | None = None) -> None:
        """One poll: ``squeue`` for every tracked job still alive (or those of ``only``, a
        follow-up of ending jobs), ``sacct`` for the vanished."""
        jobs = self.tracked if only is None else [i for i in only if i in self._listeners]
        ids = [i for i in jobs if not (i in self._states and self._states[i].ended)]
        if not ids:
            return
        found = await self.squeue(ids)
        # another uid's job under a tracked id: SLURM forgot the hub's job (see track)
        others = {i: s for i, s in found.items() if not self._ours(s)}
        found = {i: s for i, s in found.items() if i not in others}
        what = "SLURM poll" if only is None else "SLURM follow-up of ending jobs"
        self.log.debug("%s: %s of %s job(s) in squeue", what, len(found), len(ids))
        missing = [i for i in ids if i not in found]
        # squeue knows how a job ended, not its exit code
        no_code = [i for i, s in found.items() if s.ended and i in self._exit_codes and not s.exit_code]
        if missing or no_code:
            ended = await self.end_states(missing + no_code)
            for job_id in missing:
                known = ended.get(job_id)
                if job_id in others and (known is None or not known.ended):
                    # its own record, if any, cannot be of a job slurmctld still runs
                    known = self._given_again(others[job_id])
                elif known is not None and not known.ended:
                    known = self._forgotten(known)
                found[job_id] = known or JobState(job_id, "VANISHED")
            for job_id in no_code:
                if job_id in ended:
                    known = ended[job_id]
                    found[job_id] = replace(found[job_id], exit_code=known.exit_code, start=known.start, end=known.end)
        for job_id, state in found.items():
            if job_id not in self._listeners:
                continue
            previous = self._states.get(job_id)
            if state.ended and previous is not None and previous.ended:
                continue
            if state.ended:
                self._cancelled.discard(job_id)
            self._states[job_id] = state
            if state != previous:
                for listener in list(self._listeners.get(job_id, [])):
                    try:
                        listener(state)
                    except Exception:
                        self.log.exception("SLURM state listener of job %s failed", job_id)
        for waiter in list(self._waiters):
            seen = self._states.get(waiter.job_id)
            if seen is not None and not waiter.future.done() and waiter.predicate(seen):
                waiter.future.set_result(seen)

    def _ours(self, state: JobState) -> bool:
        """Whether ``state`` is of the job tracked under its id: of the uid it was submitted
        as (see :meth:`track`), where known."""
        uid = self._uids.get(state.job_id)
        return uid is None or state.uid == uid

    def _given_again(self, other: JobState) -> JobState:
        """The end of a tracked job whose id SLURM gave to ``other``, another uid's job."""
        self.log.warning(
            "SLURM job %s is another account's job (uid %s, not %s): SLURM gave the id again,"
            " the hub's job of that id is gone",
            other.job_id,
            other.uid,
            self._uids.get(other.job_id),
        )
        why = f"its id is another account's job now (uid {other.uid}), SLURM gave it again (it lost its state)"
        return JobState(other.job_id, "VANISHED", reason=why)

    def _forgotten(self, record: JobState) -> JobState:
        """The end of a tracked job squeue does not list (``-t all``: slurmctld does not know
        it) while its accounting ``record`` says it waits or runs: slurmctld forgot it
        (restarted without its state) and slurmdbd never heard of its end (a "runaway job",
        ``sacctmgr show runawayjobs``). Taken at its record's word it ran on in the hub
        forever: its server taken for running, a batch job's slot held."""
        self.log.warning(
            "SLURM job %s is %s in sacct but unknown to squeue: slurmctld forgot it (a runaway job)",
            record.job_id,
            record.state,
        )
        why = f"slurmctld no longer knows it (its accounting record still says {record.state}: a runaway job)"
        return JobState(record.job_id, "VANISHED", reason=why, node=record.node, start=record.start, uid=record.uid)

    async def command(self, argv: list[str], **kwargs: Any) -> CommandResult:
        self.stats["commands"] += 1
        return await run_command(argv, timeout=self.command_timeout_seconds, **kwargs)

    async def squeue(self, ids: Iterable[str]) -> dict[str, JobState]:
        """One ``squeue`` for these jobs (finished ones too, for ``MinJobAge``)."""
        ids = list(ids)
        fmt, marker = framed(SQUEUE_FORMAT)
        result = await self.command([*self.squeue_cmd, "-h", "-t", "all", "-j", ",".join(ids), "-o", fmt])
        if result.returncode != 0:
            # with only unknown ids squeue exits 1 "Invalid job id specified": none known
            if "invalid job id" in result.stderr.lower():
                return {}
            raise SlurmCommandError(f"squeue exited with {result.returncode}: {result.stderr.strip()[:500]}")
        return parse_squeue(result.stdout, marker)

    async def end_states(self, ids: Iterable[str]) -> dict[str, JobState]:
        """One ``sacct`` for jobs squeue no longer knows; {} if sacct cannot tell."""
        ids = list(ids)
        base = [*self.sacct_cmd, "-X", "-n", "-P", "-j", ",".join(ids), "-o", SACCT_FIELDS]
        try:
            if not self._sacct_completion:
                result = await self.command(base)
                if result.returncode != 0 and "accounting storage is disabled" in result.stderr.lower():
                    self._sacct_completion = True
            if self._sacct_completion:
                result = await self.command([*self.sacct_cmd, "--completion", *base[len(self.sacct_cmd) :]])
        except SlurmCommandError as e:
            self.log.warning("sacct failed: %s", e)
            return {}
        if result.returncode != 0:
            self.log.warning("sacct exited with %s: %s", result.returncode, result.stderr.strip()[:500])
            return {}
        return parse_sacct(result.stdout, {i: self._uids[i] for i in ids if i in self._uids})

    async def close(self) -> None:
        """Stop polling (the loop also ends by itself when nothing is tracked)."""
        if self._task is not None:
            self._closing = True  # ends the loop even if a cancellation were lost
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            finally:
                self._task = None
                self._closing = False
