"""Jobs on a real single-node SLURM cluster (started by scripts/slurm-up.sh), as
real system users: launch, open JupyterLab on the "compute node" through the
proxy, stop (scancel), a time limit, scancel outside the hub, a server that
cannot start, sbatch refusing a job, and a hub restart with one pending and
one running job. Most jobs run tests/minimal_server.py, to stay quick on 2 cores."""

from __future__ import annotations

import functools
import json
import os
import pwd
import re
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, text

from uws_hub.spawners.mixins import hub_id
from uws_hub.spawners.slurm.script import token_from_script

from .. import browserutil, slurmutil
from ..helpers import ADMIN_PASSWORD, MINIMAL_CMD, SSEReader, launch
from ..hubutil import wait_for

pytestmark = pytest.mark.slurm

TERMINAL = {"completed", "failed", "cancelled"}

#: the hub's job log directory, where the servers' SLURM output goes: one the jobs'
#: accounts can reach (the tests' own temporary folders are root's only)
LOG_DIR = tempfile.mkdtemp(prefix="uws-slurm-logs-")
#: the hub's squeue: SLURM's, each call's arguments logged (which jobs it asks about)
SQUEUE_LOG = Path(tempfile.mkdtemp(prefix="uws-slurm-squeue-")) / "calls.log"
SQUEUE = SQUEUE_LOG.with_name("squeue")
SQUEUE.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {SQUEUE_LOG}\nexec squeue "$@"\n')
SQUEUE.chmod(0o755)
SLURM_CONFIG = f"""
c.UWSHub.system_users = True
c.UWSHub.job_log_dir = {LOG_DIR!r}
c.Authenticator.admin_users = {{"uwsadmin"}}
c.UWSHub.job_reconcile_interval = 1
c.UWSHub.resource_spawners = {{"local": "uws-local", "slurm": "uws-slurm"}}
c.SlurmPoller.poll_interval_seconds = 1
c.SlurmPoller.fast_poll_interval_seconds = 0.5
c.SlurmPoller.squeue_cmd = [{str(SQUEUE)!r}]
c.UWSHub.job_types = {{
    "lab": {{
        "display_name": "JupyterLab on SLURM", "default_url": "/lab", "resources": ["slurm"],
        "default_resources": {{"cpus": 1, "memory": "512M", "time_limit": "10"}},
    }},
    "minimal": {{
        "display_name": "Minimal server", "cmd": {MINIMAL_CMD!r}, "resources": ["slurm", "local"],
        "limits": {{"cpus": 2, "memory": "1G", "gpus": 0, "time_limit": "10", "partitions": ["debug"]}},
        "default_resources": {{"cpus": 1, "memory": "128M", "time_limit": "5"}},
    }},
    "big": {{"cmd": {MINIMAL_CMD!r}, "resources": ["slurm"]}},
    "slowstop": {{
        "cmd": {MINIMAL_CMD!r}, "resources": ["slurm"],
        "default_resources": {{"cpus": 1, "memory": "128M", "time_limit": "5"}},
        # the server takes a second to exit after SIGTERM, as one that shuts down its kernels
        "env": {{"UWS_TEST_STOP_SECONDS": "1"}},
    }},
    "unwakeable": {{
        "cmd": {MINIMAL_CMD!r}, "resources": ["slurm"],
        "default_resources": {{"cpus": 1, "memory": "128M", "time_limit": "5"}},
        # the batch script's wake goes to a port where nothing listens
        "env": {{"JUPYTERHUB_API_URL": "http://127.0.0.1:9/hub/api"}},
    }},
    "broken": {{
        "cmd": ["python3", "-c", "import os, sys; print('boom: the server cannot start', flush=True);"
                " print('JUPYTERHUB_API_TOKEN=' + os.environ['JUPYTERHUB_API_TOKEN'], flush=True); sys.exit(3)"],
        "resources": ["slurm"],
    }},
}}
"""


@pytest.fixture(scope="module")
def shub(make_hub, system_users, slurm):
    """A multi-user hub whose jobs run on SLURM."""
    return make_hub(SLURM_CONFIG)


@pytest.fixture(scope="module")
def user(shub):
    return shub.add_user("uwsalice")


#: a job on the SLURM resource, in a new workspace
slurm_launch = functools.partial(launch, resource="slurm")


def output_file(job: dict, account: str = "uwsalice") -> Path:
    """A server's SLURM output file: in its account's folder of the hub's job log directory."""
    return Path(LOG_DIR) / "slurm" / account / f"job-{job['id']}-{job['resource_id']}.log"


