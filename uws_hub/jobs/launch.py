"""Launch checks: what they look at (:class:`LaunchRequest`), and the job types' own
(:func:`check_resource_limits`). Quotas add theirs; the job service runs the checks
it is given, at the request and again right before the start."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import Unprocessable
from ..orm import Job, Workspace
from .limits import violations
from .types import JobType


@dataclass(frozen=True)
class LaunchRequest:
    """What a launch check looks at: the workspace, job type, resource and requests.

    ``job`` is None when the launch is asked for, and the job when the
    reconciler is about to start its server.
    """

    workspace: Workspace
    job_type: JobType
    resource: str
    resources: dict[str, Any]
    job: Job | None

    @property
    def owner(self):
        return self.workspace.owner


def check_resource_limits(request: LaunchRequest) -> None:
    """A launch check: refuse (422) resources over the job type's limits."""
    problems = violations(request.resources, request.job_type.limits)
    if problems:
        raise Unprocessable(f"Resources refused for job type {request.job_type.name!r}: " + "; ".join(problems))
