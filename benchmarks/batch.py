#!/usr/bin/env python3
"""Batch jobs: a burst of short jobs through a real uws-hub against the same commands run
by hand, locally and on SLURM, and the API's latency during the burst.

Part 1, local. A uws-hub (as ``tests/hubutil.py`` runs one: SQLite, node CHP,
single-account mode) with one batch job type whose command is ``true`` and
``c.UWSHub.max_running_batch_jobs`` = ``--width`` (8). ``--jobs`` (500) launches
are POSTed at once (``--posters`` threads, 16) to one workspace; the wall
time runs from the first POST to the last job's ``finished_at`` (the hub's
own record; every job must end ``completed``). Baseline: the same number of
``true`` commands run by hand by a pool of ``--width`` threads, each
``subprocess.run(["true"])``. Per-job overhead: the difference of the two wall
times, times the width, over the number of jobs (the slot time each job
costs beyond its command).

Part 2, SLURM (``scripts/slurm-up.sh up``, as root; ``--skip-slurm`` skips
it). The same hub with a resource ``slurm`` (``uws-slurm``), the SLURM poller
every ``--poll-interval`` s; ``--slurm-jobs`` (200) ``true`` jobs launched at
once; wall time from the first POST to the last ``finished_at``. Baseline: the
same number of jobs submitted by hand with ``sbatch`` (the same script shape:
``exec true``, the same ``--mem`` and ``--cpus-per-task``, ``--width``
submitting threads), then polled with one ``squeue -h -t all -j <all ids>``
every ``--poll-interval`` s, as the hub's poller does, until all ended; wall
time from the first ``sbatch`` to the poll that saw the last end.

CPU: the hub process's own CPU time during the burst (from ``/proc/<pid>/stat``),
and that of its children (locally the job wrappers and their commands, and the
resident launcher that forks the wrappers, counted while it lives;
``sbatch``, ``squeue`` and ``sacct`` on SLURM), per job; locally, against the
CPU time of the by-hand commands. On a machine of C cores, (hub + children)
CPU ÷ C is the least wall time the burst can take there, whatever the waits:
the floor the hub's ratio is measured against.

``--quota-core-hours H``: the hub has ``c.UWSHub.quota_core_hours = H`` (none by
default), so that every launch and every start checks the user's core-hours.

In both parts a prober thread GETs ``/hub/api/workspaces`` and
``/hub/api/jobs?workspace=<id>&status=running`` in turn every ``--probe-interval``
s from the first POST until every job ended: their p50 and p99 are the API's
latency during the burst (and, measured before the burst, at rest).

Profiling: with ``UWS_BENCH_PYSPY=<file>`` in the environment (and ``py-spy``
installed in the venv), ``py-spy record`` samples the hub during the local
burst (not the warm-up) and writes its collapsed stacks (``--format raw``) to
``<file>`` (``UWS_BENCH_PYSPY_ARGS``: more of its options, e.g. ``--gil``); the sampling costs the hub some CPU, so such a run's numbers are not
to be compared with others.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    ensure_venv,
    fmt,
    log,
    machine_info,
    machine_line,
    markdown_table,
    profiler,
    ratio,
    stop_profiler,
    summary,
    write_json,
)

ensure_venv()

import requests  # noqa: E402

from tests.hubutil import Hub  # noqa: E402

SLURM_UP = Path(__file__).resolve().parent.parent / "scripts" / "slurm-up.sh"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=500, help="local jobs (default 500)")
    p.add_argument("--width", type=int, default=8, help="max_running_batch_jobs, and the by-hand pool's width")
    p.add_argument("--slurm-jobs", type=int, default=200, help="SLURM jobs (default 200)")
    p.add_argument("--poll-interval", type=float, default=1.0, help="SLURM poll interval, hub and by hand (s)")
    p.add_argument("--posters", type=int, default=16, help="threads POSTing the launches")
    p.add_argument("--probe-interval", type=float, default=0.1, help="seconds between API probes")
    p.add_argument("--timeout", type=float, default=1800, help="longest wait for a burst to end (s)")
    p.add_argument(
        "--quota-core-hours",
        type=float,
        default=None,
        help="c.UWSHub.quota_core_hours (default: none): every start then checks the user's core-hours",
    )
    p.add_argument("--skip-local", action="store_true")
    p.add_argument("--skip-slurm", action="store_true")
    p.add_argument("--json", default=None, help="where to write the results ('' for nowhere)")
    return p.parse_args(argv)


HUB_CONFIG = """
c.UWSHub.system_users = False
c.UWSHub.workspaces_root = {root!r}
c.UWSHub.max_running_batch_jobs = {width}
# over the default 1,000 a user may have unfinished: a burst of more is measured too (the
# limit is checked at each launch all the same)
c.UWSHub.max_unfinished_batch_jobs_per_user = 100000
c.UWSHub.resource_spawners = {resources!r}
c.SlurmPoller.poll_interval_seconds = {poll}
c.WorkspaceSlurmSpawner.job_name_prefix = {prefix!r}
c.UWSHub.job_types = {{
    "true": {{"interactive": False, "cmd": ["true"], "resources": {job_resources!r},
              "default_resources": {{"cpus": 1, "memory": "16M"}}}},
}}
"""


def _stat_cpu(pid: int) -> tuple[float, float]:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, (int(fields[13]) + int(fields[14])) / tick


def launchers(pid: int) -> list[int]:
    """The hub's living batch job launchers (``wrapper.py --launcher``, its children)."""
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                children = [int(c) for c in f.read().split()]
        except OSError:
            continue
        for child in children:
            try:
                with open(f"/proc/{child}/cmdline", "rb") as f:
                    if b"--launcher" in f.read().split(b"\0"):
                        found.append(child)
            except OSError:
                pass
    return found


def cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU time of process ``pid`` so far: its own, and its waited-for children's (s),
    these with the CPU of its living batch job launchers (their own, and that of the job
    wrappers they forked and waited for), not yet the hub's waited-for children's."""
    own, children = _stat_cpu(pid)
    for launcher in launchers(pid):
        try:
            children += sum(_stat_cpu(launcher))
        except OSError:
            pass
    return own, children


def hub_time(value: str) -> float:
    """A timestamp of the hub's API (UTC) as seconds since the epoch."""
    return datetime.fromisoformat(value.rstrip("Z")).replace(tzinfo=UTC).timestamp()


class Prober:
    """GETs two list endpoints in turn until stopped; keeps each request's latency."""

    def __init__(self, hub: Hub, token: str, workspace_id: int, interval: float):
        self.urls = [f"{hub.url}/hub/api/workspaces", f"{hub.url}/hub/api/jobs?workspace={workspace_id}&status=running"]
        self.headers = {"Authorization": f"token {token}"}
        self.interval = interval
        self.latencies: list[float] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with requests.Session() as s:
            n = 0
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    r = s.get(self.urls[n % 2], headers=self.headers, timeout=60)
                    if r.status_code != 200:
                        self.errors += 1
                except requests.RequestException:
                    self.errors += 1
                self.latencies.append(time.perf_counter() - started)
                n += 1
                self._stop.wait(self.interval)

    def start(self) -> Prober:
        self._thread.start()
        return self

    def stop(self) -> list[float]:
        self._stop.set()
        self._thread.join()
        return self.latencies


def probe_at_rest(hub: Hub, token: str, workspace_id: int, count: int = 40) -> list[float]:
    prober = Prober(hub, token, workspace_id, 0.02).start()
    while len(prober.latencies) < count:
        time.sleep(0.05)
    return prober.stop()