def test_an_editor_reads_nothing_of_the_owners_server_output(make_hub, system_users, slurm, group_prefix):
    """A server's output holds secrets (its token, whatever its code prints), and is its
    owner's and admins' to read. It was in the workspace (``.uws-jobs``), made by the
    server's account at its start unless it was there: an editor who made that folder
    first (a job of theirs can), open to them, read every later server's output of the
    owner's. It is in the account's own folder of the hub's job log directory now."""
    hub = make_hub(SLURM_CONFIG + f"c.UWSHub.share_posix_group_prefix = {group_prefix!r}\n")
    alice = hub.add_user("uwsalice")
    hub.add_user("uwscarol")
    ws = hub.api("POST", "workspaces", alice, json={"name": f"shared {uuid.uuid4().hex[:6]}"}, expect=201)
    hub.api("POST", f"workspaces/{ws['id']}/shares", alice, json={"user": "uwscarol", "level": "editor"}, expect=201)
    planted = hub.workspaces_root / "uwsalice" / ws["slug"] / ".uws-jobs"
    planted.mkdir()
    carol_account = pwd.getpwnam("uwscarol")
    os.chown(planted, carol_account.pw_uid, -1)
    planted.chmod(0o777)
    job = slurm_launch(hub, alice, ws)
    job = hub.wait_job(job["id"], alice, {"running"} | TERMINAL, timeout=60)
    assert job["status"] == "running", job["reason"]
    assert sorted(os.listdir(planted)) == []
    output = output_file(job)
    assert output.is_file() and output.stat().st_uid == pwd.getpwnam("uwsalice").pw_uid
    read = subprocess.run(["runuser", "-u", "uwscarol", "--", "cat", str(output)], capture_output=True, text=True)
    assert read.returncode != 0 and "Permission denied" in read.stderr, read
    hub.api("POST", f"jobs/{job['id']}/stop", alice, expect=202)
    hub.wait_job(job["id"], alice, TERMINAL, timeout=30)


@pytest.mark.before_all
def test_a_job_with_a_time_limit_runs(slurm_time_limits):
    """A server with SLURM's shortest time limit (1 minute; conftest.py's
    ``slurm_time_limits``): checked at once, ended by SLURM by the module's last test."""
    job = slurm_time_limits.server
    assert job["resource"] == "slurm" and job["resources"]["time_limit"] == "1"
    assert slurmutil.job_info(job["resource_id"])["state"] == "RUNNING"


def test_batchspawner_api_is_not_served(shub, user):
    """The handler importing batchspawner adds (it sets spawner attributes from a body) is left out."""
    assert shub.request("POST", "/hub/api/batchspawner", user, json={"port": 1}).status_code == 404


def test_launch_runs_as_the_user_then_stop_cancels(shub, user):
    events = SSEReader(shub, user)
    try:
        job = slurm_launch(shub, user, resources={"cpus": 2, "memory": "256M"})
        assert job["resource"] == "slurm"
        # the job type's defaults fill what the launch did not ask for
        assert job["resources"] == {"cpus": 2, "memory": "256M", "time_limit": "5"}
        job = shub.wait_job(job["id"], user, {"running"} | TERMINAL, timeout=60)
        assert job["status"] == "running", job["reason"]
        slurm_id = job["resource_id"]
        assert slurm_id and slurm_id.isdigit()
        assert job["node"] == "localhost" and job["reason"] is None
        info = slurmutil.job_info(slurm_id)
        assert info["state"] == "RUNNING" and info["user"] == "uwsalice"
        assert info["name"].endswith(f"-job-{job['id']}") and info["comment"].startswith("uws-port=")
        # its server answers through the proxy
        r = shub.request("GET", job["url"], user)
        assert r.status_code == 200 and r.json()["job"] == str(job["id"])
        # pending -> queued (with the SLURM id, at once) -> running, and progress from SLURM
        wait_for(lambda: "running" in events.job_statuses(job["id"]), 10, what="the running event")
        assert events.job_statuses(job["id"]) == ["pending", "queued", "running"]
        queued = next(
            e for e in events.events if e["job_id"] == job["id"] and e["status"] == "queued" and e["kind"] == "job"
        )
        assert queued["reason"] == f"Submitted to SLURM as job {slurm_id}"
        progress = [
            e["data"].get("message", "") for e in events.events if e["job_id"] == job["id"] and e["kind"] == "progress"
        ]
        assert any(f"SLURM job {slurm_id}" in m for m in progress), progress
        # stop: scancel, the job ends cancelled
        shub.api("POST", f"jobs/{job['id']}/stop", user, expect=202)
        job = shub.wait_job(job["id"], user, TERMINAL, timeout=30)
        assert job["status"] == "cancelled", job["reason"]
        assert job["reason"] == "Stopped on request"
        assert slurmutil.job_info(slurm_id)["state"] == "CANCELLED"
        assert shub.request("GET", f"/user/uwsalice/{job['server_name']}/", user).status_code != 200
    finally:
        events.close()


def test_a_stop_lets_the_server_shut_down(shub, user):
    """``scancel`` sends SIGTERM to every process of the job, the batch script's shell
    too: the shell waits for the server's own shutdown (a second here), not dying at
    once and leaving the server to SLURM's SIGKILL; and the job is recorded ``cancelled``
    only once SLURM has ended it (not while it is COMPLETING)."""
    job = slurm_launch(shub, user, job_type="slowstop")
    job = shub.wait_job(job["id"], user, {"running"} | TERMINAL, timeout=60)
    assert job["status"] == "running", job["reason"]
    shub.api("POST", f"jobs/{job['id']}/stop", user, expect=202)
    job = shub.wait_job(job["id"], user, TERMINAL, timeout=30)
    assert job["status"] == "cancelled" and job["reason"] == "Stopped on request"
    assert slurmutil.job_info(job["resource_id"])["state"] == "CANCELLED"
    output = output_file(job).read_text()
    assert "[minimal] exiting 1 s after SIGTERM" in output, output


def squeue_calls() -> list[list[str]]:
    """The jobs each of the hub's squeue calls asked about, in order."""
    lines = SQUEUE_LOG.read_text().splitlines() if SQUEUE_LOG.exists() else []
    return [m.group(1).split(",") for line in lines if (m := re.search(r"(?:^| )-j (\S+)", line))]


