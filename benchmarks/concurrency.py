"""200 concurrent launches of a lightweight job type, through the whole hub.

Starts uws-hub (single-account mode, SQLite, node configurable-http-proxy)
with the ``minimal`` job type (tests/minimal_server.py, so that 2 cores can
run hundreds of servers), creates N workspaces, then launches a job in every
one of them at once and measures, in the same run:

- launch latency (POST → the job's ``running`` event) for one launch alone
  (baseline) and for each of the N concurrent ones, and failures (must be 0);
- API latency (``GET /hub/api/workspaces?limit=50``) idle (baseline) and
  while the launches run;
- event delivery latency: from the event's ``created_at`` (the hub's clock,
  the same machine) to its arrival on an SSE subscriber;
- the hub process's memory (RSS) before, at its peak, and after the stops.

Then it stops every job and checks they all end ``completed``.

Profiling: with ``UWS_BENCH_PYSPY=<file>`` in the environment (and ``py-spy``
installed in the venv), ``py-spy record`` samples the hub from the launches'
POSTs until all run and writes its collapsed stacks there (as
``benchmarks/batch.py`` does; ``UWS_BENCH_PYSPY_RATE``: samples a second, e.g.
1000 for the ~1 s the POSTs take; ``UWS_BENCH_PYSPY_UNTIL=posts``: only until the
last POST has answered, to see what the loop does while the POSTs wait); such a
run's numbers are not to be compared with others. With ``--hub-realtime``,
py-spy runs under SCHED_RR too (otherwise, starved by the hub, it drops samples).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from _common import (
    ensure_venv,
    fmt,
    log,
    machine_line,
    markdown_table,
    process_cpu_seconds,
    profiler,
    ratio,
    rss_mb,
    stop_profiler,
    summary,
    write_json,
)

ensure_venv()

import httpx  # noqa: E402

from tests.hubutil import REPO, Hub  # noqa: E402

NICE = int(os.environ.get("UWS_BENCH_NICE", "10"))
MINIMAL = [sys.executable, str(REPO / "tests" / "minimal_server.py")]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=200, help="concurrent launches (default 200)")
    p.add_argument(
        "--concurrent-starts",
        type=int,
        default=None,
        help="c.JupyterHub.concurrent_spawn_limit: starts under way at once (default: the hub's)",
    )
    p.add_argument(
        "--max-loop-lag",
        type=float,
        default=None,
        help="c.UWSHub.job_start_max_loop_lag_seconds: new starts wait while the hub's loop is later"
        " than this (default: the hub's; 0: starts do not wait)",
    )
    p.add_argument(
        "--max-local-starts",
        type=int,
        default=None,
        help="c.UWSHub.max_local_starts: starts using the hub machine's CPU at once (default: the hub's; 0: no cap)",
    )
    p.add_argument(
        "--hub-nice",
        type=int,
        default=0,
        help="CPU priority of the hub and its proxy (e.g. -10 on a machine shared with other work,"
        " so that it disturbs the measure less; the jobs stay 10 below the hub)",
    )
    p.add_argument(
        "--hub-realtime",
        action="store_true",
        help="run the hub's and the proxy's main threads under SCHED_RR (reset on fork: jobs are"
        " not): on a machine busy with other work, the hub then gets the CPU it asks for, and the"
        " numbers show what the hub does with it",
    )
    p.add_argument("--api-requests", type=int, default=100, help="idle API requests for the baseline")
    p.add_argument("--json", default=None, help="write results here ('' for none; default benchmarks/results/)")
    return p.parse_args(argv)


class EventWatcher(threading.Thread):
    """An SSE subscriber: records when each job's events arrive and their delivery delay."""

    def __init__(self, hub: Hub, token: str):
        super().__init__(daemon=True)
        self.url = f"{hub.url}/hub/api/events"
        self.token = token
        self.arrivals: dict[tuple[int, str], float] = {}
        self.delays: list[float] = []
        self.ready = threading.Event()
        self.stop = False
        #: why the stream ended before the benchmark stopped reading (the hub cut it), if it did
        self.cut: str | None = None
        self.overflows = 0
        self.ids: list[int] = []

    def run(self):
        headers = {"Authorization": f"token {self.token}"}
        try:
            self._read(headers)
        except httpx.HTTPError as e:
            if not self.stop:
                self.cut = f"{type(e).__name__}: {e}"
        else:
            if not self.stop:
                self.cut = "the stream ended"

    def _read(self, headers):
        with httpx.stream("GET", self.url, headers=headers, timeout=None) as r:
            self.ready.set()
            for line in r.iter_lines():
                if self.stop:
                    return
                if line.startswith("event: overflow"):
                    self.overflows += 1
                if not line.startswith("data:"):
                    continue
                now = time.time()
                event = json.loads(line[5:])
                if event.get("id") is not None:
                    self.ids.append(event["id"])
                created = datetime.fromisoformat(event["created_at"].rstrip("Z")).replace(tzinfo=UTC)
                self.delays.append(now - created.timestamp())
                if event["kind"] == "job":
                    self.arrivals[(event["job_id"], event["status"])] = now


