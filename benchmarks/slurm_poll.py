#!/usr/bin/env python3
"""SLURM status polling: uws-hub's shared poller against batchspawner's
per-job ``squeue``, how long a job takes from ``sbatch`` to RUNNING, and a
server's launch through a real uws-hub against the same server submitted by
hand, on the local SLURM cluster (``scripts/slurm-up.sh up``; as root).

Part 1, one poll cycle. Submits N real jobs held in the queue (``sbatch
--hold``, all named ``uws-bench-poll-<pid>-<time>``, output to /dev/null) and, for
N = 1, 10, 50, 200 (``--counts``), times one poll cycle over the first N of
them, both ways, in the same run on the same jobs:

- uws-hub: the real :class:`SlurmPoller` (``uws_hub.spawners.slurm.poller``)
  tracking the N jobs; one call of ``SlurmPoller.cycle()``, the body of
  each iteration of its loop (one ``squeue -h -t all -j id1,...,idN``);
- batchspawner 1.3: N real ``batchspawner.SlurmSpawner`` instances (one per
  server, as JupyterHub has), each with its job id, and ``poll()`` on every
  one of them at once (``asyncio.gather``, as JupyterHub checks every
  server at its start). Each poll is ``query_job_status()``: ``squeue -h -j
  <id> -o '%T %B'`` through ``/bin/sh -c``. ``exec_prefix`` is "" (a hub as
  root); batchspawner's default, ``sudo -E -u {username}``, adds a sudo per call.

Subprocesses are counted by wrapping ``asyncio.create_subprocess_exec`` and
``asyncio.create_subprocess_shell`` (what the two use), not derived from N.
CPU time is that of the commands (``getrusage(RUSAGE_CHILDREN)``: squeue,
and sh for batchspawner), not slurmctld's. Both sides must see every job
pending, or the script stops. After one warm-up round of each side,
``--rounds`` rounds alternate which side goes first; medians are reported.

Part 2, submit → running. ``--latency-runs`` times: ``sbatch`` a ``sleep
30`` job (1 CPU, 16 MB) whose script first writes the time to a file, then
watch the same job, all at once, from the moment ``sbatch`` was started:

- ``squeue -h -j <id> -o %T`` every ``--probe-interval`` s until it says
  RUNNING (SLURM's side, as close as polling gets);
- the time the job's batch script started (from that file; same clock);
- uws-hub: a ``SlurmPoller`` with its default intervals, the way the
  spawner waits after ``sbatch``: ``track()``, then ``wait()`` for a
  running state (it polls every ``fast_poll_interval_seconds`` while a start
  waits);
- batchspawner: ``SlurmSpawner.query_job_status()`` right away and then
  every ``startup_poll_interval`` until RUNNING, as its ``start()`` loops.

Then the job is cancelled. Neither side's server start is measured (no hub,
no server: only SLURM and the two status-polling paths; part 3 has both).

Part 3, launch → running through uws-hub (``--skip-hub`` skips it). One real
uws-hub, started as the tests start theirs (``tests.hubutil.Hub``: free
ports, SQLite, node configurable-http-proxy), configured as
``tests/test_slurm.py``'s SLURM hub: ``system_users = True``, resources
``{"local": "uws-local", "slurm": "uws-slurm"}``, and a ``minimal`` job type
running ``tests/minimal_server.py`` (1 CPU, 128M, 5 minutes), the SLURM
poller with its default intervals. Its user is a real system account
(``--hub-user``, default uwsalice, one of the tests' accounts), created with
``useradd`` if missing, as ``tests/conftest.py`` does. After one warm-up of
each side, ``--hub-runs`` times, alternating which side goes first:

- uws-hub: create a workspace, ``POST /hub/api/workspaces/{id}/jobs
  {"job_type": "minimal", "resource": "slurm"}``, then ``GET
  /hub/api/jobs/{id}`` every ``--hub-poll-interval`` s until it says
  ``running`` (uws-hub sets it once the server answers), then ``GET
  <the job's url>api/status`` through the proxy until the minimal server
  answers 200 (it answers any GET with its job id, checked); then ``POST
  /hub/api/jobs/{id}/stop`` and wait until the job is ``cancelled`` (its
  event, or ``GET`` every 10 ms: ``--stop-wait``, below).
  Also kept: the job's own ``created_at``, ``queued_at`` (``sbatch``
  returned) and ``running_at`` (the hub's clock).
- baseline, by hand: the same server (same python, same script) submitted
  with ``sbatch`` as the same account, with the same resources; its
  environment is what ``sbatch`` exports (the hub's ``submit_environment``:
  PATH, HOME, USER...) and ``JUPYTERHUB_SERVICE_URL`` on a free port of
  127.0.0.1, all tests/minimal_server.py needs; polled directly over HTTP,
  at the same interval, until it answers 200. Then ``scancel`` and ``squeue``
  until SLURM says CANCELLED.

The stop's phases are reported too: the hub's from its own timestamps
(``stopping_at``, ``finished_at``) and its log (``scancel`` run, the poller
seeing the job end); by hand, ``scancel`` returned and the first COMPLETING.
How each side learns of the end: by hand, ``squeue`` for that one job every
10 ms (plus the ~6 ms ``squeue`` takes) right after ``scancel`` returns; the
hub learns it from SLURM the same way (its own follow-up ``squeue`` of the
job every 10 ms after its ``scancel``). The hub's client then learns it from
the hub (``--stop-wait``): by default from the job's ``cancelled`` event on
``GET /hub/api/events`` (subscribed before the stop, as the job's page and
the HuBMAP portal are); or (``poll``) with ``GET /hub/api/jobs/{id}`` every
10 ms, as this script did before; or both at once. The event is the fair
comparison: polling the hub, which itself polls SLURM at the baseline's pace,
puts two polling delays in series where the baseline has one. Measured both
ways on main f3f2a82 (2 cores, other benchmarks between the runs; 6 runs of 2
stops each way, p50 of the runs' ratios, and their range): the event 1.32×
(1.24-1.48), the GETs 1.59× (1.30-2.18); both at once (the GETs load the
hub the event comes from) 1.62× and 1.73×. ``--hub-log-level DEBUG`` with
``--hub-log PATH`` keeps the hub's log, which follows each stop step by step
(``SLURM follow-up of ending jobs`` lines: each ``squeue`` of a stop).

The hub's job log directory (where its jobs' SLURM output goes) is a folder
of its own outside the hub's 0700 working directory: the jobs' account must
reach it.

The hub is stopped at the end (its jobs were stopped through its API; any
left over are cancelled by their name prefix, ``<run's job name>-hub-``).

Every job the script submits is cancelled at the end, also on errors and
Ctrl-C (by id, and by its run's job name or name prefix). Prints markdown
tables; writes JSON to benchmarks/results/ unless ``--json ''``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pwd
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    ensure_venv,
    fmt,
    free_port,
    log,
    machine_line,
    markdown_table,
    ratio,
    summary,
    write_json,
)

ensure_venv()

import requests  # noqa: E402
from batchspawner import JobStatus, SlurmSpawner  # noqa: E402
from launch import JobEvents  # noqa: E402

from tests.hubutil import REPO, Hub  # noqa: E402
from uws_hub.spawners.slurm.commands import run_command  # noqa: E402
from uws_hub.spawners.slurm.poller import SlurmPoller  # noqa: E402
from uws_hub.spawners.slurm.script import submit_environment  # noqa: E402

NAME_PREFIX = "uws-bench-poll-"
#: the server of the hub part's job type, and of its baseline (as tests/conftest.py's MINIMAL_CMD)
MINIMAL_CMD = [sys.executable, str(REPO / "tests" / "minimal_server.py")]
#: the resources of both sides of the hub part (the job type's default_resources, and sbatch's options)
HUB_RESOURCES = {"cpus": 1, "memory": "128M", "time_limit": "5"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="On the local SLURM cluster (as root): uws-hub's shared poller (one squeue per"
        " cycle) vs. batchspawner's squeue per job; sbatch → RUNNING latency; and a minimal server's"
        " launch → running → cancelled through a real uws-hub vs. the same server submitted with sbatch"
        " by hand.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--counts", default="1,10,50,200", help="numbers of tracked jobs, comma-separated")
    p.add_argument("--rounds", type=int, default=5, help="measured cycles of each side per count (median)")
    p.add_argument("--latency-runs", type=int, default=10, help="jobs submitted for the submit → running part")
    p.add_argument(
        "--probe-interval", type=float, default=0.05, help="seconds between squeue calls of the direct RUNNING probe"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=120,
        help="seconds to wait for one job to run (part 3: for one launch, its stop included)",
    )
    p.add_argument(
        "--hub-runs",
        type=int,
        default=5,
        help="launches through uws-hub (and as many by hand), after one warm-up of each",
    )
    p.add_argument(
        "--hub-user",
        default="uwsalice",
        help="the system account (and hub user) of the hub part; created with useradd if missing",
    )
    p.add_argument(
        "--hub-poll-interval",
        type=float,
        default=0.05,
        help="seconds between polls of the hub part (the job's status, its URL, and the server"
        " started by hand: the same for both sides)",
    )
    p.add_argument(
        "--stop-wait",
        choices=("events", "poll", "both"),
        default="events",
        help="how the hub part's client learns that a stopped job ended. events: the job's 'cancelled'"
        " event on GET /hub/api/events, subscribed before the stop (as the job's page is). poll: GET"
        " /hub/api/jobs/{id} every 10 ms. both: the two at once (the GETs then load the hub the event"
        " comes from)",
    )
    p.add_argument(
        "--server-stop-seconds",
        type=float,
        default=0,
        help="seconds the server of the hub part takes to exit after SIGTERM, on both sides (as a"
        " server that shuts down its kernels; SLURM shows the job COMPLETING meanwhile); 0: at once",
    )
    p.add_argument(
        "--hub-log-level",
        default="INFO",
        choices=("DEBUG", "INFO"),
        help="the log level of the hub part's hub (DEBUG: to follow a stop's steps in its log)",
    )
    p.add_argument(
        "--hub-log",
        default="",
        metavar="PATH",
        help="copy the hub part's log here when its hub stops (its directory is removed)",
    )
    p.add_argument("--skip-poll", action="store_true", help="skip the poll-cycle part (1)")
    p.add_argument("--skip-latency", action="store_true", help="skip the submit → running part (2)")
    p.add_argument("--skip-hub", action="store_true", help="skip the launch-through-uws-hub part (3)")
    p.add_argument(
        "--json",
        default=None,
        metavar="PATH",
        help="write results here (default: benchmarks/results/slurm_poll-<time>.json; '' for none)",
    )
    args = p.parse_args(argv)
    try:
        args.counts = sorted({int(c) for c in args.counts.split(",") if c.strip()})
    except ValueError:
        p.error("--counts: comma-separated integers")
    if not args.counts or args.counts[0] < 1:
        p.error("--counts: at least one count, all >= 1")
    if args.rounds < 1 or args.latency_runs < 1 or args.hub_runs < 1:
        p.error("--rounds, --latency-runs and --hub-runs must be >= 1")
    return args


# ---------------------------------------------------------------- jobs (synchronous: cleanup must work anywhere)
class Jobs:
    """The SLURM jobs of this run: all named alike (the hub's: ``hub_prefix`` and
    ``job-<id>``), all cancelled by :meth:`cancel_all`; and the hub of part 3."""

    def __init__(self):
        self.name = f"{NAME_PREFIX}{os.getpid()}-{int(time.time())}"
        #: the hub's job_name_prefix: its SLURM jobs are named <hub_prefix>job-<id>
        self.hub_prefix = f"{self.name}-hub-"
        self.ids: list[str] = []
        #: the sbatch running now, if any (a signal handler waits for it before cancelling)
        self.inflight: subprocess.Popen | None = None
        #: held by each sbatch (part 3 submits from a thread); a signal handler sets ``closing``
        #: and takes it: then no sbatch runs or starts, and every submitted job has its id here
        self.lock = threading.RLock()
        self.closing = False
        #: the uws-hub of part 3 while it runs, and its temporary directories
        self.hub: Hub | None = None
        self.hub_dirs: list[Path] = []
        #: where to copy the hub's log before its directory is removed ('': nowhere)
        self.keep_log = ""

    def sbatch(
        self,
        *args: str,
        script: str,
        account: pwd.struct_passwd | None = None,
        output: str = "/dev/null",
        chdir: str = "/tmp",
    ) -> str:
        """Submit a job as root, or as ``account`` as the hub does (its uid, gid and groups,
        sbatch's environment from ``submit_environment``). Synchronous: a few ms."""
        as_user: dict = {}
        if account is not None:
            as_user = {
                "user": account.pw_uid,
                "group": account.pw_gid,
                "extra_groups": os.getgrouplist(account.pw_name, account.pw_gid),
                "env": submit_environment({"HOME": account.pw_dir, "USER": account.pw_name}),
            }
        with self.lock:
            if self.closing:
                raise RuntimeError("this run's jobs are being cancelled: no more submissions")
            self.inflight = subprocess.Popen(
                ["sbatch", "--parsable", f"--output={output}", f"--chdir={chdir}", f"--job-name={self.name}", *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                **as_user,
            )
            try:
                out, err = self.inflight.communicate(script, timeout=60)
            except subprocess.TimeoutExpired:
                self.inflight.kill()
                self.inflight.wait()
                raise RuntimeError("sbatch did not answer within 60 s") from None
            finally:
                returncode, self.inflight = self.inflight.returncode, None
            if returncode != 0:
                raise RuntimeError(f"sbatch failed (exit {returncode}): {err.strip()[:500]}")
            job_id = out.strip().splitlines()[-1].split(";")[0]
            self.ids.append(job_id)
            return job_id

    def wait_inflight(self) -> None:
        proc = self.inflight
        if proc is not None and proc.poll() is None:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()

    def cancel(self, ids: list[str]) -> None:
        for i in range(0, len(ids), 500):
            subprocess.run(["scancel", *ids[i : i + 500]], capture_output=True, timeout=60)

    def stop_hub(self) -> None:
        """Stop the hub of part 3 if it runs (SIGTERM: it stops its servers; SIGKILL after 30 s),
        and remove its directories (its database, the workspaces, the by-hand jobs' output)."""
        hub, self.hub = self.hub, None
        if hub is not None:
            hub.stop()
            if self.keep_log:
                shutil.copyfile(hub.log_file, self.keep_log)
        dirs, self.hub_dirs = self.hub_dirs, []
        for directory in dirs:
            shutil.rmtree(directory, ignore_errors=True)

    def cancel_all(self) -> None:
        """Cancel every job of this run: by id, and by the run's job name or the hub's name
        prefix (a job whose ``sbatch`` was interrupted, or still ran when a signal came, or
        that the hub submitted, has no id here)."""
        self.cancel(self.ids)
        for _attempt in range(3):
            subprocess.run(["scancel", f"--name={self.name}"], capture_output=True, timeout=60)
            left = self.alive()
            if left:
                self.cancel(left)
                time.sleep(1)
                left = self.alive()
            if not left:
                break
        if left:
            log(f"WARNING: jobs of this run still queued or running: {' '.join(left)}")
        elif self.ids:
            log(f"cancelled all {len(self.ids)} SLURM jobs of this run ({self.name}), and any its hub left")

    def alive(self) -> list[str]:
        """This run's jobs (any account's) not ended yet: by name, or by the hub's name prefix."""
        r = subprocess.run(
            ["squeue", "-h", "-t", "PENDING,RUNNING,SUSPENDED,CONFIGURING", "-o", "%i %j"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        return [
            job_id
            for job_id, _, name in (line.partition(" ") for line in r.stdout.splitlines())
            if name == self.name or name.startswith(self.hub_prefix)
        ]


# ---------------------------------------------------------------- counting subprocesses
class SpawnCounter:
    """Wraps asyncio's two subprocess constructors (what SlurmPoller's run_command and
    batchspawner's run_command call) and counts the calls while ``active``."""

    def __init__(self):
        self.exec_calls = 0
        self.shell_calls = 0
        self.active = False
        self._exec = asyncio.create_subprocess_exec
        self._shell = asyncio.create_subprocess_shell

    def install(self) -> None:
        async def exec_(*args, **kwargs):
            if self.active:
                self.exec_calls += 1
            return await self._exec(*args, **kwargs)

        async def shell(*args, **kwargs):
            if self.active:
                self.shell_calls += 1
            return await self._shell(*args, **kwargs)

        asyncio.create_subprocess_exec = exec_
        asyncio.create_subprocess_shell = shell

    def uninstall(self) -> None:
        asyncio.create_subprocess_exec = self._exec
        asyncio.create_subprocess_shell = self._shell

    @property
    def total(self) -> int:
        return self.exec_calls + self.shell_calls


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def batchspawner(job_id: str) -> SlurmSpawner:
    """batchspawner's SlurmSpawner for one job, as a hub running as root would configure it."""
    sp = SlurmSpawner(
        user=SimpleNamespace(name="root", url="/user/root/"),
        exec_prefix="",
        req_username="root",
        req_homedir="/root",
        req_keepvars="",
    )
    sp.job_id = job_id
    return sp


async def close(poller: SlurmPoller) -> None:
    """Stop a poller's loop. Untrack its jobs first: on Python 3.11, ``close()``'s
    cancellation is lost when it comes just as the loop's ``asyncio.wait_for`` on its
    wake-up event completes (wait_for then returns instead of raising; fixed in 3.12),
    and the loop would poll its jobs forever. With nothing tracked it ends by itself."""
    for job_id in poller.tracked:
        poller.untrack(job_id)
    await poller.close()


# ---------------------------------------------------------------- part 1
async def measure_cycles(ids: list[str], counts: list[int], rounds: int, counter: SpawnCounter) -> list[dict]:
    results = []
    for n in counts:
        jobs = ids[:n]
        poller = SlurmPoller(poll_interval_seconds=3600, fast_poll_interval_seconds=3600)
        for job_id in jobs:
            poller.track(job_id)
        if not await poller.refresh():  # starts its loop, which then sleeps for an hour
            raise RuntimeError("the poller's first squeue failed")
        spawners = [batchspawner(job_id) for job_id in jobs]
        samples: dict[str, dict[str, list[float]]] = {
            side: {"calls": [], "wall": [], "cpu": []} for side in ("uws", "bs")
        }

        # the loop's values bound now (B023): each round's sides are called in that round
        async def uws_side(poller=poller, jobs=jobs):
            await poller.cycle()
            states = [poller.get(j) for j in jobs]
            if not all(s is not None and s.pending for s in states):
                raise RuntimeError(f"uws-hub poller: not every job pending: {states[:5]}")

        async def bs_side(spawners=spawners):
            # return_exceptions: never leave polls running (batchspawner's are not safe to cancel)
            polled = await asyncio.gather(*(sp.poll() for sp in spawners), return_exceptions=True)
            errors = [p for p in polled if isinstance(p, BaseException)]
            if errors:
                raise RuntimeError(f"batchspawner poll failed: {errors[0]!r}")
            bad = [
                (sp.job_id, sp.job_status)
                for sp, p in zip(spawners, polled, strict=True)
                if p is not None or not sp.state_ispending()
            ]
            if bad:
                raise RuntimeError(f"batchspawner: not every job pending: {bad[:5]}")

        for rnd in range(rounds + 1):  # round 0 warms up
            order = [("uws", uws_side), ("bs", bs_side)]
            if rnd % 2:
                order.reverse()
            for side, func in order:
                commands = poller.stats["commands"]
                counter.exec_calls = counter.shell_calls = 0
                cpu = children_cpu()
                counter.active = True
                start = time.perf_counter()
                try:
                    await func()
                finally:
                    wall = time.perf_counter() - start
                    counter.active = False
                if side == "uws" and poller.stats["commands"] - commands != counter.total:
                    raise RuntimeError("the poller's command count and the spawn count disagree")
                if rnd:
                    samples[side]["calls"].append(counter.total)
                    samples[side]["wall"].append(wall)
                    samples[side]["cpu"].append(children_cpu() - cpu)
        await close(poller)
        med = {side: {k: summary(v)["p50"] for k, v in s.items()} for side, s in samples.items()}
        log(
            f"{n} jobs: uws-hub {med['uws']['calls']:.0f} subprocess(es), {med['uws']['wall'] * 1000:.1f} ms;"
            f" batchspawner {med['bs']['calls']:.0f}, {med['bs']['wall'] * 1000:.1f} ms"
        )
        results.append(
            {
                "jobs": n,
                "samples": samples,
                "median": med,
                "wall_min": {side: min(s["wall"]) for side, s in samples.items()},
            }
        )
    return results


# ---------------------------------------------------------------- part 2
LATENCY_SCRIPT = "#!/bin/sh\ndate +%s.%N > {stamp}\nexec sleep 30\n"


async def measure_latency(jobs: Jobs, run: int, probe_interval: float, timeout: float, stamp_dir: Path) -> dict:
    stamp = stamp_dir / f"started-{run}"
    script = LATENCY_SCRIPT.format(stamp=stamp)
    t0_wall = time.time()
    t0 = time.perf_counter()
    job_id = jobs.sbatch("--cpus-per-task=1", "--mem=16M", "--time=2", script=script)
    submitted = time.perf_counter() - t0

    deadline = time.perf_counter() + timeout

    def check(what: str) -> None:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{what}: job {job_id} not running after {timeout:g} s")

    async def probe() -> float:
        while True:
            check("squeue probe")
            r = await run_command(["squeue", "-h", "-j", job_id, "-o", "%T"], timeout=30)
            if r.stdout.strip() == "RUNNING":
                return time.perf_counter() - t0
            if r.stdout.strip() not in ("PENDING", "CONFIGURING", ""):
                raise RuntimeError(f"job {job_id} is {r.stdout.strip()}")
            await asyncio.sleep(probe_interval)

    async def uws() -> float:
        # as WorkspaceSlurmSpawner._submit/_wait_for_server: track, then wait on the shared poller,
        # in this task (asyncio.wait_for would run wait() in a task of its own, a loop iteration
        # later, and change when the poller's loop wakes up: asyncio.timeout does not)
        poller = SlurmPoller()
        try:
            poller.track(job_id)
            async with asyncio.timeout(timeout):
                state = await poller.wait(job_id, lambda s: s.running or s.ended)
            if not state.running:
                raise RuntimeError(f"job {job_id} ended: {state}")
            return time.perf_counter() - t0
        finally:
            await close(poller)

    async def bs() -> float:
        sp = batchspawner(job_id)
        while True:  # batchspawner's start() loop (timed out here, never cancelled: not safe to)
            check("batchspawner")
            status = await sp.query_job_status()
            if status == JobStatus.RUNNING:
                return time.perf_counter() - t0
            if status not in (JobStatus.PENDING, JobStatus.UNKNOWN):
                raise RuntimeError(f"batchspawner: job {job_id} neither pending nor running: {sp.job_status}")
            await asyncio.sleep(sp.startup_poll_interval)

    try:
        seen = await asyncio.gather(probe(), uws(), bs(), return_exceptions=True)
        for result in seen:
            if isinstance(result, BaseException):
                raise result
        running, uws_seen, bs_seen = seen
    finally:
        await asyncio.to_thread(jobs.cancel, [job_id])
    try:
        started = float(stamp.read_text().strip()) - t0_wall
    except (OSError, ValueError):
        started = float("nan")
    res = {
        "job_id": job_id,
        "sbatch": submitted,
        "squeue_running": running,
        "script_started": started,
        "uws_poller": uws_seen,
        "batchspawner": bs_seen,
    }
    log(
        f"job {job_id}: sbatch {submitted * 1000:.0f} ms, RUNNING {running * 1000:.0f} ms, script"
        f" {started * 1000:.0f} ms, uws-hub {uws_seen * 1000:.0f} ms, batchspawner {bs_seen * 1000:.0f} ms"
    )
    return res


# ---------------------------------------------------------------- part 3
TERMINAL = {"completed", "failed", "cancelled"}
#: seconds between polls of a job being stopped, on both sides (as launch.py's): SLURM ends a
#: cancelled job in ~50 ms, which polls every --hub-poll-interval (50 ms) would measure to
#: the next poll, up to one interval late on either side (ratios of 0.95-1.8 from that alone);
#: a poll costs the hub ~2 ms, an squeue ~5 ms, and a stop takes few of them
STOP_POLL_INTERVAL = 0.01
#: how the hub part's client learns that a stopped job ended (``--stop-wait``), for the report
STOP_WAIT_TEXT = {
    "events": "its `cancelled` event on `GET /hub/api/events`, subscribed before the stop",
    "poll": "`GET /hub/api/jobs/{id}` every 10 ms",
    "both": "its event and `GET /hub/api/jobs/{id}` every 10 ms, at once",
}
#: squeue's states of a job not ended yet (COMPLETING: SLURM is still ending it)
NOT_ENDED = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "RESIZING", "STAGE_OUT"}

HUB_CONFIG = """
c.UWSHub.workspaces_root = {root!r}
c.UWSHub.system_users = True
c.UWSHub.job_log_dir = {logs!r}
c.Application.log_level = {log_level!r}
c.UWSHub.resource_spawners = {{"local": "uws-local", "slurm": "uws-slurm"}}
c.WorkspaceSlurmSpawner.job_name_prefix = {prefix!r}
c.UWSHub.job_types = {{
    "minimal": {{
        "display_name": "Minimal server", "cmd": {cmd!r}, "resources": ["slurm", "local"],
        "default_resources": {resources!r}, "env": {env!r},
    }},
}}
"""


def ensure_system_user(name: str) -> pwd.struct_passwd:
    """The system account of the hub part, as tests/conftest.py's ``system_users`` fixture
    makes its accounts: ``useradd`` if missing, and the venv's python made traversable."""
    from tests.conftest import _make_traversable

    try:
        account = pwd.getpwnam(name)
    except KeyError:
        log(f"creating the system user {name} (useradd, as tests/conftest.py does)")
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name], check=True)
        account = pwd.getpwnam(name)
    _make_traversable(REPO / ".venv" / "bin")
    # the venv's python may be a symlink into a pyenv under /root
    _make_traversable(Path(os.path.realpath(sys.executable)).parent)
    return account


def squeue_state(job_id: str) -> str:
    r = subprocess.run(
        ["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"], capture_output=True, text=True, timeout=60
    )
    return r.stdout.strip()


#: the time of a line of the hub's log: ``[I 2026-12-06 00:09:00.123 …``
LOG_TIME = re.compile(r"^\[[A-Z] (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) ")


def log_time(hub: Hub, text: str) -> float:
    """The time (epoch seconds) of the last line of the hub's log that holds ``text``; nan if none."""
    for line in reversed(hub.log_text().splitlines()):
        if text in line and (m := LOG_TIME.match(line)):
            return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
    return float("nan")


def hub_timestamp(value: str | None) -> float:
    if not value:
        return float("nan")
    return datetime.fromisoformat(value.rstrip("Z")).timestamp()


class Deadline:
    def __init__(self, timeout: float, what: str):
        self.end = time.perf_counter() + timeout
        self.timeout = timeout
        self.what = what

    def check(self, doing: str) -> None:
        if time.perf_counter() > self.end:
            raise TimeoutError(f"{self.what}: {doing} for more than {self.timeout:g} s")


def hub_launch(
    hub: Hub, token: str, session: requests.Session, jobs: Jobs, interval: float, timeout: float, stop_wait: str
) -> dict:
    """One launch through the hub: POST → running (GET) → its URL answers → stop → cancelled
    (``stop_wait``: the event, GETs, or both at once; see ``--stop-wait``)."""
    headers = {"Authorization": f"token {token}"}
    api = f"{hub.url}/hub/api"
    ws = hub.api("POST", "workspaces", token, json={"name": f"bench {uuid.uuid4().hex[:8]}"}, expect=201)

    def get_job(job_id: int) -> dict:
        r = session.get(f"{api}/jobs/{job_id}", headers=headers, timeout=30)
        r.raise_for_status()
        job = r.json()
        if job.get("resource_id"):
            slurm_ids.add(job["resource_id"])
        return job

    slurm_ids: set[str] = set()
    t0 = time.perf_counter()
    r = session.post(
        f"{api}/workspaces/{ws['id']}/jobs",
        headers=headers,
        timeout=30,
        json={"job_type": "minimal", "resource": "slurm"},
    )
    posted = time.perf_counter() - t0
    if r.status_code != 202:
        raise RuntimeError(f"POST /hub/api/workspaces/{ws['id']}/jobs: {r.status_code} {r.text[:500]}")
    job = r.json()
    job_id = job["id"]
    deadline = Deadline(timeout, f"hub job {job_id}")
    try:
        while True:
            job = get_job(job_id)
            if job["status"] == "running":
                running = time.perf_counter() - t0
                break
            if job["status"] in TERMINAL:
                raise RuntimeError(f"hub job {job_id} {job['status']} before running: {job['reason']}")
            deadline.check("not running")
            time.sleep(interval)
        url = job["url"] if job["url"].startswith("http") else hub.url + job["url"]
        url += "api/status"
        while True:
            try:
                r = session.get(url, headers=headers, timeout=10, allow_redirects=False)
                if r.status_code == 200 and r.json().get("job") == str(job_id):
                    answered = time.perf_counter() - t0
                    break
            except (requests.RequestException, ValueError):
                pass
            deadline.check(f"{url} not answering")
            time.sleep(interval)

        # the job's page: subscribed to the workspace's events before the stop
        events = JobEvents(hub, token, ws["id"]) if stop_wait != "poll" else None
        stopped = stop_event = float("nan")
        try:
            t1, t1_wall = time.monotonic(), time.time()
            r = session.post(f"{api}/jobs/{job_id}/stop", headers=headers, timeout=30)
            stop_answered = time.monotonic() - t1
            if r.status_code != 202:
                raise RuntimeError(f"POST /hub/api/jobs/{job_id}/stop: {r.status_code} {r.text[:500]}")
            while stop_wait != "events":
                job = get_job(job_id)
                if job["status"] in TERMINAL:
                    stopped = time.monotonic() - t1
                    break
                deadline.check("not ended after its stop")
                time.sleep(min(interval, STOP_POLL_INTERVAL))
            if events is not None:
                arrived, _event = events.wait_status(job_id, TERMINAL, timeout)
                stop_event = arrived - t1
                job = get_job(job_id)
            if job["status"] != "cancelled":
                raise RuntimeError(f"hub job {job_id} ended {job['status']}, not cancelled: {job['reason']}")
        finally:
            if events is not None:
                events.close()
    finally:
        if job["status"] not in TERMINAL:
            try:
                session.post(f"{api}/jobs/{job_id}/stop", headers=headers, timeout=30)
                hub.wait_job(job_id, token, TERMINAL, timeout=30)
            except Exception as e:  # the scancel below and cancel_all() still run
                log(f"stopping hub job {job_id} failed: {e!r}")
        jobs.cancel(sorted(slurm_ids))  # a no-op for a job SLURM already ended
    created = hub_timestamp(job["created_at"])
    res = {
        "job_id": job_id,
        "slurm_id": job["resource_id"],
        "post": posted,
        "running": running,
        "answered": answered,
        "stop_to_cancelled": stopped,
        "stop_to_event": stop_event,
        "hub_queued": hub_timestamp(job["queued_at"]) - created,
        "hub_running": hub_timestamp(job["running_at"]) - created,
        # the stop's phases, from the POST (the hub's clock and log; 1 ms resolution)
        "stop_answered": stop_answered,
        "stop_stopping": hub_timestamp(job["stopping_at"]) - t1_wall,
        "stop_scancel": log_time(hub, f"Cancelling SLURM job {job['resource_id']} ") - t1_wall,
        "stop_ended_seen": log_time(hub, f"SLURM job {job['resource_id']} was cancelled") - t1_wall,
        "stop_recorded": hub_timestamp(job["finished_at"]) - t1_wall,
    }
    log(
        f"hub job {job_id} (SLURM {job['resource_id']}): POST {posted * 1000:.0f} ms, running"
        f" {running * 1000:.0f} ms, answers {answered * 1000:.0f} ms, stop → cancelled: GET {stopped * 1000:.0f} ms,"
        f" event {stop_event * 1000:.0f} ms"
        f" (scancel {res['stop_scancel'] * 1000:.0f}, SLURM ended {res['stop_ended_seen'] * 1000:.0f},"
        f" recorded {res['stop_recorded'] * 1000:.0f})"
    )
    return res


def server_env(args) -> dict[str, str]:
    """The server's own environment on both sides (tests/minimal_server.py's options)."""
    return {"UWS_TEST_STOP_SECONDS": f"{args.server_stop_seconds:g}"} if args.server_stop_seconds else {}


def by_hand_launch(
    jobs: Jobs,
    account: pwd.struct_passwd,
    session: requests.Session,
    outdir: Path,
    interval: float,
    timeout: float,
    env: dict[str, str],
) -> dict:
    """The baseline: the same server submitted with sbatch, polled directly; then scancel."""
    port = free_port()
    script = (
        "#!/bin/sh\n"
        + "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
        + f"export JUPYTERHUB_SERVICE_URL=http://127.0.0.1:{port}/\n"
        f"exec {shlex.join(MINIMAL_CMD)}\n"
    )
    output = outdir / f"by-hand-{len(jobs.ids)}.log"
    t0 = time.perf_counter()
    job_id = jobs.sbatch(
        f"--cpus-per-task={HUB_RESOURCES['cpus']}",
        f"--mem={HUB_RESOURCES['memory']}",
        f"--time={HUB_RESOURCES['time_limit']}",
        script=script,
        account=account,
        output=str(output),
        chdir=str(outdir),
    )
    submitted = time.perf_counter() - t0
    deadline = Deadline(timeout, f"SLURM job {job_id} (by hand)")
    url = f"http://127.0.0.1:{port}/api/status"
    try:
        polls = 0
        while True:
            polls += 1
            try:
                r = session.get(url, timeout=10, allow_redirects=False)
                if r.status_code == 200 and r.json().get("path") == "/api/status":
                    answered = time.perf_counter() - t0
                    break
            except (requests.RequestException, ValueError):
                pass
            if polls % 20 == 0:
                state = squeue_state(job_id)
                if state and state not in NOT_ENDED:
                    tail = output.read_text(errors="replace")[-1500:] if output.exists() else ""
                    raise RuntimeError(
                        f"SLURM job {job_id} (by hand) is {state} before its server answered; its output:\n{tail}"
                    )
            deadline.check(f"{url} not answering")
            time.sleep(interval)

        t1 = time.perf_counter()
        jobs.cancel([job_id])
        scancelled = time.perf_counter() - t1
        completing = float("nan")
        while True:
            state = squeue_state(job_id)
            if state == "COMPLETING" and completing != completing:
                completing = time.perf_counter() - t1
            if state not in NOT_ENDED:
                stopped = time.perf_counter() - t1
                break
            deadline.check("not ended after scancel")
            time.sleep(min(interval, STOP_POLL_INTERVAL))
        if state not in ("CANCELLED", ""):
            raise RuntimeError(f"SLURM job {job_id} (by hand) ended {state}, not CANCELLED")
    finally:
        jobs.cancel([job_id])
    res = {
        "job_id": job_id,
        "sbatch": submitted,
        "answered": answered,
        "scancel_to_cancelled": stopped,
        "state": state,
        "scancel_returned": scancelled,
        "completing_seen": completing,
    }
    log(
        f"by hand, SLURM job {job_id}: sbatch {submitted * 1000:.0f} ms, answers {answered * 1000:.0f} ms,"
        f" scancel → CANCELLED {stopped * 1000:.0f} ms (scancel returned {scancelled * 1000:.0f},"
        f" COMPLETING seen {completing * 1000:.0f})"
    )
    return res


def measure_hub(args, jobs: Jobs) -> dict:
    """Part 3 (synchronous: run in a thread)."""
    account = ensure_system_user(args.hub_user)
    workdir = Path(tempfile.mkdtemp(prefix="uws-bench-slurm-hub-"))  # 0700: the hub's database, root's only
    root = Path(tempfile.mkdtemp(prefix="uws-bench-slurm-ws-"))
    root.chmod(0o755)  # the workspaces: the user's jobs go down to theirs
    outdir = Path(tempfile.mkdtemp(prefix="uws-bench-slurm-byhand-"))
    # the hub's job log directory, where its jobs' SLURM output goes: outside the 0700
    # workdir, so that the jobs' account reaches it (the hub makes it passable, 0711)
    logs = Path(tempfile.mkdtemp(prefix="uws-bench-slurm-logs-"))
    os.chown(outdir, account.pw_uid, account.pw_gid)  # the by-hand job's output and working directory
    config = HUB_CONFIG.format(
        root=str(root),
        logs=str(logs),
        log_level=args.hub_log_level,
        prefix=jobs.hub_prefix,
        cmd=MINIMAL_CMD,
        resources=HUB_RESOURCES,
        env=server_env(args),
    )
    jobs.hub_dirs += [workdir, root, outdir, logs]
    hub = Hub(workdir, config, f"sqlite:///{workdir}/jupyterhub.sqlite")
    jobs.hub = hub
    res: dict = {"user": account.pw_name, "runs": [], "by_hand": [], "warmup": {}}
    ok = False
    try:
        log(f"starting uws-hub ({hub.url}) with SLURM jobs as {account.pw_name}")
        started = time.perf_counter()
        hub.start()
        res["hub_start"] = time.perf_counter() - started
        token = hub.add_user(account.pw_name)
        with requests.Session() as hub_session, requests.Session() as direct_session:
            sides = {
                "hub": lambda: hub_launch(
                    hub, token, hub_session, jobs, args.hub_poll_interval, args.timeout, args.stop_wait
                ),
                "by_hand": lambda: by_hand_launch(
                    jobs, account, direct_session, outdir, args.hub_poll_interval, args.timeout, server_env(args)
                ),
            }
            for rnd in range(args.hub_runs + 1):  # round 0 warms up
                order = ["hub", "by_hand"] if rnd % 2 == 0 else ["by_hand", "hub"]
                for side in order:
                    result = sides[side]()
                    if rnd == 0:
                        res["warmup"][side] = result
                    else:
                        res["runs" if side == "hub" else "by_hand"].append(result)
        ok = True
    finally:
        if not ok and not jobs.closing:
            log(f"the hub's log, last lines:\n{hub.log_tail(40)}")
        log("stopping the hub")
        jobs.stop_hub()
    return res


# ---------------------------------------------------------------- report
def report(res: dict) -> str:
    ms = lambda s, d=1: fmt(s * 1000, d)  # noqa: E731
    lines = [f"SLURM on this machine ({res['slurm']}); {machine_line()}.", ""]
    if res.get("cycles"):
        rows = []
        for r in res["cycles"]:
            u, b = r["median"]["uws"], r["median"]["bs"]
            rows.append(
                [
                    str(r["jobs"]),
                    fmt(u["calls"], 0),
                    ms(u["wall"]),
                    ms(u["cpu"]),
                    fmt(b["calls"], 0),
                    ms(b["wall"]),
                    ms(b["cpu"]),
                    fmt(ratio(u["calls"], b["calls"]), 3),
                    fmt(ratio(u["wall"], b["wall"]), 3),
                    fmt(ratio(u["cpu"], b["cpu"]), 3),
                ]
            )
        lines += [
            f"## One poll cycle over N held jobs (median of {res['rounds']} rounds per side)",
            "",
            "uws-hub: `SlurmPoller.cycle()`, one `squeue -h -t all -j <all ids>`. Baseline: batchspawner 1.3's"
            " `SlurmSpawner.poll()` on N spawners at once, each `sh -c \"squeue -h -j <id> -o '%T %B'\"`"
            ' (exec_prefix ""). Subprocesses: calls of asyncio\'s subprocess constructors, counted (each'
            " of batchspawner's is a /bin/sh that forks squeue). CPU: the commands' user+sys time (not"
            " slurmctld's). Ratios are uws-hub ÷ batchspawner: below 1, uws-hub does less.",
            "",
            markdown_table(
                [
                    "jobs",
                    "uws-hub subprocs",
                    "uws-hub ms",
                    "uws-hub CPU ms",
                    "batchspawner subprocs",
                    "batchspawner ms",
                    "batchspawner CPU ms",
                    "subprocs ratio",
                    "wall ratio",
                    "CPU ratio",
                ],
                rows,
            ),
            "",
        ]
    if res.get("latency"):
        lat = res["latency"]
        d = res["poller_defaults"]

        def row(label, key, baseline=""):
            s = summary([r[key] for r in lat])
            return [label, ms(s["p50"], 0), ms(s["min"], 0), ms(s["max"], 0), baseline]

        bs_p50 = summary([r["batchspawner"] for r in lat])["p50"]
        uws_p50 = summary([r["uws_poller"] for r in lat])["p50"]
        lines += [
            f"## Submit → running: a `sleep 30` job, {len(lat)} runs, times from the start of `sbatch`",
            "",
            "All observers watch the same job at the same time. No hub and no server: SLURM, and the"
            " two status-polling paths only (a server's own start comes on top of both; the next part"
            " has a hub and a server). Both paths ask"
            " once right after `sbatch` (usually before SLURM starts the job), then at their interval:"
            f" {d['fast']:g} s for uws-hub's poller, {d['bs_startup']:g} s for batchspawner.",
            "",
            markdown_table(
                ["event", "p50 ms", "min ms", "max ms", "ratio"],
                [
                    row("`sbatch --parsable` returned", "sbatch"),
                    row(
                        f"`squeue -j <id> -o %T` says RUNNING (polled every {res['probe_interval']:g} s)",
                        "squeue_running",
                    ),
                    row("the job's batch script started (its first line: `date`)", "script_started"),
                    row(
                        f"uws-hub: `SlurmPoller.wait()` sees it running (defaults: {d['fast']:g} s while a"
                        f" start waits, {d['poll']:g} s otherwise)",
                        "uws_poller",
                        fmt(ratio(uws_p50, bs_p50), 2),
                    ),
                    row(
                        f"baseline, batchspawner: `query_job_status()` says RUNNING (start loop, every"
                        f" {d['bs_startup']:g} s)",
                        "batchspawner",
                        "1.00",
                    ),
                ],
            ),
            "",
        ]
    if res.get("hub"):
        h = res["hub"]
        d = res["poller_defaults"]

        def stats(rows, key):
            return summary([r[key] for r in rows if r.get(key) == r.get(key)])  # no NaN (not seen)

        def row(label, rows, key, base=None):
            s = stats(rows, key)
            return [
                label,
                ms(s["p50"], 0),
                ms(s["min"], 0),
                ms(s["max"], 0),
                "" if base is None else fmt(ratio(s["p50"], base), 2),
            ]

        hub_runs, by_hand = h["runs"], h["by_hand"]
        answer_base = stats(by_hand, "answered")["p50"]
        stop_base = stats(by_hand, "scancel_to_cancelled")["p50"]
        res_text = (
            f"`--cpus-per-task={HUB_RESOURCES['cpus']} --mem={HUB_RESOURCES['memory']}"
            f" --time={HUB_RESOURCES['time_limit']}`"
        )
        lines += [
            f"## Launch → running through uws-hub: tests/minimal_server.py on SLURM, {len(hub_runs)}"
            f" run{'' if len(hub_runs) == 1 else 's'} of each side",
            "",
            f"One uws-hub (SQLite, node CHP; started in {fmt(h['hub_start'], 1)} s), jobs as the system user"
            f" `{h['user']}` ({res_text}), SLURM poller at its defaults ({d['fast']:g} s while a start waits)."
            " uws-hub: `POST /hub/api/workspaces/{id}/jobs` (`minimal`, resource `slurm`), then `GET"
            " /hub/api/jobs/{id}` until `running` (set once the server answers), then `GET <url>api/status`"
            " through the proxy until the server answers; then `POST /hub/api/jobs/{id}/stop` until"
            f" `cancelled` (the client learns it: {STOP_WAIT_TEXT[res.get('stop_wait', 'poll')]}). Baseline: the same python and script submitted with `sbatch` as the same user with"
            " the same resources, polled directly over HTTP until it answers; then `scancel` until `squeue`"
            f" says CANCELLED. All polls every {res['hub_poll_interval']:g} s (a stopping job's: every"
            f" {min(res['hub_poll_interval'], STOP_POLL_INTERVAL):g} s); after one warm-up of each, the"
            " sides alternate. Times from the start of the `POST` (hub) or of `sbatch` (by hand); ratios are"
            " p50 ÷ the by-hand p50 of the same step.",
            "",
            markdown_table(
                ["event", "p50 ms", "min ms", "max ms", "ratio"],
                [
                    row("uws-hub: `POST …/jobs` answered (202)", hub_runs, "post"),
                    row(
                        "uws-hub, its own clock: `created_at` → `queued_at` (`sbatch` returned)", hub_runs, "hub_queued"
                    ),
                    row("uws-hub, its own clock: `created_at` → `running_at`", hub_runs, "hub_running"),
                    row("uws-hub: `GET /hub/api/jobs/{id}` says `running`", hub_runs, "running", answer_base),
                    row(
                        "uws-hub: the server answers through the proxy (`<url>api/status`)",
                        hub_runs,
                        "answered",
                        answer_base,
                    ),
                    row("by hand: `sbatch --parsable` returned", by_hand, "sbatch"),
                    row("baseline, by hand: the server answers (directly)", by_hand, "answered", answer_base),
                ],
            ),
            "",
            markdown_table(
                ["stop", "p50 ms", "min ms", "max ms", "ratio"],
                [
                    row(
                        "uws-hub: `POST /hub/api/jobs/{id}/stop` → `GET` says `cancelled`",
                        hub_runs,
                        "stop_to_cancelled",
                        stop_base,
                    ),
                    row(
                        "uws-hub: `POST /hub/api/jobs/{id}/stop` → the `cancelled` event arrives (the job's page)",
                        hub_runs,
                        "stop_to_event",
                        stop_base,
                    ),
                    row(
                        "baseline, by hand: `scancel` → `squeue` says CANCELLED",
                        by_hand,
                        "scancel_to_cancelled",
                        stop_base,
                    ),
                ],
            ),
            "",
            "The stop's phases (from the `POST` or the `scancel`; the hub's steps from its own clock and log)"
            + (
                f"; the server takes {res['server_stop_seconds']:g} s to exit after SIGTERM, on both sides"
                " (`--server-stop-seconds`)"
                if res.get("server_stop_seconds")
                else ""
            )
            + ":",
            "",
            markdown_table(
                ["phase", "p50 ms", "min ms", "max ms", "ratio"],
                [
                    row("uws-hub: `POST …/stop` answered (202)", hub_runs, "stop_answered"),
                    row("uws-hub: `stopping_at`", hub_runs, "stop_stopping"),
                    row("uws-hub: `scancel` about to run (its log)", hub_runs, "stop_scancel"),
                    row("uws-hub: the poller sees the job CANCELLED (its log)", hub_runs, "stop_ended_seen"),
                    row("uws-hub: `finished_at` (the end recorded)", hub_runs, "stop_recorded"),
                    row("uws-hub: the `cancelled` event arrives", hub_runs, "stop_to_event", stop_base),
                    row("uws-hub: `GET` says `cancelled`", hub_runs, "stop_to_cancelled", stop_base),
                    row("by hand: `scancel` returned", by_hand, "scancel_returned"),
                    row(
                        "by hand: `squeue` says COMPLETING (first poll that does; none: NaN)",
                        by_hand,
                        "completing_seen",
                    ),
                    row("by hand: `squeue` says CANCELLED", by_hand, "scancel_to_cancelled", stop_base),
                ],
            ),
            "",
        ]
    return "\n".join(lines)


# ---------------------------------------------------------------- main
def slurm_version() -> str:
    try:
        r = subprocess.run(["sinfo", "--version"], capture_output=True, text=True, timeout=30)
        return r.stdout.strip() or r.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        sys.exit(f"SLURM is not usable here ({e}); start it with: bash scripts/slurm-up.sh up")


async def run(args, jobs: Jobs) -> dict:
    defaults = SlurmPoller()
    res: dict = {
        "slurm": slurm_version(),
        "rounds": args.rounds,
        "probe_interval": args.probe_interval,
        "counts": args.counts,
        "poller_defaults": {
            "poll": defaults.poll_interval_seconds,
            "fast": defaults.fast_poll_interval_seconds,
            "bs_startup": SlurmSpawner.class_traits()["startup_poll_interval"].default_value,
        },
    }
    if not args.skip_poll:
        n = max(args.counts)
        log(f"submitting {n} held jobs named {jobs.name}")
        start = time.perf_counter()
        ids = [jobs.sbatch("--hold", "--time=1", script="#!/bin/sh\nsleep 1\n") for _ in range(n)]
        log(f"submitted in {time.perf_counter() - start:.1f} s")
        counter = SpawnCounter()
        counter.install()
        try:
            res["cycles"] = await measure_cycles(ids, args.counts, args.rounds, counter)
        finally:
            counter.uninstall()
        log("cancelling the held jobs")
        await asyncio.to_thread(jobs.cancel, ids)
    if not args.skip_latency:
        res["latency"] = []
        with tempfile.TemporaryDirectory(prefix="uws-bench-slurm-") as tmp:
            for i in range(args.latency_runs):
                res["latency"].append(await measure_latency(jobs, i, args.probe_interval, args.timeout, Path(tmp)))
    if not args.skip_hub:
        res["hub_poll_interval"] = args.hub_poll_interval
        res["server_stop_seconds"] = args.server_stop_seconds
        res["stop_wait"] = args.stop_wait
        # blocking HTTP and subprocesses: in a thread (nothing else runs on the loop meanwhile)
        res["hub"] = await asyncio.to_thread(measure_hub, args, jobs)
    return res


def on_signal(jobs: Jobs):
    """SIGINT/SIGTERM: cancel the run's jobs and exit at once. (Not via asyncio.run's
    cancellation: batchspawner's run_command catches CancelledError with a bare
    ``except:``, and asyncio.run can then wait for its tasks forever.)"""
    caught = []

    def handler(signum, frame):
        if caught:  # a second signal while cleaning up: give up
            os._exit(128 + signum)
        caught.append(signum)
        log(f"{signal.Signals(signum).name}: cancelling this run's SLURM jobs and exiting")
        try:
            jobs.closing = True  # part 3's thread submits nothing more
            jobs.lock.acquire(timeout=60)  # its sbatch under way ends first (this thread's: see below)
            jobs.wait_inflight()  # an sbatch interrupted here may still submit its job
            jobs.stop_hub()  # it stops its servers (scancel); cancel_all() then gets what is left
            jobs.cancel_all()
        finally:
            os._exit(128 + signum)

    return handler


def main(argv=None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("run as root: the script submits and cancels SLURM jobs as root")
    slurm_version()
    jobs = Jobs()
    jobs.keep_log = args.hub_log
    handler = on_signal(jobs)
    signal.signal(signal.SIGINT, handler)  # before asyncio.run, which then keeps it
    signal.signal(signal.SIGTERM, handler)
    try:
        res = asyncio.run(run(args, jobs))
    finally:
        jobs.stop_hub()  # a no-op: part 3 stops it
        jobs.cancel_all()
    print()
    print(report(res))
    out = write_json("slurm_poll", res, args.json)
    if out:
        log(f"results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
