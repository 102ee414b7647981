"""SLURM knowledge for the SLURM spawner: pure parsers and renderers, and the
shared status poller.

The pure functions (:func:`parse_squeue`, :func:`parse_sacct`,
:func:`render_batch_script`, :func:`describe_end`, ...) know SLURM's output
formats and states and are tested without SLURM.

:class:`SlurmPoller` keeps the state of every SLURM job the hub tracks in one
cache, refreshed by **one** ``squeue`` call per cycle for all of them,
whatever their number (kubespawner's reflector, dask-gateway's batched
``squeue``). Spawners read the cache in ``poll()``, so JupyterHub's periodic
polls and the hub's reconciler never run a subprocess per job. Jobs that
disappear from ``squeue`` (it forgets finished jobs after ``MinJobAge``) get
their end state from one batched ``sacct`` call. A failing ``squeue`` is
retried with backoff and never marks a job as finished.

This module imports nothing of the hub (see ``tests/test_layering.py``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shlex
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable

import jinja2
from traitlets import Float, List, Unicode
from traitlets.config import LoggingConfigurable

from ..metrics import SLURM_POLL_DURATION_SECONDS, SLURM_POLL_FAILURES

# ---------------------------------------------------------------- states
#: waiting for resources (or held); the job has no node yet
PENDING_STATES = frozenset(
    {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "CONFIGURING"}
)
#: the job has its node(s) and its batch script runs (or is stopped/suspended)
RUNNING_STATES = frozenset({"RUNNING", "SUSPENDED", "STOPPED", "RESIZING", "SIGNALING"})
#: on its way out: processes being killed, files staged out
ENDING_STATES = frozenset({"COMPLETING", "STAGE_OUT"})
#: finished for good; ``VANISHED`` is ours: gone from squeue and sacct alike
ENDED_STATES = frozenset(
    {
        "COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
        "DEADLINE", "OUT_OF_MEMORY", "REVOKED", "SPECIAL_EXIT", "VANISHED",
    }
)

#: ``squeue -o`` format: id, long state, reason, batch host, time limit, comment.
#: The comment is last: users can set it to anything (``scontrol update``).
SQUEUE_FORMAT = "%i|%T|%r|%B|%l|%k"
#: ``squeue -o`` format for the orphan sweep: id, name, submit time, state
SWEEP_FORMAT = "%i|%T|%V|%j"
#: ``sacct -o`` fields (with ``-P``: separated by ``|``)
SACCT_FIELDS = "JobID,State,ExitCode,NodeList"
#: how a job's server tells the hub its port: ``scontrol update JobId=.. Comment=uws-port=N``
PORT_COMMENT = re.compile(r"(?:^|[\s,;])uws-port=(\d{1,5})(?:$|[\s,;])")


@dataclass(frozen=True)
class JobState:
    """What SLURM says about one job."""

    job_id: str
    #: SLURM's long state name, e.g. ``PENDING``, ``RUNNING``, ``TIMEOUT``
    state: str
    #: SLURM's reason (why it pends, or why it ended), "" if none
    reason: str = ""
    #: the node its batch script runs on, "" while pending
    node: str = ""
    #: the time limit SLURM applies, e.g. ``1:00:00`` or ``UNLIMITED``
    time_limit: str = ""
    comment: str = ""
    exit_code: str = ""

    @property
    def pending(self) -> bool:
        return self.state in PENDING_STATES

    @property
    def running(self) -> bool:
        return self.state in RUNNING_STATES

    @property
    def ended(self) -> bool:
        # unknown (newer) state names count as alive: never end a job by guessing
        return self.state in ENDED_STATES

    @property
    def port(self) -> int | None:
        """The port its server reported in the job's comment, if any."""
        match = PORT_COMMENT.search(self.comment or "")
        if match and 0 < int(match.group(1)) < 65536:
            return int(match.group(1))
        return None


def _none(value: str) -> str:
    """SLURM prints ``(null)``, ``n/a`` or ``None`` for nothing."""
    value = value.strip()
    return "" if value in ("(null)", "n/a", "N/A", "None", "NONE") else value


def parse_squeue(stdout: str) -> dict[str, JobState]:
    """Parse ``squeue -h -o`` :data:`SQUEUE_FORMAT` output into job states by id."""
    states: dict[str, JobState] = {}
    for line in stdout.splitlines():
        if not line.strip():
            continue
        parts = line.split("|", 5)
        if len(parts) < 5 or not parts[0].strip():
            continue
        job_id, state, reason, node, time_limit = (p.strip() for p in parts[:5])
        comment = parts[5].strip() if len(parts) > 5 else ""
        states[job_id] = JobState(
            job_id=job_id,
            state=state.split()[0].rstrip("+") if state else "UNKNOWN",
            reason=_none(reason),
            node=_none(node),
            time_limit=_none(time_limit),
            comment=_none(comment),
        )
    return states


