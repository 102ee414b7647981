"""uws-hub's jobs in UWS's words: a job's phase (and the SQL that selects a phase), its
job document, its line in the job list, its parameters and results.

The handlers pass in what they looked up (the job's results, its time limit,
whether the caller may read its log, the URLs); nothing here touches the
disk or the network.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from sqlalchemy import ColumnElement, false, or_

from ...orm import Job
from ...states import JobStatus, JobTarget
from . import phases
from .documents import ErrorSummary, JobDocument, JobRef, Parameter, Result, xml_safe

_S = JobStatus


def job_phase(job: Job) -> str:
    """The job's UWS phase (see :mod:`.phases`): a stop was asked for once ``outcome`` is set."""
    return phases.phase_of(
        job.status,
        held=job.target == JobTarget.held.value,
        stopped=job.outcome is not None,
        archived=job.archived_at is not None,
    )


def phase_clause(phase: str) -> ColumnElement[bool]:
    """The jobs in ``phase``, in SQL: :func:`job_phase` as a condition (the job list's
    ``PHASE`` filter; ``tests/unit/test_uws_units.py`` checks that the two agree)."""
    live = Job.archived_at.is_(None)
    quiet = live & Job.outcome.is_(None)
    held = (Job.status == _S.pending.value) & (Job.target == JobTarget.held.value)
    clauses: dict[str, ColumnElement[bool]] = {
        phases.ARCHIVED: Job.archived_at.is_not(None),
        phases.ERROR: live & (Job.status == _S.failed.value),
        phases.ABORTED: live
        & (Job.status != _S.failed.value)
        & (Job.outcome.is_not(None) | Job.status.in_([_S.stopping.value, _S.cancelled.value])),
        phases.PENDING: quiet & held,
        phases.QUEUED: quiet & Job.status.in_([_S.pending.value, _S.queued.value]) & ~held,
        phases.EXECUTING: quiet & (Job.status == _S.running.value),
        phases.COMPLETED: quiet & (Job.status == _S.completed.value),
    }
    return clauses.get(phase, false())


def or_phases(wanted: list[str]) -> ColumnElement[bool]:
    """The jobs in any of the ``wanted`` phases (a repeated ``PHASE`` filter: their union)."""
    return or_(*(phase_clause(phase) for phase in wanted))


def parameter_text(value: Any) -> str:
    """A parameter's value as text: booleans as ``true``/``false``, as the form takes them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    return json.dumps(value)


def parameter_list(values: Mapping[str, Any], job_url: str) -> list[Parameter]:
    """The job's parameters; one XML cannot hold is given by reference (``…/parameters/{name}``)."""
    listed = []
    for name, value in values.items():
        text = parameter_text(value)
        if xml_safe(text) and xml_safe(name):
            listed.append(Parameter(name, text))
        else:
            listed.append(
                Parameter(name if xml_safe(name) else quote(name), f"{job_url}/parameters/{quote(name)}", True)
            )
    return listed


def result_list(files: list[dict[str, Any]], results_dir: str, job_url: str) -> list[Result]:
    """The files of the job's results folder (``path`` relative to the workspace): each
    result's id is its path in the folder, its link ``…/results/{id}``."""
    prefix = results_dir.rstrip("/") + "/"
    listed = []
    for f in files:
        name = f["path"][len(prefix) :] if f["path"].startswith(prefix) else f["path"]
        href = f"{job_url}/results/" + "/".join(quote(part) for part in name.split("/"))
        listed.append(Result(name if xml_safe(name) else quote(name), href, f.get("size"), f.get("mime_type")))
    return listed


def job_document(
    job: Job,
    job_url: str,
    *,
    results: list[Result],
    execution_duration: float,
    log_readable: bool,
) -> JobDocument:
    """The job document of ``job`` (at ``job_url``)."""
    phase = job_phase(job)
    error = None
    if phase in (phases.ERROR, phases.ABORTED):
        # pyvo's raise_if_error() shows this message for both
        fallback = "The job failed" if phase == phases.ERROR else "The job was aborted"
        error = ErrorSummary(job.reason or fallback, "fatal", has_detail=True)
    return JobDocument(
        job_id=str(job.id),
        run_id=job.run_id,
        owner_id=job.owner.name,
        phase=phase,
        creation_time=job.created_at,
        start_time=job.running_at,
        end_time=job.finished_at if job.terminal else None,
        execution_duration=round(execution_duration),
        destruction=job.destroy_at,
        parameters=parameter_list(job.parameters or {}, job_url),
        results=results,
        error=error,
        info_links={"log": f"{job_url}/log"} if log_readable else {},
    )


def job_ref(job: Job, job_url: str) -> JobRef:
    return JobRef(
        job_id=str(job.id),
        href=job_url,
        phase=job_phase(job),
        creation_time=job.created_at,
        owner_id=job.owner.name,
        run_id=job.run_id,
    )