def burst(
    hub: Hub,
    token: str,
    resource: str,
    count: int,
    posters: int,
    probe_interval: float,
    timeout: float,
    profile: bool = False,
) -> dict:
    """Launch ``count`` jobs at once; wait for all to end; the timings."""
    ws = hub.api("POST", "workspaces", token, json={"name": f"burst {uuid.uuid4().hex[:6]}"}, expect=201)
    rest = probe_at_rest(hub, token, ws["id"])
    body = {"job_type": "true", "resource": resource}
    post_latencies: list[float] = []
    failures: list[str] = []

    def post(_):
        with requests.Session() as s:
            started = time.perf_counter()
            r = s.post(
                f"{hub.url}/hub/api/workspaces/{ws['id']}/jobs",
                json=body,
                headers={"Authorization": f"token {token}"},
                timeout=120,
            )
            post_latencies.append(time.perf_counter() - started)
            if r.status_code != 202:
                failures.append(f"{r.status_code} {r.text[:200]}")

    prober = Prober(hub, token, ws["id"], probe_interval).start()
    assert hub.proc is not None
    spy = profiler(hub.proc.pid) if profile else None
    cpu0 = cpu_seconds(hub.proc.pid)
    t0 = time.time()
    with ThreadPoolExecutor(posters) as pool:
        list(pool.map(post, range(count)))
    posted = time.time() - t0
    if failures:
        prober.stop()
        raise SystemExit(f"{len(failures)} launches failed, e.g. {failures[0]}")
    deadline = time.monotonic() + timeout
    while True:
        page = hub.api("GET", f"jobs?workspace={ws['id']}&status=pending,queued,running,stopping&limit=1", token)
        if page["_pagination"]["total"] == 0:
            break
        if time.monotonic() > deadline:
            prober.stop()
            raise SystemExit(f"{page['_pagination']['total']} jobs still unfinished after {timeout:g} s")
        time.sleep(0.2)
    cpu1 = cpu_seconds(hub.proc.pid)
    probes = prober.stop()
    stop_profiler(spy)
    jobs = []
    offset = 0
    while True:
        page = hub.api("GET", f"jobs?workspace={ws['id']}&offset={offset}&limit=200", token)
        jobs += page["items"]
        offset += 200
        if offset >= page["_pagination"]["total"]:
            break
    statuses = {j["status"] for j in jobs}
    if statuses != {"completed"}:
        bad = next(j for j in jobs if j["status"] != "completed")
        raise SystemExit(f"not every job completed: {statuses}; e.g. job {bad['id']}: {bad['reason']}")
    last = max(hub_time(j["finished_at"]) for j in jobs)
    queue_waits = [hub_time(j["submitted_at"]) - hub_time(j["created_at"]) for j in jobs]
    runs = [hub_time(j["finished_at"]) - hub_time(j["running_at"]) for j in jobs]
    return {
        "jobs": len(jobs),
        "wall": last - t0,
        "posting": posted,
        "post": summary(post_latencies),
        "probe": summary(probes),
        "probe_errors": prober.errors,
        "rest": summary(rest),
        "run": summary(runs),
        "queue_wait": summary(queue_waits),
        "hub_cpu": cpu1[0] - cpu0[0],
        "children_cpu": cpu1[1] - cpu0[1],
    }


def start_hub(
    width: int,
    resources: dict,
    job_resources: list[str],
    poll: float,
    prefix: str,
    quota_core_hours: float | None = None,
) -> tuple[Hub, str]:
    workdir = Path(tempfile.mkdtemp(prefix="uws-bench-batch-"))
    root = Path(tempfile.mkdtemp(prefix="uws-bench-batch-ws-"))
    root.chmod(0o755)
    config = HUB_CONFIG.format(
        root=str(root), width=width, resources=resources, job_resources=job_resources, poll=poll, prefix=prefix
    )
    if quota_core_hours is not None:
        config += f"c.UWSHub.quota_core_hours = {quota_core_hours!r}\n"
    hub = Hub(workdir, config, f"sqlite:///{workdir}/jupyterhub.sqlite")
    log(f"starting uws-hub ({hub.url})")
    hub.start()
    return hub, hub.add_user("bench")


