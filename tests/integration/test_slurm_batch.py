"""Batch jobs on a real single-node SLURM cluster (scripts/slurm-up.sh), as real system
users: the command itself is the SLURM job (no server, no port); exit codes, a signal,
``--time`` expiry, a stop and a ``scancel`` outside the hub map to the outcome; the log
is SLURM's output file, outside the workspace, followed live; a hub killed while jobs
run finds every outcome, and runs none twice."""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import signal
import stat
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from .. import slurmutil
from ..helpers import follow_log
from ..hubutil import REPO, wait_for

pytestmark = pytest.mark.slurm

TERMINAL = {"completed", "failed", "cancelled"}
JOB = [sys.executable, str(REPO / "tests" / "batch_job.py")]
SLURM = {"interactive": False, "resources": ["slurm"], "default_resources": {"cpus": 1, "memory": "128M"}}

JOB_TYPES = {
    "report": {
        **SLURM,
        "cmd": [*JOB, "report", "{text}", ["--note", "{note}"]],
        "env": {"ECHO_TEXT": "{text}"},
        "parameters": {"text": {"type": "string", "required": True}, "note": {"type": "string"}},
    },
    "exit": {
        **SLURM,
        "cmd": [*JOB, "exit", "{code}"],
        "parameters": {"code": {"type": "int", "default": 0, "min": 0, "max": 255}},
    },
    "signal": {**SLURM, "cmd": [*JOB, "signal", "9"]},
    "sleep": {
        **SLURM,
        "cmd": [*JOB, "sleep", "{seconds}"],
        "parameters": {"seconds": {"type": "float", "default": 1, "min": 0, "max": 600}},
    },
    "timed": {**SLURM, "cmd": [*JOB, "sleep", "600"], "time_limit_seconds": 60},
    "lines": {
        **SLURM,
        "cmd": [*JOB, "lines", "{n}", "{seconds}"],
        "parameters": {"n": {"type": "int", "default": 5}, "seconds": {"type": "float", "default": 0.2}},
    },
    "count": {**SLURM, "cmd": [*JOB, "count", "{file}"], "parameters": {"file": {"type": "string", "required": True}}},
    "wait": {**SLURM, "cmd": [*JOB, "wait", "{file}"], "parameters": {"file": {"type": "string", "required": True}}},
    # prints more than MOST_LOG_BYTES, then waits
    "chatty": {**SLURM, "cmd": ["/bin/sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' x; sleep 300"]},
}
#: UWSHub.max_job_log_bytes of these hubs
MOST_LOG_BYTES = 1 << 20


def config() -> str:
    return slurmutil.hub_config(JOB_TYPES) + f"c.UWSHub.max_job_log_bytes = {MOST_LOG_BYTES}\n"


@pytest.fixture(scope="module")
def hub(make_hub, system_users, slurm):
    return make_hub(config())


@pytest.fixture(scope="module")
def owner(hub):
    return hub.add_user("uwsalice")


@pytest.fixture(scope="module")
def ws(hub, owner):
    return hub.api("POST", "workspaces", owner, json={"name": f"slurm batch {uuid.uuid4().hex[:8]}"}, expect=201)


def submit(hub, token, ws, job_type, **parameters):
    r = hub.request("POST", f"workspaces/{ws['id']}/jobs", token, json={"job_type": job_type, "parameters": parameters})
    assert r.status_code == 202, r.text
    return r.json()


def finish(hub, token, job, timeout=90):
    return hub.wait_job(job["id"], token, TERMINAL, timeout=timeout)


def running(hub, token, job):
    job = hub.wait_job(job["id"], token, {"running"} | TERMINAL, timeout=60)
    assert job["status"] == "running", job
    return job


@pytest.mark.before_all
def test_a_timed_job_runs_with_its_time_limit(slurm_time_limits):
    """A batch job with a 60 s time limit (SLURM's shortest; conftest.py's
    ``slurm_time_limits``): checked at once, ended by SLURM by the module's last test."""
    job = slurm_time_limits.batch
    assert job["resource"] == "slurm" and job["job_type"] == "timed"
    info = slurmutil.job_info(job["resource_id"])
    assert (info["state"], info["time_limit"]) == ("RUNNING", "1:00")