def test_a_stop_follows_its_job_up_alone(shub, user):
    """After its scancel a stop asks SLURM about its job alone until SLURM has ended it
    (the job is COMPLETING for a second here: the server shuts down), not about every job
    the hub tracks each time; another running job runs on, and the stopped job ends
    cancelled with the stop's reason."""
    other = slurm_launch(shub, user)
    job = slurm_launch(shub, user, job_type="slowstop")
    other = shub.wait_job(other["id"], user, {"running"} | TERMINAL, timeout=60)
    job = shub.wait_job(job["id"], user, {"running"} | TERMINAL, timeout=60)
    assert job["status"] == other["status"] == "running", (job["reason"], other["reason"])
    try:
        before = len(squeue_calls())
        shub.api("POST", f"jobs/{job['id']}/stop", user, expect=202)
        job = shub.wait_job(job["id"], user, TERMINAL, timeout=30)
        assert job["status"] == "cancelled" and job["reason"] == "Stopped on request"
        assert slurmutil.job_info(job["resource_id"])["state"] == "CANCELLED"
        calls = squeue_calls()[before:]
        alone = [ids for ids in calls if ids == [job["resource_id"]]]
        assert alone, calls  # before: every call asked about both jobs (and any other)
        assert shub.api("GET", f"jobs/{other['id']}", user)["status"] == "running"
    finally:
        shub.api("POST", f"jobs/{other['id']}/stop", user, expect=None)
        shub.wait_job(other["id"], user, TERMINAL, timeout=30)


def test_jupyterlab_on_slurm_through_the_proxy(shub, user):
    job = slurm_launch(shub, user, job_type="lab")
    job = shub.wait_job(job["id"], user, {"running"} | TERMINAL, timeout=120)
    assert job["status"] == "running", job["reason"]
    assert job["url"].endswith("/lab")
    r = shub.request("GET", job["url"], user)
    assert r.status_code == 200 and "JupyterLab" in r.text
    # JupyterLab's API works through the proxy (the hub's OAuth, the server's token), and
    # its root is the workspace: a file written there lands in the workspace, as the user
    server = job["url"][: -len("lab")]
    shub.api(
        "PUT",
        f"{server}api/contents/from-slurm.txt",
        user,
        json={"type": "file", "format": "text", "content": "hello from SLURM"},
        expect=201,
    )
    got = shub.request("GET", f"workspaces/{job['workspace_id']}/files/from-slurm.txt", user)
    assert got.status_code == 200 and got.content == b"hello from SLURM"
    directory = shub.workspaces_root / "uwsalice" / job["workspace"]
    assert (directory / "from-slurm.txt").stat().st_uid == pwd.getpwnam("uwsalice").pw_uid
    shub.api("POST", f"jobs/{job['id']}/stop", user, expect=202)
    assert shub.wait_job(job["id"], user, TERMINAL, timeout=30)["status"] == "cancelled"


@pytest.mark.browser
def test_launch_on_slurm_from_the_workspace_page(shub, browser):
    """The launch form asks for SLURM's resources with the job type's defaults, says which
    limit a request breaks, and shows the running job's SLURM id and node."""
    from playwright.sync_api import expect

    token = shub.add_user("uwsadmin", admin=True)
    ws = shub.api("POST", "workspaces", token, json={"name": f"slurm page {uuid.uuid4().hex[:6]}"}, expect=201)
    context, page = browserutil.login(shub, browser, "uwsadmin", ADMIN_PASSWORD)
    try:
        page.goto(f"{shub.url}/hub/workspaces/{ws['id']}")
        page.select_option("#job-type-select", "minimal")
        page.select_option("#resource-select", "local")
        expect(page.locator("#res-cpus")).to_be_hidden()  # the local spawner reserves nothing
        page.select_option("#resource-select", "slurm")
        expect(page.locator("#res-cpus")).to_be_visible()
        expect(page.locator("#res-cpus")).to_have_attribute("placeholder", "1")
        expect(page.locator("#res-memory")).to_have_attribute("placeholder", "128M")

        page.fill("#res-memory", "4G")
        page.click("#launch-job")
        expect(page.locator("#error")).to_contain_text("memory=4G is over the limit of 1G")
        assert shub.api("GET", f"jobs?workspace={ws['id']}", token)["items"] == []

        page.fill("#res-memory", "256M")
        page.fill("#res-time_limit", "3")
        page.click("#launch-job")
        expect(page.locator("#job-status")).to_have_text("running", timeout=60_000)
        expect(page.locator("#job-where")).to_contain_text("On slurm: job ")
        expect(page.locator("#job-where")).to_contain_text("on node localhost")
        [job] = shub.api("GET", f"jobs?workspace={ws['id']}", token)["items"]
        assert job["resources"]["memory"] == "256M" and job["resources"]["time_limit"] == "3"
        assert slurmutil.job_info(job["resource_id"])["state"] == "RUNNING"

        page.click("#stop-job")
        expect(page.locator(f"#jobs tr[data-job-id='{job['id']}'] .job-status")).to_have_text(
            "cancelled", timeout=30_000
        )
    finally:
        context.close()


def test_scancel_outside_the_hub_is_noticed(shub, user):
    job = shub.wait_job(slurm_launch(shub, user)["id"], user, {"running"} | TERMINAL, timeout=60)
    assert job["status"] == "running", job["reason"]
    started = time.monotonic()
    slurmutil.scancel(job["resource_id"])
    # the poller runs squeue every second here: noticed within about one cycle
    job = shub.wait_job(job["id"], user, TERMINAL, timeout=15)
    assert time.monotonic() - started < 5
    assert job["status"] == "cancelled"
    assert f"SLURM job {job['resource_id']} was cancelled outside uws-hub" in job["reason"]
    assert shub.request("GET", f"/user/uwsalice/{job['server_name']}/", user).status_code != 200


