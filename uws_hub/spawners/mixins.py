"""What every uws-hub spawner shares: it runs one workspace job, nothing else.

The hub describes the job in a :class:`WorkspaceLaunch` and hands it to the
spawner (``spawner.next_launch``) right before it asks JupyterHub to start the
server; ``start()`` takes it (it becomes ``spawner.launch``, saved in the
spawner's state). A start without a launch handed over is refused, so
starting a server through JupyterHub's own API or spawn page cannot bypass
workspaces (and quotas).

The mixin reports what it learns about the job's life (the resource's own id,
the resource's queue state) to ``spawner.lifecycle_listener``, a callable the
hub sets; the hub turns those reports into job status changes. This module
knows nothing of the hub, its ORM or its handlers.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import pwd
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.orm import object_session
from tornado import web

from .batch import BatchRunner


@dataclass
class WorkspaceLaunch:
    """Everything a spawner needs to run one job in one workspace (JSON-able)."""

    job_id: int
    workspace_id: int
    #: absolute path of the workspace: the server's root directory and cwd
    directory: str
    #: the command to run (the job type's ``cmd``)
    cmd: list[str]
    #: URL path the server opens at, e.g. ``/lab``
    default_url: str = ""
    #: extra environment for the job
    env: dict[str, str] = field(default_factory=dict)
    #: requested resources (cpus, mem, gpus, time limit, partition)
    resources: dict[str, Any] = field(default_factory=dict)
    #: the system account to run as, or None to run as the hub's own account
    system_user: str | None = None
    #: the hub user the job runs for (its launcher): whose auth state (tokens) it gets
    launcher: str | None = None
    #: that hub user as one person over time (:func:`uws_hub.jobs.service.account_holder`):
    #: its system account's output folder is theirs, not a former user's of the name
    account_holder: str | None = None
    #: the shared workspace's POSIX group, for a job an editor launched (no account is a
    #: member: the hub gives it to the job): its primary group on SLURM, which gives a job
    #: the primary group of the process that submits it
    group: str | None = None
    #: ``UWSHub.share_posix_group_prefix`` (None: no shared workspaces' groups): the job
    #: runs with its account's groups and its own workspace's, less those of other workspaces
    #: (:func:`uws_hub.spawners.localjob.job_groups`)
    share_group_prefix: str | None = None
    #: HOME for the job when it runs as the hub's own account
    home: str | None = None
    #: where the job's stdout and stderr go (read back on failure)
    log_path: str | None = None
    #: the hub's job log directory (``UWSHub.job_log_dir``), outside every workspace
    job_log_dir: str | None = None
    #: the memory it may use, in bytes (the launch's ``memory``), for spawners that apply it
    memory_bytes: int | None = None
    #: the resource id an earlier, interrupted start of this job reported (a hub
    #: restart during the start): the spawner adopts it (a batch job that is
    #: still queued or running) or cleans it up before starting afresh
    previous_resource_id: str | None = None
    #: the uid its resource runs as, recorded when it was submitted (a SLURM job: its
    #: account's, kept even if the account later gets another uid), or of the previous
    #: resource until then; None: unknown (a job from before it was recorded). A SLURM job
    #: of another uid under the resource's id is another account's job (SLURM gave the id
    #: again), never this one
    resource_uid: int | None = None
    #: an earlier start of this job was made (this is attempt 2 or later): one the hub
    #: lost track of (killed before it recorded the process) may have left something
    retried: bool = False

    def make_folders(self, log: logging.Logger | logging.LoggerAdapter) -> None:
        """Make the hub's job log folder and the HOME of a job of the hub's own account
        (blocking). The spawner calls it in its start's thread: a start used to make
        them on the event loop (:meth:`JobService.launch_for`), and a hung workspace
        disk held the whole hub, every user's requests, until it answered.

        One that cannot be made fails the start saying which and why, without its path
        (the job's reason is the user's to read: the OSError's own message showed the
        hub's storage layout); ``log`` has the path, for the operator."""
        for folder, what in ((self.job_log_dir, "the hub's job log folder"), (self.home, "the job's HOME folder")):
            if folder:
                try:
                    os.makedirs(folder, mode=0o700, exist_ok=True)
                except OSError as e:
                    log.error("Job %s: cannot make %s %s: %s", self.job_id, what, folder, e)
                    raise RuntimeError(f"cannot make {what}: {e.strerror or type(e).__name__}") from e

    def to_state(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> WorkspaceLaunch:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in state.items() if k in known})