def test_the_command_is_the_slurm_job_and_its_values_arrive_literally(hub, owner, ws):
    hostile = "; rm -rf / #\n$(id) `id` ${HOME} 'quoted' \"double\" | & *"
    job = submit(hub, owner, ws, "report", text=hostile, note="$(touch /tmp/pwned)\nline two")
    done = finish(hub, owner, job)
    assert (done["status"], done["exit_code"], done["exit_signal"]) == ("completed", 0, None), done
    slurm_id = done["resource_id"]
    assert done["reason"] == f"The command exited with status 0 (SLURM job {slurm_id} on node localhost)"
    info = slurmutil.job_info(slurm_id)
    # the SLURM job is the command: its user's, named like the hub's jobs, no port in its comment
    assert info["user"] == "uwsalice" and info["name"].endswith(f"-job-{job['id']}") and info["comment"] == "(null)"
    report = hub.request("GET", done["results"][0]["url"], owner).json()
    assert report["argv"] == [hostile, "--note", "$(touch /tmp/pwned)\nline two"]
    assert report["env"]["ECHO_TEXT"] == hostile and report["env"]["UWS_PARAM_TEXT"] == hostile
    assert report["uid"] == pwd.getpwnam("uwsalice").pw_uid
    assert report["cwd"] == str(hub.workspaces_root / "uwsalice" / ws["slug"])
    assert not [name for name in report["env_names"] if "TOKEN" in name or name.startswith("JUPYTERHUB_")]
    # the log is SLURM's output file
    r = hub.request("GET", f"jobs/{job['id']}/log", owner)
    assert (r.status_code, r.text) == (200, "reported\n")
    # its result counts toward the disk quota when the job ends, not at the next usage pass
    wait_for(
        lambda: (
            hub.api("GET", f"workspaces/{ws['id']}", owner, expect=200)["disk_usage_bytes"]
            == done["results"][0]["size"]
        ),
        30,
        what="the result to be counted",
    )


def test_an_editors_job_runs_as_the_editor_on_slurm(make_hub, group_prefix):
    """A job an editor of a shared workspace launches is submitted as the editor: SLURM's
    job is theirs, it runs as their uid with the workspace's group, its results are theirs."""
    hub = make_hub(config() + f"c.UWSHub.share_posix_group_prefix = {group_prefix!r}\n")
    alice, bob = hub.add_user("uwsalice"), hub.add_user("uwsbob")
    # a job of bob's own first: SLURM now holds his groups in its cache (GroupUpdateTime),
    # from before the shared workspace's group exists (he is never its member: the hub
    # gives it to his jobs there)
    own = hub.api("POST", "workspaces", bob, json={"name": f"own {uuid.uuid4().hex[:8]}"}, expect=201)
    assert finish(hub, bob, submit(hub, bob, own, "exit", code=0))["status"] == "completed"
    shared = hub.api("POST", "workspaces", alice, json={"name": f"shared {uuid.uuid4().hex[:8]}"}, expect=201)
    hub.api("POST", f"workspaces/{shared['id']}/shares", alice, json={"user": "uwsbob", "level": "editor"}, expect=201)
    job = submit(hub, bob, shared, "report", text="from bob")
    assert job["launcher"] == "uwsbob"
    done = finish(hub, alice, job)
    assert done["status"] == "completed", (done["reason"], done.get("outcome"))
    assert slurmutil.job_info(done["resource_id"])["user"] == "uwsbob"
    report = hub.request("GET", done["results"][0]["url"], alice).json()
    assert report["uid"] == pwd.getpwnam("uwsbob").pw_uid
    group = grp.getgrnam(f"{group_prefix}{shared['id']}")
    assert group.gr_gid in report["gids"] and group.gr_mem == []
    results = hub.workspaces_root / "uwsalice" / shared["slug"] / "results" / str(done["id"])
    assert os.stat(results).st_uid == pwd.getpwnam("uwsbob").pw_uid
    # the owner's job there still runs as the owner
    done = finish(hub, alice, submit(hub, alice, shared, "report", text="from alice"))
    assert slurmutil.job_info(done["resource_id"])["user"] == "uwsalice"
    assert hub.request("GET", done["results"][0]["url"], alice).json()["uid"] == pwd.getpwnam("uwsalice").pw_uid


def test_the_log_is_outside_the_workspace_and_only_its_account_writes_it(hub, owner, ws):
    done = finish(hub, owner, submit(hub, owner, ws, "exit", code=0))
    logs = Path(re.search(r"job_log_dir = '(.*)'", hub.config_file.read_text()).group(1)) / "slurm" / "uwsalice"
    path = logs / f"job-{done['id']}.log"
    assert path.read_text() == "exiting with 0\n"
    account = pwd.getpwnam("uwsalice")
    assert (os.stat(logs).st_uid, stat.S_IMODE(os.stat(logs).st_mode)) == (account.pw_uid, 0o700)
    assert stat.S_IMODE(os.stat(logs.parent).st_mode) == 0o711
    # nothing of it in the workspace
    workspace = hub.workspaces_root / "uwsalice" / ws["slug"]
    assert not [p for p in workspace.rglob("*.log")]
    # a collaborator reads the job, not its log
    editor = hub.add_user("uwsbob")
    hub.api("POST", f"workspaces/{ws['id']}/shares", owner, json={"user": "uwsbob", "level": "editor"}, expect=201)
    assert hub.request("GET", f"jobs/{done['id']}", editor).status_code == 200
    assert hub.request("GET", f"jobs/{done['id']}/log", editor).status_code == 403
    # deleting the job removes its log
    assert hub.request("DELETE", f"jobs/{done['id']}", owner).status_code == 200
    assert not path.exists()


