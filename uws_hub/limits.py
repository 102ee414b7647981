"""Per-job-type resource limits and defaults, and the launch check that enforces them.

Admins bound what a launch of each job type may request (``limits`` in
``c.UWSHub.job_types``) and say what it gets when it requests nothing
(``default_resources``). :func:`check_resource_limits` is one of
``JobService.launch_checks``: a request over a limit is refused with a 422
naming the limit and the value, before any job exists, instead of a job that
waits and dies later. Users' quotas are other launch checks; they compose.

Units follow SLURM's: memory is ``<number>[K|M|G|T]`` (no unit: megabytes),
a time limit is ``minutes``, ``minutes:seconds``, ``hours:minutes:seconds``,
``days-hours``, ``days-hours:minutes`` or ``days-hours:minutes:seconds``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .errors import Unprocessable

if TYPE_CHECKING:
    from .jobs import LaunchRequest

MEMORY_PATTERN = r"^[0-9]+[KMGT]?$"
TIME_LIMIT_PATTERN = r"^[0-9:-]+$"
PARTITION_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"

_MEMORY_UNITS = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def memory_bytes(value: str) -> int:
    """``"8G"`` -> bytes; a bare number is megabytes, as in SLURM's ``--mem``."""
    value = value.strip().upper()
    if not value:
        raise ValueError("empty memory size")
    unit = value[-1] if value[-1] in _MEMORY_UNITS else "M"
    number = value[:-1] if value[-1] in _MEMORY_UNITS else value
    if not number.isdigit():
        raise ValueError(f"invalid memory size {value!r}: use e.g. 512M or 8G")
    return int(number) * _MEMORY_UNITS[unit]


def time_limit_seconds(value: str) -> int:
    """A SLURM time limit (``--time``) in seconds.

    ``"90"`` is 90 minutes, ``"1:30"`` 1 min 30 s, ``"4:00:00"`` 4 hours,
    ``"1-12"`` 36 hours, ``"1-12:30"`` and ``"1-12:30:00"`` 36.5 hours.
    """
    original = value = value.strip()
    days = 0
    if "-" in value:
        day_part, value = value.split("-", 1)
        parts = value.split(":")
        if not day_part.isdigit() or not 1 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
            raise ValueError(f"invalid time limit {original!r}: use e.g. 30, 1:00:00 or 1-12:00:00")
        days = int(day_part)
        hours, minutes, seconds = (list(map(int, parts)) + [0, 0])[:3]
    else:
        parts = value.split(":")
        if not 1 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
            raise ValueError(f"invalid time limit {original!r}: use e.g. 30, 1:00:00 or 1-12:00:00")
        if len(parts) == 1:
            hours, minutes, seconds = 0, int(parts[0]), 0
        elif len(parts) == 2:
            hours, minutes, seconds = 0, int(parts[0]), int(parts[1])
        else:
            hours, minutes, seconds = map(int, parts)
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


class _ResourceAmounts(BaseModel):
    """CPUs, memory, GPUs and a time limit: what limits bound and defaults fill in."""

    model_config = ConfigDict(extra="forbid")

    #: CPUs per job
    cpus: int | None = Field(None, ge=1)
    #: memory per job, e.g. ``"8G"``
    memory: str | None = Field(None, pattern=MEMORY_PATTERN)
    #: GPUs per job (as a limit, 0: none may be requested)
    gpus: int | None = Field(None, ge=0)
    #: a SLURM time limit, e.g. ``"4:00:00"``
    time_limit: str | None = Field(None, pattern=TIME_LIMIT_PATTERN)

    @field_validator("time_limit")
    @classmethod
    def _valid_time(cls, value: str | None) -> str | None:
        if value is not None:
            time_limit_seconds(value)
        return value


class ResourceLimits(_ResourceAmounts):
    """The most a launch of a job type may request; None: no limit from uws-hub."""

    #: the partitions a launch may ask for
    partitions: list[str] | None = None

    @field_validator("partitions")
    @classmethod
    def _valid_partitions(cls, value: list[str] | None) -> list[str] | None:
        for name in value or []:
            if not re.match(PARTITION_PATTERN, name):
                raise ValueError(f"invalid partition name {name!r}")
        return value

    def public_model(self) -> dict[str, Any]:
        return self.model_dump()


class ResourceDefaults(_ResourceAmounts):
    """What a launch of a job type gets for what it does not request."""

    partition: str | None = Field(None, pattern=PARTITION_PATTERN)

    def apply(self, requested: dict[str, Any]) -> dict[str, Any]:
        """The requested resources, with these defaults where nothing is requested."""
        merged = {k: v for k, v in self.model_dump().items() if v is not None}
        merged.update({k: v for k, v in requested.items() if v is not None})
        return merged


def violations(resources: dict[str, Any], limits: ResourceLimits) -> list[str]:
    """What in ``resources`` is invalid or over ``limits``, one readable phrase each."""
    found: list[str] = []
    if resources.get("time_limit") is not None:
        try:
            time_limit_seconds(resources["time_limit"])
        except ValueError as e:
            return [str(e)]
    cpus = resources.get("cpus")
    if limits.cpus is not None and cpus is not None and cpus > limits.cpus:
        found.append(f"cpus={cpus} is over the limit of {limits.cpus}")
    memory = resources.get("memory")
    if limits.memory is not None and memory is not None and memory_bytes(memory) > memory_bytes(limits.memory):
        found.append(f"memory={memory} is over the limit of {limits.memory}")
    gpus = resources.get("gpus")
    if limits.gpus is not None and gpus is not None and gpus > limits.gpus:
        found.append(f"gpus={gpus} is over the limit of {limits.gpus}")
    time_limit = resources.get("time_limit")
    if limits.time_limit is not None and time_limit is not None:
        if time_limit_seconds(time_limit) > time_limit_seconds(limits.time_limit):
            found.append(f"time_limit={time_limit} is over the limit of {limits.time_limit}")
    partition = resources.get("partition")
    if limits.partitions is not None and partition is not None and partition not in limits.partitions:
        allowed = ", ".join(limits.partitions) or "none"
        found.append(f"partition={partition} is not allowed (allowed: {allowed})")
    return found


def check_resource_limits(request: LaunchRequest) -> None:
    """A launch check: refuse (422) resources over the job type's limits."""
    problems = violations(request.resources, request.job_type.limits)
    if problems:
        raise Unprocessable(
            f"Resources refused for job type {request.job_type.name!r}: " + "; ".join(problems)
        )