#: signature of ``spawner.lifecycle_listener``: (spawner, event, info)
LifecycleListener = Callable[[Any, str, dict[str, Any]], None]


def hub_id(db_url: str) -> str:
    """A short, stable id of a hub, from its database URL (password hidden).

    Resources shared by several hubs (a SLURM cluster, a machine where several
    hubs run local jobs) tell their jobs apart with it: the hub passes it to
    ``sweep_orphans``, spawners get it from :meth:`WorkspaceSpawnerMixin.hub_id`,
    and every local job process gets it as ``UWS_HUB_ID``. It is no secret.

    A relative SQLite path (JupyterHub's default, ``sqlite:///jupyterhub.sqlite``)
    counts as the file it opens: two hubs started in two folders are two hubs.
    """
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        if not os.path.isabs(url.database) and not url.database.startswith("file:"):
            db_url = url.set(database=os.path.abspath(url.database)).render_as_string(hide_password=True)
    return hashlib.sha256(db_url.encode()).hexdigest()[:8]


class SweepSchedule:
    """When each hub (by id) last swept a resource for orphans, so that the reconciler's
    scans sweep once per interval (``sweep_orphans`` of the local and SLURM spawners)."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def due(self, hub_id: str, interval_seconds: float) -> bool:
        """Whether hub ``hub_id`` sweeps now (0: never; the first call: yes); if so, the
        interval starts again now."""
        if not interval_seconds:
            return False
        now = time.monotonic()
        last = self._last.get(hub_id)
        if last is not None and now - last < interval_seconds:
            return False
        self._last[hub_id] = now
        return True

    def retry(self, hub_id: str) -> None:
        """The sweep failed: the next scan sweeps again."""
        self._last.pop(hub_id, None)


class WorkspaceSpawnerMixin:
    """Mix into a JupyterHub Spawner (before it) to make it run workspace jobs.

    Subclasses call :meth:`report` when they learn something about the job:
    ``report("queued", resource_id=..., resource_uid=..., reason=...)`` once the
    resource has the job (the checkpoint, with the uid it runs as where the
    resource has one; again with a new ``reason`` when a batch queue's view of it
    changes), ``report("ended", outcome=..., reason=...)`` when the resource ended
    the job and knows how (``outcome``: ``completed``, ``failed`` or
    ``cancelled``; the hub then stops the server and records it). Their
    ``start`` makes the launch's folders (:meth:`WorkspaceLaunch.make_folders`,
    blocking) in a thread before the job needs them.

    A spawner class may also define
    ``async def sweep_orphans(cls, known, *, hub_id, config, log)`` (a
    classmethod): the hub's reconciler calls it on each scan with ``known()``,
    a callable returning ``{job id: resource id or None}`` for this hub's
    unfinished jobs on that class's resources, so that it can end resource
    jobs of this hub that no job knows of.
    """

    #: the status a running job ends in when the hub stops it on request
    #: (``completed``; a batch job that is cancelled: ``cancelled``)
    stopped_outcome: str = "completed"

    #: the requested resources (``cpus``, ``memory``, ``gpus``, ``time_limit``,
    #: ``partition``) this spawner reserves; the launch form asks only for these
    honoured_resources: tuple[str, ...] = ()

    #: whether a server's start runs on the hub's own machine until it listens (a
    #: local process): such starts count against ``c.UWSHub.max_local_starts`` after
    #: the start's bookkeeping too; a start handed to a resource elsewhere (a job in
    #: SLURM's queue) does not
    runs_on_hub_machine: bool = False

    @classmethod
    def batch_runner(cls, config: Any, log_dir: str, log: logging.Logger, hub_id: str) -> BatchRunner | None:
        """The runner of batch jobs on this class's resources (:mod:`.batch`), or None if
        they run none. ``log_dir``: the hub's job log directory; ``hub_id``: see :func:`hub_id`."""
        return None

    @classmethod
    async def close_shared(cls) -> None:
        """Close what the class shares between its spawners (the hub calls it at shutdown)."""

    @classmethod
    def unwanted_hub_handlers(cls) -> tuple[type, ...]:
        """JupyterHub handlers that importing this class's libraries added and the hub must
        not serve (the hub leaves them out of its routes)."""
        return ()

    #: handed over by the hub right before a start; taken by start()
    next_launch: WorkspaceLaunch | None = None
    #: the job this server runs; saved in the spawner's state
    launch: WorkspaceLaunch | None = None
    #: set by the hub; receives lifecycle reports
    lifecycle_listener: LifecycleListener | None = None
    #: the task running the last start() (see :meth:`take_launch`)
    start_task: asyncio.Task | None = None
    #: how the last started server ended (see :meth:`poll`); None while it runs
    exit_status: int | None = None
    #: set by the start() of spawners that return only once the server accepts
    #: connections (see :mod:`.listening`), when it did
    listening: bool = False
    #: set by the hub before a start: called with :attr:`start_task` once start()
    #: returns, before JupyterHub's own check of the server (the hub adds the proxy
    #: route meanwhile)
    start_listener: Callable[[asyncio.Task], None] | None = None
    #: set by the hub for a stop it records: called (synchronous) as soon as :meth:`stop`
    #: knows the server ended (its process exited; its batch job left the queue, all its
    #: steps ended), before JupyterHub's cleanup of the server and anything the spawner
    #: does after the end (a SLURM job's output tail): the job's end is recorded then
    stopped_listener: Callable[[], None] | None = None
    #: set by the hub for a stop: called (synchronous) once JupyterHub's cleanup of the
    #: stopped server is committed, before its post-stop hook, with nothing awaited in
    #: between: that cleanup sets the user's activity to now, which the hub puts back
    #: there, before any request can read it (the job's end is recorded before it)
    stop_cleaned_listener: Callable[[], None] | None = None

    def take_launch(self) -> WorkspaceLaunch:
        """Take the launch handed over for this start, or refuse to start.

        JupyterHub clears the spawner's state before each start, so the launch
        is handed over separately and taken here, exactly once.
        """
        launch, self.next_launch = self.next_launch, None
        self.exit_status = None
        # the task running start(): a stop while starting waits for it to end, so
        # that it stops what the start made (JupyterHub's cancelled spawn may not)
        self.start_task = asyncio.current_task()
        self.listening = False
        if self.start_listener is not None and self.start_task is not None:
            self.start_task.add_done_callback(self.start_listener)
        if launch is None:
            raise web.HTTPError(
                400,
                "This server runs workspace jobs only: launch a job in a workspace"
                " (the workspace page, or POST /hub/api/workspaces/{id}/jobs).",
            )
        self.launch = launch
        self.apply_launch(launch)
        return launch

    @property
    def node(self) -> str | None:
        """The host the job's server runs on, if the resource says (a SLURM node)."""
        return None

    def hub_id(self) -> str:
        """This hub's id (see :func:`hub_id`), from the database the spawner's row lives in."""
        session = object_session(self.orm_spawner)  # type: ignore[attr-defined]
        if session is None:
            return "nodb"
        return hub_id(session.get_bind().engine.url.render_as_string(hide_password=True))

    def require_launch(self) -> WorkspaceLaunch:
        """The launch of the running job (after start() took it, or after a restart)."""
        if self.launch is None:
            raise RuntimeError(f"{self._log_name} has no workspace job")  # type: ignore[attr-defined]
        return self.launch

    def user_env(self, env):
        """``USER``, ``HOME`` and ``SHELL`` of the account the job runs as.

        JupyterHub's local spawner looks the hub user's name up in the system
        accounts; a workspace job runs as the launch's system account (which
        may be named differently), or as the hub's own account in
        single-account mode, where ``HOME`` is the launch's home.
        """
        launch = self.require_launch()
        if launch.system_user:
            account = pwd.getpwnam(launch.system_user)
            env.update(USER=account.pw_name, HOME=account.pw_dir, SHELL=account.pw_shell or "/bin/bash")
        else:
            env["USER"] = self.user.name
            if launch.home:
                env["HOME"] = launch.home
            env["SHELL"] = "/bin/bash"
        return env

    def apply_launch(self, launch: WorkspaceLaunch) -> None:
        """Point the spawner's standard traits at the job (root dir, command, URL)."""
        self.notebook_dir = launch.directory
        if launch.default_url:
            self.default_url = launch.default_url
        self.cmd = list(launch.cmd)

    def over_memory(self, exit_status: int) -> str | None:
        """Why the job's server, ended with ``exit_status``, went over its memory limit, if
        it did (the hub's reason says so); None if it did not, or the resource cannot tell."""
        return None

    def wake(self) -> bool:
        """The job's own server asked the hub to look at its start now
        (``POST /hub/api/jobs/{id}/wake`` with the server's token): return whether
        that started anything. Only a hint: nothing in the request is trusted, and
        the start completes without it. The default does nothing."""
        return False

    async def release_leftover(self, job_id: int, resource_id: str, resource_uid: int | None = None) -> None:
        """Release what a start left behind when the hub lost track of it.

        Called by the hub after a restart for a job that is to stop and whose
        start was under way: ``resource_id`` (and ``resource_uid``) is what the spawner
        reported (``report("queued", resource_id=..., resource_uid=...)``) before the hub
        went away.
        Subclasses kill the process or cancel the batch job. (A job that is to
        run gets ``launch.previous_resource_id`` at its next start instead.)
        The default does nothing.
        """

    async def poll(self) -> int | None:
        """The server's exit status once it ended (None while it runs), the same on every call.

        JupyterHub's own periodic poll and the hub's reconciler both poll; the
        first to see the process gone gets its exit status, and a local
        process's spawner forgets it then (the next poll says 0). Keeping the
        first status lets the job's reason say how the server really ended
        (killed by signal 9, not "exited").
        """
        status = await super().poll()  # type: ignore[misc]
        if status is None:
            return None
        if self.exit_status is None:
            self.exit_status = status
        return self.exit_status

    async def stop(self, now: bool = False) -> None:
        # tell the hub first: a stop it did not ask for (JupyterHub's server API,
        # admin panel, idle culler) ends the job as stopped, not as crashed
        self.report("stopping")
        await super().stop(now=now)  # type: ignore[misc]
        await self._ended_by_stop()

    def run_post_stop_hook(self) -> Any:
        if self.stop_cleaned_listener is not None:
            self.stop_cleaned_listener()
        return super().run_post_stop_hook()  # type: ignore[misc]

    async def _ended_by_stop(self) -> None:
        """Call :attr:`stopped_listener` if the server is known ended (a poll says how it
        ended): never while its process may still run (a stop that gave up on it)."""
        listener = self.stopped_listener
        if listener is not None and await self.poll() is not None:
            listener()
            # one turn of the loop: what the end's commit woke (the event streams that
            # send the job's end) goes before what follows without a wait of its own
            # (JupyterHub's cleanup and its commits; a SLURM job's output tail, a fork)
            await asyncio.sleep(0)

    def report(self, event: str, **info: Any) -> None:
        if self.lifecycle_listener is not None:
            self.lifecycle_listener(self, event, info)

    def get_env(self) -> dict[str, str]:
        env = super().get_env()  # type: ignore[misc]
        launch = self.require_launch()
        env.update(launch.env)
        env["UWS_JOB_ID"] = str(launch.job_id)
        env["UWS_WORKSPACE_ID"] = str(launch.workspace_id)
        env["UWS_WORKSPACE_DIR"] = launch.directory
        return env

    # JupyterHub saves this after start() and restores it after a hub restart
    def get_state(self) -> dict[str, Any]:
        state = super().get_state()  # type: ignore[misc]
        if self.launch is not None:
            state["uws_launch"] = self.launch.to_state()
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)  # type: ignore[misc]
        if state.get("uws_launch"):
            self.launch = WorkspaceLaunch.from_state(state["uws_launch"])

    def clear_state(self) -> None:
        super().clear_state()  # type: ignore[misc]
        self.launch = None