# ---------------------------------------------------------------- local
def by_hand_local(count: int, width: int) -> tuple[float, float]:
    """Wall time, and CPU time of the commands and of this process meanwhile (s)."""
    before = os.times()
    started = time.time()
    with ThreadPoolExecutor(width) as pool:
        list(pool.map(lambda _: subprocess.run(["true"], check=True), range(count)))
    wall = time.time() - started
    after = os.times()
    cpu = sum(after[:4]) - sum(before[:4])
    return wall, cpu


def measure_local(args) -> dict:
    res: dict = {}
    log(f"by hand: {args.jobs} × true, {args.width} at a time")
    by_hand_local(min(args.jobs, 50), args.width)  # warm-up
    res["by_hand"], res["by_hand_cpu"] = by_hand_local(args.jobs, args.width)
    hub, token = start_hub(
        args.width, {"local": "uws-local"}, ["local"], args.poll_interval, "uws-bench-", args.quota_core_hours
    )
    try:
        log("warm-up: 20 jobs through the hub")
        burst(hub, token, "local", 20, args.posters, args.probe_interval, args.timeout)
        log(f"the hub: {args.jobs} jobs at once, max_running_batch_jobs={args.width}")
        res["hub"] = burst(
            hub, token, "local", args.jobs, args.posters, args.probe_interval, args.timeout, profile=True
        )
    except BaseException:
        log(f"the hub's log, last lines:\n{hub.log_tail(40)}")
        raise
    finally:
        hub.stop()
    return res


# ---------------------------------------------------------------- SLURM
def by_hand_slurm(count: int, width: int, poll: float, outdir: Path, name: str, timeout: float) -> float:
    script = (
        "#!/bin/bash\n#SBATCH --mem=16M\n#SBATCH --cpus-per-task=1\n"
        f"#SBATCH --job-name={name}\n#SBATCH --output={outdir}/job-%j.log\nexec true\n"
    )

    def submit(_):
        r = subprocess.run(["sbatch", "--parsable"], input=script, capture_output=True, text=True, check=True)
        return r.stdout.strip().split(";")[0]

    started = time.time()
    with ThreadPoolExecutor(width) as pool:
        ids = list(pool.map(submit, range(count)))
    deadline = time.monotonic() + timeout
    ended = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}
    while True:
        out = subprocess.run(
            ["squeue", "-h", "-t", "all", "-j", ",".join(ids), "-o", "%i|%T"], capture_output=True, text=True
        ).stdout
        states = dict(line.split("|", 1) for line in out.split())
        if len(states) == len(ids) and all(s in ended for s in states.values()):
            return time.time() - started
        if time.monotonic() > deadline:
            raise SystemExit(f"by-hand SLURM jobs still running after {timeout:g} s")
        time.sleep(poll)


