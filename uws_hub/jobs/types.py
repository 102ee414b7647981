"""Job types: what admins let users launch (``c.UWSHub.job_types``).

Each entry of the config dict is validated into a :class:`JobType` when the
hub starts, so a typo in ``jupyterhub_config.py`` stops the hub with a clear
message instead of failing a user's launch later.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import Unprocessable
from .limits import ResourceDefaults, ResourceLimits, violations
from .parameters import ParameterSpec, check_template


class JobType(BaseModel):
    """One kind of job: its command and where it may run.

    An interactive job type runs a server (JupyterHub's single-user protocol);
    a batch one (``interactive: false``) runs its command to an exit status,
    with declared ``parameters`` filled into its argv template
    (:mod:`uws_hub.jobs.parameters`).
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    display_name: str = ""
    description: str = ""
    #: the command that starts the job's server (it must speak JupyterHub's
    #: single-user protocol: read JUPYTERHUB_* from its environment); for a
    #: batch job type, its argv template (items may be optional groups: lists)
    cmd: list[str | list[str]] = Field(
        default_factory=lambda: list[str | list[str]](["jupyterhub-singleuser"]), min_length=1
    )
    #: extra arguments when the job would run as root (single-account mode
    #: with the hub running as root), e.g. JupyterLab's ``--allow-root``
    args_as_root: list[str] = Field(default_factory=list)
    #: where the server opens, e.g. ``/lab``
    default_url: str = ""
    env: dict[str, str] = Field(default_factory=dict)
    #: which resources may run it, the first being the default
    resources: list[str] = Field(default_factory=lambda: ["local"], min_length=1)
    #: an interactive job is a server that users open through the proxy;
    #: a workspace runs at most one at a time. A batch job runs its command
    #: until it exits; a workspace runs any number of them.
    interactive: bool = True
    #: what a launch of a batch job type passes, by name
    parameters: dict[str, ParameterSpec] = Field(default_factory=dict)
    #: seconds a job may run before the hub stops it (``failed``, with the reason); 0: no limit
    time_limit_seconds: float = Field(0, ge=0)
    #: the most a launch may request (cpus, memory, gpus, time_limit, partitions);
    #: a launch over them is refused with a 422 (see :mod:`uws_hub.jobs.limits`)
    limits: ResourceLimits = Field(default_factory=ResourceLimits)
    #: what a launch gets for what it does not request (cpus, memory, gpus,
    #: time_limit, partition)
    default_resources: ResourceDefaults = Field(default_factory=ResourceDefaults)

    @model_validator(mode="after")
    def _defaults_within_limits(self) -> JobType:
        problems = violations(self.default_resources.apply({}), self.limits)
        if problems:
            raise ValueError("default_resources are over its limits: " + "; ".join(problems))
        return self

    @model_validator(mode="after")
    def _command_fits_kind(self) -> JobType:
        if self.interactive:
            if self.parameters:
                raise ValueError("parameters are for batch job types (interactive: false)")
            if any(isinstance(item, list) for item in self.cmd):
                raise ValueError("argv groups (lists in cmd) are for batch job types (interactive: false)")
            return self
        if "cmd" not in self.model_fields_set:
            raise ValueError("a batch job type (interactive: false) needs its command: cmd")
        for name in self.parameters:
            if not PLACEHOLDER_NAME.fullmatch(name):
                raise ValueError(f"parameter name {name!r}: use letters, digits and '_', not starting with a digit")
        check_template(self.cmd, self.env, list(self.parameters))
        return self

    @property
    def server_cmd(self) -> list[str]:
        """The command of an interactive job type's server (no groups: checked at startup)."""
        return [item for item in self.cmd if isinstance(item, str)]

    def resources_for(self, requested: dict[str, Any]) -> dict[str, Any]:
        """A launch's resources: what it requests, and the defaults for the rest."""
        return self.default_resources.apply(requested)

    def public_model(self) -> dict[str, Any]:
        """What clients see (``GET /hub/api/job-types``): no commands or env."""
        return {
            "name": self.name,
            "display_name": self.display_name or self.name,
            "description": self.description,
            "resources": list(self.resources),
            "default_resource": self.resources[0],
            "interactive": self.interactive,
            "time_limit_seconds": self.time_limit_seconds,
            "limits": self.limits.public_model(),
            "default_resources": self.default_resources.model_dump(),
            "parameters": [spec.public_model(name) for name, spec in self.parameters.items()],
        }


#: what a parameter may be called (it becomes a placeholder and ``UWS_PARAM_<NAME>``)
PLACEHOLDER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")

DEFAULT_JOB_TYPES: dict[str, dict[str, Any]] = {
    "jupyterlab": {
        "display_name": "JupyterLab",
        "description": "JupyterLab with the workspace as its root folder.",
        "cmd": ["jupyterhub-singleuser"],
        "args_as_root": ["--allow-root"],
        "default_url": "/lab",
    },
}


def parse_job_types(config: dict[str, dict[str, Any]], resources: list[str]) -> dict[str, JobType]:
    """Validate ``c.UWSHub.job_types`` against the configured ``resources``;
    raises ValueError naming the bad entry."""
    if not config:
        raise ValueError("c.UWSHub.job_types is empty: define at least one job type")
    parsed = {}
    for name, spec in config.items():
        if not isinstance(spec, dict):
            raise ValueError(f"c.UWSHub.job_types[{name!r}] must be a dict, not {spec!r}")
        try:
            job_type = JobType(name=name, **spec)
        except (ValidationError, TypeError) as e:
            raise ValueError(f"Invalid job type {name!r} in c.UWSHub.job_types: {e}") from e
        unknown = set(job_type.resources) - set(resources)
        if unknown:
            raise ValueError(
                f"Job type {name!r} names resources {sorted(unknown)} that have no spawner;"
                f" c.UWSHub.resource_spawners has {sorted(resources)}"
            )
        parsed[name] = job_type
    return parsed


def pick(job_types: dict[str, JobType], name: str, resource: str | None) -> tuple[JobType, str]:
    """The job type and resource a launch asks for, or a 422 saying what exists."""
    job_type = job_types.get(name)
    if job_type is None:
        raise Unprocessable(f"Unknown job type {name!r}; available: {sorted(job_types)}")
    resource = resource or job_type.resources[0]
    if resource not in job_type.resources:
        raise Unprocessable(f"Job type {name!r} cannot run on {resource!r}; it runs on {job_type.resources}")
    return job_type, resource
