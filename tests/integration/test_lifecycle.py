"""A job life cycle that does not lie: servers that die, a proxy that loses its
routes, time limits, and the hub killed (SIGKILL) in the middle of launches
and stops, then started again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests

from ..helpers import MINIMAL_CMD, launch, processes_of_job, session_nice
from ..hubutil import wait_for

TERMINAL = {"completed", "failed", "cancelled"}


def job_processes(user: str) -> dict[int, list[int]]:
    """Every live process that runs a job of ``user``: job id -> pids (from their environment).

    Other tests' hubs number their jobs from 1 too, so processes are told apart
    by their JupyterHub user."""
    found: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
            state = (entry / "stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if state == b"Z":
            continue
        if f"JUPYTERHUB_USER={user}".encode() not in env:
            continue
        for var in env:
            if var.startswith(b"UWS_JOB_ID="):
                found.setdefault(int(var.split(b"=", 1)[1]), []).append(int(entry.name))
    return found


def test_server_killed_by_hand_fails_its_job(hub, alice):
    job = launch(hub, alice)
    job = hub.wait_job(job["id"], alice, {"running", "failed"})
    assert job["status"] == "running"
    os.kill(int(job["resource_id"]), signal.SIGKILL)
    # the reconciler scans every 2 s in the test hub
    job = hub.wait_job(job["id"], alice, TERMINAL, timeout=15)
    assert job["status"] == "failed"
    assert job["reason"] == "The server was killed by signal 9 (SIGKILL) — out of memory?"
    assert hub.request("GET", job["url"] or f"/user/uwsalice/{job['server_name']}/", alice).status_code != 200
    ws = hub.api("GET", f"workspaces/{job['workspace_id']}", alice)
    assert ws["status"] == "idle" and ws["active_job"] is None


def test_a_server_and_its_session_run_below_the_hub(hub, alice):
    """A local server leads a session of its own, at the job's CPU priority (the
    spawner's ``nice_level``, 10) and so is that session where the kernel schedules
    sessions as groups (autogroup): otherwise each starting server weighs as much as
    the hub, whatever its niceness. The hub's own session keeps its priority."""
    hub_session = session_nice(hub.proc.pid)
    job = hub.wait_job(launch(hub, alice)["id"], alice, {"running", "failed"})
    assert job["status"] == "running"
    pid = int(job["resource_id"])
    assert os.getsid(pid) == pid != os.getsid(hub.proc.pid)
    assert os.getpriority(os.PRIO_PROCESS, pid) == 10
    if hub_session is None:
        pytest.skip("no autogroups here, or not root")
    assert session_nice(pid) == 10
    assert session_nice(hub.proc.pid) == hub_session
    hub.api("POST", f"jobs/{job['id']}/stop", alice)


def test_time_limit_is_enforced(hub, alice):
    job = launch(hub, alice, job_type="short")
    hub.wait_job(job["id"], alice, {"running"})
    job = hub.wait_job(job["id"], alice, TERMINAL, timeout=20)
    assert job["status"] == "failed"
    assert "time limit of 3 s" in job["reason"]
    ws = hub.api("GET", f"workspaces/{job['workspace_id']}", alice)
    assert not processes_of_job(job["id"], str(hub.workspaces_root / ws["owner"] / ws["slug"]))


def test_lost_proxy_routes_come_back(make_hub):
    """Routes deleted behind the hub's back are restored within one reconcile interval."""
    token = "proxy-" + uuid.uuid4().hex
    hub = make_hub(
        "c.UWSHub.system_users = False\nc.UWSHub.job_reconcile_interval = 1\n"
        f"c.UWSHub.job_types = {{'minimal': {{'cmd': {MINIMAL_CMD!r}}}}}\n",
        env={"CONFIGPROXY_AUTH_TOKEN": token},
    )
    user = hub.add_user("lcproxy")
    job = launch(hub, user)
    job = hub.wait_job(job["id"], user, {"running", "failed"})
    assert hub.request("GET", job["url"], user).status_code == 200
    routes = requests.get(
        f"http://127.0.0.1:{hub.api_port}/api/routes", headers={"Authorization": f"token {token}"}
    ).json()
    spec = next(r for r in routes if r.rstrip("/").endswith(job["server_name"]))
    r = requests.delete(
        f"http://127.0.0.1:{hub.api_port}/api/routes{spec}", headers={"Authorization": f"token {token}"}
    )
    assert r.status_code == 204
    assert hub.request("GET", job["url"], user).status_code != 200
    wait_for(lambda: hub.request("GET", job["url"], user).status_code == 200, 15, what="the route to be restored")
    assert "adding it back" in hub.log_text()
    assert hub.api("GET", f"jobs/{job['id']}", user)["status"] == "running"


