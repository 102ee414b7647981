"""Finding this hub's local job processes again, and ending those no job owns.

The hub records a local job's process (its pid, the job's ``resource_id``)
only once ``Popen`` has returned: a hub killed between the fork and that
record leaves a process that the restarted hub does not know of, and that
would run beside the one a retried start makes. JupyterHub's local spawner,
batchspawner and dask-gateway's local backend keep the pid in their state
too, and look for nothing else after a restart; here every local job process
carries its hub and its job in its environment (``UWS_HUB_ID``,
``UWS_JOB_ID``, which its children inherit), as SLURM jobs carry them in
their names, so the hub finds them in ``/proc`` whatever it recorded.

A process *belongs* to one hub's job; the processes of a job form trees
(a server and its kernels; a batch job's wrapper and its command), whose
*roots* are those whose parent is not a process of the same job. A root is
an orphan when its job is unknown or finished; or, unless a start of the job
is under way in this process (:data:`STARTING`), when the job records no live
process of it, or one that started after the root did (the root is an
earlier start's). A root younger than the job's process is the job's own (a
command its server left running in the background, ``nohup``): it lives as
long as the job. Batch jobs' wrappers are told apart (``UWS_JOB_WRAPPER``, in
the wrapper's own environment only; the resident launcher that forks them
carries it too, with a job id of no digits, which the sweep passes by): a run
file lock keeps them single (:mod:`.localjob`), and their pid is recorded
after the submit returns, so only the first rule applies to them.

Processes of other hubs (other ``UWS_HUB_ID``, or environments the hub may
not read) are never touched. Nothing here imports the hub.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from .mixins import SweepSchedule
from .wrapper import process_start_time, process_stat

#: the environment variable of a batch job wrapper (not of its command)
WRAPPER_MARK = "UWS_JOB_WRAPPER"

#: (hub id, job id) of the local starts under way in this process, from before the
#: process is made until the hub has its pid: their processes are not orphans
STARTING: set[tuple[str, int]] = set()

#: when each hub swept its local job processes
_schedule = SweepSchedule()


@dataclass(frozen=True)
class JobProcess:
    """A live process of one of this hub's local jobs."""

    pid: int
    ppid: int
    pgid: int
    #: clock ticks since boot (with the pid, it names the process for good)
    start: int
    job_id: int
    #: a batch job's wrapper
    wrapper: bool


