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
Both are bounded (:data:`MAX_MEMORY`, :data:`MAX_TIME_LIMIT_DAYS`) and short,
so that no request makes the hub parse a number of thousands of digits or
hand SLURM a value it cannot hold: :data:`MemorySize` and :data:`TimeLimit`
check a request's values, and the admin's limits and defaults, alike.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

MEMORY_PATTERN = r"^[0-9]{1,16}[KMGT]?$"
TIME_LIMIT_PATTERN = r"^[0-9:-]{1,20}$"
PARTITION_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"

_MEMORY_UNITS = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
#: the most memory a job may ask for, far beyond any machine
MAX_MEMORY = "1024T"
_MAX_MEMORY_BYTES = 1024 * _MEMORY_UNITS["T"]
#: the longest time limit a job may ask for
MAX_TIME_LIMIT_DAYS = 365


def memory_bytes(value: str) -> int:
    """``"8G"`` -> bytes; a bare number is megabytes, as in SLURM's ``--mem``."""
    value = value.strip().upper()
    if not value:
        raise ValueError("empty memory size")
    unit = value[-1] if value[-1] in _MEMORY_UNITS else "M"
    number = value[:-1] if value[-1] in _MEMORY_UNITS else value
    if not number.isdigit() or len(number) > 16:
        raise ValueError(f"invalid memory size {value[:40]!r}: use e.g. 512M or 8G")
    size = int(number) * _MEMORY_UNITS[unit]
    if size > _MAX_MEMORY_BYTES:
        raise ValueError(f"memory {value} is more than {MAX_MEMORY}, the most a job may ask for")
    return size


def time_limit_seconds(value: str) -> int:
    """A SLURM time limit (``--time``) in seconds, at most :data:`MAX_TIME_LIMIT_DAYS`.

    ``"90"`` is 90 minutes, ``"1:30"`` 1 min 30 s, ``"4:00:00"`` 4 hours,
    ``"1-12"`` 36 hours, ``"1-12:30"`` and ``"1-12:30:00"`` 36.5 hours.
    """
    original = value = value.strip()
    invalid = f"invalid time limit {original[:40]!r}: use e.g. 30, 1:00:00 or 1-12:00:00"
    if len(value) > 20:
        raise ValueError(invalid)
    days = 0
    if "-" in value:
        day_part, value = value.split("-", 1)
        parts = value.split(":")
        if not day_part.isdigit() or not 1 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
            raise ValueError(invalid)
        days = int(day_part)
        hours, minutes, seconds = (list(map(int, parts)) + [0, 0])[:3]
    else:
        parts = value.split(":")
        if not 1 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
            raise ValueError(invalid)
        if len(parts) == 1:
            hours, minutes, seconds = 0, int(parts[0]), 0
        elif len(parts) == 2:
            hours, minutes, seconds = 0, int(parts[0]), int(parts[1])
        else:
            hours, minutes, seconds = map(int, parts)
    total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if total > MAX_TIME_LIMIT_DAYS * 86400:
        raise ValueError(f"time limit {original} is more than {MAX_TIME_LIMIT_DAYS} days, the most a job may ask for")
    return total


def format_time_limit(seconds: int) -> str:
    """Seconds as a SLURM time limit (``--time``): ``"1:00:00"``, ``"2-00:00:00"``."""
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    clock = f"{hours}:{rest // 60:02d}:{rest % 60:02d}"
    return f"{days}-{clock}" if days else clock


def _checked(parse):
    """A pydantic validator that keeps the string once ``parse`` accepts it."""

    def check(value: str) -> str:
        parse(value)
        return value

    return AfterValidator(check)


#: memory per job, e.g. ``"8G"``, at most :data:`MAX_MEMORY`
MemorySize = Annotated[str, Field(pattern=MEMORY_PATTERN), _checked(memory_bytes)]
#: a SLURM time limit, e.g. ``"4:00:00"``, at most :data:`MAX_TIME_LIMIT_DAYS`
TimeLimit = Annotated[str, Field(pattern=TIME_LIMIT_PATTERN), _checked(time_limit_seconds)]
#: a SLURM partition's name
Partition = Annotated[str, Field(pattern=PARTITION_PATTERN)]


class _ResourceAmounts(BaseModel):
    """CPUs, memory, GPUs and a time limit: what limits bound and defaults fill in."""

    model_config = ConfigDict(extra="forbid")

    #: CPUs per job
    cpus: int | None = Field(None, ge=1)
    #: memory per job, e.g. ``"8G"``
    memory: MemorySize | None = None
    #: GPUs per job (as a limit, 0: none may be requested)
    gpus: int | None = Field(None, ge=0)
    #: a SLURM time limit, e.g. ``"4:00:00"``
    time_limit: TimeLimit | None = None


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

    partition: Partition | None = None

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
