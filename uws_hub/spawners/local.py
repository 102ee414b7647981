"""Workspace jobs as local processes on the hub's machine.

Two modes, chosen by the hub per launch (``WorkspaceLaunch.system_user``):

- **system users**: the hub runs as root and each job runs as the system
  account of its owner (uid, gid and groups), as JupyterHub's
  LocalProcessSpawner does;
- **single account** (the default for trying uws-hub out): every job runs as
  the hub's own account, with a per-user HOME. There is no isolation between
  users' processes in this mode; the hub still keeps users out of each other's
  workspaces, jobs and servers.

In both modes the job's working directory and server root is its workspace,
and its output goes to ``launch.log_path`` so that a failed start can be
explained with the tail of that file.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shlex
import shutil
import subprocess
from typing import BinaryIO

from jupyterhub.spawner import LocalProcessSpawner, SpawnException
from jupyterhub.utils import random_port
from traitlets import Bool, Float, Integer, Unicode

from ..reasons import exit_reason
from . import localorphans, wrapper
from .listening import ServerExited, process_exit, wait_listening
from .localbatch import LocalRunner
from .localjob import CPU_USE, job_groups, memory_cgroups, open_log, wrapper_argv
from .mixins import WorkspaceSpawnerMixin


def popen_in_session(cmd: list[str], nice: int, **popen_kwargs) -> subprocess.Popen:
    """``subprocess.Popen`` of a command that leads a new session, then that session's
    CPU priority lowered to ``nice`` (see :func:`.wrapper.set_session_nice`)."""
    proc = subprocess.Popen(cmd, **popen_kwargs)
    # Popen returns once the child has exec'd, in the session it made
    wrapper.set_session_nice(nice, proc.pid)
    return proc


class WorkspaceLocalProcessSpawner(WorkspaceSpawnerMixin, LocalProcessSpawner):
    """Run a workspace job as a local process (entry point ``uws-local``)."""

    runs_on_hub_machine = True

    nice_level = Integer(
        10,
        config=True,
        help="""CPU priority of jobs below the hub's, as for ``nice(1)`` (0 to 19).

        The hub is one process among its jobs: when many jobs start at once
        (each a Python process importing its libraries), jobs at the hub's own
        priority can starve it, and every request waits. A positive value keeps
        the hub responsive; 0 runs jobs at the hub's priority.

        Each job leads a session of its own, and where the kernel schedules
        each session as one group (autogroup, ``kernel.sched_autogroup_enabled``)
        a process's niceness counts only within its session: the job's session
        gets this priority too (``/proc/<pid>/autogroup``). A hub that does not
        run as root can set that at most 10 times a second (the kernel's limit):
        the jobs of a faster burst keep their session at the hub's priority.
        Processes a job starts in sessions of their own (Jupyter kernels) are
        not lowered.
        """,
    )

    batch_launcher = Bool(
        True,
        config=True,
        help="""Start local batch jobs through a resident launcher: one long-lived process
        (the job wrapper run as ``wrapper.py --launcher``, as the hub's account, with a
        clean environment, talking with the hub over a socketpair only) forks each job's
        wrapper, instead of a new Python interpreter starting per job (~20 ms of CPU
        each). The jobs outlive the launcher as they outlive the hub. False: one
        interpreter per job (what the hub also falls back to, saying so in its log, when
        the launcher cannot be started).
        """,
    )
    kill_grace_seconds = Float(
        10.0,
        config=True,
        help="""Seconds a batch job's command has to end after SIGTERM (a stop, its time
        limit) before the job's wrapper kills its process group with SIGKILL; and
        seconds an orphaned local process has to end after SIGTERM before the hub
        kills it (see ``orphan_sweep_interval_seconds``).
        """,
    )

    orphan_sweep_interval_seconds = Float(
        60.0,
        config=True,
        help="""Seconds between two sweeps for orphaned local job processes (0: never).

        Every local job process carries its hub's id and its job's id in its
        environment (``UWS_HUB_ID``, ``UWS_JOB_ID``). A sweep reads them in
        ``/proc`` and ends (SIGTERM, SIGKILL after ``kill_grace_seconds``) the
        processes of this hub whose job is finished or unknown, and (servers)
        those of a job that records no live process, or one started after
        them: a hub killed between starting a process and recording it, a job
        stopped while the hub was away, what a finished job left running in
        the background. Processes of other hubs are never touched. The first
        sweep runs at the hub's first reconciler scan. A start that is retried
        ends the job's leftover processes first, whatever this setting.
        """,
    )

    memory_cgroup_parent = Unicode(
        "",
        config=True,
        help="""The cgroup v2 directory under which local jobs (batch jobs and servers) get
        their memory limits: one child cgroup per job with ``memory.max`` set to the
        job's ``memory`` and ``memory.swap.max`` to 0, so the kernel ends a job that
        uses more. The hub must be able to write to it (root) and its parent must
        offer the ``memory`` controller.

        ``""`` (the default): ``uws-jobs`` under the cgroup v2 mount, where it
        offers the memory controller. ``"none"``: never use cgroups. Where no
        cgroup can be made, a job's memory is limited by ``RLIMIT_AS`` instead:
        its address space, which counts memory mapped but never used (see
        docs/batch-jobs.md, "Limits"). The hub logs which one it uses at start.
        """,
    )

    @classmethod
    def batch_runner(cls, config, log_dir, log, hub_id):
        """Batch jobs run as local processes under the job wrapper (:mod:`.localbatch`), with
        the memory limits this class's settings allow (logged once, at the hub's start)."""
        settings = cls(config=config)
        cgroups, why_not = memory_cgroups(settings.memory_cgroup_parent)
        if cgroups is not None:
            log.info("Memory limits of local jobs: cgroup v2 under %s", cgroups.parent)
        else:
            log.info("Memory limits of local jobs: RLIMIT_AS (no cgroup: %s)", why_not)
        return LocalRunner(
            log_dir,
            log,
            kill_grace_seconds=settings.kill_grace_seconds,
            nice=settings.nice_level,
            cgroups=cgroups,
            hub_id=hub_id,
            launcher=settings.batch_launcher,
        )

    @classmethod
    async def sweep_orphans(cls, known, *, hub_id, config, log) -> list[int]:
        """End this hub's local job processes that no unfinished job owns
        (:func:`.localorphans.sweep`); return their pids."""
        settings = cls(config=config)
        return await localorphans.sweep(
            known,
            hub_id=hub_id,
            interval_seconds=settings.orphan_sweep_interval_seconds,
            grace_seconds=settings.kill_grace_seconds,
            log=log,
        )

    def limits_spec(self, launch) -> dict | None:
        """The limits of the server of ``launch`` (its CPUs, its memory) for the wrapper's
        ``--exec``, which applies them and switches to the job's account before the
        server runs; None when it asks for none (the server starts as before)."""
        cpus = CPU_USE.take(self._cpu_key, int(launch.resources.get("cpus") or 0))
        memory = launch.memory_bytes or 0
        if not cpus and not memory:
            return None
        spec: dict = {"cpus": cpus}
        if memory:
            spec["memory_bytes"] = memory
            cgroups, _ = memory_cgroups(self.memory_cgroup_parent)
            if cgroups is not None:
                spec["cgroup"] = cgroups.create(f"server-{launch.job_id}", memory)
        if launch.system_user:
            account = pwd.getpwnam(launch.system_user)
            groups = job_groups(account, launch.share_group_prefix, launch.workspace_id)
            spec.update(uid=account.pw_uid, gid=account.pw_gid, groups=groups)
        return spec

    #: the limits the running server got (see :meth:`limits_spec`); saved in the spawner's state
    limits: dict | None = None

    @property
    def _cpu_key(self) -> str:
        return f"server-{self.user.name}/{self.name}"

    def get_state(self):
        state = super().get_state()
        if self.limits:
            state["uws_limits"] = self.limits
        return state

    def load_state(self, state):
        super().load_state(state)
        self.limits = state.get("uws_limits")
        if self.limits:
            CPU_USE.hold(self._cpu_key, self.limits.get("cpus"))

    def get_env(self):
        env = super().get_env()
        # with UWS_JOB_ID, what finds the job's processes again (:mod:`.localorphans`); only
        # local ones: a SLURM job's processes may run on the hub's machine too
        env["UWS_HUB_ID"] = self.hub_id()
        return env

    #: what :meth:`over_memory` needs of a server that ended: its memory limit, whether its
    #: cgroup saw the kernel kill it, its log (JupyterHub's ``poll()`` clears the state as
    #: soon as it sees the process gone, before the hub asks why)
    ended: dict | None = None

    def over_memory(self, exit_status: int) -> str | None:
        ended = self.ended or {}
        if not ended.get("memory_bytes"):
            return None
        if ended.get("cgroup"):
            return "the kernel ended it (cgroup v2 memory.max)" if ended.get("oom_killed") else None
        tail = wrapper.log_tail(ended["log_path"]) if ended.get("log_path") else ""
        return "an allocation failed (RLIMIT_AS)" if wrapper.memory_failure(exit_status, tail) else None

    async def start(self):
        """Start the job's server (LocalProcessSpawner.start without a preexec_fn).

        JupyterHub's version switches user and directory in a Python
        ``preexec_fn``, which forces a full ``fork`` and blocks the hub's event
        loop until the child has run it: with many starts on a busy machine,
        a quarter of a second each. Popen's own ``user``/``group``/``cwd`` do
        the same in C (and without a user switch Python can use ``vfork``),
        which also makes it safe to run Popen in a thread, off the event loop.

        It returns once the server listens on its port (or its process has
        exited), so that JupyterHub's wait for the server, which backs off
        with random sleeps, succeeds at its first check (see :mod:`.listening`).
        """
        launch = self.take_launch()
        starting = (self.hub_id(), launch.job_id)
        # until the hub has the new process's pid, the orphan sweep leaves the job's processes alone
        localorphans.STARTING.add(starting)
        try:
            return await self._start(launch)
        finally:
            localorphans.STARTING.discard(starting)

    async def _start(self, launch):
        if launch.previous_resource_id or launch.retried:
            # processes of an earlier start of this job (one the hub lost track of,
            # perhaps killed before it recorded it): not adoptable (their port and
            # token are unknown), so end them before starting afresh
            why = "left by an earlier start of the job, which is started again"
            await localorphans.end_job(
                self.hub_id(), launch.job_id, launch.previous_resource_id, self.kill_grace_seconds, self.log, why
            )
        if self.port == 0:
            self.port = self._reserved_port = self._reserve_port()
        cmd = [*self.cmd, *self.get_args()]
        if self.shell_cmd:
            cmd = [*self.shell_cmd, " ".join(shlex.quote(s) for s in cmd)]
        if self.nice_level:
            # nice execs the command: same pid, no preexec_fn needed
            cmd = ["nice", "-n", str(self.nice_level), *cmd]
        popen_kwargs = dict(self.popen_kwargs)
        popen_kwargs.update(env=self.get_env(), cwd=launch.directory, start_new_session=True)
        self.ended = None

        def prepare() -> tuple[dict | None, BinaryIO | None]:
            launch.make_folders(self.log)
            limits = self.limits_spec(launch)
            log_file = os.fdopen(open_log(launch.log_path), "ab", buffering=0) if launch.log_path else None
            if log_file is not None and not launch.retried:
                # a first start: what the file holds is another job's of the same id (a hub
                # started on a new database with this job log directory), not this one's
                log_file.truncate(0)
            return limits, log_file

        # folders to make and the log to open (a hung disk holds this thread, not the hub),
        # a cgroup to create, an account to look up: file and NSS I/O, off the loop
        limits, log_file = await asyncio.to_thread(prepare)
        self.limits = limits
        if limits is not None:
            # the wrapper applies them, then switches to the job's account and execs the server
            cmd = wrapper_argv("--exec", json.dumps(limits), "--", *cmd)
        elif launch.system_user:
            account = pwd.getpwnam(launch.system_user)
            popen_kwargs.update(
                user=account.pw_uid,
                group=account.pw_gid,
                extra_groups=job_groups(account, launch.share_group_prefix, launch.workspace_id),
            )
        if log_file is not None:
            popen_kwargs.update(stdout=log_file, stderr=subprocess.STDOUT)
        self.log.info("Spawning %s", " ".join(shlex.quote(s) for s in cmd))
        popen = asyncio.ensure_future(asyncio.to_thread(popen_in_session, cmd, self.nice_level, **popen_kwargs))
        try:
            self.proc = await asyncio.shield(popen)
        except asyncio.CancelledError:
            # the start was interrupted (a stop while starting), but the thread goes on
            # and the process starts anyway: keep hold of it, so that the stop that
            # follows finds it (poll() says running) and ends it. Popen returns soon;
            # a further cancel must not make us lose the process meanwhile.
            while not popen.done():
                try:
                    await asyncio.shield(popen)
                except asyncio.CancelledError:
                    continue
                except Exception:
                    break
            if not popen.cancelled() and popen.exception() is None:
                self.proc = popen.result()
                self.pid = self.proc.pid
            raise
        except PermissionError:
            self.log.error(
                "Permission denied running %r as %s",
                shutil.which(cmd[0]) or cmd[0],
                launch.system_user or "the hub's account",
            )
            raise
        finally:
            if log_file is not None:
                # the child has its own copy of the descriptor
                log_file.close()
        self.pid = self.proc.pid
        self.report("queued", resource_id=str(self.pid))
        host = self.ip or "127.0.0.1"
        await self._wait_listening(host)
        return (host, self.port)

    async def _wait_listening(self, host: str) -> None:
        exited = process_exit(self.pid)
        try:
            await wait_listening(
                host,
                self.port,
                gone=exited if exited is not None else self._polled_exit(),
                timeout=self.http_timeout,
                owner=self.pid,
            )
            self.listening = True
        except ServerExited:
            # the start fails now, not at JupyterHub's HTTP check of the port, which
            # another process may hold (the server then exited, failing to bind it): that
            # process would answer the check and get the server's route. A SpawnException
            # is the server's failure, not the hub's: JupyterHub logs its message, no traceback
            status = await self.poll()
            reason = exit_reason("it", status, when=" before it answered")
            raise SpawnException(reason, reason="exited") from None
        finally:
            if exited is not None:
                exited.cancel()

    async def stop(self, now: bool = False) -> None:
        """Stop the server with SIGTERM, then SIGKILL after ``term_timeout``: never SIGINT.

        JupyterHub's LocalProcessSpawner interrupts first. A Jupyter server
        without a terminal takes SIGINT as Python's KeyboardInterrupt, raised
        wherever its main thread is: out of its event loop, which then cannot
        run the cleanup that SIGTERM asks for. Stopped in the first second
        after its start, JupyterLab hung there until SIGKILL, a minute later
        (``interrupt_timeout`` and ``term_timeout`` of 30 s each). SIGTERM is
        its own graceful stop (kernels shut down, then its loop ends), at any
        point of its life, as for any other web server; ``interrupt_timeout``
        does not apply.
        """
        await super().stop(now=True)

    #: the running server's exit (a pidfd), watched while it runs (see :meth:`start_polling`)
    _exit_watch: asyncio.Future | None = None
    _notifying: asyncio.Future | None = None

    def start_polling(self) -> None:
        """JupyterHub's poll of a server that runs (once started, or found again at the
        hub's start), and a watch of its exit: its port is free again the moment it dies,
        and any process may bind it; its route must go then, not at the next poll
        (``poll_interval``, the hub's reconcile scan) with its requests going to that process."""
        super().start_polling()
        if self._exit_watch is None and self.pid:
            self._exit_watch = process_exit(self.pid)
            if self._exit_watch is not None:
                self._exit_watch.add_done_callback(self._died)

    async def poll(self) -> int | None:
        watch = self._exit_watch
        if self.proc is None and watch is not None and watch.done() and not watch.cancelled():
            # a server found again at the hub's start (not the hub's child) that exited: its
            # zombie answers JupyterHub's signal 0 until its new parent reaps it
            self.clear_state()
            return 0
        return await super().poll()

    def _died(self, exited: asyncio.Future) -> None:
        """The server's process exited: JupyterHub's poll callbacks run now (the hub's
        stops the job, taking its route out), as at a poll that finds it gone. Not for an
        exit a stop asked for (JupyterHub's callbacks are not for those)."""
        if not exited.cancelled() and self._exit_watch is exited and not self._stop_pending:
            # (held: the loop keeps only a weak reference to a task)
            self._notifying = asyncio.ensure_future(self.poll_and_notify())

    async def _polled_exit(self) -> None:
        """Where pidfds are missing: the process's exit, polled."""
        while await self.poll() is None:
            await asyncio.sleep(self.death_interval)

    async def wait_for_death(self, timeout=10):
        """Wait until the server's process exits (a pidfd: noticed at once; JupyterHub's
        own wait polls with a growing, random backoff). Returns whether it did.

        The watch of a running server's exit (:meth:`start_polling`) is the pidfd waited
        on, not a new one for each signal of a stop; one is opened only for a server
        that has none (stopped while it started)."""
        watch = self._exit_watch
        if watch is not None and watch.cancelled():
            watch = None
        opened = None
        if watch is None:
            watch = opened = process_exit(self.pid) if self.pid else None
            if watch is None:
                return await super().wait_for_death(timeout)
        try:
            # (asyncio.wait, not wait_for: a timeout must not cancel the shared watch)
            await asyncio.wait([watch], timeout=timeout)
        finally:
            if opened is not None:
                opened.cancel()
        return await self.poll() is not None

    #: ports handed to servers of this process that may not be bound yet: the
    #: kernel's free-port pick can hand two near-simultaneous starts the same port
    _reserved_ports: set[int] = set()

    def _reserve_port(self) -> int:
        for _ in range(100):
            port = random_port()
            if port not in WorkspaceLocalProcessSpawner._reserved_ports:
                WorkspaceLocalProcessSpawner._reserved_ports.add(port)
                return port
        raise RuntimeError("No free port found for the server")

    _reserved_port: int | None = None

    def clear_state(self):
        # the next start of this server takes a newly reserved port
        if self._reserved_port is not None:
            WorkspaceLocalProcessSpawner._reserved_ports.discard(self._reserved_port)
            if self.port == self._reserved_port:
                self.port = 0
            self._reserved_port = None
        CPU_USE.release(self._cpu_key)
        if self._exit_watch is not None:
            self._exit_watch.cancel()
            self._exit_watch = None
        if self.limits:
            cgroup = self.limits.get("cgroup")
            self.ended = {
                "memory_bytes": self.limits.get("memory_bytes"),
                "cgroup": cgroup,
                "oom_killed": bool(cgroup) and wrapper.Cgroups.oom_killed(cgroup),
                "log_path": self.launch.log_path if self.launch else None,
            }
            if cgroup:
                wrapper.Cgroups.remove(cgroup)
        self.limits = None
        super().clear_state()

    async def release_leftover(self, job_id: int, resource_id: str, resource_uid: int | None = None) -> None:
        """End the processes of a server whose start the hub lost (hub restart), the job
        being to stop: every process of this hub's job (``resource_id`` and any other)."""
        why = "left by an interrupted start of the job, which is to stop"
        await localorphans.end_job(self.hub_id(), job_id, resource_id, self.kill_grace_seconds, self.log, why)