@pytest.mark.expect_log_errors(
    "Unhandled error starting uwsalice's server: SLURM job \\d+ was cancelled outside uws-hub \\(scancel\\)"
)
def test_scancel_while_queued_is_cancelled(shub, user):
    """A job cancelled outside the hub before its server answered ends cancelled too."""
    # a job that takes all but 256 MB of the node's memory: ours (1 GB) waits for Resources
    blocker = slurmutil.sbatch(f"--mem={slurmutil.free_memory_mb() - 256}M", "-J", "uws-test-blocker")
    try:
        wait_for(lambda: slurmutil.job_info(blocker).get("state") == "RUNNING", 15, what="the blocker to run")
        job = slurm_launch(shub, user, job_type="big", resources={"memory": "1G"})
        job = shub.wait_job(job["id"], user, {"queued"} | TERMINAL, timeout=30)
        # SLURM's reason is "None" until the scheduler looked at the job, then "Resources"
        wait_for(
            lambda: "(Resources)" in (shub.api("GET", f"jobs/{job['id']}", user)["reason"] or ""),
            30,
            what="SLURM's pending reason",
        )
        job = shub.api("GET", f"jobs/{job['id']}", user)
        assert job["status"] == "queued"
        assert job["reason"] == "Pending in the SLURM queue (Resources)", job["reason"]
        assert slurmutil.job_info(job["resource_id"])["state"] == "PENDING"
        slurmutil.scancel(job["resource_id"])
        job = shub.wait_job(job["id"], user, TERMINAL, timeout=15)
        assert job["status"] == "cancelled" and "cancelled outside uws-hub" in job["reason"]
    finally:
        slurmutil.scancel(blocker)


def test_every_progress_reader_sees_a_queued_job_start(shub, user):
    """JupyterHub's progress API and the hub's own events both follow a job waiting in
    SLURM's queue: each one sees it leave the queue (progress wakes on changes, and
    a second reader must not steal the first one's wake-up)."""
    blocker = slurmutil.sbatch(f"--mem={slurmutil.free_memory_mb() - 256}M", "-J", "uws-test-blocker")
    events = SSEReader(shub, user)
    try:
        wait_for(lambda: slurmutil.job_info(blocker).get("state") == "RUNNING", 15, what="the blocker to run")
        job = slurm_launch(shub, user, job_type="big", resources={"memory": "1G"})
        job = shub.wait_job(job["id"], user, {"queued"} | TERMINAL, timeout=30)
        assert job["status"] == "queued", job["reason"]
        # a second reader: JupyterHub's progress API for the job's server
        with shub.request(
            "GET", f"users/uwsalice/servers/{job['server_name']}/progress", user, stream=True, timeout=60
        ) as progress:
            assert progress.status_code == 200, progress.text
            slurmutil.scancel(blocker)
            messages = []
            for line in progress.iter_lines(chunk_size=None, decode_unicode=True):
                if line.startswith("data:"):
                    messages.append(json.loads(line[5:]).get("message", ""))
                    if "Running on node" in messages[-1] or "ready" in line:
                        break
        assert any("Running on node localhost" in m for m in messages), messages
        wait_for(
            lambda: any(
                "Running on node localhost" in e["data"].get("message", "")
                for e in events.events
                if e["job_id"] == job["id"] and e["kind"] == "progress"
            ),
            30,
            what="the hub's progress event",
        )
        shub.api("POST", f"jobs/{job['id']}/stop", user, expect=202)
        shub.wait_job(job["id"], user, TERMINAL, timeout=30)
    finally:
        events.close()
        slurmutil.scancel(blocker)


def test_server_that_cannot_start_fails_with_its_output(shub, user):
    """The reason says why; the output (with the server's token, revoked) is its owner's, redacted."""
    job = slurm_launch(shub, user, job_type="broken")
    job = shub.wait_job(job["id"], user, TERMINAL | {"running"}, timeout=60)
    assert job["status"] == "failed", job["reason"]
    assert job["reason"].startswith("The server failed to start: SLURM job")
    assert "\n" not in job["reason"]
    assert slurmutil.job_info(job["resource_id"])["state"] == "FAILED"
    output = shub.api("GET", f"jobs/{job['id']}/output", user, expect=200)["output"]
    assert "boom: the server cannot start" in output
    assert "JUPYTERHUB_API_TOKEN=[redacted]" in output
    raw = output_file(job).read_text()
    token = re.search(r"^JUPYTERHUB_API_TOKEN=(\w+)$", raw, re.M).group(1)
    assert shub.request("GET", "user", token).status_code == 403


def test_resources_over_the_limits_are_refused(shub, user):
    before = shub.api("GET", "jobs", user)["_pagination"]["total"]
    for resources, words in [
        ({"cpus": 3}, "cpus=3 is over the limit of 2"),
        ({"memory": "2G"}, "memory=2G is over the limit of 1G"),
        ({"gpus": 1}, "gpus=1 is over the limit of 0"),
        ({"time_limit": "11"}, "time_limit=11 is over the limit of 10"),
        ({"partition": "gpu"}, "partition=gpu is not allowed (allowed: debug)"),
    ]:
        r = slurm_launch(shub, user, resources=resources, expect=422)
        assert words in r["message"] and "'minimal'" in r["message"], r
    # refused before any job exists
    assert shub.api("GET", "jobs", user)["_pagination"]["total"] == before