def test_a_job_whose_account_made_its_log_a_folder_is_deleted(hub, owner, ws):
    """The log is in the job's account's own folder, where the account makes what it likes:
    its log made a folder (an editor's job in a shared workspace, say) made the job's
    deletion, by its owner or at its destruction, a 500 for good. The job goes; the
    folder, the account's, stays."""
    done = finish(hub, owner, submit(hub, owner, ws, "exit", code=0))
    logs = Path(re.search(r"job_log_dir = '(.*)'", hub.config_file.read_text()).group(1)) / "slurm" / "uwsalice"
    path = logs / f"job-{done['id']}.log"
    path.unlink()
    path.mkdir()
    try:
        assert hub.request("DELETE", f"jobs/{done['id']}", owner).status_code == 200
        assert hub.request("GET", f"jobs/{done['id']}", owner).status_code == 404
        assert path.is_dir()
    finally:
        path.rmdir()


def test_a_link_put_at_a_jobs_log_is_not_followed(hub, owner, ws, tmp_path):
    """The log is in the job's account's own folder, where the account may put a link in
    its place (the test does it for it). The hub, root, looked at what the link named
    when it checked the logs' disk (UWSHub.max_job_log_bytes): the job learnt from its
    failure whether a path it cannot reach takes more than that, and a link into a hung
    file system held the reconciler's scan. The link is not followed."""
    hidden = tmp_path / "root-only"
    hidden.mkdir(mode=0o700)
    with open(hidden / "big", "wb") as f:
        os.posix_fallocate(f.fileno(), 0, 2 * MOST_LOG_BYTES)
    linked = running(hub, owner, submit(hub, owner, ws, "sleep", seconds=300))
    logs = Path(re.search(r"job_log_dir = '(.*)'", hub.config_file.read_text()).group(1)) / "slurm" / "uwsalice"
    path = logs / f"job-{linked['id']}.log"
    wait_for(path.exists, 30, what="the job's log")
    path.unlink()
    path.symlink_to(hidden / "big")
    try:
        # a job printing past the bound is failed by a scan, which looked at the link too
        chatty = finish(hub, owner, submit(hub, owner, ws, "chatty"))
        assert (chatty["status"], chatty["reason"]) == (
            "failed",
            f"The job's output took more than {MOST_LOG_BYTES} bytes of the hub's disk (UWSHub.max_job_log_bytes)",
        )
        assert hub.api("GET", f"jobs/{linked['id']}", owner, expect=200)["status"] == "running"
    finally:
        hub.request("POST", f"jobs/{linked['id']}/stop", owner)
        finish(hub, owner, linked)


def test_exit_codes_and_signals_map_to_the_outcome(hub, owner, ws):
    three = finish(hub, owner, submit(hub, owner, ws, "exit", code=3))
    assert (three["status"], three["exit_code"], three["exit_signal"]) == ("failed", 3, None)
    assert three["reason"] == f"The command exited with status 3 (SLURM job {three['resource_id']} on node localhost)"
    assert hub.request("GET", f"jobs/{three['id']}/log", owner).text == "exiting with 3\n"
    killed = finish(hub, owner, submit(hub, owner, ws, "signal"))
    assert (killed["status"], killed["exit_code"], killed["exit_signal"]) == ("failed", None, 9)
    assert killed["reason"].startswith("The command was killed by signal 9 (SIGKILL) (SLURM job")


def test_a_stop_cancels_and_a_scancel_outside_the_hub_is_noticed(hub, owner, ws):
    stopped = running(hub, owner, submit(hub, owner, ws, "sleep", seconds=300))
    hub.api("POST", f"jobs/{stopped['id']}/stop", owner, expect=202)
    stopped = finish(hub, owner, stopped)
    assert (stopped["status"], stopped["reason"]) == ("cancelled", "Stopped on request")
    assert slurmutil.job_info(stopped["resource_id"])["state"] == "CANCELLED"
    outside = running(hub, owner, submit(hub, owner, ws, "sleep", seconds=300))
    slurmutil.scancel(outside["resource_id"])
    outside = finish(hub, owner, outside)
    assert outside["status"] == "cancelled"
    assert outside["reason"].startswith(f"SLURM job {outside['resource_id']} was cancelled outside uws-hub (scancel")