class RawClient:
    """HTTP/1.1 requests on asyncio streams, one connection each: what the timed requests
    use. httpx's pool, asked for 200 new connections at once, hands them out about ten a
    second: the launches' POSTs reached the hub over 17 s while its loop was idle, and the
    API requests queued behind them in the pool (a benchmark artefact, not the hub's)."""

    def __init__(self, url: str, token: str):
        host_port = url.split("://", 1)[1]
        self.host, port = host_port.rsplit(":", 1)
        self.port = int(port)
        self.token = token

    async def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            data = json.dumps(body).encode() if body is not None else b""
            head = (
                f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nAuthorization: token {self.token}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + data)
            await writer.drain()
            response = await reader.read()
        finally:
            writer.close()
        status_line, _, rest = response.partition(b"\r\n")
        status = int(status_line.split()[1])
        headers, _, payload = rest.partition(b"\r\n\r\n")
        if b"transfer-encoding: chunked" in headers.lower():
            payload = _unchunk(payload)
        if status >= 400:
            raise RuntimeError(f"{method} {path}: {status} {payload[:300]!r}")
        return status, payload


def _unchunk(data: bytes) -> bytes:
    out = b""
    while data:
        size, _, data = data.partition(b"\r\n")
        n = int(size.split(b";")[0], 16)
        if n == 0:
            break
        out, data = out + data[:n], data[n + 2 :]
    return out


async def api_latencies(client: RawClient, n: int, until: asyncio.Event | None = None) -> list[float]:
    out = []
    while (until is None and len(out) < n) or (until is not None and not until.is_set()):
        t = time.perf_counter()
        await client.request("GET", "/hub/api/workspaces?limit=50")
        out.append(time.perf_counter() - t)
        if until is not None:
            await asyncio.sleep(0.05)
    return out