@pytest.mark.expect_log_errors("Unhandled error starting uwsalice's server: sbatch failed \\(exit status 1\\)")
def test_sbatch_refusal_fails_the_job(shub, user):
    job = slurm_launch(shub, user, job_type="big", resources={"memory": "100000G"})
    job = shub.wait_job(job["id"], user, TERMINAL | {"running"}, timeout=30)
    assert job["status"] == "failed"
    assert "sbatch failed" in job["reason"] and "memory" in job["reason"].lower(), job["reason"]
    assert job["resource_id"] is None


def test_a_single_account_hub_submits_as_its_own_account_whatever_the_users_name(make_hub, system_users, slurm):
    """Single-account mode (``system_users`` off, the default): every job runs as the hub's
    own account, and so does an ``exec_prefix`` (batchspawner's ``sudo -E -u {username}``).
    Its ``{username}`` was the hub user's name, which a user admin (or an identity provider
    whose users choose their names) picks: a hub user named ``daemon`` (or ``root``, under a
    hub that is not root) submitted its jobs as that system account, past every check of
    ``SystemAccounts``. Here the prefix switches with ``runuser``."""
    config = SLURM_CONFIG.replace("c.UWSHub.system_users = True", "c.UWSHub.system_users = False")
    hub = make_hub(config + 'c.WorkspaceSlurmSpawner.exec_prefix = "runuser -u {username} --"\n')
    try:
        token = hub.add_user("daemon")
        job = slurm_launch(hub, token)
        job = hub.wait_job(job["id"], token, {"running"} | TERMINAL, timeout=60)
        assert job["status"] == "running", job["reason"]
        assert slurmutil.job_info(job["resource_id"])["user"] == pwd.getpwuid(os.geteuid()).pw_name
        hub.api("POST", f"jobs/{job['id']}/stop", token, expect=202)
        assert hub.wait_job(job["id"], token, TERMINAL, timeout=30)["status"] == "cancelled"
    finally:
        hub.stop()


def test_hub_restart_with_a_pending_and_a_running_job(make_hub, system_users, slurm):
    """Restart the hub (SIGTERM, servers left running) with one job running and one
    pending in SLURM: both are known after the restart, the running one answers,
    the pending one goes on to run, nothing is submitted twice, orphans are cancelled."""
    hub = make_hub(
        SLURM_CONFIG
        + "c.JupyterHub.cleanup_servers = False\n"
        # every job is submitted held: it pends until the test releases it
        + "c.WorkspaceSlurmSpawner.req_options = '--hold'\n"
        + "c.WorkspaceSlurmSpawner.orphan_sweep_interval_seconds = 1\n"
    )
    token = hub.add_user("uwsbob")
    prefix = f"uws-{hub_id(hub.db_url)}-"
    foreign = orphan = None
    jobs = []
    try:
        running = slurm_launch(hub, token)
        jobs.append(running)
        running = hub.wait_job(running["id"], token, {"queued"} | TERMINAL, timeout=30)
        assert running["status"] == "queued" and running["resource_id"]
        slurmutil.release(running["resource_id"])
        running = hub.wait_job(running["id"], token, {"running"} | TERMINAL, timeout=60)
        assert running["status"] == "running", running["reason"]

        pending = slurm_launch(hub, token)
        jobs.append(pending)
        wait_for(
            lambda: "JobHeldUser" in (hub.api("GET", f"jobs/{pending['id']}", token)["reason"] or ""),
            15,
            what="the pending job's SLURM reason",
        )
        pending = hub.api("GET", f"jobs/{pending['id']}", token)
        assert pending["status"] == "queued" and pending["resource_id"]
        assert pending["reason"] == "Pending in the SLURM queue (JobHeldUser)"

        # a job named like this hub's that no job knows (the hub died right after sbatch),
        # and one of another hub: only the first is this hub's to cancel
        orphan = slurmutil.sbatch("--hold", "-J", f"{prefix}job-9999")
        foreign = slurmutil.sbatch("--hold", "-J", "uws-0therhub-job-1")

        hub.stop()  # SIGTERM; cleanup_servers is off: SLURM jobs stay
        assert slurmutil.job_info(running["resource_id"])["state"] == "RUNNING"
        assert slurmutil.job_info(pending["resource_id"])["state"] == "PENDING"
        hub.start()

        # the running job is still running and reachable
        after = hub.api("GET", f"jobs/{running['id']}", token)
        assert after["status"] == "running" and after["resource_id"] == running["resource_id"]
        assert hub.request("GET", after["url"], token).status_code == 200
        # the pending one was adopted, not submitted again; released, it runs
        wait_for(lambda: "Adopted" in hub.log_text(), 30, what="the pending job's adoption")
        slurmutil.release(pending["resource_id"])
        after = hub.wait_job(pending["id"], token, {"running"} | TERMINAL, timeout=60)
        assert after["status"] == "running", after["reason"]
        assert after["resource_id"] == pending["resource_id"]
        assert hub.request("GET", after["url"], token).status_code == 200
        for job in (running, pending):
            assert slurmutil.jobs_named(f"{prefix}job-{job['id']}") == [job["resource_id"]]
        # the adopted server kept its API token (read back from its batch script): the hub knows it
        script = slurmutil.run("scontrol", "write", "batch_script", pending["resource_id"], "-").stdout
        server_token = next(
            line.split("=", 1)[1].strip("'")
            for line in script.splitlines()
            if line.startswith("export JUPYTERHUB_API_TOKEN=")
        )
        r = requests.get(f"{hub.url}/hub/api/user", headers={"Authorization": f"token {server_token}"}, timeout=10)
        assert r.status_code == 200 and r.json()["name"] == "uwsbob"
        # with the note of every server's token, not JupyterHub's "retrieved from spawner": its
        # requests are not its owner's activity, as no server token's are (JupyterHub goes by
        # the note), an editor's server's included (docs/security.md)
        notes = [t["note"] for t in hub.api("GET", "users/uwsbob/tokens")["api_tokens"]]
        assert f"Server at /user/uwsbob/{pending['server_name']}/" in notes, notes
        assert not [n for n in notes if n.startswith("retrieved from spawner")], notes
        # orphans of this hub are cancelled, other hubs' jobs left alone
        wait_for(lambda: slurmutil.job_info(orphan)["state"] == "CANCELLED", 15, what="the orphan to be cancelled")
        assert slurmutil.job_info(foreign)["state"] == "PENDING"

        for job in jobs:
            hub.api("POST", f"jobs/{job['id']}/stop", token, expect=202)
        for job in jobs:
            assert hub.wait_job(job["id"], token, TERMINAL, timeout=30)["status"] == "cancelled"
    finally:
        slurmutil.scancel(*[j for j in (orphan, foreign) if j])
        slurmutil.scancel(*[j["resource_id"] for j in jobs if j.get("resource_id")])
        for job in jobs:
            slurmutil.scancel(*slurmutil.jobs_named(f"{prefix}job-{job['id']}"))
        hub.stop()


