"""What a batch runner is: the small part of a resource that runs a batch job's command.

Each spawner class whose resource runs batch jobs makes one
(``batch_runner``, a classmethod): :mod:`.localbatch` (local processes under
the job wrapper), :mod:`.slurm.batch` (``sbatch`` of the command itself,
followed by the shared SLURM poller). Like the spawners, runners import
nothing of the hub.

Batch jobs are not JupyterHub servers (no spawner, no port, no proxy route):
the reconciler's batch steps (:mod:`uws_hub.jobs.batch`) hand a
:class:`BatchLaunch` to the runner of the job's resource and ask it where the
job is (:class:`RunState`). A runner keeps what it needs to find a job again
on the resource itself (the local wrapper's files, SLURM's queue), so a hub
restarted while jobs run asks it and goes on: still running (adopted), ended
(how), or never started (the hub may start it). It calls ``wake`` whenever it
notices a change, so the job's next step comes at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol


@dataclass
class BatchLaunch:
    """Everything a runner needs to run one batch job (it knows no ORM)."""

    job_id: int
    workspace_id: int
    #: the workspace: the command's working directory
    directory: str
    #: the command, rendered from the job type's argv template (never a shell)
    argv: list[str]
    env: dict[str, str]
    #: requested resources (cpus, memory, gpus, time_limit, partition)
    resources: dict[str, Any] = field(default_factory=dict)
    #: the memory it may use, in bytes (``resources["memory"]``), for runners that apply it
    memory_bytes: int | None = None
    #: the shorter of the job type's and the launch's time limits; 0: none
    time_limit_seconds: float = 0
    #: the system account it runs as, or None for the hub's own
    system_user: str | None = None
    #: the uid its resource runs as (see :attr:`WorkspaceLaunch.resource_uid`): the job's
    #: row's, and set by the runner when it submits the job or finds it by name (the hub
    #: then stores it with the resource's id)
    resource_uid: int | None = None
    #: the hub user that account is for, as one person over time
    #: (:func:`uws_hub.jobs.service.account_holder`): its output folder is theirs
    account_holder: str | None = None
    #: the shared workspace's POSIX group, for a job an editor launched (no account is a
    #: member: the hub gives it to the job): its primary group on SLURM, which gives a job
    #: the primary group of the process that submits it
    group: str | None = None
    #: ``UWSHub.share_posix_group_prefix`` (None: no shared workspaces' groups): the job
    #: runs with its account's groups and its own workspace's, less those of other workspaces
    #: (:func:`uws_hub.spawners.localjob.job_groups`)
    share_group_prefix: str | None = None
    #: HOME when it runs as the hub's own account
    home: str | None = None
    #: where its output goes (:meth:`BatchRunner.log_path`)
    log_path: str = ""


Phase = Literal["queued", "running", "ended", "unstarted"]


@dataclass(frozen=True)
class RunState:
    """Where a batch job is on its resource.

    ``unstarted``: the resource has no trace of it (never handed over, or a
    hand-over the hub died in the middle of): the hub may start it. ``ended``
    comes with ``outcome`` (``completed``, ``failed``, ``cancelled``), a
    ``reason`` for everyone who may read the job (never its output), the exit
    status or the signal, and ``stopped`` when it ended because the hub
    stopped it.
    """

    phase: Phase
    reason: str | None = None
    outcome: str | None = None
    exit_code: int | None = None
    exit_signal: int | None = None
    stopped: bool = False
    started_at: datetime | None = None
    ended_at: datetime | None = None
    node: str | None = None
    #: the job's id on the resource, when the runner found it by other means than the id
    #: the hub stored (a hand-over the hub died in after the resource took the job)
    resource_id: str | None = None


class BatchRunner(Protocol):
    """What the batch steps need of a resource."""

    def log_path(self, launch: BatchLaunch) -> str:
        """Where the job's output goes (a file the hub reads for its owner)."""

    def log_owner(self, launch: BatchLaunch) -> int:
        """The uid that owns the job's log file (the hub refuses to read it otherwise)."""

    def granted_time_limit(self, seconds: float) -> float:
        """The time limit, in seconds, that the resource really applies to a job that asks
        for ``seconds`` (> 0): what the hub tells the job's owner it got (UWS's
        ``executionDuration``) and what its reasons name."""

    async def submit(
        self, launch: BatchLaunch, wake: Callable[[], None], *, prepare: Callable[[], None] = lambda: None
    ) -> str:
        """Hand the job to the resource; its id there (and, where the resource has one, the
        uid it runs as in ``launch.resource_uid``). Raises if the resource refuses it.
        ``prepare`` (blocking, e.g. making the job's results folder) is called first, in a
        thread, with the runner's own preparations."""

    async def state(self, launch: BatchLaunch, resource_id: str | None, wake: Callable[[], None]) -> RunState:
        """Where the job is (watching it again after a hub restart). A job found by other
        means than ``resource_id`` (:attr:`RunState.resource_id`) sets ``launch.resource_uid``."""

    async def cancel(self, launch: BatchLaunch, resource_id: str | None) -> None:
        """Stop the job; its end is then reported by :meth:`state`."""

    def forget(self, launch: BatchLaunch) -> None:
        """Remove what the resource keeps of a finished job (its log among it)."""

    async def close(self) -> None:
        """Stop watching (the hub shuts down; the jobs go on)."""
