#!/usr/bin/env python3
"""SLURM status polling: uws-hub's shared poller against batchspawner's
per-job ``squeue``, and how long a job takes from ``sbatch`` to RUNNING, on
the local SLURM cluster (``scripts/slurm-up.sh up``; as root).

Part 1, one poll cycle. Submits N real jobs held in the queue (``sbatch
--hold``, all named ``uws-bench-poll-<pid>-<time>``, output to /dev/null) and, for
N = 1, 10, 50, 200 (``--counts``), times one poll cycle over the first N of
them, both ways, in the same run on the same jobs:

- uws-hub: the real :class:`SlurmPoller` (``uws_hub.spawners.slurm_poller``)
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
no server: only SLURM and the two status-polling paths).

Every job the script submits is cancelled at the end, also on errors and
Ctrl-C (by id, and by its run's job name). Prints markdown tables; writes
JSON to benchmarks/results/ unless ``--json ''``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ensure_venv, fmt, log, machine_line, markdown_table, ratio, summary, write_json  # noqa: E402

ensure_venv()

from batchspawner import JobStatus, SlurmSpawner  # noqa: E402

from uws_hub.spawners.slurm_poller import SlurmPoller, run_command  # noqa: E402

NAME_PREFIX = "uws-bench-poll-"


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="SLURM status polling on the local cluster: uws-hub's shared poller (one squeue per"
        " cycle) vs. batchspawner's squeue per job, and sbatch → RUNNING latency.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--counts", default="1,10,50,200", help="numbers of tracked jobs, comma-separated")
    p.add_argument("--rounds", type=int, default=5, help="measured cycles of each side per count (median)")
    p.add_argument("--latency-runs", type=int, default=10, help="jobs submitted for the submit → running part")
    p.add_argument("--probe-interval", type=float, default=0.05,
                   help="seconds between squeue calls of the direct RUNNING probe")
    p.add_argument("--timeout", type=float, default=120, help="seconds to wait for one job to run")
    p.add_argument("--skip-poll", action="store_true", help="only the submit → running part")
    p.add_argument("--skip-latency", action="store_true", help="only the poll-cycle part")
    p.add_argument("--json", default=None, metavar="PATH",
                   help="write results here (default: benchmarks/results/slurm_poll-<time>.json; '' for none)")
    args = p.parse_args(argv)
    try:
        args.counts = sorted({int(c) for c in args.counts.split(",") if c.strip()})
    except ValueError:
        p.error("--counts: comma-separated integers")
    if not args.counts or args.counts[0] < 1:
        p.error("--counts: at least one count, all >= 1")
    if args.rounds < 1 or args.latency_runs < 1:
        p.error("--rounds and --latency-runs must be >= 1")
    return args


# ---------------------------------------------------------------- jobs (synchronous: cleanup must work anywhere)
class Jobs:
    """The SLURM jobs of this run: all named alike, all cancelled by :meth:`cancel_all`."""

    def __init__(self):
        self.name = f"{NAME_PREFIX}{os.getpid()}-{int(time.time())}"
        self.ids: list[str] = []
        #: the sbatch running now, if any (a signal handler waits for it before cancelling)
        self.inflight: subprocess.Popen | None = None

    def sbatch(self, *args: str, script: str) -> str:
        """Submit a job as root (synchronous: a few ms; nothing else runs meanwhile)."""
        self.inflight = subprocess.Popen(
            ["sbatch", "--parsable", "--output=/dev/null", "--chdir=/tmp", f"--job-name={self.name}", *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
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
            subprocess.run(["scancel", *ids[i:i + 500]], capture_output=True, timeout=60)

    def cancel_all(self) -> None:
        """Cancel every job of this run: by id, and by the run's job name (a job whose
        ``sbatch`` was interrupted, or still ran when a signal came, has no id here)."""
        self.cancel(self.ids)
        for attempt in range(3):
            subprocess.run(["scancel", f"--name={self.name}"], capture_output=True, timeout=60)
            left = self.alive()
            if not left:
                break
            time.sleep(1)
        if left:
            log(f"WARNING: jobs of this run still queued or running: {' '.join(left)}")
        elif self.ids:
            log(f"cancelled all {len(self.ids)} SLURM jobs of this run ({self.name})")

    def alive(self) -> list[str]:
        r = subprocess.run(["squeue", "-h", "-n", self.name, "-t", "PENDING,RUNNING,SUSPENDED,CONFIGURING",
                            "-o", "%i"], capture_output=True, text=True, timeout=60)
        return r.stdout.split()


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

        async def uws_side():
            await poller.cycle()
            states = [poller.get(j) for j in jobs]
            if not all(s is not None and s.pending for s in states):
                raise RuntimeError(f"uws-hub poller: not every job pending: {states[:5]}")

        async def bs_side():
            # return_exceptions: never leave polls running (batchspawner's are not safe to cancel)
            polled = await asyncio.gather(*(sp.poll() for sp in spawners), return_exceptions=True)
            errors = [p for p in polled if isinstance(p, BaseException)]
            if errors:
                raise RuntimeError(f"batchspawner poll failed: {errors[0]!r}")
            bad = [(sp.job_id, sp.job_status) for sp, p in zip(spawners, polled)
                   if p is not None or not sp.state_ispending()]
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
        log(f"{n} jobs: uws-hub {med['uws']['calls']:.0f} subprocess(es), {med['uws']['wall'] * 1000:.1f} ms;"
            f" batchspawner {med['bs']['calls']:.0f}, {med['bs']['wall'] * 1000:.1f} ms")
        results.append({"jobs": n, "samples": samples, "median": med,
                        "wall_min": {side: min(s["wall"]) for side, s in samples.items()}})
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
    res = {"job_id": job_id, "sbatch": submitted, "squeue_running": running, "script_started": started,
           "uws_poller": uws_seen, "batchspawner": bs_seen}
    log(f"job {job_id}: sbatch {submitted * 1000:.0f} ms, RUNNING {running * 1000:.0f} ms, script"
        f" {started * 1000:.0f} ms, uws-hub {uws_seen * 1000:.0f} ms, batchspawner {bs_seen * 1000:.0f} ms")
    return res


# ---------------------------------------------------------------- report
def report(res: dict) -> str:
    ms = lambda s, d=1: fmt(s * 1000, d)  # noqa: E731
    lines = [f"SLURM on this machine ({res['slurm']}); {machine_line()}.", ""]
    if res.get("cycles"):
        rows = []
        for r in res["cycles"]:
            u, b = r["median"]["uws"], r["median"]["bs"]
            rows.append([
                str(r["jobs"]), fmt(u["calls"], 0), ms(u["wall"]), ms(u["cpu"]),
                fmt(b["calls"], 0), ms(b["wall"]), ms(b["cpu"]),
                fmt(ratio(u["calls"], b["calls"]), 3), fmt(ratio(u["wall"], b["wall"]), 3),
                fmt(ratio(u["cpu"], b["cpu"]), 3),
            ])
        lines += [
            f"## One poll cycle over N held jobs (median of {res['rounds']} rounds per side)",
            "",
            "uws-hub: `SlurmPoller.cycle()`, one `squeue -h -t all -j <all ids>`. Baseline: batchspawner 1.3's"
            " `SlurmSpawner.poll()` on N spawners at once, each `sh -c \"squeue -h -j <id> -o '%T %B'\"`"
            " (exec_prefix \"\"). Subprocesses: calls of asyncio's subprocess constructors, counted (each"
            " of batchspawner's is a /bin/sh that forks squeue). CPU: the commands' user+sys time (not"
            " slurmctld's). Ratios are uws-hub ÷ batchspawner: below 1, uws-hub does less.",
            "",
            markdown_table(
                ["jobs", "uws-hub subprocs", "uws-hub ms", "uws-hub CPU ms",
                 "batchspawner subprocs", "batchspawner ms", "batchspawner CPU ms",
                 "subprocs ratio", "wall ratio", "CPU ratio"],
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
            " two status-polling paths only (a server's own start comes on top of both). Both paths ask"
            " once right after `sbatch` (usually before SLURM starts the job), then at their interval:"
            f" {d['fast']:g} s for uws-hub's poller, {d['bs_startup']:g} s for batchspawner.",
            "",
            markdown_table(
                ["event", "p50 ms", "min ms", "max ms", "ratio"],
                [
                    row("`sbatch --parsable` returned", "sbatch"),
                    row(f"`squeue -j <id> -o %T` says RUNNING (polled every {res['probe_interval']:g} s)",
                        "squeue_running"),
                    row("the job's batch script started (its first line: `date`)", "script_started"),
                    row(f"uws-hub: `SlurmPoller.wait()` sees it running (defaults: {d['fast']:g} s while a"
                        f" start waits, {d['poll']:g} s otherwise)", "uws_poller", fmt(ratio(uws_p50, bs_p50), 2)),
                    row(f"baseline, batchspawner: `query_job_status()` says RUNNING (start loop, every"
                        f" {d['bs_startup']:g} s)", "batchspawner", "1.00"),
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
    res: dict = {"slurm": slurm_version(), "rounds": args.rounds, "probe_interval": args.probe_interval,
                 "counts": args.counts}
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
        defaults = SlurmPoller()
        res["poller_defaults"] = {
            "poll": defaults.poll_interval_seconds,
            "fast": defaults.fast_poll_interval_seconds,
            "bs_startup": SlurmSpawner.class_traits()["startup_poll_interval"].default_value,
        }
        res["latency"] = []
        with tempfile.TemporaryDirectory(prefix="uws-bench-slurm-") as tmp:
            for i in range(args.latency_runs):
                res["latency"].append(await measure_latency(jobs, i, args.probe_interval, args.timeout, Path(tmp)))
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
            jobs.wait_inflight()  # an sbatch interrupted here may still submit its job
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
    handler = on_signal(jobs)
    signal.signal(signal.SIGINT, handler)  # before asyncio.run, which then keeps it
    signal.signal(signal.SIGTERM, handler)
    try:
        res = asyncio.run(run(args, jobs))
    finally:
        jobs.cancel_all()
    print()
    print(report(res))
    out = write_json("slurm_poll", res, args.json)
    if out:
        log(f"results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