@pytest.mark.parametrize("recorded", [True, False], ids=["uid-recorded", "from-before"])
@pytest.mark.parametrize("wanted", ["running", "stopped"])
def test_a_pending_job_whose_id_another_account_got_is_neither_adopted_nor_cancelled(
    make_hub, system_users, slurm, wanted, recorded
):
    """SLURM gives a job id again once it has forgotten the job (slurmctld restarted without
    its state, ``FirstJobId``), to any account's next job. A restarted hub takes over the
    job of a start it lost track of by its stored id, as root: to run, it took bob's
    pending job for alice's server's, found its batch script not hers and cancelled it;
    to stop, it cancelled it. The job's uid is recorded at submission: another uid's job
    under the id is neither adopted nor cancelled (``scancel -u <uid>``); the start submits
    anew, the stop ends the job. (The cluster is shared: the reuse is made by giving the
    row the id of bob's job, as if SLURM had given it again.) A row from before uids were
    recorded (``resource_uid`` empty) is taken as its account's uid now: it took bob's job
    for alice's and cancelled it."""
    hub = make_hub(
        SLURM_CONFIG
        + "c.JupyterHub.cleanup_servers = False\n"
        # every job is submitted held: it pends until the test releases it
        + "c.WorkspaceSlurmSpawner.req_options = '--hold'\n"
    )
    token = hub.add_user("uwsalice")
    prefix = f"uws-{hub_id(hub.db_url)}-"
    job = slurm_launch(hub, token)
    theirs = None
    try:
        job = hub.wait_job(job["id"], token, {"queued"} | TERMINAL, timeout=30)
        assert job["status"] == "queued" and job["resource_id"], job
        theirs = slurmutil.sbatch("--hold", account="uwsbob")
        hub.stop()  # SIGTERM; cleanup_servers is off: SLURM jobs stay
        engine = create_engine(hub.db_url)
        with engine.begin() as conn:
            row = conn.execute(text("SELECT resource_uid FROM uws_jobs WHERE id = :id"), {"id": job["id"]}).one()
            assert row.resource_uid == pwd.getpwnam("uwsalice").pw_uid  # recorded at submission
            conn.execute(
                text(
                    "UPDATE uws_jobs SET resource_id = :r, resource_uid = :u, target = :t, outcome = :o WHERE id = :id"
                ),
                {
                    "r": theirs,
                    "u": row.resource_uid if recorded else None,
                    "t": wanted,
                    "o": None if wanted == "running" else "cancelled",
                    "id": job["id"],
                },
            )
        engine.dispose()
        hub.start()
        if wanted == "stopped":
            assert hub.wait_job(job["id"], token, TERMINAL, timeout=30)["status"] == "cancelled"
            assert f"Cancelling SLURM job {theirs} left by an interrupted start of job {job['id']}" in hub.log_text()
        else:
            wait_for(
                lambda: hub.api("GET", f"jobs/{job['id']}", token)["resource_id"] not in (theirs, None),
                30,
                what="a new submission",
            )
            after = hub.api("GET", f"jobs/{job['id']}", token)
            assert after["status"] == "queued" and after["resource_id"] != job["resource_id"], after
            log = hub.log_text()
            assert f"SLURM job {theirs} of job {job['id']} already ended (VANISHED); submitting anew" in log
            hub.api("POST", f"jobs/{job['id']}/stop", token, expect=202)
            assert hub.wait_job(job["id"], token, TERMINAL, timeout=30)["status"] == "cancelled"
        assert slurmutil.job_info(theirs)["state"] == "PENDING"  # bob's: neither adopted nor cancelled
    finally:
        slurmutil.scancel(*[j for j in (theirs, job.get("resource_id")) if j])
        slurmutil.scancel(*slurmutil.jobs_named(f"{prefix}job-{job['id']}"))
        hub.stop()