def parse_sacct(stdout: str) -> dict[str, JobState]:
    """Parse ``sacct -n -P -o`` :data:`SACCT_FIELDS` output (allocations only) by id.

    ``State`` may read ``CANCELLED by 1002`` (who cancelled it); a job that
    was requeued is listed once per run, the last line wins.
    """
    states: dict[str, JobState] = {}
    for line in stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 2 or not parts[0]:
            continue
        job_id = parts[0]
        if "." in job_id:  # a step (batch, extern, 0): the allocation's line is enough
            continue
        words = parts[1].split()
        state = words[0].rstrip("+") if words else "UNKNOWN"
        states[job_id] = JobState(
            job_id=job_id,
            state=state,
            reason=" ".join(words[1:]),
            exit_code=parts[2] if len(parts) > 2 else "",
            node=_none(parts[3]) if len(parts) > 3 else "",
        )
    return states


@dataclass(frozen=True)
class SweepEntry:
    job_id: str
    state: str
    submitted: str
    name: str


def parse_sweep(stdout: str) -> list[SweepEntry]:
    """Parse ``squeue -h -o`` :data:`SWEEP_FORMAT` output (every queued or running job)."""
    entries = []
    for line in stdout.splitlines():
        parts = line.split("|", 3)
        if len(parts) == 4 and parts[0].strip():
            entries.append(SweepEntry(*(p.strip() for p in parts)))
    return entries


def parse_sbatch(stdout: str) -> str:
    """The job id from ``sbatch --parsable`` (``123`` or ``123;cluster``; last line)."""
    lines = [line for line in stdout.strip().splitlines() if line.strip()]
    if not lines:
        raise ValueError("sbatch printed no job id")
    job_id = lines[-1].split(";")[0].strip()
    if not job_id.isdigit():
        raise ValueError(f"sbatch printed no job id: {stdout.strip()[:200]!r}")
    return job_id


# ---------------------------------------------------------------- names
def job_name(prefix: str, job_id: int) -> str:
    return f"{prefix}job-{job_id}"


def job_id_from_name(prefix: str, name: str) -> int | None:
    """The hub job id in a SLURM job name made by :func:`job_name`, or None if not ours."""
    if not prefix or not name.startswith(prefix + "job-"):
        return None
    rest = name[len(prefix) + 4 :]
    return int(rest) if rest.isdigit() else None


# ---------------------------------------------------------------- ends
def describe_end(state: JobState, *, started: bool) -> tuple[str, str]:
    """How a job that SLURM ended ends in the hub: (outcome, reason).

    ``outcome`` is ``completed``, ``failed`` or ``cancelled``; ``started``
    says whether its server had answered (a server that ends before it answers
    failed, even with exit status 0).
    """
    sid = f"SLURM job {state.job_id}"
    on = f" on node {state.node}" if state.node else ""
    s = state.state
    if s == "CANCELLED":
        by = f", {state.reason}" if state.reason.startswith("by ") else ""
        return "cancelled", f"{sid} was cancelled outside uws-hub (scancel{by})"
    if s == "TIMEOUT":
        limit = f" of {state.time_limit}" if state.time_limit and state.time_limit != "UNLIMITED" else ""
        return "failed", f"{sid} reached its time limit{limit}{on}"
    node = f" {state.node}" if state.node else ""
    if s == "NODE_FAIL":
        return "failed", f"{sid} failed: its node{node} failed"
    if s == "OUT_OF_MEMORY":
        return "failed", f"{sid} ran out of memory{on}"
    if s == "BOOT_FAIL":
        return "failed", f"{sid} failed: its node{node} did not boot"
    if s == "PREEMPTED":
        return "failed", f"{sid} was preempted{on}"
    if s == "DEADLINE":
        return "failed", f"{sid} reached its deadline{on}"
    if s == "VANISHED":
        return "failed", f"{sid} is no longer known to SLURM: it ended, how is unknown"
    detail = ", ".join(x for x in (state.reason, f"exit code {state.exit_code}" if state.exit_code else "") if x)
    detail = f" ({detail})" if detail else ""
    if s == "COMPLETED":
        if started:
            return "completed", f"{sid} ended: its server exited{on}"
        return "failed", f"{sid} ended before its server answered{detail}{on}"
    return "failed", f"{sid} ended {s}{detail}{on}"


