"""Batch jobs as local processes, each under the job wrapper (:mod:`uws_hub.spawners.wrapper`).

The runner starts the wrapper as the hub's account (root with system users)
in a session of its own; the wrapper runs the command as the job's account
with its limits (CPUs by affinity; memory by cgroup v2 or ``RLIMIT_AS``; the
time limit) and records how it ended. Its files, and how a restarted hub
finds a job again, are :mod:`uws_hub.spawners.localjob`'s.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ..reasons import exit_reason, signal_name
from .batch import BatchLaunch, RunState
from .localjob import (
    CPU_USE,
    ExitWatch,
    JobFiles,
    Launcher,
    LauncherLost,
    Started,
    alive,
    claim,
    job_groups,
    start,
    stop,
)
from .wrapper import Cgroups


def _time(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None)


def describe_exit(record: dict[str, Any], memory: str | None) -> tuple[str, str]:
    """How a job ended, from its exit record: (outcome, reason)."""
    code, sig = record.get("exit_code"), record.get("signal")
    how = f"exit status {code}" if sig is None else f"signal {sig} ({signal_name(sig)})"
    if record.get("stopped"):
        return "cancelled", "Stopped on request"
    if record.get("time_limit"):
        return (
            "failed",
            f"The job reached its time limit of {record.get('time_limit_seconds', 0):g} s and was stopped ({how})",
        )
    if record.get("memory_exceeded"):
        by = (
            "the kernel ended it (cgroup v2 memory.max)"
            if record.get("memory_limit") == "cgroup"
            else "an allocation failed (RLIMIT_AS)"
        )
        return "failed", f"The job went over its memory limit of {memory}: {by}; it ended with {how}"
    if record.get("error"):
        return "failed", f"The command could not be run: {record['error']}"
    return ("completed" if sig is None and code == 0 else "failed"), exit_reason("The command", code, signal=sig)


class LocalRunner:
    """Runs batch jobs as local processes (the ``local`` resource)."""

    def __init__(
        self,
        state_dir: str,
        log: logging.Logger,
        *,
        python: str = sys.executable,
        kill_grace_seconds: float = 10,
        nice: int = 0,
        cgroups: Cgroups | None = None,
        hub_id: str = "",
        launcher: bool = True,
    ):
        self.state_dir = state_dir
        self.log = log
        self.python = python
        self.kill_grace_seconds = kill_grace_seconds
        self.nice = nice
        self.cgroups = cgroups
        #: this hub's id (``UWS_HUB_ID`` of its jobs' processes, see :mod:`.localorphans`)
        self.hub_id = hub_id
        self.watch = ExitWatch()
        #: the resident launcher that forks the wrappers (None: one interpreter per job)
        self.launcher = Launcher(log, python=python, hub_id=hub_id) if launcher else None
        #: when their commands started (their real start: running_at, and core-hours, count from it)
        self.started: dict[int, datetime] = {}

    def files(self, launch: BatchLaunch) -> JobFiles:
        return JobFiles(self.state_dir, launch.job_id)

    def log_path(self, launch: BatchLaunch) -> str:
        return self.files(launch).log

    def log_owner(self, launch: BatchLaunch) -> int:
        return os.geteuid()

    # ---------------------------------------------------------------- start
    @staticmethod
    def _cpu_key(job_id: int) -> str:
        return f"batch-{job_id}"

    def _spec(self, launch: BatchLaunch) -> dict[str, Any]:
        env = {"PATH": os.environ.get("PATH", os.defpath), "LANG": os.environ.get("LANG", "C.UTF-8")}
        spec: dict[str, Any] = {
            "argv": launch.argv,
            "cwd": launch.directory,
            "cpus": CPU_USE.take(self._cpu_key(launch.job_id), int(launch.resources.get("cpus") or 0)),
            "time_limit_seconds": launch.time_limit_seconds,
            "kill_grace_seconds": self.kill_grace_seconds,
            "nice": self.nice,
        }
        if launch.memory_bytes:
            spec["memory_bytes"] = launch.memory_bytes
            if self.cgroups is not None:
                spec["cgroup"] = self.cgroups.create(f"job-{launch.job_id}", spec["memory_bytes"])
        if launch.system_user:
            account = pwd.getpwnam(launch.system_user)
            groups = job_groups(account, launch.share_group_prefix, launch.workspace_id)
            spec.update(uid=account.pw_uid, gid=account.pw_gid, groups=groups)
            env.update(USER=account.pw_name, HOME=account.pw_dir, SHELL=account.pw_shell or "/bin/sh")
        else:
            env.update(USER=pwd.getpwuid(os.geteuid()).pw_name, HOME=launch.home or "/", SHELL="/bin/sh")
        spec["env"] = {**env, **launch.env, "UWS_HUB_ID": self.hub_id}
        return spec

    def granted_time_limit(self, seconds: float) -> float:
        """Exactly what was asked for: the job wrapper's timer takes fractions of a second."""
        return seconds

    async def submit(
        self, launch: BatchLaunch, wake: Callable[[], None], *, prepare: Callable[[], None] = lambda: None
    ) -> str:
        # one trip to a thread: a burst of short jobs is bounded by the hub's work per job
        started = await asyncio.to_thread(self._start, launch, prepare)
        self._watch(launch.job_id, started.pid, wake, started.proc, started.pidfd)
        return str(started.pid)

    def _start(self, launch: BatchLaunch, prepare: Callable[[], None]) -> Started:
        """Claim the job's run file, then start its wrapper (blocking: in a thread)."""
        files = self.files(launch)
        lock_fd = claim(files)
        if lock_fd is None:
            raise RuntimeError(f"job {launch.job_id} already has a wrapper process")
        try:
            files.remove_stale()
            prepare()
            spec = self._spec(launch)
            self.started[launch.job_id] = datetime.now(UTC).replace(tzinfo=None)
            try:
                return start(files, lock_fd, spec, python=self.python, hub_id=self.hub_id, launcher=self.launcher)
            except LauncherLost as e:
                os.close(lock_fd)
                lock_fd = -1
                return self._after_lost_launcher(launch, files, spec, e)
        except BaseException:
            CPU_USE.release(self._cpu_key(launch.job_id))
            self.started.pop(launch.job_id, None)
            raise
        finally:
            if lock_fd >= 0:
                os.close(lock_fd)

    def _after_lost_launcher(
        self, launch: BatchLaunch, files: JobFiles, spec: dict[str, Any], lost: Exception
    ) -> Started:
        """The launcher ended while it had the job: whether it forked the wrapper first
        tells the run file's lock (held by a wrapper that lives) or the exit record (of one
        that ended already). Started: its pid; never started: start it now."""
        self.log.warning("Job %s: %s; looking for its wrapper", launch.job_id, lost)
        lock_fd = claim(files)
        if lock_fd is None or files.read_exit() is not None:
            if lock_fd is not None:
                os.close(lock_fd)
            # the wrapper writes its run file first thing: give it a moment
            deadline = time.monotonic() + 5
            while (run := files.read_run()) is None or not isinstance(run.get("pid"), int):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"job {launch.job_id}: its wrapper started but names no process") from None
                time.sleep(0.02)
            return Started(run["pid"])
        try:
            return start(files, lock_fd, spec, python=self.python, hub_id=self.hub_id, launcher=self.launcher)
        finally:
            os.close(lock_fd)

    def _watch(self, job_id: int, pid: int, wake: Callable[[], None], proc=None, pidfd: int | None = None) -> None:
        def ended() -> None:
            CPU_USE.release(self._cpu_key(job_id))
            self.started.pop(job_id, None)
            wake()

        if not self.watch.watch(pid, ended, proc, pidfd):
            ended()

    # ---------------------------------------------------------------- state
    async def state(self, launch: BatchLaunch, resource_id: str | None, wake: Callable[[], None]) -> RunState:
        files = self.files(launch)
        if resource_id and resource_id.isdigit() and self.watch.watching(int(resource_id)):
            return RunState("running", started_at=self.started.get(launch.job_id))
        state, run = await asyncio.to_thread(self._find, launch, files)
        pid = alive(run)
        if state.phase == "running" and pid is not None and run is not None:
            # a job that ran on while the hub was away: watched from now on
            CPU_USE.hold(self._cpu_key(launch.job_id), run.get("cpus"))
            started = _time(run.get("started"))
            if started is not None:
                self.started[launch.job_id] = started
            self._watch(launch.job_id, pid, wake)
            # its pid, which the hub may not have recorded (it died in the hand-over):
            # the orphan sweep tells the job's own processes by it
            return RunState("running", started_at=started, resource_id=str(pid))
        return state

    def _find(self, launch: BatchLaunch, files: JobFiles) -> tuple[RunState, dict[str, Any] | None]:
        record = files.read_exit()
        if record is not None:
            return self._ended(launch, record), None
        lock_fd = claim(files)
        if lock_fd is None:
            # a wrapper holds the lock: the job runs
            return RunState("running"), files.read_run()
        try:
            # no wrapper lives: it ended (just now, perhaps), was killed, or never ran
            record = files.read_exit()
            if record is not None:
                return self._ended(launch, record), None
            if files.read_run() is not None:
                reason = "The job's wrapper process ended without recording how the command ended (it was killed)"
                return RunState("ended", outcome="failed", reason=reason), None
            return RunState("unstarted"), None
        finally:
            os.close(lock_fd)

    def _ended(self, launch: BatchLaunch, record: dict[str, Any]) -> RunState:
        record = {**record, "time_limit_seconds": launch.time_limit_seconds}
        outcome, reason = describe_exit(record, launch.resources.get("memory"))
        return RunState(
            "ended",
            reason=reason,
            outcome=outcome,
            exit_code=record.get("exit_code"),
            exit_signal=record.get("signal"),
            stopped=bool(record.get("stopped")),
            started_at=_time(record.get("started")),
            ended_at=_time(record.get("ended")),
        )

    # ---------------------------------------------------------------- stop
    async def cancel(self, launch: BatchLaunch, resource_id: str | None) -> None:
        files = self.files(launch)
        pid = int(resource_id) if resource_id and resource_id.isdigit() else None
        while not await asyncio.to_thread(stop, files.read_run()):
            # a wrapper started a moment ago has not written its run file yet: ask again
            # while it lives (a stop that found no wrapper was lost, and the command ran
            # its whole course)
            if pid is None or not self.watch.watching(pid):
                return
            await asyncio.sleep(0.02)

    def forget(self, launch: BatchLaunch) -> None:
        self.files(launch).remove()

    async def close(self) -> None:
        self.watch.close()
        if self.launcher is not None:
            await asyncio.to_thread(self.launcher.close)