#: a server that listens and answers every request 503: JupyterHub's check of it never passes
ANSWERS_503 = """
import http.server, os, urllib.parse
url = urllib.parse.urlparse(os.environ["JUPYTERHUB_SERVICE_URL"])
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_error(503)
http.server.HTTPServer((url.hostname, url.port), Handler).serve_forever()
"""


def test_the_route_goes_in_once_the_server_listens_and_out_if_jupyterhubs_check_fails(make_hub):
    """The proxy route is added once the server listens, beside JupyterHub's own HTTP
    check of it (uws_hub.jobs.servers), not after: one add. A server that listens but
    fails that check loses the route again with its start."""
    token = "proxy-" + uuid.uuid4().hex
    hub = make_hub(
        "c.UWSHub.system_users = False\nc.Spawner.http_timeout = 3\n"
        f"c.UWSHub.job_types = {{'minimal': {{'cmd': {MINIMAL_CMD!r}}},"
        f" 'answers-503': {{'cmd': [{sys.executable!r}, '-c', {ANSWERS_503!r}]}}}}\n",
        env={"CONFIGPROXY_AUTH_TOKEN": token},
    )
    user = hub.add_user("lcroute")

    def routes() -> set[str]:
        r = requests.get(f"http://127.0.0.1:{hub.api_port}/api/routes", headers={"Authorization": f"token {token}"})
        return {spec.rstrip("/") for spec in r.json()}

    job = hub.wait_job(launch(hub, user)["id"], user, {"running"} | TERMINAL)
    assert job["status"] == "running", job["reason"]
    assert hub.request("GET", job["url"], user).status_code == 200
    prefix = f"Adding user lcroute to proxy /user/lcroute/{job['server_name']}/"
    adds = [line for line in hub.log_text().splitlines() if prefix in line]
    assert len(adds) == 1 and adds[0].endswith("(it listens)"), adds

    failing = hub.wait_job(launch(hub, user, job_type="answers-503")["id"], user, TERMINAL, timeout=30)
    assert failing["status"] == "failed", failing
    spec = f"/user/lcroute/{failing['server_name']}"
    early = f"Adding user lcroute to proxy {spec}/ => "
    assert any(early in line and line.endswith("(it listens)") for line in hub.log_text().splitlines())
    assert spec not in routes() and f"/user/lcroute/{job['server_name']}" in routes()


@pytest.mark.expect_log_errors("\\] Proxy stopped with exit code -9")
def test_proxy_killed_and_restarted(make_hub):
    hub = make_hub(
        "c.UWSHub.system_users = False\n"
        f"c.UWSHub.job_types = {{'minimal': {{'cmd': {MINIMAL_CMD!r}}}}}\n"
        "c.ConfigurableHTTPProxy.check_running_interval = 1\n"
    )
    user = hub.add_user("lcproxykill")
    job = hub.wait_job(launch(hub, user)["id"], user, {"running", "failed"})
    pid = int((hub.workdir / "jupyterhub-proxy.pid").read_text())
    os.kill(pid, signal.SIGKILL)

    def answers():
        try:
            return hub.request("GET", job["url"], user, timeout=2).status_code == 200
        except requests.RequestException:
            return False

    wait_for(answers, 30, what="the restarted proxy to route the job again")

    # on a loaded machine JupyterHub may restart a proxy slow to listen once more
    # (check_running_interval = 1): the job's status is asked until the hub answers
    def status():
        try:
            r = hub.request("GET", f"jobs/{job['id']}", user, timeout=5)
        except requests.RequestException:
            return None
        return r.json()["status"] if r.status_code == 200 else None

    assert wait_for(status, 30, what="the hub's API through the restarted proxy") == "running"