CLEANS_UP = ["/bin/bash", "-c", 'trap "sleep 1; echo cleaned up; exit 7" TERM; echo started; sleep 300 & wait']


def test_a_stop_lets_the_command_clean_up_before_the_epilogue(make_hub, system_users, slurm):
    """With an epilogue the batch script runs the command as its child (not ``exec``):
    ``scancel``'s SIGTERM reaches the script's shell too, which waits for the command's
    own clean-up and then runs the epilogue, instead of dying at once and leaving the
    command to SLURM's SIGKILL and the epilogue unrun."""
    epilogue = "c.WorkspaceSlurmSpawner.req_epilogue = 'echo epilogue: status $status'\n"
    hub = make_hub(slurmutil.hub_config({"cleans-up": {**SLURM, "cmd": CLEANS_UP}}) + epilogue)
    owner = hub.add_user("uwsalice")
    ws = hub.api("POST", "workspaces", owner, json={"name": f"epilogue {uuid.uuid4().hex[:8]}"}, expect=201)
    job = running(hub, owner, submit(hub, owner, ws, "cleans-up"))
    wait_for(lambda: "started" in hub.request("GET", f"jobs/{job['id']}/log", owner).text, timeout=30)
    hub.api("POST", f"jobs/{job['id']}/stop", owner, expect=202)
    job = finish(hub, owner, job)
    assert (job["status"], job["reason"]) == ("cancelled", "Stopped on request")
    assert slurmutil.job_info(job["resource_id"])["state"] == "CANCELLED"
    lines = hub.request("GET", f"jobs/{job['id']}/log", owner).text.splitlines()
    assert "cleaned up" in lines and lines[-1] == "epilogue: status 7", lines


def test_the_slurm_output_file_is_followed_live(hub, owner, ws):
    job = submit(hub, owner, ws, "lines", n=6, seconds=0.7)
    events, reader = follow_log(hub, owner, job)
    reader.join(90)
    logs = [e for e in events if e[0] == "log"]
    assert "\n".join(e[1] for e in logs) == "\n".join(f"line {i}" for i in range(6))
    assert len(logs) >= 3 and logs[-1][3] - logs[0][3] > 1.5  # as written, not all at the end
    end = json.loads(events[-1][1])
    assert events[-1][0] == "end" and (end["status"], end["exit_code"]) == ("completed", 0)


def test_a_hub_killed_while_slurm_jobs_run_finds_every_outcome(make_hub, system_users, slurm):
    hub = make_hub(config())
    token = hub.add_user("uwsalice")
    ws = hub.api("POST", "workspaces", token, json={"name": "restart"}, expect=201)
    counter = f"/tmp/uws-slurm-count-{uuid.uuid4().hex[:8]}"
    release = f"/tmp/uws-slurm-release-{uuid.uuid4().hex[:8]}"
    runs_on = running(hub, token, submit(hub, token, ws, "wait", file=release))
    counted = running(hub, token, submit(hub, token, ws, "count", file=counter))
    ends_meanwhile = running(hub, token, submit(hub, token, ws, "sleep", seconds=2))
    hub.stop(signal.SIGKILL)
    wait_for(
        lambda: slurmutil.job_info(counted["resource_id"])["state"] == "COMPLETED",
        30,
        what="the counting job to end while no hub runs",
    )
    hub.start()
    assert finish(hub, token, ends_meanwhile)["status"] == "completed"
    assert finish(hub, token, counted)["status"] == "completed"
    still = hub.api("GET", f"jobs/{runs_on['id']}", token)
    assert (still["status"], still["resource_id"]) == ("running", runs_on["resource_id"]), still  # adopted
    open(release, "w").close()
    assert finish(hub, token, runs_on)["status"] == "completed"
    # nothing ran twice: one SLURM job per hub job, and the counting job counted once
    for job in (runs_on, counted, ends_meanwhile):
        assert slurmutil.jobs_named(slurmutil.job_info(job["resource_id"])["name"]) == [job["resource_id"]]
    with open(counter) as f:
        assert f.read().split() == [str(counted["id"])]