# ---------------------------------------------------------------- batch script
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def render_batch_script(template: str, *, env: dict[str, str], cmd: list[str], **variables: Any) -> str:
    """Render the sbatch script template (Jinja2).

    ``variables`` are the template's values (``job_name``, ``output``,
    ``workdir``, ``partition``, ``runtime``, ...); none may contain a newline
    (they end up on ``#SBATCH`` lines). ``env`` becomes ``export NAME=value``
    lines (values shell-quoted) in ``{{ exports }}``; ``cmd`` becomes
    ``{{ cmd }}``, shell-quoted. The ``quote`` filter shell-quotes anything else.
    """
    for name, value in variables.items():
        if isinstance(value, str) and ("\n" in value or "\r" in value or "\0" in value):
            raise ValueError(f"batch script value {name!r} contains a line break")
    for name, value in env.items():
        if not _ENV_NAME.match(name):
            raise ValueError(f"invalid environment variable name {name!r}")
        if "\0" in value:
            raise ValueError(f"environment variable {name!r} contains a NUL byte")
    exports = "\n".join(f"export {name}={shlex.quote(value)}" for name, value in sorted(env.items()))
    jenv = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    jenv.filters["quote"] = lambda v: shlex.quote(str(v))
    return jenv.from_string(template).render(exports=exports, cmd=shlex.join(cmd), **variables)


def token_from_script(script: str) -> str | None:
    """The ``JUPYTERHUB_API_TOKEN`` a batch script rendered by this module exports."""
    for line in script.splitlines():
        if line.startswith("export JUPYTERHUB_API_TOKEN="):
            try:
                words = shlex.split(line)
            except ValueError:
                return None
            if len(words) == 2:
                return words[1].split("=", 1)[1] or None
    return None


def script_job_id(script: str) -> int | None:
    """The hub job id (``UWS_JOB_ID``) a batch script rendered by this module exports."""
    match = re.search(r"^export UWS_JOB_ID=(\d+)$", script, re.M)
    return int(match.group(1)) if match else None


# ---------------------------------------------------------------- subprocesses
class SlurmCommandError(RuntimeError):
    """A SLURM command failed, timed out or could not be run."""


@dataclass
class CommandResult:
    returncode: int
    stdout: str
    stderr: str