@pytest.mark.expect_log_errors(
    "Unhandled error starting uwsm[0-9a-f]+'s server: SLURM job \\d+ was cancelled outside uws-hub \\(scancel\\)"
)
def test_jobs_other_accounts_name_like_the_hubs_are_left_alone(make_hub, system_users, slurm):
    """Any account of the cluster names its jobs and sets their comments as it likes,
    newlines too. Jobs of an account named ``<prefix>job-²`` (``int`` refused it),
    ``<prefix>job-012``, an array named like one of the hub's jobs (whose ids ``int``
    refused: every sweep failed) and one whose name printed a line of root's job as an
    orphan (the sweep cancelled it as root): the orphan sweep goes on cancelling a real
    orphan and leaves all of them alone. A user's server's job whose comment printed a
    line of another user's server's job (cancelled: it ended in the hub) forges nothing."""
    hub = make_hub(
        SLURM_CONFIG
        # every job is submitted held: it pends until the test releases it
        + "c.WorkspaceSlurmSpawner.req_options = '--hold'\n"
        + "c.WorkspaceSlurmSpawner.orphan_sweep_interval_seconds = 1\n"
    )
    prefix = f"uws-{hub_id(hub.db_url)}-"
    account = f"uwsm{uuid.uuid4().hex[:6]}"  # no other test's: its jobs are all this test's
    subprocess.run(["useradd", "--no-create-home", account], check=True)
    jobs: list[dict] = []
    theirs: list[str] = []
    roots: list[str] = []
    try:
        bob, mallory = hub.add_user("uwsbob"), hub.add_user(account)
        for token in (bob, mallory):
            job = hub.wait_job(slurm_launch(hub, token)["id"], token, {"queued"} | TERMINAL, timeout=30)
            assert job["status"] == "queued" and job["resource_id"], job
            jobs.append(job)
        bobs, own = jobs
        wait_for(
            lambda: "JobHeldUser" in (hub.api("GET", f"jobs/{bobs['id']}", bob)["reason"] or ""),
            15,
            what="the SLURM reason of bob's job",
        )
        roots.append(slurmutil.sbatch("--hold", "-J", "not-the-hubs"))
        forged = f"{roots[0]}|RUNNING|2026-01-01T00:00:00|{prefix}job-9998"
        for args in (
            ("-J", f"{prefix}job-²"),
            ("-J", f"{prefix}job-012"),
            ("-J", f"{prefix}job-{bobs['id']}", "--array=0-1"),
            ("-J", f"x\n{forged}"),
        ):
            out = slurmutil.run(
                "runuser", "-u", account, "--", "sbatch", "--parsable", "--hold", "-D", "/tmp",
                "--output=/dev/null", *args, "--wrap", "sleep 600",
            )  # fmt: skip
            theirs.append(out.stdout.strip())
        # the comment of mallory's own server's job prints a line of bob's: cancelled
        comment = f"x\n{bobs['resource_id']}|CANCELLED|None|localhost|1:00|"
        slurmutil.run("runuser", "-u", account, "--", "scontrol", "update", f"JobId={own['resource_id']}",
                      f"Comment={comment}")  # fmt: skip
        assert slurmutil.job_info(own["resource_id"])["comment"].startswith("x\n")
        orphan = slurmutil.sbatch("--hold", "-J", f"{prefix}job-9999")
        roots.append(orphan)

        wait_for(lambda: slurmutil.job_info(orphan)["state"] == "CANCELLED", 15, what="the orphan to be cancelled")
        # the hub read the comment: it saw mallory's job end (cancelled outside the hub)
        slurmutil.scancel(own["resource_id"])
        assert hub.wait_job(own["id"], mallory, TERMINAL, timeout=30)["status"] == "cancelled"
        for job_id in [roots[0], *theirs, bobs["resource_id"]]:
            assert slurmutil.job_info(job_id)["state"] == "PENDING", (job_id, slurmutil.job_info(job_id))
        after = hub.api("GET", f"jobs/{bobs['id']}", bob)
        assert after["status"] == "queued", after
        assert after["reason"] == "Pending in the SLURM queue (JobHeldUser)"
    finally:
        slurmutil.scancel(*roots, *theirs, *[j["resource_id"] for j in jobs])
        hub.stop()
        subprocess.run(["userdel", account], check=False)


def test_a_start_completes_when_its_wake_cannot_reach_the_hub(shub, user):
    """The wake is a hint: a job whose batch script cannot reach the hub is noticed by
    the poller's own cycles, as before."""
    job = slurm_launch(shub, user, job_type="unwakeable")
    job = shub.wait_job(job["id"], user, {"running"} | TERMINAL, timeout=60)
    assert job["status"] == "running", job["reason"]
    assert f"/hub/api/jobs/{job['id']}/wake" not in shub.log_text()
    assert shub.request("GET", job["url"], user).json()["job"] == str(job["id"])
    shub.api("POST", f"jobs/{job['id']}/stop", user, expect=202)
    assert shub.wait_job(job["id"], user, TERMINAL, timeout=30)["status"] == "cancelled"


@pytest.fixture(scope="module")
def sleepy_hub(make_hub, system_users, slurm):
    """A hub whose poller would wait 10 minutes between cycles: only a job's wake
    makes it look at SLURM again. Jobs are submitted held (released by the tests)."""
    return make_hub(
        SLURM_CONFIG
        + "c.SlurmPoller.poll_interval_seconds = 600\n"
        + "c.SlurmPoller.fast_poll_interval_seconds = 600\n"
        + "c.WorkspaceSlurmSpawner.req_options = '--hold'\n"
    )