def _environ(pid: int) -> list[bytes] | None:
    """The environment of ``pid``, or None (gone, or not readable by the hub)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return None


def job_processes(hub_id: str, job_id: int | None = None) -> list[JobProcess]:
    """The live processes of this hub's local jobs (of job ``job_id`` only, if given),
    read from ``/proc`` (blocking: run it in a thread)."""
    hub_mark = f"UWS_HUB_ID={hub_id}".encode()
    job_mark = None if job_id is None else f"UWS_JOB_ID={job_id}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        env = _environ(int(name))
        if env is None or hub_mark not in env or (job_mark is not None and job_mark not in env):
            continue
        # the stat of this hub's processes only (a zombie's is None)
        stat = process_stat(int(name))
        if stat is None:
            continue
        job = next((v[len(b"UWS_JOB_ID=") :] for v in env if v.startswith(b"UWS_JOB_ID=")), b"")
        if not job.isdigit():
            continue
        found.append(
            JobProcess(
                pid=int(name),
                ppid=int(stat[1]),
                pgid=int(stat[2]),
                start=int(stat[19]),
                job_id=int(job),
                wrapper=f"{WRAPPER_MARK}=1".encode() in env,
            )
        )
    return found


def roots(processes: list[JobProcess]) -> list[JobProcess]:
    """The processes whose parent is not a process of the same job."""
    jobs = {p.pid: p.job_id for p in processes}
    return [p for p in processes if jobs.get(p.ppid) != p.job_id]


def find_orphans(
    processes: list[JobProcess], known: dict[int, str | None], starting: Callable[[int], bool]
) -> list[tuple[JobProcess, str]]:
    """The roots of ``processes`` that no job owns (see the module's docstring), each with
    why: ``known`` maps this hub's unfinished jobs to their recorded resource ids;
    ``starting(job id)`` says whether a start of the job is under way in this process."""
    by_pid = {p.pid: p for p in processes}
    orphans = []
    for p in roots(processes):
        if p.job_id not in known:
            orphans.append((p, "its job is finished or unknown"))
            continue
        recorded = known[p.job_id]
        if p.wrapper or recorded == str(p.pid) or starting(p.job_id):
            continue
        job_process = by_pid.get(int(recorded)) if recorded and recorded.isdigit() else None
        if job_process is None or job_process.job_id != p.job_id:
            orphans.append((p, f"its job's process {recorded} is gone" if recorded else "its job records no process"))
        elif p.start < job_process.start:
            orphans.append((p, f"an earlier start's: its job runs process {recorded}, started later"))
    return orphans


def _subtree(root: JobProcess, processes: list[JobProcess]) -> list[JobProcess]:
    """``root`` and the processes of its job below it (kernels are sessions of their own)."""
    children: dict[int, list[JobProcess]] = {}
    for p in processes:
        if p.job_id == root.job_id:
            children.setdefault(p.ppid, []).append(p)
    tree, todo = [], [root]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p.pid, []))
    return tree


def _signal(p: JobProcess, sig: int) -> bool:
    """Send ``sig`` to ``p``'s process group if it leads one, else to ``p``; False if it is gone."""
    if process_start_time(p.pid) != p.start:
        return False
    try:
        if p.pgid == p.pid:
            os.killpg(p.pid, sig)
        else:
            os.kill(p.pid, sig)
    except ProcessLookupError:
        return False
    return True


async def end(
    orphans: list[tuple[JobProcess, str]], processes: list[JobProcess], grace_seconds: float, log: logging.Logger
) -> None:
    """End ``orphans`` (each with why) and their job's processes below them: SIGTERM to
    each one's process group, SIGKILL to what is left after ``grace_seconds``. Logs one
    line per orphan."""
    targets: dict[int, JobProcess] = {}
    for root, why in orphans:
        log.warning("Ending orphaned local process %s of job %s: %s", root.pid, root.job_id, why)
        targets.update((p.pid, p) for p in _subtree(root, processes))
    alive = [p for p in targets.values() if _signal(p, signal.SIGTERM)]
    deadline = time.monotonic() + grace_seconds
    while alive and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        alive = [p for p in alive if process_start_time(p.pid) == p.start]
    for p in alive:
        _signal(p, signal.SIGKILL)


async def end_job(
    hub_id: str, job_id: int, recorded: str | None, grace_seconds: float, log: logging.Logger, why: str
) -> None:
    """End every process of this hub's job ``job_id``, logging ``why`` and whether the hub
    had recorded it (``recorded``: the job's resource id), before a start of it is
    retried, or as it stops: a start the hub lost track of may have left some."""
    processes = await asyncio.to_thread(job_processes, hub_id, job_id)
    if processes:
        whys = {True: f"{why} (the job's recorded process)", False: f"{why} (never recorded as the job's)"}
        await end([(p, whys[str(p.pid) == recorded]) for p in roots(processes)], processes, grace_seconds, log)


async def sweep(
    known: Callable[[], dict[int, str | None]],
    *,
    hub_id: str,
    interval_seconds: float,
    grace_seconds: float,
    log: logging.Logger,
) -> list[int]:
    """Find this hub's local job processes that no job owns and end them; their pids.
    Once per ``interval_seconds`` per hub (0: never); the first call sweeps."""
    if not _schedule.due(hub_id, interval_seconds):
        return []
    processes = await asyncio.to_thread(job_processes, hub_id)
    if not processes:
        return []
    # known() and the starts under way after reading /proc: a process found there was
    # made before, so its job is in the database, and its start is either still under
    # way (in STARTING) or over (its pid recorded)
    orphans = find_orphans(processes, known(), lambda job_id: (hub_id, job_id) in STARTING)
    if orphans:
        await end(orphans, processes, grace_seconds, log)
    return [p.pid for p, _ in orphans]