def test_hub_killed_during_launches_and_stops(make_hub):
    """SIGKILL the hub while 20 jobs start and some stop; start it again: every
    job ends in a true state, one process per running job, no orphans."""
    hub = make_hub(
        "c.UWSHub.system_users = False\nc.UWSHub.job_reconcile_interval = 1\n"
        "c.JupyterHub.cleanup_servers = False\n"
        f"c.UWSHub.job_types = {{'minimal': {{'cmd': {MINIMAL_CMD!r}}}}}\n"
    )
    name = f"lckill{uuid.uuid4().hex[:6]}"
    user = hub.add_user(name)
    try:
        _kill_during_launches_and_stops(hub, name, user)
    finally:
        # cleanup_servers is off here: leave no server behind, whatever happened
        for pids in job_processes(name).values():
            for pid in pids:
                os.killpg(pid, signal.SIGKILL)


def _kill_during_launches_and_stops(hub, name: str, user: str) -> None:
    jobs: list[dict] = []
    lock = threading.Lock()

    def launch_one():
        job = launch(hub, user)
        with lock:
            jobs.append(job)

    threads = [threading.Thread(target=launch_one) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # stop the first few as soon as they run, then kill the hub mid-flight
    first = jobs[:4]
    for job in first:
        hub.wait_job(job["id"], user, {"running", "failed"})
        hub.api("POST", f"jobs/{job['id']}/stop", user, expect=202)
    hub.stop(sig=signal.SIGKILL)
    statuses_at_kill = _statuses_in_db(hub)
    assert any(s in ("pending", "queued", "stopping") for s in statuses_at_kill.values()), statuses_at_kill

    hub.start()
    stopped = {j["id"] for j in first}

    def settled():
        states = {j["id"]: hub.api("GET", f"jobs/{j['id']}", user)["status"] for j in jobs}
        done = all(
            (s in TERMINAL) if jid in stopped else (s == "running" or s in TERMINAL) for jid, s in states.items()
        )
        return states if done else None

    states = wait_for(settled, 90, interval=0.5, what="every job to settle after the restart")
    for jid in stopped:
        assert states[jid] in ("completed", "cancelled"), (jid, states[jid])
    running = {jid for jid, s in states.items() if s == "running"}
    assert len(running) >= 14, states  # the others did start again
    ours = job_processes(name)
    # exactly one server process per running job, none for any other job
    assert {jid for jid in ours} == running, (ours, states)
    assert all(len(pids) == 1 for pids in ours.values()), ours
    for jid in running:
        job = hub.api("GET", f"jobs/{jid}", user)
        assert hub.request("GET", job["url"], user).status_code == 200
    for jid in running:
        hub.api("POST", f"jobs/{jid}/stop", user, expect=202)
    wait_for(
        lambda: all(hub.api("GET", f"jobs/{j['id']}", user)["status"] in TERMINAL for j in jobs),
        60,
        what="all jobs to stop",
    )
    time.sleep(0.5)
    assert job_processes(name) == {}


def _statuses_in_db(hub) -> dict[int, str]:
    from sqlalchemy import create_engine, text

    engine = create_engine(hub.db_url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, status FROM uws_jobs")).all()
    engine.dispose()
    return {r[0]: r[1] for r in rows}


def test_stopped_through_jupyterhub_is_completed_not_failed(hub, alice):
    """The idle culler, the admin panel and scripts stop servers with JupyterHub's API."""
    job = hub.wait_job(launch(hub, alice)["id"], alice, {"running", "failed"})
    r = hub.request("DELETE", f"users/uwsalice/servers/{job['server_name']}", hub.admin_token)
    assert r.status_code in (202, 204), r.text
    job = hub.wait_job(job["id"], alice, TERMINAL, timeout=20)
    assert job["status"] == "completed"
    assert job["reason"] == "Stopped outside uws-hub (JupyterHub's server API, admin panel or idle culler)"


def test_hub_killed_mid_delete_finishes_the_delete_after_a_restart(make_hub):
    """SIGKILL the hub while it removes a workspace's directory: the workspace answers
    ``deleting`` meanwhile, refuses uploads, and after a restart the delete finishes
    (before workspaces were reconciled, it stayed ``deleting`` for ever)."""
    hub = make_hub("c.UWSHub.system_users = False\nc.UWSHub.job_reconcile_interval = 1\n")
    user = hub.add_user(f"lcdel{uuid.uuid4().hex[:6]}")
    ws = hub.api("POST", "workspaces", user, json={"name": "many files"}, expect=201)
    directory = Path(hub.workspaces_root) / ws["owner"] / ws["slug"]
    count = 40_000
    for i in range(count // 200):
        d = directory / f"d{i:03d}"
        d.mkdir()
        for j in range(200):
            (d / f"f{j:03d}").touch()
    deleting = hub.api("DELETE", f"workspaces/{ws['id']}", user, expect=202)
    assert deleting["status"] == "deleting"

    def removing():
        # os.walk skips what disappears while it walks (rglob raises)
        left = sum(len(files) for _, _, files in os.walk(directory))
        return left < count and left

    wait_for(removing, 30, interval=0.01, what="the directory's removal to start")
    os.killpg(hub.proc.pid, signal.SIGKILL)  # the hub and its proxy, mid-delete
    hub.proc.wait()
    assert directory.exists()

    hub.start()
    seen = hub.request("GET", f"workspaces/{ws['id']}", user)
    assert seen.status_code == 404 or seen.json()["status"] == "deleting", seen.text
    upload = hub.request("PUT", f"workspaces/{ws['id']}/files/late.txt", user, data=b"late")
    assert upload.status_code in (404, 409), upload.text  # 404 once the delete is done
    wait_for(
        lambda: hub.request("GET", f"workspaces/{ws['id']}", user).status_code == 404,
        60,
        what="the delete to finish after the restart",
    )
    assert not directory.exists()
    hub.api("DELETE", f"workspaces/{ws['id']}", user, expect=404)


# ---------------------------------------------------------------- orphaned local processes
def _this_hub_id(hub) -> str:
    from sqlalchemy.engine import make_url

    from uws_hub.spawners.mixins import hub_id

    return hub_id(make_url(hub.db_url).render_as_string(hide_password=True))


def _env_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(v.decode().split("=", 1) for v in raw if b"=" in v)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return False
    return state != b"Z"


def _as_if_killed_before_the_record(hub, job_id: int, *, stopped: bool = False) -> None:
    """Make the database say what a hub SIGKILLed between starting job ``job_id``'s
    process and recording it leaves: the job pending with no resource id, JupyterHub's
    spawner without the state its start() would have saved; ``stopped``: and its
    owner asked for a stop before the hub died."""
    from sqlalchemy import create_engine, text

    engine = create_engine(hub.db_url)
    with engine.begin() as conn:
        server_name = conn.execute(text("SELECT server_name FROM uws_jobs WHERE id = :id"), {"id": job_id}).scalar()
        conn.execute(
            text(
                "UPDATE uws_jobs SET status = 'pending', resource_id = NULL, queued_at = NULL, running_at = NULL,"
                " url = NULL, target = :target WHERE id = :id"
            ),
            {"id": job_id, "target": "stopped" if stopped else "running"},
        )
        conn.execute(text("UPDATE spawners SET state = '{}' WHERE name = :name"), {"name": server_name})
    engine.dispose()


def test_processes_left_by_a_hub_killed_before_it_recorded_them_are_ended(make_hub):
    """The gap of issue 12: a hub SIGKILLed between a job's fork and the record of its
    pid. After the restart the job that is to run has exactly one server process (not
    the lost one beside the new one), the job stopped meanwhile has none."""
    hub = make_hub(
        "c.UWSHub.system_users = False\nc.UWSHub.job_reconcile_interval = 1\n"
        "c.JupyterHub.cleanup_servers = False\nc.WorkspaceLocalProcessSpawner.kill_grace_seconds = 5\n"
        f"c.UWSHub.job_types = {{'minimal': {{'cmd': {MINIMAL_CMD!r}}}}}\n"
    )
    name = f"lcorph{uuid.uuid4().hex[:6]}"
    user = hub.add_user(name)
    try:
        to_run = hub.wait_job(launch(hub, user)["id"], user, {"running", "failed"})
        to_stop = hub.wait_job(launch(hub, user)["id"], user, {"running", "failed"})
        assert to_run["status"] == to_stop["status"] == "running"
        lost = {to_run["id"]: int(to_run["resource_id"]), to_stop["id"]: int(to_stop["resource_id"])}
        assert job_processes(name) == {jid: [pid] for jid, pid in lost.items()}
        for pid in lost.values():
            # the job's environment names its hub (never its token)
            assert _env_of(pid)["UWS_HUB_ID"] == _this_hub_id(hub)
        hub.stop(sig=signal.SIGKILL)
        _as_if_killed_before_the_record(hub, to_run["id"])
        _as_if_killed_before_the_record(hub, to_stop["id"], stopped=True)

        hub.start()
        job = hub.wait_job(to_run["id"], user, {"running", "failed"})
        assert job["status"] == "running", job
        assert hub.wait_job(to_stop["id"], user, TERMINAL)["status"] == "cancelled"
        new_pid = int(job["resource_id"])
        assert new_pid != lost[to_run["id"]]

        def settled():
            ours = job_processes(name)
            return ours if not any(_alive(pid) for pid in lost.values()) else None

        ours = wait_for(settled, 30, what="the lost processes to end")
        assert ours == {to_run["id"]: [new_pid]}
        assert hub.request("GET", job["url"], user).status_code == 200
        log = hub.log_text()
        for jid, pid in lost.items():
            assert f"Ending orphaned local process {pid} of job {jid}" in log
    finally:
        for pids in job_processes(name).values():
            for pid in pids:
                os.killpg(pid, signal.SIGKILL)


def test_orphan_sweep_ends_only_this_hubs_processes_of_no_job(make_hub):
    """Beside a running job's server: a process of this hub for an unknown job (ended),
    one its job left in the background (lives as long as the job, then ended), and one
    of another hub with the same job id (left alone, before and after the job ends)."""
    hub = make_hub(
        "c.UWSHub.system_users = False\nc.UWSHub.job_reconcile_interval = 1\n"
        "c.WorkspaceLocalProcessSpawner.orphan_sweep_interval_seconds = 1\n"
        "c.WorkspaceLocalProcessSpawner.kill_grace_seconds = 5\n"
        f"c.UWSHub.job_types = {{'minimal': {{'cmd': {MINIMAL_CMD!r}}}}}\n"
    )
    name = f"lcsweep{uuid.uuid4().hex[:6]}"
    user = hub.add_user(name)
    job = hub.wait_job(launch(hub, user)["id"], user, {"running", "failed"})
    assert job["status"] == "running"
    server = int(job["resource_id"])
    this_hub = _this_hub_id(hub)
    assert _env_of(server)["UWS_HUB_ID"] == this_hub
    other_hub = "0" * len(this_hub)

    def sleeper(hub_id: str, job_id: int) -> subprocess.Popen:
        env = {"PATH": os.defpath, "JUPYTERHUB_USER": name, "UWS_HUB_ID": hub_id, "UWS_JOB_ID": str(job_id)}
        code = "import time; time.sleep(600)"
        return subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True)

    sleepers = []
    try:
        sleepers += [
            unknown := sleeper(this_hub, 9999),
            background := sleeper(this_hub, job["id"]),
            theirs := sleeper(other_hub, job["id"]),
        ]
        wait_for(lambda: unknown.poll() is not None, 30, what="the process of an unknown job to be ended")
        assert unknown.returncode == -signal.SIGTERM
        # decided in the same sweep: the job's own and the other hub's are left alone
        assert background.poll() is None and theirs.poll() is None
        assert _alive(server)
        assert hub.api("GET", f"jobs/{job['id']}", user)["status"] == "running"

        hub.api("POST", f"jobs/{job['id']}/stop", user, expect=202)
        assert hub.wait_job(job["id"], user, TERMINAL)["status"] == "completed"
        wait_for(lambda: background.poll() is not None, 30, what="the finished job's process to be ended")
        assert theirs.poll() is None  # same job id, another hub: left alone
        log = hub.log_text()
        assert f"Ending orphaned local process {unknown.pid} of job 9999: its job is finished or unknown" in log
        assert f"Ending orphaned local process {background.pid} of job {job['id']}: its job is finished" in log
        assert f"local process {theirs.pid} " not in log
    finally:
        for proc in sleepers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
