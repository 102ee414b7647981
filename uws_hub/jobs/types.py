"""Job types: what admins let users launch (``c.UWSHub.job_types``).

Each entry of the config dict is validated into a :class:`JobType` when the
hub starts, so a typo in ``jupyterhub_config.py`` stops the hub with a clear
message instead of failing a user's launch later.
"""

from __future__ import annotations

import os
import re
import string
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import Unprocessable
from ..serverconfig import APP_PATH
from .limits import ResourceDefaults, ResourceLimits, violations
from .parameters import ParameterSpec, check_template

#: what a web app's command may name: where to listen (``{port}``, or a Unix
#: socket the app's account alone can reach, ``{unix_socket}``), the URL path
#: it is served at (``{base_url}``, ending in ``/``) and the workspace's folder
APP_PLACEHOLDERS = frozenset({"port", "unix_socket", "base_url", "workspace"})
#: ...and what its ``env`` and ``request_headers`` may name besides: a secret
#: the job's server makes when it starts. Not on the command line: any account
#: on the machine can read a process's command line, not its environment.
APP_SECRET_PLACEHOLDERS = APP_PLACEHOLDERS | {"token"}


def placeholders(template: str) -> set[str]:
    """The ``{name}`` fields of ``template``; ValueError for anything but plain names."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ValueError(f"{template!r}: {e}") from None
    names = set()
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if not field.isidentifier() or spec or conversion:
            raise ValueError(
                f"{template!r}: write placeholders as {{name}}, not {{{field}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}}"
            )
        names.add(field)
    return names


class WebApp(BaseModel):
    """A web application that a job's Jupyter server runs and serves (with
    jupyter-server-proxy) behind JupyterHub's login: see docs/admin-guide.md#web-apps."""

    model_config = ConfigDict(extra="forbid")

    #: the app's command; it must listen on ``{port}`` or ``{unix_socket}``
    command: list[str] = Field(min_length=1)
    #: extra environment of the app's process
    env: dict[str, str] = Field(default_factory=dict)
    #: headers the proxy adds to every request it passes on (e.g. the ``{token}``
    #: an app that listens on a port checks, so that only the proxy reaches it)
    request_headers: dict[str, str] = Field(default_factory=dict)
    #: how long the app may take to answer after it starts
    timeout_seconds: float = Field(60, gt=0)
    #: whether viewers of a shared workspace may use the app (its every request
    #: and websocket); if not, they are refused as on everything but JupyterLab's reads
    viewers: bool = False
    #: files copied into the workspace, by name, from these absolute paths when
    #: the workspace has no file of that name (an example the app shows)
    seed: dict[str, str] = Field(default_factory=dict)

    @field_validator("command")
    @classmethod
    def _command_placeholders(cls, command: list[str]) -> list[str]:
        used: set[str] = set()
        for part in command:
            used |= placeholders(part)
        if used - APP_PLACEHOLDERS:
            raise ValueError(
                f"the command names {sorted(used - APP_PLACEHOLDERS)}; it may name {sorted(APP_PLACEHOLDERS)}"
                + (" ({token} only in env and request_headers)" if "token" in used else "")
            )
        if not used & {"port", "unix_socket"}:
            raise ValueError("the command must say where the app listens: {port} or {unix_socket}")
        return command

    @field_validator("env", "request_headers")
    @classmethod
    def _secret_placeholders(cls, values: dict[str, str]) -> dict[str, str]:
        for value in values.values():
            unknown = placeholders(value) - APP_SECRET_PLACEHOLDERS
            if unknown:
                raise ValueError(f"{value!r} names {sorted(unknown)}; it may name {sorted(APP_SECRET_PLACEHOLDERS)}")
        return values

    @field_validator("seed")
    @classmethod
    def _seed_files(cls, seed: dict[str, str]) -> dict[str, str]:
        for name, source in seed.items():
            if not name or "/" in name or name in (".", "..") or "\x00" in name:
                raise ValueError(f"seed file names are file names in the workspace's top folder, not {name!r}")
            if not os.path.isabs(source) or not os.path.isfile(source):
                raise ValueError(f"the seed of {name!r} must be an absolute path of a file, not {source!r}")
        return seed


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
    #: a Font Awesome icon's name (``chart-line``), shown in the launch form
    icon: str = Field("", pattern=r"^[a-z0-9-]{0,40}$")
    #: the command that starts the job's server (it must speak JupyterHub's
    #: single-user protocol: read JUPYTERHUB_* from its environment; the default,
    #: uws-singleuser, is jupyterhub-singleuser that starts faster); for a
    #: batch job type, its argv template (items may be optional groups: lists)
    cmd: list[str | list[str]] = Field(default_factory=lambda: list[str | list[str]](["uws-singleuser"]), min_length=1)
    #: extra arguments when the job would run as root (single-account mode
    #: with the hub running as root), e.g. JupyterLab's ``--allow-root``
    args_as_root: list[str] = Field(default_factory=list)
    #: where the server opens, e.g. ``/lab``; a web app's job opens the app
    default_url: str = ""
    #: a web app the job's server runs and serves, behind JupyterHub's login
    app: WebApp | None = None
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
    def _app_opens_the_app(self) -> JobType:
        if self.app is not None:
            if not self.interactive:
                raise ValueError("a job type with an app is interactive: users open the app")
            self.default_url = self.default_url or f"/{APP_PATH}/"
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
            "icon": self.icon,
            "app": None if self.app is None else {"viewers": self.app.viewers},
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
        "cmd": ["uws-singleuser"],
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
