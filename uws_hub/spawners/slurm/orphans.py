"""Cancelling this hub's SLURM jobs that no unfinished job knows (a hub that died between
``sbatch`` and recording the id, or started a job anew after losing track of it)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..mixins import SweepSchedule
from .parsing import SWEEP_FORMAT, find_orphans, framed, job_id_from_name, parse_sweep
from .poller import SlurmPoller

#: when each hub swept its SLURM jobs
_schedule = SweepSchedule()


async def sweep(
    known: Callable[[], dict[int, str | None]],
    *,
    hub_id: str,
    interval_seconds: float,
    prefix: str,
    scancel_cmd: list[str],
    poller: SlurmPoller,
    log: logging.Logger,
) -> list[str]:
    """One ``squeue`` of every job; ``scancel`` of this hub's orphans; returns their ids."""
    if not _schedule.due(hub_id, interval_seconds):
        return []
    fmt, marker = framed(SWEEP_FORMAT)
    result = await poller.command([*poller.squeue_cmd, "-h", "-o", fmt])
    if result.returncode != 0:
        log.warning("Orphan sweep: squeue failed: %s", result.stderr.strip()[:300])
        _schedule.retry(hub_id)
        return []
    try:
        entries = parse_sweep(result.stdout, marker)
    except ValueError as e:  # (a forged record: see parsing.records)
        log.warning("Orphan sweep: %s", e)
        _schedule.retry(hub_id)
        return []
    if not any(job_id_from_name(prefix, e.name) is not None for e in entries):
        return []
    # known() after squeue: a job submitted meanwhile is in the database already
    orphans = find_orphans(entries, prefix, known())
    if orphans:
        log.warning("Cancelling orphaned SLURM jobs of this hub (no job knows them): %s", ", ".join(orphans))
        result = await poller.command([*scancel_cmd, *orphans])
        if result.returncode != 0:
            log.warning("scancel of orphans failed: %s", result.stderr.strip()[:300])
    return orphans
