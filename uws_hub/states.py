"""The state machines of workspaces and jobs: one transition table each.

Every status change goes through :func:`check_job_transition` or
:func:`check_workspace_transition`; an illegal transition raises
:class:`IllegalTransition` instead of being applied. Keeping the tables here,
apart from the services, means a reader can see the whole life cycle at once.
"""

from __future__ import annotations

import enum


class IllegalTransition(ValueError):
    """A status change that the life cycle does not allow."""

    def __init__(self, kind: str, old: str, new: str):
        super().__init__(f"{kind} cannot go from {old!r} to {new!r}")
        self.kind = kind
        self.old = old
        self.new = new


class JobStatus(str, enum.Enum):
    """Where a job is in its life.

    ``pending``: accepted by the hub, not yet handed to a resource.
    ``queued``: the resource has it (a process or a batch job exists) but the
    server does not answer yet. ``running``: the server answers through the
    proxy. ``stopping``: a stop was requested. The last three are terminal.
    """

    pending = "pending"
    queued = "queued"
    running = "running"
    stopping = "stopping"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_JOB_STATUSES


TERMINAL_JOB_STATUSES = frozenset(
    {JobStatus.completed, JobStatus.failed, JobStatus.cancelled}
)
ACTIVE_JOB_STATUSES = frozenset(set(JobStatus) - TERMINAL_JOB_STATUSES)

_S = JobStatus
JOB_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    _S.pending: frozenset({_S.queued, _S.running, _S.stopping, _S.failed, _S.cancelled}),
    _S.queued: frozenset({_S.running, _S.stopping, _S.failed, _S.cancelled}),
    _S.running: frozenset({_S.stopping, _S.completed, _S.failed, _S.cancelled}),
    _S.stopping: frozenset({_S.completed, _S.failed, _S.cancelled}),
    _S.completed: frozenset(),
    _S.failed: frozenset(),
    _S.cancelled: frozenset(),
}


class WorkspaceStatus(str, enum.Enum):
    """Where a workspace is in its life.

    ``initializing``: directory being created and seeded. ``idle``: ready, no
    job. ``active``: a job is not yet finished. ``deleting``: on its way out.
    ``error``: something failed; ``status_reason`` says what.
    """

    initializing = "initializing"
    idle = "idle"
    active = "active"
    deleting = "deleting"
    error = "error"


_W = WorkspaceStatus
WORKSPACE_TRANSITIONS: dict[WorkspaceStatus, frozenset[WorkspaceStatus]] = {
    _W.initializing: frozenset({_W.idle, _W.error, _W.deleting}),
    _W.idle: frozenset({_W.active, _W.deleting, _W.error}),
    _W.active: frozenset({_W.idle, _W.error}),
    _W.error: frozenset({_W.idle, _W.active, _W.deleting}),
    _W.deleting: frozenset({_W.error}),
}


def check_job_transition(old: JobStatus | str, new: JobStatus | str) -> JobStatus:
    """Return ``new`` as a JobStatus if ``old -> new`` is allowed, else raise."""
    old, new = JobStatus(old), JobStatus(new)
    if new not in JOB_TRANSITIONS[old]:
        raise IllegalTransition("job", old.value, new.value)
    return new


def check_workspace_transition(
    old: WorkspaceStatus | str, new: WorkspaceStatus | str
) -> WorkspaceStatus:
    """Return ``new`` as a WorkspaceStatus if ``old -> new`` is allowed, else raise."""
    old, new = WorkspaceStatus(old), WorkspaceStatus(new)
    if new not in WORKSPACE_TRANSITIONS[old]:
        raise IllegalTransition("workspace", old.value, new.value)
    return new