def measure_slurm(args) -> dict:
    r = subprocess.run(["bash", str(SLURM_UP), "up"], capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise SystemExit(f"scripts/slurm-up.sh up failed:\n{r.stderr[-2000:]}")
    res: dict = {}
    name = f"uws-bench-batch-{os.getpid()}"
    outdir = Path(tempfile.mkdtemp(prefix="uws-bench-sbatch-"))
    try:
        log(f"by hand: {args.slurm_jobs} × sbatch of `exec true`, polled every {args.poll_interval:g} s")
        res["by_hand"] = by_hand_slurm(args.slurm_jobs, args.width, args.poll_interval, outdir, name, args.timeout)
        hub, token = start_hub(
            args.width, {"local": "uws-local", "slurm": "uws-slurm"}, ["slurm"], args.poll_interval, f"{name}-hub-"
        )
        try:
            log(f"the hub: {args.slurm_jobs} SLURM jobs at once")
            res["hub"] = burst(hub, token, "slurm", args.slurm_jobs, args.posters, args.probe_interval, args.timeout)
        except BaseException:
            log(f"the hub's log, last lines:\n{hub.log_tail(40)}")
            raise
        finally:
            hub.stop()
    finally:
        subprocess.run(["scancel", "-n", name], capture_output=True)
        subprocess.run(["scancel", "-n", f"{name}-hub-job"], capture_output=True)
    return res


# ---------------------------------------------------------------- report
def report(res: dict, args) -> str:
    ms = lambda s: fmt(s * 1000, 0)  # noqa: E731
    lines = [machine_line(), ""]
    rows = []
    api = []
    cpu = []
    cores = len(os.sched_getaffinity(0))
    for part, label, width in (("local", "local", args.width), ("slurm", "SLURM", args.width)):
        r = res.get(part)
        if not r:
            continue
        hub, hand = r["hub"], r["by_hand"]
        overhead = (hub["wall"] - hand) * (width if part == "local" else 1) / hub["jobs"]
        rows.append(
            [
                label,
                str(hub["jobs"]),
                fmt(hub["wall"], 1),
                fmt(hand, 1),
                fmt(ratio(hub["wall"], hand), 2),
                ms(overhead),
                fmt(hub["posting"], 1),
                ms(hub["run"]["p50"]),
                ms(hub["queue_wait"]["p50"]),
            ]
        )
        hand_cpu = r.get("by_hand_cpu")
        cpu.append(
            [
                label,
                str(hub["jobs"]),
                ms(hub["hub_cpu"] / hub["jobs"]),
                ms(hub["children_cpu"] / hub["jobs"]),
                ms(hand_cpu / hub["jobs"]) if hand_cpu is not None else "",
                fmt((hub["hub_cpu"] + hub["children_cpu"]) / cores, 1) if part == "local" else "",
                fmt(hub["wall"], 1),
            ]
        )
        api.append(
            [
                label,
                ms(hub["rest"]["p50"]),
                ms(hub["rest"]["p99"]),
                ms(hub["probe"]["p50"]),
                ms(hub["probe"]["p99"]),
                str(hub["probe"]["n"]),
                str(hub["probe_errors"]),
                ms(hub["post"]["p50"]),
                ms(hub["post"]["p99"]),
            ]
        )
    lines += [
        "## A burst of `true` jobs: all launched at once, until all are completed",
        "",
        f"local: max_running_batch_jobs = {args.width} against a pool of {args.width} threads running `true`;"
        f" SLURM: against `sbatch` by hand ({args.width} submitting threads), polled with one `squeue` every"
        f" {args.poll_interval:g} s, as the hub's poller. Overhead per job: (hub − by hand) × width ÷ jobs locally"
        " (slot time), (hub − by hand) ÷ jobs on SLURM.",
        "",
        markdown_table(
            [
                "where",
                "jobs",
                "hub s",
                "by hand s",
                "ratio",
                "overhead/job ms",
                "POSTing s",
                "run p50 ms",
                "queue wait p50 ms",
            ],
            rows,
        ),
        "",
        "## CPU time per job during the burst",
        "",
        "The hub's own, its children's (locally: the job wrappers and their `true`; on SLURM:"
        " `sbatch`, `squeue`, `sacct`, not SLURM's daemons), and the by-hand commands' (locally)."
        f" The floor (locally): (hub + children) CPU ÷ {cores} cores, the least wall time the burst"
        " can take on this machine.",
        "",
        markdown_table(
            ["where", "jobs", "hub CPU ms/job", "children CPU ms/job", "by hand CPU ms/job", "floor s", "hub s"], cpu
        ),
        "",
        "## The API during the burst (`GET /hub/api/workspaces` and `GET /hub/api/jobs?status=running`, in turn)",
        "",
        markdown_table(
            [
                "where",
                "at rest p50 ms",
                "at rest p99 ms",
                "burst p50 ms",
                "burst p99 ms",
                "probes",
                "errors",
                "POST p50 ms",
                "POST p99 ms",
            ],
            api,
        ),
    ]
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    res: dict = {"machine": machine_info(), "args": vars(args)}
    if not args.skip_local:
        res["local"] = measure_local(args)
    if not args.skip_slurm:
        res["slurm"] = measure_slurm(args)
    print(report(res, args))
    out = write_json("batch", res, args.json)
    if out:
        log(f"results in {out}")


if __name__ == "__main__":
    main()