def poll_cycles(hub) -> float:
    from .test_metrics import scrape, value

    return value(scrape(hub, hub.add_user("uwsadmin", admin=True)), "uws_slurm_poll_duration_seconds_count")


def queued_job(hub, token) -> tuple[dict, str]:
    """A job held in SLURM's queue, once the hub has seen it pending; and its server's token."""
    job = slurm_launch(hub, token)
    wait_for(
        lambda: "JobHeldUser" in (hub.api("GET", f"jobs/{job['id']}", token)["reason"] or ""),
        30,
        what="the job's first poll",
    )
    job = hub.api("GET", f"jobs/{job['id']}", token)
    script = slurmutil.run("scontrol", "write", "batch_script", job["resource_id"], "-").stdout
    return job, token_from_script(script)


def test_a_jobs_wake_starts_a_poll_cycle(sleepy_hub):
    """The batch script wakes the hub once its port is in the job's comment: the start
    completes without the poller's next cycle (ten minutes away here)."""
    token = sleepy_hub.add_user("uwsalice")
    job, _ = queued_job(sleepy_hub, token)
    try:
        slurmutil.release(job["resource_id"])
        job = sleepy_hub.wait_job(job["id"], token, {"running"} | TERMINAL, timeout=60)
        assert job["status"] == "running", job["reason"]
        assert f"204 POST /hub/api/jobs/{job['id']}/wake" in sleepy_hub.log_text()
        assert sleepy_hub.request("GET", job["url"], token).json()["job"] == str(job["id"])
        # once the start is over, a wake has nothing to do
        script = slurmutil.run("scontrol", "write", "batch_script", job["resource_id"], "-").stdout
        r = sleepy_hub.request("POST", f"/hub/api/jobs/{job['id']}/wake", token_from_script(script))
        assert r.status_code == 409, r.text
    finally:
        sleepy_hub.api("POST", f"jobs/{job['id']}/stop", token, expect=None)
        slurmutil.scancel(job["resource_id"])


def test_only_the_jobs_own_token_wakes_the_hub(sleepy_hub):
    """Anonymous, the owner's own API token, a stranger's, the job's token for another
    job: 403, and no poll cycle. The job's own token: a cycle."""
    token = sleepy_hub.add_user("uwsalice")
    stranger = sleepy_hub.add_user("uwsbob")
    job, server_token = queued_job(sleepy_hub, token)
    other, _ = queued_job(sleepy_hub, stranger)
    try:
        assert server_token and server_token != token
        before = poll_cycles(sleepy_hub)
        wake = f"/hub/api/jobs/{job['id']}/wake"
        for who, path in [
            (None, wake),
            (token, wake),
            (stranger, wake),
            (sleepy_hub.admin_token, wake),
            (server_token, f"/hub/api/jobs/{other['id']}/wake"),
            (server_token + "x", wake),
        ]:
            r = sleepy_hub.request("POST", path, who)
            assert r.status_code == 403, (who, path, r.status_code, r.text)
        assert sleepy_hub.request("POST", "/hub/api/jobs/nope/wake", server_token).status_code == 404
        time.sleep(1)
        assert poll_cycles(sleepy_hub) == before
        # the job's own server token
        assert sleepy_hub.request("POST", wake, server_token).status_code == 204
        wait_for(lambda: poll_cycles(sleepy_hub) == before + 1, 15, what="the cycle of the wake")
        # another wake right after is put off a moment, not lost
        assert sleepy_hub.request("POST", wake, server_token).status_code == 204
        wait_for(lambda: poll_cycles(sleepy_hub) == before + 2, 15, what="the cycle of the second wake")
    finally:
        for j, t in ((job, token), (other, stranger)):
            sleepy_hub.api("POST", f"jobs/{j['id']}/stop", t, expect=None)
            slurmutil.scancel(j["resource_id"])


def test_poll_cycles_are_in_the_metrics(shub, user):
    """The shared poller's cycles (one squeue each) show up in /hub/metrics."""
    from .test_metrics import scrape, value

    job = slurm_launch(shub, user)
    shub.wait_job(job["id"], user, {"running"} | TERMINAL, timeout=60)
    samples = scrape(shub, shub.add_user("uwsadmin", admin=True))
    assert value(samples, "uws_slurm_poll_duration_seconds_count") >= 1
    assert value(samples, "uws_jobs", status="running", resource="slurm") >= 1
    shub.api("POST", f"jobs/{job['id']}/stop", user, expect=202)
    assert shub.wait_job(job["id"], user, TERMINAL, timeout=30)["status"] == "cancelled"


def test_zz_time_limit_fails_the_job(slurm_time_limits):
    """SLURM ends the job at its time limit (TIMEOUT): failed, with the reason."""
    shub, user = slurm_time_limits.hub, slurm_time_limits.user
    job = shub.wait_job(slurm_time_limits.server["id"], user, TERMINAL, timeout=150)
    assert job["status"] == "failed", job["reason"]
    assert f"SLURM job {job['resource_id']} reached its time limit" in job["reason"]
    assert "\n" not in job["reason"]
    # the tail of the job's output, for its owner
    assert "DUE TO TIME LIMIT" in shub.api("GET", f"jobs/{job['id']}/output", user, expect=200)["output"]
    assert slurmutil.job_info(job["resource_id"])["state"] == "TIMEOUT"