async def loop_lag(client: httpx.AsyncClient) -> tuple[dict[float, float], float]:
    """The hub's loop-lag histogram at /hub/metrics ({bucket's upper bound: count}) and
    the reconciler's steps on jobs so far."""
    r = await client.get("/hub/metrics")
    r.raise_for_status()
    out, steps = {}, 0.0
    for line in r.text.splitlines():
        if line.startswith("uws_event_loop_lag_seconds_bucket"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            out[float(bound)] = float(line.rsplit(" ", 1)[1])
        elif line.startswith('uws_reconciler_steps_total{kind="job"}'):
            steps = float(line.rsplit(" ", 1)[1])
    return out, steps


def lag_delta(before: dict[float, float], after: dict[float, float]) -> dict:
    """Probes during the burst, and the bucket bounds their p50 and p99 fall under."""
    counts = {b: after[b] - before.get(b, 0) for b in sorted(after)}
    total = counts.get(float("inf"), 0)

    def under(q):
        return next((b for b, c in counts.items() if total and c >= q * total), float("nan"))

    return {"probes": total, "p50_le": under(0.5), "p99_le": under(0.99), "max_le": under(1.0)}


def missing_ids(ids: list[int]) -> int:
    """Stored events the stream skipped: gaps between the first and last id it got, or repeats."""
    if not ids:
        return 0
    return (ids[-1] - ids[0] + 1) - len(set(ids)) + (len(ids) - len(set(ids)))


async def run(args) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="uws-bench-concurrency-"))
    root = workdir / "workspaces"
    root.mkdir()
    config = (
        f"c.UWSHub.workspaces_root = {str(root)!r}\n"
        "c.UWSHub.system_users = False\n" + f"c.WorkspaceLocalProcessSpawner.nice_level = {NICE}\n"
        f"c.UWSHub.job_types = {{'minimal': {{'cmd': {MINIMAL!r}}}}}\n"
        "c.JupyterHub.cleanup_servers = True\n"
        f"c.JupyterHub.log_level = {os.environ.get('UWS_BENCH_LOG_LEVEL', 'WARN')!r}\n"
        # the loop-lag probe's histogram, read without a token
        "c.JupyterHub.authenticate_prometheus = False\n"
    )
    if args.concurrent_starts:
        # otherwise JupyterHub's default (100 starts at once) applies: the rest wait, pending
        config += f"c.JupyterHub.concurrent_spawn_limit = {args.concurrent_starts}\n"
    if args.max_local_starts is not None:
        config += f"c.UWSHub.max_local_starts = {args.max_local_starts}\n"
    if args.max_loop_lag is not None:
        config += f"c.UWSHub.job_start_max_loop_lag_seconds = {args.max_loop_lag}\n"
    hub = Hub(workdir, config, f"sqlite:///{workdir}/jupyterhub.sqlite")
    hub.start()
    try:
        # the hub and the proxy it started (its children now; jobs come later and stay 10 below it)
        children = Path(f"/proc/{hub.proc.pid}/task/{hub.proc.pid}/children").read_text().split()
        for pid in [hub.proc.pid, *map(int, children)]:
            if args.hub_nice:
                os.setpriority(os.PRIO_PROCESS, pid, args.hub_nice)
            if args.hub_realtime:
                os.sched_setscheduler(pid, os.SCHED_RR | os.SCHED_RESET_ON_FORK, os.sched_param(1))
        token = hub.add_user("bench")
        watcher = EventWatcher(hub, token)
        watcher.start()
        watcher.ready.wait(10)
        headers = {"Authorization": f"token {token}"}
        limits = httpx.Limits(max_connections=args.jobs + 10)
        async with httpx.AsyncClient(base_url=hub.url, headers=headers, timeout=120, limits=limits) as client:
            log(f"creating {args.jobs + 1} workspaces")
            wss = []
            for i in range(args.jobs + 1):
                r = await client.post("/hub/api/workspaces", json={"name": f"c{i} {uuid.uuid4().hex[:6]}"})
                r.raise_for_status()
                wss.append(r.json())
            rss_before = rss_mb(hub.proc.pid)
            raw = RawClient(hub.url, token)
            idle_api = await api_latencies(raw, args.api_requests)

            async def launch(ws) -> tuple[int, float, float]:
                t0 = time.time()
                _, body = await raw.request("POST", f"/hub/api/workspaces/{ws['id']}/jobs", {"job_type": "minimal"})
                return json.loads(body)["id"], t0, time.time() - t0

            async def wait_all(job_ids, status="running", timeout=600.0) -> None:
                deadline = time.time() + timeout
                while time.time() < deadline:
                    if all((j, status) in watcher.arrivals or (j, "failed") in watcher.arrivals for j in job_ids):
                        return
                    await asyncio.sleep(0.1)
                raise TimeoutError(f"jobs did not reach {status}")

            # baseline: one launch alone
            job_id, t0, _ = await launch(wss[0])
            await wait_all([job_id])
            single = watcher.arrivals[(job_id, "running")] - t0
            await client.post(f"/hub/api/jobs/{job_id}/stop")
            await wait_all([job_id], "completed")

            log(f"launching {args.jobs} jobs at once")
            done = asyncio.Event()
            peak = [rss_mb(hub.proc.pid)]

            async def sample_memory():
                while not done.is_set():
                    peak.append(rss_mb(hub.proc.pid))
                    await asyncio.sleep(0.5)

            lag_before, steps_before = await loop_lag(client)
            spy = profiler(hub.proc.pid)
            if spy is not None and args.hub_realtime:
                os.sched_setscheduler(spy.pid, os.SCHED_RR, os.sched_param(1))
            cpu_before = process_cpu_seconds(hub.proc.pid)
            busy_api_task = asyncio.ensure_future(api_latencies(raw, 0, until=done))
            mem_task = asyncio.ensure_future(sample_memory())
            started = time.time()
            launched = await asyncio.gather(*(launch(ws) for ws in wss[1:]))
            if os.environ.get("UWS_BENCH_PYSPY_UNTIL") == "posts":
                stop_profiler(spy)
                spy = None
            job_ids = [j for j, _, _ in launched]
            await wait_all(job_ids)
            wall = time.time() - started
            done.set()
            cpu_burst = process_cpu_seconds(hub.proc.pid) - cpu_before
            stop_profiler(spy)
            lag_after, steps_after = await loop_lag(client)
            lag_during = lag_delta(lag_before, lag_after)
            busy_api = await busy_api_task
            await mem_task
            failed = [j for j in job_ids if (j, "failed") in watcher.arrivals]
            latencies = [
                watcher.arrivals[(j, "running")] - t0 for j, t0, _ in launched if (j, "running") in watcher.arrivals
            ]
            post_latencies = [p for _, _, p in launched]

            log("stopping them")
            await asyncio.gather(*(client.post(f"/hub/api/jobs/{j}/stop") for j in job_ids))
            await wait_all(job_ids, "completed")
            completed = sum(1 for j in job_ids if (j, "completed") in watcher.arrivals)
            rss_after = rss_mb(hub.proc.pid)
        watcher.stop = True
        return {
            "jobs": args.jobs,
            "failed": len(failed),
            "completed_after_stop": completed,
            "wall_seconds": wall,
            "single_launch": single,
            "launch": summary(latencies),
            "post": summary(post_latencies),
            "api_idle": summary(idle_api),
            "api_busy": summary(busy_api),
            "event_delay": summary(watcher.delays),
            "events": len(watcher.delays),
            "stream_cut": watcher.cut,
            "overflows": watcher.overflows,
            # every stored event the stream delivered, none twice, none skipped (ids of
            # other users' events are not seen: one user here)
            "events_missing": missing_ids(watcher.ids),
            "loop_lag": lag_during,
            "hub_cpu_seconds": cpu_burst,
            "hub_nice": args.hub_nice,
            "hub_realtime": args.hub_realtime,
            "reconciler_job_steps": steps_after - steps_before,
            "rss_mb": {"before": rss_before, "peak": max(peak), "after": rss_after},
        }
    finally:
        hub.stop()


