"""Quota limits, periods and units: the values quotas work with (no database work)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timedelta
from typing import Any

from jupyterhub import orm as hub_orm

from ..orm import Job, QuotaOverride

PERIODS = ("day", "week", "month", "year", "all")
#: what the usage list sorts by
SORT_KEYS = ("name", "disk_bytes", "core_hours", "active_jobs")


@dataclass
class Reservation:
    """Disk space held for one write in progress (an upload, a new workspace's seed files, a copy)."""

    owner: hub_orm.User
    #: the size of the file the write replaces, free once it commits
    replaced_bytes: int = 0
    #: bytes it holds in ``uws_disk_reservations`` (0 once committed or released)
    held_bytes: int = 0


def fmt_bytes(n: float, exact: bool = False) -> str:
    """A size in binary units: ``1.5 GiB``; ``exact`` keeps it a whole number of
    the largest unit that divides it (``1536 MiB``), for a size someone asked for
    (a job's memory), where a rounded "1.5 GiB" would not be what they typed."""
    units = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"]
    i = 0
    while abs(n) >= 1024 and i < len(units) - 1 and not (exact and n % 1024):
        n /= 1024
        i += 1
    if i == 0:
        return f"{int(n)} byte{'s' if int(n) != 1 else ''}"
    return f"{int(n)} {units[i]}" if exact else f"{n:.1f} {units[i]}"


def fmt_hours(seconds: float) -> str:
    """Core-seconds as core-hours, to the thousandth: 3600 -> "1", 3.6 -> "0.001"."""
    return f"{seconds / 3600:.3f}".rstrip("0").rstrip(".")


def limit_words(model: dict[str, Any]) -> dict[str, str]:
    """A model of limits (:meth:`Limits.to_model`) in words for a page: sizes in
    binary units, ``None`` as "no limit"."""
    return {
        key: "no limit" if value is None else fmt_bytes(value) if key.endswith("_bytes") else f"{value:.12g}"
        for key, value in model.items()
    }


def job_cpus(job_or_resources: Job | dict[str, Any]) -> int:
    resources = job_or_resources.resources if isinstance(job_or_resources, Job) else job_or_resources
    return int((resources or {}).get("cpus") or 1)


def period_start(now: datetime, period: str) -> datetime:
    """The start (naive UTC) of the quota period that contains ``now``."""
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    if period == "year":
        return day.replace(month=1, day=1)
    return datetime(1970, 1, 1)


@dataclass(frozen=True)
class Limits:
    """Quota limits; None means no limit."""

    disk_bytes: int | None = None
    core_seconds: int | None = None
    concurrent_jobs: int | None = None
    max_cpus: int | None = None
    max_memory_bytes: int | None = None
    max_gpus: int | None = None

    def merged(self, other: Limits) -> Limits:
        """These limits with ``other``'s set fields on top (every launch asks: read field by
        field, as ``dataclasses.asdict``'s deep copy cost the request more than the rest of
        its quota check)."""
        changes = {name: value for name in LIMIT_FIELDS if (value := getattr(other, name)) is not None}
        return replace(self, **changes) if changes else self

    @classmethod
    def of(cls, override: QuotaOverride | None) -> Limits:
        if override is None:
            return cls()
        return cls(**{f.name: getattr(override, f.name) for f in fields(cls)})

    @staticmethod
    def most_generous(values: list[int | None]) -> int | None:
        present = [v for v in values if v is not None]
        return max(present) if present else None

    def to_model(self) -> dict[str, Any]:
        d = asdict(self)
        seconds = d.pop("core_seconds")
        d["core_hours"] = None if seconds is None else seconds / 3600
        return d

    @classmethod
    def from_model(cls, model: dict[str, Any]) -> Limits:
        d = dict(model)
        hours = d.pop("core_hours", None)
        d["core_seconds"] = None if hours is None else round(hours * 3600)
        return cls(**d)


LIMIT_FIELDS = tuple(f.name for f in fields(Limits))


@dataclass
class UserUsage:
    disk_bytes: int
    core_seconds: int
    active_jobs: int
    period_start: datetime
