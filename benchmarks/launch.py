#!/usr/bin/env python3
"""Benchmark: how long a JupyterLab job takes to answer through the hub, and
how fast ``GET /hub/api/workspaces`` is with 10,000 workspaces.

Part 1, launch latency. A real uws-hub (single-account mode, node
configurable-http-proxy, SQLite, started as in ``tests/hubutil.py``) with one
user and a token. N times: ``POST /hub/api/workspaces/{id}/jobs
{"job_type": "jupyterlab"}``, then wait until ``GET
/user/<name>/<slug>/api/status`` answers 200 through the proxy with the user's
token; then stop the job and wait for it to be ``completed``. Baseline,
interleaved run by run: the same JupyterLab server started by hand
(``jupyter-lab`` from the same venv, same root directory, at the priority the hub gives
its jobs, its session's too: see ``nice_level``) and polled directly
until ``/api/status`` answers. The ratio is the hub's overhead (spawn
bookkeeping, the single-user server's hub handshake, JupyterHub's wait for the
server, the proxy route).

How the client waits (``--wait``): ``events`` (the default) as the job's page
and the HuBMAP portal do: it reads the hub's event stream (``GET
/hub/api/events``, subscribed before the POST), and on the job's ``running``
event GETs ``/api/status`` through the proxy (again every few ms while not
200: a too-early event shows up as extra time and is counted); the server by
hand is polled every few ms, its best case. ``poll``: both are polled every
``--poll-interval`` (50 ms), which puts both on that grid (a fast server's
ratio is then the ratio of poll counts). ``both``: the two alternate, one table
each.

Part 2, list latency. The hub is stopped, N workspaces (default 10,000, one
finished job each) are inserted straight into its SQLite database with the
uws_hub.orm models, as many users are inserted into JupyterHub's tables with
the default 'user' role (or created through JupyterHub's REST API with
``--users-via-api``: minutes), and the hub is started again. Then sequential requests (default 200 each,
round-robin so that noise hits every endpoint alike) to
``GET /hub/api/workspaces`` (default limit, ``?limit=50``, a
deep page, and as the admin service), with JupyterHub's own ``GET
/hub/api/users`` (same number of rows) and ``GET /hub/api/user`` as baselines.

Usage::

    .venv/bin/python benchmarks/launch.py               # defaults: a few minutes
    .venv/bin/python benchmarks/launch.py --runs 10 --workspaces 10000 --requests 500
    .venv/bin/python benchmarks/launch.py --skip-list   # launch latency only
    .venv/bin/python benchmarks/launch.py --skip-list --job-type minimal --wait both --runs 9

Prints markdown tables; writes JSON to benchmarks/results/ unless ``--json ''``.
The numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    Proc,
    ensure_venv,
    free_port,
    jupyter_server_argv,
    log,
    machine_info,
    machine_line,
    markdown_table,
    process_cpu_seconds,
    ratio,
    summary,
    write_json,
)

ensure_venv()

import requests  # noqa: E402

from tests.helpers import SSEReader  # noqa: E402
from tests.hubutil import Hub, hub_env  # noqa: E402
from uws_hub import serverconfig  # noqa: E402
from uws_hub.spawners.wrapper import set_session_nice  # noqa: E402

USER = "bench"
MINIMAL_SERVER = Path(__file__).resolve().parent.parent / "tests" / "minimal_server.py"


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="uws-hub launch latency (hub vs. the same server by hand) and"
        " workspace-list latency with many workspaces (vs. JupyterHub's own /hub/api/users).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--runs", type=int, default=5, help="launches through the hub (and as many by hand)")
    p.add_argument(
        "--wait",
        choices=("events", "poll", "both"),
        default="events",
        help="how the client learns that the job is ready. events: as the job's page and the"
        " HuBMAP portal do, it watches GET /hub/api/events (subscribed before the POST), opens"
        " /api/status through the proxy once on the job's 'running' event (retried every"
        " --retry-interval while not 200, the retries counted), and the server by hand is polled"
        " every --hand-poll-interval (its best case). poll: hub and hand both poll /api/status"
        " every --poll-interval, which quantizes both to that grid. both: the two alternate"
        " run by run, one table each",
    )
    p.add_argument(
        "--poll-interval",
        type=float,
        default=0.05,
        help="--wait poll: seconds between readiness polls, the same for hub and baseline",
    )
    p.add_argument(
        "--hand-poll-interval",
        type=float,
        default=0.003,
        help="--wait events: seconds between polls of the server by hand (a refused connect costs ~nothing)",
    )
    p.add_argument(
        "--retry-interval",
        type=float,
        default=0.003,
        help="--wait events: seconds between the client's GETs of /api/status after the running"
        " event while they are not 200",
    )
    p.add_argument(
        "--job-type",
        choices=("jupyterlab", "minimal"),
        default="jupyterlab",
        help="the server to launch: JupyterLab (jupyterhub-singleuser; by hand jupyter-lab) or the"
        " minimal server of the tests (tests/minimal_server.py, the same script by hand)",
    )
    p.add_argument(
        "--server-cpus",
        type=int,
        default=0,
        help="CPUs each launch through the hub asks for (resources.cpus; 0: none, the default):"
        " a server with limits starts through the job wrapper (python -I -S wrapper.py --exec),"
        " which applies them and execs the server. The server by hand runs on as many (taskset)",
    )
    p.add_argument(
        "--nice",
        type=int,
        default=10,
        help="CPU priority of the jobs (c.WorkspaceLocalProcessSpawner.nice_level, the hub's default 10)"
        " and of the server by hand: the same for both, so that other work on the machine slows both alike",
    )
    p.add_argument("--launch-timeout", type=float, default=120, help="seconds to wait for one server")
    p.add_argument("--workspaces", type=int, default=10_000, help="workspaces in the database for the list part")
    p.add_argument(
        "--users",
        type=int,
        default=None,
        help="extra users for the /hub/api/users baseline (default: as many as --workspaces)",
    )
    p.add_argument(
        "--users-via-api",
        action="store_true",
        help="create the extra users through JupyterHub's REST API (minutes) instead of inserting them",
    )
    p.add_argument("--requests", type=int, default=200, help="sequential requests per list endpoint")
    p.add_argument("--skip-launch", action="store_true", help="only the list part")
    p.add_argument("--skip-list", action="store_true", help="only the launch part")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (hub logs, database)")
    p.add_argument(
        "--json",
        default=None,
        metavar="PATH",
        help="write results here (default: benchmarks/results/launch-<time>.json; '' for none)",
    )
    return p.parse_args(argv)


# ---------------------------------------------------------------- helpers
def poll_until_ok(
    session: requests.Session,
    url: str,
    token: str,
    timeout: float,
    interval: float,
    alive=lambda: True,
    alive_every: int = 1,
) -> tuple[float, int]:
    """Poll ``url`` until it answers 200; returns (monotonic time of the 200, number of polls).

    ``alive()`` (is the server still starting?) is asked every ``alive_every`` polls."""
    deadline = time.monotonic() + timeout
    polls = 0
    headers = {"Authorization": f"token {token}"}
    while time.monotonic() < deadline:
        polls += 1
        try:
            r = session.get(url, headers=headers, timeout=10, allow_redirects=False)
            if r.status_code == 200:
                return time.monotonic(), polls
        except requests.RequestException:
            pass
        if polls % alive_every == 0 and not alive():
            raise RuntimeError(f"gave up on {url}: the server is gone")
        time.sleep(interval)
    raise TimeoutError(f"{url} did not answer 200 within {timeout}s")


_LOG_TIME = re.compile(r"^\[\w (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)")


def log_time(lines: list[str], needle: str) -> float | None:
    """Wall-clock time of the first log line (JupyterHub/Jupyter Server format) containing ``needle``."""
    from datetime import datetime

    for line in lines:
        if needle in line:
            m = _LOG_TIME.match(line)
            if m:
                return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
    return None


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return []


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a


def hub_breakdown(hub: Hub, job_id: int, wall0: float) -> dict:
    """Where a hub launch's time goes, from the hub's log and the job's own output, on the
    wall clock of the POST (``wall0``): the POST → the process started (the hub logs the
    job ``-> queued`` once Popen returned) → the server listening (it logs 'is running
    at') → the job running (the hub noticed it and added the route)."""
    hub_lines = hub.log_text().splitlines()
    job_lines = [line for line in hub_lines if f"Job {job_id} (" in line]
    # the transition's target: "): queued -> running" also contains "): queued"
    queued = log_time(job_lines, "-> queued")
    running = log_time(job_lines, "-> running")
    listening = log_time(_read_lines(hub.workdir / "uws-job-logs" / f"job-{job_id}.log"), "is running at")
    return {
        "post_to_started_s": _diff(wall0, queued),
        "start_to_listening_s": _diff(queued, listening),
        "listening_to_running_s": _diff(listening, running),
        "running_wall": running,
    }


class JobEvents(SSEReader):
    """The hub's event stream (``GET /hub/api/events``) of one workspace, read in a thread as
    the job's page reads it; each job event is kept with the monotonic time it arrived."""

    def __init__(self, hub: Hub, token: str, workspace_id: int):
        self.arrived: list[tuple[float, dict]] = []
        self.changed = threading.Condition()
        super().__init__(hub, token, f"?workspace={workspace_id}")

    def _read(self) -> None:
        try:
            # chunk_size=None: each chunk as it arrives (the default waits for 512 bytes)
            for line in self.response.iter_lines(chunk_size=None, decode_unicode=True):
                if line.startswith("data:"):
                    event = json.loads(line[5:])
                    if event.get("kind") == "job":
                        with self.changed:
                            self.arrived.append((time.monotonic(), event))
                            self.changed.notify_all()
        except (requests.RequestException, AttributeError, ValueError):
            pass

    def wait_status(self, job_id: int, statuses: set[str], timeout: float) -> tuple[float, dict]:
        """(arrival time, event) of the job's first event with one of ``statuses``."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for t, event in self.arrived:
                    if event["job_id"] == job_id and event["status"] in statuses:
                        return t, event
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"job {job_id}: no {sorted(statuses)} event within {timeout}s")
                self.changed.wait(left)


def hub_launch(hub: Hub, session: requests.Session, token: str, ws: dict, args, wait: str = "poll") -> dict:
    """One launch through the hub: POST the job, wait for it (``wait``: its running event on
    the event stream, subscribed before the POST as an open job page is, then a GET through
    the proxy; or polls through the proxy), stop, wait for completed."""
    # the hub subscribes a stream before it answers its headers: nothing falls between
    events = JobEvents(hub, token, ws["id"]) if wait == "events" else None
    try:
        return _hub_launch(hub, session, token, ws, args, events)
    finally:
        if events is not None:
            events.close()


def _hub_launch(hub: Hub, session: requests.Session, token: str, ws: dict, args, events: JobEvents | None) -> dict:
    cpu0 = process_cpu_seconds(hub.proc.pid)
    wall0 = time.time()
    t0 = time.monotonic()
    body: dict = {"job_type": args.job_type}
    if args.server_cpus:
        body["resources"] = {"cpus": args.server_cpus}
    r = hub.request("POST", f"workspaces/{ws['id']}/jobs", token, json=body)
    if r.status_code != 202:
        raise RuntimeError(f"launch refused: {r.status_code} {r.text}")
    t_accepted = time.monotonic()
    job = r.json()
    url = f"{hub.url}/user/{USER}/{ws['slug']}/api/status"

    def job_alive():
        status = hub.api("GET", f"jobs/{job['id']}", token)["status"]
        return status not in ("failed", "cancelled", "completed")

    t_event = None
    retries = None
    if events is not None:
        t_event, event = events.wait_status(
            job["id"], {"running", "failed", "cancelled", "completed"}, args.launch_timeout
        )
        if event["status"] != "running":
            raise RuntimeError(f"job {job['id']} went {event['status']}: {event.get('reason')}")
        # again every few ms while not 200: an event before the route works shows as time and a count
        t_ready, polls = poll_until_ok(session, url, token, args.launch_timeout, args.retry_interval)
        retries = polls - 1
    else:
        # the job's status is checked about once a second, not at every poll: keep the hub's load down
        t_ready, polls = poll_until_ok(
            session,
            url,
            token,
            args.launch_timeout,
            args.poll_interval,
            job_alive,
            alive_every=max(1, round(1 / args.poll_interval)),
        )
    wall_ready = wall0 + (t_ready - t0)
    running = hub.api("GET", f"jobs/{job['id']}", token)
    t1 = time.monotonic()
    r = hub.request("POST", f"jobs/{job['id']}/stop", token)
    t_stop_answered = time.monotonic()
    if r.status_code >= 400:
        raise RuntimeError(f"stop refused: {r.status_code} {r.text}")
    # polled every 10 ms (hub.wait_job polls every 0.25 s, the launch every 50 ms: a stop of
    # ~40 ms would be measured to the client's next poll, up to one interval late); a poll
    # costs the hub ~2 ms, and a stop takes few of them
    while True:
        final = hub.api("GET", f"jobs/{job['id']}", token)
        if final["status"] in ("completed", "failed", "cancelled") or time.monotonic() - t1 > 60:
            break
        time.sleep(min(args.poll_interval, STOP_POLL_INTERVAL))
    t_stopped = time.monotonic()
    cpu1 = process_cpu_seconds(hub.proc.pid)
    if final["status"] != "completed":
        raise RuntimeError(f"job {job['id']} ended {final['status']}: {final.get('reason')}")
    # the job's end as its page learns it: the event stream (read all along, in a thread),
    # not on the grid of the polls above
    t_completed = None if events is None else events.wait_status(job["id"], {"completed"}, args.launch_timeout)[0]
    return {
        "job_id": job["id"],
        "ready_s": t_ready - t0,
        "accepted_s": t_accepted - t0,
        "status_at_ready": running["status"],
        "hub_created_to_running_s": _seconds_between(running.get("created_at"), running.get("running_at")),
        "stop_s": t_stopped - t1,
        "stop_answered_s": t_stop_answered - t1,
        "stop_event_s": None if t_completed is None else t_completed - t1,
        "hub_stopping_to_finished_s": _seconds_between(final.get("stopping_at"), final.get("finished_at")),
        "hub_cpu_s": cpu1 - cpu0,
        "polls": polls,
        "event_s": None if t_event is None else t_event - t0,
        "event_to_ok_s": None if t_event is None else t_ready - t_event,
        "retries": retries,
        **(phases := hub_breakdown(hub, job["id"], wall0)),
        "running_to_event_s": None if t_event is None else _diff(phases["running_wall"], wall0 + (t_event - t0)),
        "running_to_ok_s": _diff(phases.pop("running_wall"), wall_ready),
    }


#: seconds between the client's polls of a job being stopped
STOP_POLL_INTERVAL = 0.01


def _seconds_between(a: str | None, b: str | None) -> float | None:
    from datetime import datetime

    if not a or not b:
        return None
    parse = lambda s: datetime.fromisoformat(s.rstrip("Z"))  # noqa: E731
    return (parse(b) - parse(a)).total_seconds()


#: the servers started by hand: (job type, baseline) -> what runs and how it is stopped
BASELINES = {
    # JupyterLab as a user runs it; SIGINT would make it ask for confirmation, SIGTERM stops it
    "jupyter-lab": "jupyter-lab, polled directly",
    # the hub's JupyterLab command by hand, with the environment a job gets (its own hub
    # API handshake and auth against the running hub): the hub's overhead proper
    "singleuser": "jupyterhub-singleuser, polled directly",
    "minimal": "tests/minimal_server.py, polled directly",
}


def baselines(job_type: str) -> list[str]:
    return ["jupyter-lab", "singleuser"] if job_type == "jupyterlab" else ["minimal"]


def manual_launch(
    kind: str,
    hub: Hub,
    token: str,
    directory: Path,
    home: Path,
    logdir: Path,
    session: requests.Session,
    n: int | str,
    args,
    interval: float,
) -> dict:
    """A baseline: the same server started by hand, polled directly, stopped with the
    signal the hub's spawner sends (SIGTERM, to the server's process; jupyter-lab by hand:
    to its process group)."""
    port = free_port()
    env = hub_env({"HOME": str(home)})
    for var in [k for k in env if k.startswith("JUPYTERHUB_")]:
        env.pop(var)
    status_url = f"http://127.0.0.1:{port}/api/status"
    if kind == "minimal":
        server = [sys.executable, str(MINIMAL_SERVER)]
        env["JUPYTERHUB_SERVICE_URL"] = f"http://127.0.0.1:{port}/"
    elif kind == "singleuser":
        # what a job's environment holds (uws_hub.serverconfig first on JUPYTER_CONFIG_PATH),
        # for a server "manual" of the benchmark's user, whose token it polls with
        prefix = f"/user/{USER}/manual-{n}/"
        env.update(
            {
                "JUPYTERHUB_API_URL": f"http://127.0.0.1:{hub.hub_port}/hub/api",
                "JUPYTERHUB_ACTIVITY_URL": f"http://127.0.0.1:{hub.hub_port}/hub/api/users/{USER}/activity",
                "JUPYTERHUB_API_TOKEN": token,
                "JUPYTERHUB_CLIENT_ID": f"jupyterhub-user-{USER}-manual-{n}",
                "JUPYTERHUB_USER": USER,
                "JUPYTERHUB_SERVER_NAME": f"manual-{n}",
                "JUPYTERHUB_BASE_URL": "/",
                "JUPYTERHUB_SERVICE_PREFIX": prefix,
                "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{port}{prefix}",
                "JUPYTERHUB_OAUTH_CALLBACK_URL": f"{prefix}oauth_callback",
                "JUPYTERHUB_OAUTH_ACCESS_SCOPES": json.dumps([f"access:servers!user={USER}"]),
                "JUPYTERHUB_DEFAULT_URL": "/lab",
                "JUPYTER_CONFIG_PATH": serverconfig.CONFIG_DIR,
            }
        )
        server = [str(Path(sys.executable).parent / "jupyterhub-singleuser"), "--allow-root"]
        status_url = f"http://127.0.0.1:{port}{prefix}api/status"
    else:
        server = jupyter_server_argv(port, token, directory)
    t0 = time.monotonic()
    wall0 = time.time()
    # at the priority the hub gives its jobs (nice execs the server: same pid)
    argv = ["nice", "-n", str(args.nice), *server]
    if args.server_cpus:
        # on as many CPUs as the hub's server gets (the hub pins it to the least used ones)
        argv = ["taskset", "-c", f"0-{args.server_cpus - 1}", *argv]
    proc = Proc(f"{kind}-{n}", argv, logdir / f"manual-{kind}-{n}.log", env=env, cwd=directory)
    # and its session too, as the hub lowers its jobs' (nice_level): where the kernel schedules
    # each session as one group (autogroup), a process's nice counts only within its session,
    # and a server by hand at its session's default priority got more of a busy machine
    set_session_nice(args.nice, proc.pid)
    try:
        t_ready, polls = poll_until_ok(session, status_url, token, args.launch_timeout, interval, proc.alive)
    except Exception:
        log(f"manual server failed; its output:\n{proc.tail()}")
        raise
    finally:
        t1 = time.monotonic()
        # as the hub's spawner: SIGTERM to the server's process (jupyter-lab by hand: to its group)
        proc.stop(sig=signal.SIGTERM, group=kind == "jupyter-lab")
    listening = log_time(_read_lines(proc.log_path), "is running at")
    return {
        "ready_s": t_ready - t0,
        "stop_s": time.monotonic() - t1,
        "polls": polls,
        "start_to_listening_s": _diff(wall0, listening),
        "listening_to_ok_s": _diff(listening, wall0 + (t_ready - t0)),
    }


def hub_errors(hub: Hub) -> list[str]:
    """Lines of the hub log at ERROR/CRITICAL level (and tracebacks' first lines)."""
    out = []
    for line in hub.log_text().splitlines():
        if "Received signal SIGTERM" in line:  # our own stop
            continue
        if line.startswith("[E ") or line.startswith("[C ") or "Traceback" in line:
            out.append(line[:300])
    return out


def hub_warnings(hub: Hub) -> list[str]:
    return [line[:300] for line in hub.log_text().splitlines() if line.startswith("[W ")]


# ---------------------------------------------------------------- part 1
def bench_launch(hub: Hub, token: str, ws: dict, ws_dir: Path, workdir: Path, args) -> dict:
    session = requests.Session()  # keep-alive for the polls, as a browser would
    direct = requests.Session()
    home = workdir / "manual-home"
    home.mkdir(exist_ok=True)
    kinds = baselines(args.job_type)
    modes = ["events", "poll"] if args.wait == "both" else [args.wait]
    hand_interval = {"events": args.hand_poll_interval, "poll": args.poll_interval}

    def one_round(mode: str, n: int) -> tuple[dict, dict[str, dict]]:
        h = hub_launch(hub, session, token, ws, args, mode)
        tag = n if len(modes) == 1 else f"{mode}-{n}"  # one log per server by hand
        return h, {
            kind: manual_launch(kind, hub, token, ws_dir, home, workdir, direct, tag, args, hand_interval[mode])
            for kind in kinds
        }

    # one warm-up of each, not counted (first imports, disk caches)
    log("warm-up launch through the hub and by hand (not counted)")
    for mode in modes:
        one_round(mode, 0)
    res = {
        mode: {
            "hub": [],
            "manual": {kind: [] for kind in kinds},
            "nice": args.nice,
            "job_type": args.job_type,
            "wait": mode,
        }
        for mode in modes
    }
    for i in range(1, args.runs + 1):
        for mode in modes if i % 2 else modes[::-1]:  # alternate which mode goes first
            h, manual = one_round(mode, i)
            res[mode]["hub"].append(h)
            line = f"run {i}/{args.runs} ({mode}): hub {h['ready_s']:.3f}s (stop {h['stop_s']:.2f}s)"
            if h["retries"]:
                line += f", {h['retries']} GETs not 200 after the running event"
            for kind, m in manual.items():
                res[mode]["manual"][kind].append(m)
                line += f", {kind} by hand {m['ready_s']:.3f}s (stop {m['stop_s']:.2f}s)"
            log(line)
    return res


def launch_table(res: dict) -> str:
    def col(runs, key):
        return summary([r[key] for r in runs if r.get(key) is not None])

    hub = res["hub"]
    kinds = list(res["manual"])
    base = res["manual"][kinds[0]]
    man_ready, man_listen, man_stop = col(base, "ready_s"), col(base, "start_to_listening_s"), col(base, "stop_s")
    events = res.get("wait") == "events"
    rows = []
    for kind in kinds:
        m = res["manual"][kind]
        rows.append((f"by hand: {BASELINES[kind]} → /api/status 200", col(m, "ready_s"), man_ready))
    rows += [
        ("hub: POST jobs → /user/…/api/status 200 via proxy", col(hub, "ready_s"), man_ready),
        ("hub: job created_at → running_at (hub's own timestamps)", col(hub, "hub_created_to_running_s"), man_ready),
    ]
    if events:
        rows += [
            ("hub: POST jobs → the job's 'running' event at the client", col(hub, "event_s"), man_ready),
            (
                "hub: 'running' event → /api/status 200 via proxy (first GET and its retries)",
                col(hub, "event_to_ok_s"),
                None,
            ),
        ]
    for kind in kinds:
        m = res["manual"][kind]
        rows.append(
            (
                f"  by hand, {kind}: process started → server logs 'is running at'",
                col(m, "start_to_listening_s"),
                man_listen,
            )
        )
        rows.append((f"  by hand, {kind}: 'is running at' → /api/status 200", col(m, "listening_to_ok_s"), None))
    rows += [
        (
            "  hub: POST → process started (job recorded, JupyterHub's spawn, Popen)",
            col(hub, "post_to_started_s"),
            None,
        ),
        ("  hub: process started → server logs 'is running at'", col(hub, "start_to_listening_s"), man_listen),
        (
            "  hub: 'is running at' → job running (the hub notices, adds the route)",
            col(hub, "listening_to_running_s"),
            None,
        ),
        (
            "  hub: job running → /api/status 200 via proxy"
            + (" (the event's way to the client, its GET)" if events else " (the client's next poll)"),
            col(hub, "running_to_ok_s"),
            None,
        ),
    ]
    if events:
        rows.append(
            ("    of which job running → its 'running' event at the client", col(hub, "running_to_event_s"), None)
        )
    for kind in kinds:
        rows.append((f"by hand, {kind}: SIGTERM → exited", col(res["manual"][kind], "stop_s"), man_stop))
    rows.append(("hub: POST stop → job completed (polled every 10 ms)", col(hub, "stop_s"), man_stop))
    if events:
        rows.append(("hub: POST stop → the job's 'completed' event at the client", col(hub, "stop_event_s"), man_stop))
    rows.append(("  hub: POST stop → its answer (202)", col(hub, "stop_answered_s"), man_stop))
    rows.append(
        ("hub: job stopping_at → finished_at (hub's own timestamps)", col(hub, "hub_stopping_to_finished_s"), man_stop)
    )
    rows.append(
        (
            "hub process: CPU time for one launch and stop (its polls by the client included)",
            col(hub, "hub_cpu_s"),
            None,
        )
    )
    table = [
        [
            label,
            *(f"{s[k] * 1000:,.0f}" for k in ("p50", "mean", "min", "max")),
            f"{ratio(s['p50'], b['p50']):.2f}" if b else "–",
        ]
        for label, s, b in rows
    ]
    if events:
        retries = [r["retries"] for r in hub]
        table.append(
            [
                "hub: GETs of /api/status not 200 after the 'running' event (a count, all runs)",
                f"{sum(retries)}",
                "",
                f"{min(retries)}",
                f"{max(retries)}",
                "–",
            ]
        )
    head = f"{res.get('job_type', 'jupyterlab')} launch, wait: {res.get('wait', 'poll')}"
    return markdown_table(
        [
            f"{head} (n={len(hub)}, nice {res.get('nice', '?')})",
            "p50 ms",
            "mean ms",
            "min ms",
            "max ms",
            f"ratio (p50) to {kinds[0]}",
        ],
        table,
    )


# ---------------------------------------------------------------- part 2
def create_users_api(hub: Hub, n: int) -> float:
    """n users through JupyterHub's REST API (bulk POST /hub/api/users), in batches (slow: ~15 ms a user)."""
    t0 = time.monotonic()
    batch = 100  # JupyterHub creates a batch in one go, blocking its event loop
    for start in range(0, n, batch):
        names = [f"u{i:05d}" for i in range(start, min(n, start + batch))]
        r = hub.request("POST", "users", hub.admin_token, json={"usernames": names}, timeout=300)
        if r.status_code not in (201, 409):
            raise RuntimeError(f"creating users failed: {r.status_code} {r.text[:300]}")
    return time.monotonic() - t0


def insert_users(db_path: Path, n: int) -> float:
    """n users straight into JupyterHub's tables, with the default 'user' role, as the REST API makes them."""
    import secrets as _secrets

    from jupyterhub import orm as hub_orm
    from sqlalchemy import create_engine, insert, select
    from sqlalchemy.orm import Session

    from uws_hub.orm import utcnow

    t0 = time.monotonic()
    engine = create_engine(f"sqlite:///{db_path}")
    with Session(engine) as db:
        role_id = db.scalar(select(hub_orm.Role.id).where(hub_orm.Role.name == "user"))
        now = utcnow()
        names = [f"u{i:05d}" for i in range(n)]
        db.execute(
            insert(hub_orm.User),
            [{"name": name, "admin": False, "created": now, "cookie_id": _secrets.token_hex(16)} for name in names],
        )
        ids = db.scalars(select(hub_orm.User.id).where(hub_orm.User.name.in_(names)))
        user_role_map = hub_orm.Base.metadata.tables["user_role_map"]
        db.execute(
            insert(user_role_map), [{"user_id": uid, "role_id": role_id, "managed_by_auth": False} for uid in ids]
        )
        db.commit()
    engine.dispose()
    return time.monotonic() - t0


def insert_workspaces(db_path: Path, ws_root: Path, n: int) -> float:
    """n idle workspaces of USER, each with one completed job, straight into the database."""
    from jupyterhub import orm as hub_orm
    from sqlalchemy import create_engine, insert, select
    from sqlalchemy.orm import Session

    from uws_hub.orm import Job, Workspace, utcnow

    t0 = time.monotonic()
    engine = create_engine(f"sqlite:///{db_path}")
    with Session(engine) as db:
        owner_id = db.scalar(select(hub_orm.User.id).where(hub_orm.User.name == USER))
        now = utcnow()
        ws_rows = [
            {
                "owner_id": owner_id,
                "slug": f"bulk-{i:05d}",
                "name": f"Bulk workspace {i}",
                "description": "inserted by benchmarks/launch.py",
                "status": "idle",
                "directory": str(ws_root / USER / f"bulk-{i:05d}"),
                "disk_usage_bytes": 4096,
                "usage_measured_at": now,
                "created_at": now,
                "updated_at": now,
            }
            for i in range(n)
        ]
        db.execute(insert(Workspace), ws_rows)
        ids = list(db.scalars(select(Workspace.id).where(Workspace.slug.like("bulk-%")).order_by(Workspace.id)))
        job_rows = [
            {
                "workspace_id": wid,
                "owner_id": owner_id,
                "job_type": "jupyterlab",
                "resource": "local",
                "interactive": True,
                "status": "completed",
                "target": "stopped",
                "reason": "Stopped on request",
                "server_name": f"bulk-{i:05d}",
                "resource_id": str(10_000 + i),
                "resources": {},
                "created_at": now,
                "updated_at": now,
                "queued_at": now,
                "running_at": now,
                "stopping_at": now,
                "finished_at": now,
            }
            for i, wid in enumerate(ids)
        ]
        db.execute(insert(Job), job_rows)
        db.commit()
    engine.dispose()
    return time.monotonic() - t0


def bench_list(hub: Hub, token: str, n_requests: int, n_workspaces: int) -> dict:
    session = requests.Session()
    user_h = {"Authorization": f"token {token}"}
    admin_h = {"Authorization": f"token {hub.admin_token}"}
    # JupyterHub's list answers like uws-hub's ({"items", "_pagination"}, with a count) when asked to
    users_h = {**admin_h, "Accept": "application/jupyterhub-pagination+json"}
    deep = max(0, n_workspaces - 50)
    U50 = "GET /hub/api/users?limit=50 (JupyterHub, admin)"
    U200 = "GET /hub/api/users?limit=200 (JupyterHub, admin)"
    endpoints = [
        # (label, path, headers, the JupyterHub list to compare with: same page size)
        ("GET /hub/api/user (JupyterHub's whoami, baseline)", "/hub/api/user", user_h, None),
        (U50, "/hub/api/users?limit=50", users_h, None),
        (U200, "/hub/api/users?limit=200", users_h, None),
        ("GET /hub/api/workspaces?limit=50 (user)", "/hub/api/workspaces?limit=50", user_h, U50),
        ("GET /hub/api/workspaces (user, default limit)", "/hub/api/workspaces", user_h, U200),
        (
            f"GET /hub/api/workspaces?offset={deep}&limit=50 (user, last page)",
            f"/hub/api/workspaces?offset={deep}&limit=50",
            user_h,
            U50,
        ),
        ("GET /hub/api/workspaces (admin service, default limit)", "/hub/api/workspaces", admin_h, U200),
    ]
    info = {}
    for label, path, headers, _ in endpoints:
        r = session.get(hub.url + path, headers=headers, timeout=60)
        if r.status_code != 200:
            raise RuntimeError(f"{path}: {r.status_code} {r.text[:300]}")
        body = r.json()
        if isinstance(body, dict) and "_pagination" in body:
            info[label] = {"items": len(body["items"]), "total": body["_pagination"]["total"], "bytes": len(r.content)}
        elif isinstance(body, list):
            info[label] = {"items": len(body), "total": None, "bytes": len(r.content)}
        else:
            info[label] = {"items": 1, "total": None, "bytes": len(r.content)}
    for _ in range(10):  # warm-up
        for _, path, headers, _ in endpoints:
            session.get(hub.url + path, headers=headers, timeout=60)
    times: dict[str, list[float]] = {label: [] for label, *_ in endpoints}
    for _ in range(n_requests):
        for label, path, headers, _ in endpoints:
            t0 = time.perf_counter()
            r = session.get(hub.url + path, headers=headers, timeout=60)
            dt = time.perf_counter() - t0
            if r.status_code != 200:
                raise RuntimeError(f"{path}: {r.status_code}")
            times[label].append(dt)
    return {"endpoints": [(label, path, base) for label, path, _, base in endpoints], "info": info, "times": times}


def list_table(res: dict) -> str:
    baseline_label = res["endpoints"][0][0]
    base = summary(res["times"][baseline_label])
    rows = []
    for label, _, match in res["endpoints"]:
        s = summary(res["times"][label])
        i = res["info"][label]
        m = summary(res["times"][match]) if match else None
        rows.append(
            [
                label,
                f"{i['items']}" + (f" of {i['total']:,}" if i["total"] is not None else ""),
                f"{i['bytes'] / 1024:,.1f}",
                f"{s['p50'] * 1000:,.1f}",
                f"{s['p99'] * 1000:,.1f}",
                f"{ratio(s['p50'], base['p50']):.2f}",
                f"{ratio(s['p50'], m['p50']):.2f}" if m else "–",
            ]
        )
    n = base["n"]
    return markdown_table(
        [
            f"API latency ({n} sequential requests each, via the proxy)",
            "items",
            "KiB",
            "p50 ms",
            "p99 ms",
            "p50 / whoami",
            "p50 / users list, same page size",
        ],
        rows,
    )


# ---------------------------------------------------------------- main
def main(argv=None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="uws-bench-launch-"))
    ws_root = workdir / "workspaces"
    ws_root.mkdir()
    db_path = workdir / "jupyterhub.sqlite"
    config = f"""
c.UWSHub.workspaces_root = {str(ws_root)!r}
c.UWSHub.system_users = False
c.WorkspaceLocalProcessSpawner.nice_level = {args.nice}
from uws_hub.jobs.types import DEFAULT_JOB_TYPES
c.UWSHub.job_types = {{**DEFAULT_JOB_TYPES, "minimal": {{"cmd": [{sys.executable!r}, {str(MINIMAL_SERVER)!r}]}}}}
# the inserted workspaces have no directories: do not measure them
c.UWSHub.workspace_usage_interval = 0
"""
    hub = Hub(workdir / "hub", config, f"sqlite:///{db_path}")
    results: dict = {"machine": machine_info(), "args": vars(args)}
    out = [f"# uws-hub launch and list benchmark\n\nMachine: {machine_line()}.\n"]
    try:
        log(f"starting uws-hub in {workdir}")
        hub.start()
        token = hub.add_user(USER)
        ws = hub.api("POST", "workspaces", token, json={"name": "bench launch"}, expect=201)
        ws_dir = ws_root / USER / ws["slug"]
        if not args.skip_launch:
            log(f"launch benchmark ({args.wait}): {args.runs} runs through the hub, {args.runs} by hand (interleaved)")
            res = bench_launch(hub, token, ws, ws_dir, workdir, args)
            results["launch"] = res
            for mode_res in res.values():
                out.append(launch_table(mode_res))
                out.append("")
            out.append(
                "ratio: the hub's p50 over the by-hand p50 (the hub's overhead). wait events: the"
                f" client waits for the job's 'running' event, the server by hand is polled every"
                f" {args.hand_poll_interval * 1000:g} ms; wait poll: both are polled every"
                f" {args.poll_interval * 1000:g} ms."
            )
        if not args.skip_list:
            n_users = args.workspaces if args.users is None else args.users
            if args.users_via_api:
                log(f"creating {n_users} users through JupyterHub's REST API")
                results["users_create_s"] = create_users_api(hub, n_users)
                log(f"  took {results['users_create_s']:.1f}s")
            log(
                f"stopping the hub to insert {args.workspaces} workspaces"
                + ("" if args.users_via_api else f" and {n_users} users")
            )
            hub.stop()
            if not args.users_via_api:
                results["users_create_s"] = insert_users(db_path, n_users)
            results["workspaces_insert_s"] = insert_workspaces(db_path, ws_root, args.workspaces)
            log(f"  inserted in {results['workspaces_insert_s']:.1f}s; starting the hub again")
            t0 = time.monotonic()
            hub.start(timeout=300)
            results["restart_s"] = time.monotonic() - t0
            log(f"  hub answered after {results['restart_s']:.1f}s; {args.requests} requests per endpoint")
            res = bench_list(hub, token, args.requests, args.workspaces + 1)
            results["list"] = {"info": res["info"], "summary": {k: summary(v) for k, v in res["times"].items()}}
            out.append("")
            out.append(list_table(res))
            out.append(
                f"\n{args.workspaces + 1:,} workspaces (all of user {USER!r}, each with a finished job),"
                f" {n_users + 1:,} users. Users {'created through the REST API' if args.users_via_api else 'inserted'} in"
                f" {results['users_create_s']:.1f}s; workspaces inserted into SQLite in"
                f" {results['workspaces_insert_s']:.1f}s; hub restart until /hub/health answered:"
                f" {results['restart_s']:.1f}s."
            )
        errors = hub_errors(hub)
        results["hub_errors"] = errors
        results["hub_warnings"] = hub_warnings(hub)
        out.append(f"\nHub log: {len(errors)} error lines, {len(results['hub_warnings'])} warnings.")
        for line in errors[:20]:
            out.append(f"    {line}")
        kinds: dict[str, int] = {}
        for line in results["hub_warnings"]:
            msg = re.sub(r"\d+(\.\d+)?", "N", line.split("]", 1)[-1].strip())[:140]
            kinds[msg] = kinds.get(msg, 0) + 1
        for msg, count in sorted(kinds.items(), key=lambda kv: -kv[1])[:8]:
            out.append(f"    {count:5d} x {msg}")
    finally:
        hub.stop()
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print("\n".join(out))
    path = write_json("launch", results, args.json)
    if path:
        print(f"\nJSON: {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
