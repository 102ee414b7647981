"""UWS 1.1's execution phases (STD §2.1.3) from uws-hub's job statuses.

=====================================================  ==========
uws-hub                                                UWS
=====================================================  ==========
created through UWS, not yet asked to run (held)       PENDING
``pending``, ``queued`` (waiting for a slot, a node)   QUEUED
``running``                                            EXECUTING
``completed`` (exit status 0)                          COMPLETED
``failed`` (exit status, signal, limit, refusal)       ERROR
stopped on request or by the hub, ``cancelled``        ABORTED
destroyed, its record kept                             ARCHIVED
=====================================================  ==========

A job whose stop was asked for is ABORTED from that moment on, whatever its
status says while it stops and however it then ends (a local job that was
running ends ``completed`` after SIGTERM): pyvo's ``abort()`` reads the
phase right away and must not see it go back to EXECUTING or on to
COMPLETED. Only a job that failed while stopping is ERROR. HELD, SUSPENDED
and UNKNOWN are never reported.
"""

from __future__ import annotations

from ...states import JobStatus

PENDING = "PENDING"
QUEUED = "QUEUED"
EXECUTING = "EXECUTING"
COMPLETED = "COMPLETED"
ERROR = "ERROR"
ABORTED = "ABORTED"
UNKNOWN = "UNKNOWN"
HELD = "HELD"
SUSPENDED = "SUSPENDED"
ARCHIVED = "ARCHIVED"

#: every phase the schema knows (``ExecutionPhase``)
PHASES = (PENDING, QUEUED, EXECUTING, COMPLETED, ERROR, ABORTED, UNKNOWN, HELD, SUSPENDED, ARCHIVED)
#: where a job may still change by itself: a blocking GET waits only in these (STD §2.2.1.2)
ACTIVE_PHASES = frozenset({PENDING, QUEUED, EXECUTING})

_BY_STATUS = {
    JobStatus.pending: QUEUED,
    JobStatus.queued: QUEUED,
    JobStatus.running: EXECUTING,
    JobStatus.stopping: ABORTED,
    JobStatus.completed: COMPLETED,
    JobStatus.failed: ERROR,
    JobStatus.cancelled: ABORTED,
}


def phase_of(status: str, *, held: bool = False, stopped: bool = False, archived: bool = False) -> str:
    """The UWS phase of a job in ``status``.

    ``held``: created through UWS and not yet asked to run; ``stopped``: a
    stop was asked for (its target is ``stopped``); ``archived``: destroyed,
    its record kept.
    """
    if archived:
        return ARCHIVED
    job_status = JobStatus(status)
    if job_status is JobStatus.failed:
        return ERROR
    if stopped:
        return ABORTED
    if held and job_status is JobStatus.pending:
        return PENDING
    return _BY_STATUS[job_status]