def test_a_job_found_again_by_its_name_is_of_its_own_account(make_hub, system_users, slurm):
    """A hub that died between ``sbatch`` and storing the SLURM job's id finds it by its
    name. Any account may submit SLURM jobs and name them as it likes (a job's name is in
    its environment, and the hub's job ids are counted up): bob's job named like alice's,
    submitted after hers, was taken for hers, so its outcome (completed) became hers, and
    hers, an orphan then, was cancelled. Only a job of the account it runs as is taken."""
    hub = make_hub(config())
    alice = hub.add_user("uwsalice")
    ws = hub.api("POST", "workspaces", alice, json={"name": "found by name"}, expect=201)
    release = f"/tmp/uws-slurm-release-{uuid.uuid4().hex[:8]}"
    job = running(hub, alice, submit(hub, alice, ws, "wait", file=release))
    name = slurmutil.job_info(job["resource_id"])["name"]
    decoy = slurmutil.sbatch(f"--job-name={name}", script="#!/bin/sh\nexit 0\n", account="uwsbob")
    try:
        wait_for(lambda: slurmutil.job_info(decoy)["state"] == "COMPLETED", 30, what="bob's job to end")
        hub.stop(signal.SIGKILL)
        # the hand-over the hub died in: no SLURM id stored
        engine = create_engine(hub.db_url)
        with engine.begin() as conn:
            conn.execute(text("UPDATE uws_jobs SET resource_id = NULL WHERE id = :id"), {"id": job["id"]})
        engine.dispose()
        hub.start()
        wait_for(
            lambda: hub.api("GET", f"jobs/{job['id']}", alice)["resource_id"] is not None,
            30,
            what="the job to be found again",
        )
        found = hub.api("GET", f"jobs/{job['id']}", alice)
        assert (found["status"], found["resource_id"]) == ("running", job["resource_id"]), found
        assert slurmutil.job_info(job["resource_id"])["state"] == "RUNNING"
    finally:
        open(release, "w").close()
    assert finish(hub, alice, job)["status"] == "completed"


def test_a_job_whose_slurm_id_another_account_got_is_gone_not_theirs(make_hub, system_users, slurm):
    """SLURM gives a job id again once it has forgotten the job (slurmctld restarted without
    its state, ``FirstJobId``, ``MaxJobId`` wrapped), to any account's next job: the hub
    followed bob's job under the id of alice's as hers (his pending job kept hers waiting,
    his end became her outcome, her stop cancelled his as root). The hub records the uid a
    job was submitted as: a job of another uid under its id is not the hub's, which is then
    gone, saying why, and bob's job is left alone. (The cluster is shared: the reuse is
    made by giving the row the id of bob's job, as if SLURM had given it again.)"""
    hub = make_hub(config())
    alice = hub.add_user("uwsalice")
    ws = hub.api("POST", "workspaces", alice, json={"name": "id given again"}, expect=201)
    release = f"/tmp/uws-slurm-release-{uuid.uuid4().hex[:8]}"
    job = running(hub, alice, submit(hub, alice, ws, "wait", file=release))
    theirs = slurmutil.sbatch("--hold", account="uwsbob")
    try:
        hub.stop(signal.SIGKILL)
        engine = create_engine(hub.db_url)
        with engine.begin() as conn:
            row = conn.execute(text("SELECT resource_uid FROM uws_jobs WHERE id = :id"), {"id": job["id"]}).one()
            # the uid it was submitted as, recorded with its id
            assert row.resource_uid == pwd.getpwnam("uwsalice").pw_uid
            conn.execute(text("UPDATE uws_jobs SET resource_id = :r WHERE id = :id"), {"r": theirs, "id": job["id"]})
        engine.dispose()
        hub.start()
        gone = finish(hub, alice, job, timeout=30)
        bob_uid = pwd.getpwnam("uwsbob").pw_uid
        assert (gone["status"], gone["reason"]) == (
            "failed",
            f"SLURM job {theirs} is no longer known to SLURM: its id is another account's job now (uid {bob_uid}),"
            " SLURM gave it again (it lost its state)",
        ), gone
        assert slurmutil.job_info(theirs)["state"] == "PENDING"  # left alone
    finally:
        open(release, "w").close()
        slurmutil.scancel(theirs, job["resource_id"])


def test_a_job_over_its_time_limit_fails_saying_so(slurm_time_limits):
    """Last: the job launched first reaches its 60 s limit (SLURM's TIMEOUT)."""
    done = finish(slurm_time_limits.hub, slurm_time_limits.user, slurm_time_limits.batch, timeout=180)
    assert done["status"] == "failed", done
    assert done["reason"] == (
        f"The job reached its time limit of 60 s: SLURM stopped it (SLURM job {done['resource_id']} on node localhost)"
    )
    assert slurmutil.job_info(done["resource_id"])["state"] == "TIMEOUT"
