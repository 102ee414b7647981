#!/usr/bin/env python3
"""Scale: one uws-hub on PostgreSQL with 10,000 workspaces, 1,000 SLURM jobs
held in the queue and 50 running minimal servers, then 2,000 and 5,000 jobs.

A real uws-hub (PostgreSQL started as ``tests/pgutil.py`` does, node CHP,
``system_users``, SLURM jobs as a real system user: the local cluster of
``scripts/slurm-up.sh``, as root) with:

- ``--workspaces`` workspaces at the first step (default 10,000): those that
  get a job are created through the API (a workspace per job), the rest
  inserted straight into the database (idle, no directory; the usage loop is
  off); each later step adds the workspaces of its new jobs;
- ``--running`` minimal servers (``tests/minimal_server.py``, default 50)
  running as local jobs;
- held SLURM jobs (``#SBATCH --hold``: queued, never running) launched through
  the API, ``--held`` of them at each step (default 1000; e.g.
  ``--held 1000,2000,5000``).

At each step, for ``--seconds`` (default 30): sequential API requests
round-robin over the main list and get endpoints (and JupyterHub's ``GET
/hub/api/user`` as the baseline), p50/p99; the shared SLURM poller's cycles
(from ``/hub/metrics``) and the ``squeue`` calls (counted by a wrapper script,
``c.SlurmPoller.squeue_cmd``): one per cycle whatever the number of jobs;
the cycle's wall time; the hub's CPU (share of one core) and RSS; its event
loop's lag (``uws_event_loop_lag_seconds``). Every SLURM job of the run is
cancelled at the end (by name prefix), the hub and PostgreSQL stopped.

Usage::

    .venv/bin/python benchmarks/scale.py                       # 1,000 held jobs
    .venv/bin/python benchmarks/scale.py --held 1000,2000,5000 # what breaks first

Prints markdown tables; writes JSON to benchmarks/results/ unless ``--json ''``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    ensure_venv,
    fmt,
    log,
    machine_info,
    machine_line,
    markdown_table,
    process_cpu_seconds,
    rss_mb,
    summary,
    write_json,
)

ensure_venv()

import httpx  # noqa: E402

from tests.hubutil import REPO, Hub  # noqa: E402
from tests.pgutil import PostgresServer  # noqa: E402

MINIMAL = [sys.executable, str(REPO / "tests" / "minimal_server.py")]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--workspaces", type=int, default=10_000, help="workspaces in all at the first step (default 10,000)"
    )
    p.add_argument("--held", default="1000", help="held SLURM jobs at each step, comma-separated (default 1000)")
    p.add_argument("--running", type=int, default=50, help="running minimal servers, local (default 50)")
    p.add_argument("--seconds", type=float, default=30, help="seconds of measurement at each step (default 30)")
    p.add_argument(
        "--hub-user",
        default="uwsbench",
        help="system account of the jobs (created if missing); not one the tests use, whose checks"
        " of a user's processes would see this run's servers",
    )
    p.add_argument(
        "--step-timeout",
        type=float,
        default=None,
        help="seconds a step's jobs may take to be queued in SLURM (default 60 + half a second a job);"
        " a step past it is reported with how far it got, and the run ends there",
    )
    p.add_argument("--json", default=None, help="write results here ('' for none; default benchmarks/results/)")
    return p.parse_args(argv)


def metrics(client: httpx.Client) -> dict[str, float]:
    out = {}
    for line in client.get("/hub/metrics").text.splitlines():
        if line.startswith(("uws_slurm_poll_duration_seconds_", "uws_event_loop_lag_seconds_")):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def lag_le(before: dict, after: dict, q: float) -> float:
    """The loop-lag histogram's bucket bound under which a fraction ``q`` of the step's probes fell."""
    prefix = 'uws_event_loop_lag_seconds_bucket{le="'
    buckets = sorted((float(k[len(prefix) : -2]), after[k] - before.get(k, 0)) for k in after if k.startswith(prefix))
    total = buckets[-1][1] if buckets else 0
    return next((b for b, c in buckets if total and c >= q * total), float("nan"))


def insert_workspaces(db_url: str, owner: str, root: Path, n: int) -> float:
    """n idle workspaces of ``owner`` straight into the database (no directories)."""
    from jupyterhub import orm as hub_orm
    from sqlalchemy import create_engine, insert, select
    from sqlalchemy.orm import Session

    from uws_hub.orm import Workspace, utcnow

    t0 = time.monotonic()
    engine = create_engine(db_url)
    with Session(engine) as db:
        owner_id = db.scalar(select(hub_orm.User.id).where(hub_orm.User.name == owner))
        now = utcnow()
        db.execute(
            insert(Workspace),
            [
                {
                    "owner_id": owner_id,
                    "slug": f"bulk-{i:05d}",
                    "name": f"Bulk workspace {i}",
                    "description": "inserted by benchmarks/scale.py",
                    "status": "idle",
                    "directory": str(root / owner / f"bulk-{i:05d}"),
                    "disk_usage_bytes": 4096,
                    "usage_measured_at": now,
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(n)
            ],
        )
        db.commit()
    engine.dispose()
    return time.monotonic() - t0


async def launch_many(client: httpx.AsyncClient, n: int, resource: str, parallel: int = 16) -> list[int]:
    """n workspaces, each with a minimal job on ``resource``; returns the job ids."""
    sem = asyncio.Semaphore(parallel)

    async def one(i: int) -> int:
        async with sem:
            r = await client.post("/hub/api/workspaces", json={"name": f"{resource} {i} {uuid.uuid4().hex[:6]}"})
            r.raise_for_status()
            r = await client.post(
                f"/hub/api/workspaces/{r.json()['id']}/jobs", json={"job_type": "minimal", "resource": resource}
            )
            r.raise_for_status()
            return r.json()["id"]

    return list(await asyncio.gather(*(one(i) for i in range(n))))


def count(client: httpx.Client, status: str) -> int:
    r = client.get(f"/hub/api/jobs?status={status}&limit=1")
    r.raise_for_status()
    return r.json()["_pagination"]["total"]


def wait_count(client: httpx.Client, status: str, n: int, timeout: float) -> float:
    t0 = time.monotonic()
    while (have := count(client, status)) < n:
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"{have} of {n} jobs {status} after {timeout:g} s")
        time.sleep(1)
    return time.monotonic() - t0


def measure(hub: Hub, client: httpx.Client, token: str, squeue_log: Path, seconds: float, ids: dict) -> dict:
    """One step's numbers: API latency, poll cycles and squeue calls, hub CPU, RSS, loop lag."""
    endpoints = [
        ("GET /hub/api/user (JupyterHub, baseline)", "/hub/api/user"),
        ("GET /hub/api/workspaces?limit=50", "/hub/api/workspaces?limit=50"),
        ("GET /hub/api/workspaces (default limit)", "/hub/api/workspaces"),
        # the pages' default order: last used first
        ("GET /hub/api/workspaces?limit=50&sort=last_used", "/hub/api/workspaces?limit=50&sort=last_used"),
        ("GET /hub/api/workspaces/{id}", f"/hub/api/workspaces/{ids['workspace']}"),
        ("GET /hub/api/jobs?limit=50", "/hub/api/jobs?limit=50"),
        ("GET /hub/api/jobs?status=queued&limit=50", "/hub/api/jobs?status=queued&limit=50"),
        ("GET /hub/api/jobs/{id} (a held job)", f"/hub/api/jobs/{ids['held_job']}"),
    ]
    times: dict[str, list[float]] = {label: [] for label, _ in endpoints}
    pid = hub.proc.pid
    # the hub's own background work (SLURM polls, JupyterHub's, the jobs' watchers), no requests
    cpu0, t0 = process_cpu_seconds(pid), time.monotonic()
    time.sleep(min(10.0, seconds))
    idle_cpu = (process_cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
    m0, calls0, cpu0, t0 = (
        metrics(client),
        len(squeue_log.read_text().splitlines()),
        process_cpu_seconds(pid),
        time.monotonic(),
    )
    rss = [rss_mb(pid)]
    while time.monotonic() - t0 < seconds:
        for label, path in endpoints:
            s = time.perf_counter()
            r = client.get(path)
            times[label].append(time.perf_counter() - s)
            r.raise_for_status()
        rss.append(rss_mb(pid))
    elapsed = time.monotonic() - t0
    m1, calls1, cpu1 = metrics(client), len(squeue_log.read_text().splitlines()), process_cpu_seconds(pid)
    cycles = m1.get("uws_slurm_poll_duration_seconds_count", 0) - m0.get("uws_slurm_poll_duration_seconds_count", 0)
    cycle_s = m1.get("uws_slurm_poll_duration_seconds_sum", 0) - m0.get("uws_slurm_poll_duration_seconds_sum", 0)
    return {
        "api": {label: summary(v) for label, v in times.items()},
        "poll_cycles": cycles,
        "squeue_calls": calls1 - calls0,
        "cycle_seconds_mean": cycle_s / cycles if cycles else float("nan"),
        "hub_cpu_share": (cpu1 - cpu0) / elapsed,
        "hub_idle_cpu_share": idle_cpu,
        "rss_mb": max(rss),
        "loop_lag_p50_le": lag_le(m0, m1, 0.5),
        "loop_lag_p99_le": lag_le(m0, m1, 0.99),
    }


def end_local_servers(uid: int) -> int:
    """SIGTERM every minimal server running as the run's own account (the hub leaves its
    servers running at its stop: ``cleanup_servers`` is off, or it would scancel thousands
    of held jobs one by one)."""
    ended = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid or b"minimal_server.py" not in Path(entry.path, "cmdline").read_bytes():
                continue
            os.kill(int(entry.name), signal.SIGTERM)
            ended += 1
        except (OSError, ProcessLookupError):
            continue
    return ended


def cancel_prefixed(prefix: str) -> int:
    """scancel every job of this run (its names start with ``prefix``), in batches."""
    out = subprocess.run(["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True, timeout=120).stdout
    ids = [
        line.split()[0] for line in out.splitlines() if len(line.split()) == 2 and line.split()[1].startswith(prefix)
    ]
    for i in range(0, len(ids), 500):
        subprocess.run(["scancel", *ids[i : i + 500]], capture_output=True, timeout=120)
    return len(ids)


def run(args) -> dict:
    from slurm_poll import ensure_system_user

    steps = [int(x) for x in args.held.split(",")]
    account = ensure_system_user(args.hub_user)
    workdir = Path(tempfile.mkdtemp(prefix="uws-bench-scale-"))
    workdir.chmod(0o755)
    root = workdir / "workspaces"
    root.mkdir()
    prefix = f"uwsbench{uuid.uuid4().hex[:6]}-"
    squeue_log = workdir / "squeue-calls.log"
    squeue_log.touch()
    squeue_log.chmod(0o666)
    wrapper = workdir / "squeue-counted"
    wrapper.write_text(f'#!/bin/sh\necho "$$" >> {squeue_log}\nexec squeue "$@"\n')
    wrapper.chmod(0o755)
    (workdir / "pg").mkdir()
    pg = PostgresServer(workdir / "pg")
    results: dict = {"machine": machine_info(), "args": vars(args), "steps": []}
    pg.start()
    hub = None
    try:
        db_url = pg.create_database("uws_scale")
        config = f"""
c.UWSHub.workspaces_root = {str(root)!r}
c.UWSHub.system_users = True
c.UWSHub.resource_spawners = {{"local": "uws-local", "slurm": "uws-slurm"}}
c.UWSHub.job_types = {{"minimal": {{"cmd": {MINIMAL!r}, "resources": ["slurm", "local"]}}}}
c.WorkspaceSlurmSpawner.job_name_prefix = {prefix!r}
# queued for ever: the jobs wait in SLURM's queue, held
c.WorkspaceSlurmSpawner.req_options = "--hold"
c.SlurmPoller.squeue_cmd = [{str(wrapper)!r}]
# held jobs are starts under way: no limit on them
c.JupyterHub.concurrent_spawn_limit = 0
c.UWSHub.job_queued_timeout = 0
# the inserted workspaces have no directories: do not measure them
c.UWSHub.workspace_usage_interval = 0
c.JupyterHub.authenticate_prometheus = False
c.JupyterHub.cleanup_servers = False
"""
        hub = Hub(workdir / "hub", config, db_url)
        log(f"starting uws-hub on PostgreSQL in {workdir}")
        hub.start(timeout=120)
        token = hub.add_user(account.pw_name)
        headers = {"Authorization": f"token {token}"}
        client = httpx.Client(base_url=hub.url, headers=headers, timeout=300)
        aclient = httpx.AsyncClient(
            base_url=hub.url, headers=headers, timeout=300, limits=httpx.Limits(max_connections=32)
        )
        # --workspaces in all at the first step (each later step adds its jobs' workspaces)
        n_insert = max(0, args.workspaces - args.running - steps[0])
        log(f"inserting {n_insert} idle workspaces")
        results["insert_s"] = insert_workspaces(db_url, account.pw_name, root, n_insert)
        log(f"launching {args.running} minimal servers (local)")
        t0 = time.monotonic()
        asyncio.run(launch_many(aclient, args.running, "local"))
        wait_count(client, "running", args.running, 600)
        results["running_launch_s"] = time.monotonic() - t0
        held = 0
        for step in steps:
            log(f"launching {step - held} held SLURM jobs (up to {step})")
            t0 = time.monotonic()
            aclient = httpx.AsyncClient(
                base_url=hub.url, headers=headers, timeout=300, limits=httpx.Limits(max_connections=32)
            )
            job_ids = asyncio.run(launch_many(aclient, step - held, "slurm"))
            held = step
            launched = time.monotonic() - t0
            try:
                queued_after = wait_count(client, "queued", step, args.step_timeout or 60 + step * 0.5)
            except TimeoutError as e:
                # what breaks first: the step's numbers as far as it got, then the run ends
                log(f"  {e}; measuring what it is at")
                results["broke_at"] = {
                    "held": step,
                    "queued": count(client, "queued"),
                    "pending": count(client, "pending"),
                    "after_s": time.monotonic() - t0,
                }
                queued_after = float("nan")
            log(f"  {step} queued in SLURM after {launched + queued_after:.0f} s; measuring {args.seconds:g} s")
            job = client.get(f"/hub/api/jobs/{job_ids[0]}").json()
            numbers = measure(
                hub, client, token, squeue_log, args.seconds, {"workspace": job["workspace_id"], "held_job": job_ids[0]}
            )
            numbers.update(
                held=step,
                launch_s=launched + queued_after,
                failed=count(client, "failed"),
                queued=count(client, "queued"),
                workspaces=client.get("/hub/api/workspaces?limit=1").json()["_pagination"]["total"],
            )
            results["steps"].append(numbers)
            log(
                f"  cycles {numbers['poll_cycles']:.0f}, squeue calls {numbers['squeue_calls']},"
                f" hub CPU {numbers['hub_cpu_share']:.0%}, RSS {numbers['rss_mb']:.0f} MiB"
            )
            if "broke_at" in results:
                break
        errors = [line for line in hub.log_text().splitlines() if line.startswith(("[E ", "[C "))]
        results["hub_errors"] = errors[:20]
        # JupyterHub's warning of a loop that did not answer for a second or more
        results["loop_stalls"] = hub.log_text().count("Event loop was unresponsive")
    finally:
        if hub is not None:
            hub.stop(timeout=120)
        log(
            f"cancelled {cancel_prefixed(prefix)} SLURM jobs of this run,"
            f" ended {end_local_servers(account.pw_uid)} local servers"
        )
        pg.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return results


def report(res: dict) -> str:
    ms = lambda s: fmt(s * 1000)  # noqa: E731
    out = [f"# uws-hub at scale on PostgreSQL ({machine_line()})", ""]
    rows = []
    for step in res["steps"]:
        queued = step.get("queued", step["held"])
        rows.append(
            [
                f"{step['held']:,}" + (f" ({queued:,} queued)" if queued < step["held"] else ""),
                f"{step['workspaces']:,}",
                fmt(step["poll_cycles"], 0),
                str(step["squeue_calls"]),
                ms(step["cycle_seconds_mean"]),
                f"{step['hub_idle_cpu_share']:.0%} / {step['hub_cpu_share']:.0%}",
                fmt(step["rss_mb"], 0),
                f"≤ {ms(step['loop_lag_p50_le'])} / ≤ {ms(step['loop_lag_p99_le'])}",
                fmt(step["launch_s"], 0),
                str(step.get("failed", "?")),
            ]
        )
    out.append(
        markdown_table(
            [
                "held SLURM jobs",
                "workspaces",
                "poll cycles",
                "squeue calls",
                "cycle ms (mean)",
                "hub CPU idle / under requests",
                "hub RSS MiB",
                "loop lag p50 / p99 ms",
                "launch + sbatch s",
                "jobs failed",
            ],
            rows,
        )
    )
    for step in res["steps"]:
        out += [
            "",
            f"API with {step['held']:,} held jobs, {res['args']['running']} running servers"
            f" (sequential, {res['args']['seconds']:g} s):",
            "",
        ]
        base = step["api"]["GET /hub/api/user (JupyterHub, baseline)"]["p50"]
        out.append(
            markdown_table(
                ["endpoint", "n", "p50 ms", "p99 ms", "p50 / whoami"],
                [
                    [label, str(s["n"]), ms(s["p50"]), ms(s["p99"]), fmt(s["p50"] / base, 2)]
                    for label, s in step["api"].items()
                ],
            )
        )
    broke = res.get("broke_at")
    if broke:
        out.append(
            f"\nThe step of {broke['held']:,} jobs did not get there: {broke['queued']:,} queued in SLURM,"
            f" {broke['pending']:,} still pending after {broke['after_s']:.0f} s (measured as it was)."
        )
    out.append(
        f"\nHub log: {len(res.get('hub_errors', []))} error lines, {res.get('loop_stalls', 0)} event loop"
        " stalls of a second or more (JupyterHub's warning, the whole run)."
    )
    out += [f"    {line[:200]}" for line in res.get("hub_errors", [])[:5]]
    return "\n".join(out)


def main(argv=None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("scale.py runs SLURM jobs as a system user and PostgreSQL as postgres: run it as root")
    res = run(args)
    print(report(res))
    path = write_json("scale", res, args.json)
    if path:
        print(f"\nJSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