async def run_command(
    argv: list[str],
    *,
    timeout: float,
    input: str | None = None,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    user: int | None = None,
    group: int | None = None,
    extra_groups: list[int] | None = None,
) -> CommandResult:
    """Run ``argv`` (no shell) with a timeout; kill it if it takes longer.

    ``user``/``group``/``extra_groups`` run it as another account (the hub
    is root), as Popen does, without a Python ``preexec_fn``.
    Raises :class:`SlurmCommandError` on a timeout or if it cannot be started.
    """
    kwargs: dict[str, Any] = {}
    if user is not None:
        kwargs.update(user=user, group=group, extra_groups=extra_groups or [])
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=cwd,
            **kwargs,
        )
    except OSError as e:
        raise SlurmCommandError(f"cannot run {argv[0]}: {e}") from e
    try:
        out, err = await asyncio.wait_for(
            proc.communicate(input.encode() if input is not None else None), timeout
        )
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise SlurmCommandError(f"{argv[0]} did not answer within {timeout:g} s") from None
    except asyncio.CancelledError:
        if proc.returncode is None:
            proc.kill()
        raise
    return CommandResult(proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace"))


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

    def _settings(self) -> tuple:
        return tuple(
            tuple(v) if isinstance(v, list) else v
            for _, v in sorted(self.trait_values(config=True).items())
        )

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._states: dict[str, JobState] = {}
        self._listeners: dict[str, list[Listener]] = {}
        self._waiters: list[_Waiter] = []
        self._cycle_waiters: list[asyncio.Future] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._closing = False
        self._failures = 0
        self._sacct_completion = False
        #: counters for metrics and benchmarks
        self.stats = {"cycles": 0, "commands": 0, "failures": 0, "last_cycle_seconds": 0.0}

    # ---------------------------------------------------------------- tracking
    def track(self, job_id: str, listener: Listener | None = None) -> None:
        """Include ``job_id`` in every cycle; call ``listener(state)`` when its state changes."""
        listeners = self._listeners.setdefault(job_id, [])
        if listener is not None and listener not in listeners:
            listeners.append(listener)
        if job_id not in self._states:
            self._kick()

    def untrack(self, job_id: str, listener: Listener | None = None) -> None:
        listeners = self._listeners.get(job_id)
        if listeners is None:
            return
        if listener is not None and listener in listeners:
            listeners.remove(listener)
        if listener is None or not listeners:
            self._listeners.pop(job_id, None)
            self._states.pop(job_id, None)

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
        self._kick()
        try:
            return await waiter.future
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def _kick(self) -> None:
        """Start the loop if needed and let it run a cycle soon."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # not in the event loop yet (load_state): the first poll() starts it
        if self._wake is None:
            self._wake = asyncio.Event()
        if self._failures == 0:
            self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._loop())

    def _fast(self) -> bool:
        now = time.monotonic()
        for waiter in self._waiters:
            state = self._states.get(waiter.job_id)
            if state is None or not state.pending or now - waiter.since < self.fast_poll_window_seconds:
                return True
        return False

    # ---------------------------------------------------------------- the loop
    async def _loop(self) -> None:
        assert self._wake is not None
        while not self._closing and (self._listeners or self._cycle_waiters):
            self._wake.clear()
            waiters, self._cycle_waiters = self._cycle_waiters, []
            started = time.perf_counter()
            try:
                await self.cycle()
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
            interval = self.fast_poll_interval_seconds if self._fast() else self.poll_interval_seconds
            if self._failures:
                interval = min(self.backoff_max_seconds, self.poll_interval_seconds * 2 ** (self._failures - 1))
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a
            # cancellation (close()) that arrives as the event is set
            try:
                async with asyncio.timeout(interval):
                    await self._wake.wait()
            except TimeoutError:
                continue
            # woken early (new job, refresh): gather whoever else asks right now
            await asyncio.sleep(0.02)
        self._task = None

    async def cycle(self) -> None:
        """One poll: ``squeue`` for every tracked job still alive, ``sacct`` for the vanished."""
        ids = [i for i in self.tracked if not (i in self._states and self._states[i].ended)]
        if not ids:
            return
        found = await self.squeue(ids)
        missing = [i for i in ids if i not in found]
        if missing:
            ended = await self.end_states(missing)
            for job_id in missing:
                found[job_id] = ended.get(job_id) or JobState(job_id, "VANISHED")
        for job_id, state in found.items():
            if job_id not in self._listeners:
                continue
            previous = self._states.get(job_id)
            if state.ended and previous is not None and previous.ended:
                continue
            self._states[job_id] = state
            if state != previous:
                for listener in list(self._listeners.get(job_id, [])):
                    try:
                        listener(state)
                    except Exception:
                        self.log.exception("SLURM state listener of job %s failed", job_id)
        for waiter in list(self._waiters):
            state = self._states.get(waiter.job_id)
            if state is not None and not waiter.future.done() and waiter.predicate(state):
                waiter.future.set_result(state)

    async def command(self, argv: list[str], **kwargs: Any) -> CommandResult:
        self.stats["commands"] += 1
        return await run_command(argv, timeout=self.command_timeout_seconds, **kwargs)

    async def squeue(self, ids: Iterable[str]) -> dict[str, JobState]:
        """One ``squeue`` for these jobs (finished ones too, for ``MinJobAge``)."""
        ids = list(ids)
        result = await self.command(
            [*self.squeue_cmd, "-h", "-t", "all", "-j", ",".join(ids), "-o", SQUEUE_FORMAT]
        )
        if result.returncode != 0:
            # with only unknown ids squeue exits 1 "Invalid job id specified": none known
            if "invalid job id" in result.stderr.lower():
                return {}
            raise SlurmCommandError(f"squeue exited with {result.returncode}: {result.stderr.strip()[:500]}")
        return parse_squeue(result.stdout)

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
                result = await self.command([*self.sacct_cmd, "--completion", *base[len(self.sacct_cmd):]])
        except SlurmCommandError as e:
            self.log.warning("sacct failed: %s", e)
            return {}
        if result.returncode != 0:
            self.log.warning("sacct exited with %s: %s", result.returncode, result.stderr.strip()[:500])
            return {}
        return parse_sacct(result.stdout)

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


def submit_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of ``sbatch`` itself: enough to find and configure SLURM.

    The job's own environment is exported by the batch script, so that a
    batch script holds all a job needs (and an interrupted start can be adopted).
    """
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "SLURM_CONF", "TZ")}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(extra or {})
    return env