def report(res: dict) -> str:
    ms = lambda s: fmt(s * 1000)  # noqa: E731
    lines = [
        f"# {res['jobs']} concurrent launches of a minimal server ({machine_line()};"
        f" hub at nice {res['hub_nice']}{', SCHED_RR' if res['hub_realtime'] else ''}, jobs 10 below it)",
        "",
        f"Failures: **{res['failed']}**; completed after stop: {res['completed_after_stop']}/{res['jobs']};"
        f" all running after {fmt(res['wall_seconds'])} s.",
        "",
        f"Event stream: {'cut by the hub (' + res['stream_cut'] + ')' if res['stream_cut'] else 'never cut'};"
        f" {res['overflows']} overflow messages; {res['events_missing']} stored events missing or repeated.",
        f"Hub CPU time from the POSTs until all ran: {fmt(res['hub_cpu_seconds'])} s"
        f" ({fmt(res['hub_cpu_seconds'] * 1000 / res['jobs'])} ms a launch, the API and event requests"
        f" included); the reconciler's steps on jobs: {int(res['reconciler_job_steps'])}.",
        f"Hub event loop lag during the burst ({int(res['loop_lag']['probes'])} probes):"
        f" p50 ≤ {fmt(res['loop_lag']['p50_le'] * 1000)} ms, p99 ≤ {fmt(res['loop_lag']['p99_le'] * 1000)} ms,"
        f" max ≤ {fmt(res['loop_lag']['max_le'] * 1000)} ms (histogram bucket bounds).",
        "",
        markdown_table(
            ["measure", "p50 ms", "p99 ms", "max ms", "p50 vs baseline"],
            [
                ["one launch alone, POST → running event (baseline)", ms(res["single_launch"]), "", "", "1.0"],
                [
                    f"{res['jobs']} launches at once, POST → running event",
                    ms(res["launch"]["p50"]),
                    ms(res["launch"]["p99"]),
                    ms(res["launch"]["max"]),
                    fmt(ratio(res["launch"]["p50"], res["single_launch"])),
                ],
                [
                    "POST /jobs response time (under load)",
                    ms(res["post"]["p50"]),
                    ms(res["post"]["p99"]),
                    ms(res["post"]["max"]),
                    "",
                ],
                [
                    "GET /hub/api/workspaces?limit=50, idle (baseline)",
                    ms(res["api_idle"]["p50"]),
                    ms(res["api_idle"]["p99"]),
                    ms(res["api_idle"]["max"]),
                    "1.0",
                ],
                [
                    "GET /hub/api/workspaces?limit=50, during the launches",
                    ms(res["api_busy"]["p50"]),
                    ms(res["api_busy"]["p99"]),
                    ms(res["api_busy"]["max"]),
                    fmt(ratio(res["api_busy"]["p50"], res["api_idle"]["p50"])),
                ],
                [
                    f"event delivery, created → received ({res['events']} events)",
                    ms(res["event_delay"]["p50"]),
                    ms(res["event_delay"]["p99"]),
                    ms(res["event_delay"]["max"]),
                    "",
                ],
            ],
        ),
        "",
        markdown_table(
            ["hub RSS", "before", "peak", "after stop"],
            [["MiB", fmt(res["rss_mb"]["before"]), fmt(res["rss_mb"]["peak"]), fmt(res["rss_mb"]["after"])]],
        ),
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    res = asyncio.run(run(args))
    print(report(res))
    write_json("concurrency", res, args.json)
    return 1 if res["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
