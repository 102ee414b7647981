"""The state machines of jobs, workspaces, shares and copies: one transition table each.

Every status change goes through :func:`check_job_transition`,
:func:`check_workspace_transition`, :func:`check_share_transition` or
:func:`check_copy_transition`; an illegal transition raises
:class:`IllegalTransition` instead of being applied. Keeping the tables here,
apart from the services, means a reader can see every life cycle at once.
Beside each status, its target: where the reconciler (:mod:`uws_hub.reconciler`)
takes the object.
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


TERMINAL_JOB_STATUSES = frozenset({JobStatus.completed, JobStatus.failed, JobStatus.cancelled})
ACTIVE_JOB_STATUSES = frozenset(set(JobStatus) - TERMINAL_JOB_STATUSES)


class JobTarget(str, enum.Enum):
    """Where a job should be: its server ``running``, or ``stopped`` (then it ends).

    ``held``: a batch job created but not yet asked to run (UWS's PENDING): it
    stays ``pending`` and out of the queue until its target becomes ``running``.
    """

    running = "running"
    stopped = "stopped"
    held = "held"


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


class WorkspaceTarget(str, enum.Enum):
    """Where a workspace should be: ``ready`` for work, or ``deleted`` (status ``deleting``
    until its server and directory are gone, then its row)."""

    ready = "ready"
    deleted = "deleted"


_W = WorkspaceStatus
WORKSPACE_TRANSITIONS: dict[WorkspaceStatus, frozenset[WorkspaceStatus]] = {
    _W.initializing: frozenset({_W.idle, _W.error, _W.deleting}),
    _W.idle: frozenset({_W.active, _W.deleting, _W.error}),
    _W.active: frozenset({_W.idle, _W.error}),
    _W.error: frozenset({_W.idle, _W.active, _W.deleting}),
    _W.deleting: frozenset({_W.error}),
}


class ShareKind(str, enum.Enum):
    """``collaborate``: grantees work in the live workspace; ``copy``: the recipient gets a copy."""

    collaborate = "collaborate"
    copy = "copy"


class ShareLevel(str, enum.Enum):
    """What a collaborate share allows: ``viewer`` reads, ``editor`` also writes and runs jobs."""

    viewer = "viewer"
    editor = "editor"


class ShareStatus(str, enum.Enum):
    """A share's answer: a collaborate share is ``accepted`` from the start; a copy is
    ``pending`` until its recipient accepts or declines it."""

    pending = "pending"
    accepted = "accepted"
    declined = "declined"


SHARE_TRANSITIONS: dict[ShareStatus, frozenset[ShareStatus]] = {
    ShareStatus.pending: frozenset({ShareStatus.accepted, ShareStatus.declined}),
    ShareStatus.accepted: frozenset(),
    ShareStatus.declined: frozenset(),
}


class CopyState(str, enum.Enum):
    """How far an accepted copy is. Its target is always ``done``: the reconciler
    takes every copy in ``queued``, ``copying`` or ``placing`` there, or to ``failed``.

    ``queued``: waiting for a copy to start (again). ``copying``: the tree is being
    copied to a temporary name. ``placing``: copied, being renamed into place and
    given its workspace. ``done``: the recipient's workspace exists. ``failed``:
    given up (``copy_error`` says why).
    """

    queued = "queued"
    copying = "copying"
    placing = "placing"
    done = "done"
    failed = "failed"


UNFINISHED_COPY_STATES = frozenset({CopyState.queued, CopyState.copying, CopyState.placing})

_C = CopyState
COPY_TRANSITIONS: dict[CopyState, frozenset[CopyState]] = {
    # a copy interrupted by a hub restart goes back to queued
    _C.queued: frozenset({_C.copying, _C.failed}),
    _C.copying: frozenset({_C.placing, _C.queued, _C.failed}),
    _C.placing: frozenset({_C.done, _C.queued, _C.failed}),
    _C.done: frozenset(),
    _C.failed: frozenset(),
}


def check_job_transition(old: JobStatus | str, new: JobStatus | str) -> JobStatus:
    """Return ``new`` as a JobStatus if ``old -> new`` is allowed, else raise."""
    old, new = JobStatus(old), JobStatus(new)
    if new not in JOB_TRANSITIONS[old]:
        raise IllegalTransition("job", old.value, new.value)
    return new


def check_workspace_transition(old: WorkspaceStatus | str, new: WorkspaceStatus | str) -> WorkspaceStatus:
    """Return ``new`` as a WorkspaceStatus if ``old -> new`` is allowed, else raise."""
    old, new = WorkspaceStatus(old), WorkspaceStatus(new)
    if new not in WORKSPACE_TRANSITIONS[old]:
        raise IllegalTransition("workspace", old.value, new.value)
    return new


def check_share_transition(old: ShareStatus | str, new: ShareStatus | str) -> ShareStatus:
    """Return ``new`` as a ShareStatus if ``old -> new`` is allowed, else raise."""
    old, new = ShareStatus(old), ShareStatus(new)
    if new not in SHARE_TRANSITIONS[old]:
        raise IllegalTransition("share", old.value, new.value)
    return new


def check_copy_transition(old: CopyState | str | None, new: CopyState | str) -> CopyState:
    """Return ``new`` as a CopyState if ``old -> new`` is allowed (None: accepting), else raise."""
    new = CopyState(new)
    if old is None:
        if new != CopyState.queued:
            raise IllegalTransition("copy", "none", new.value)
        return new
    old = CopyState(old)
    if new not in COPY_TRANSITIONS[old]:
        raise IllegalTransition("copy", old.value, new.value)
    return new
