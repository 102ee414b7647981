"""Batch jobs on the local resource, as real system users: declared parameters, the
life cycle (exit 0, exit 3, a signal, the time limit, the memory limit, a stop), logs
(whole, a range, the tail, followed live), results, deletion, values that a shell
would have read (they arrive literally), and a hub killed while jobs run."""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime

import pytest
import requests
from traitlets.config import Config

from ..helpers import (
    GHOST,
    MINIMAL_CMD,
    READ_TIMEOUT_AFTER_A_CUT,
    few_descriptors,
    follow_log,
    make_deep,
    session_nice,
)
from ..hubutil import REPO, wait_for

TERMINAL = {"completed", "failed", "cancelled"}
MB = 1024 * 1024
JOB = [sys.executable, str(REPO / "tests" / "batch_job.py")]

JOB_TYPES = {
    "minimal": {"display_name": "Minimal test server", "cmd": MINIMAL_CMD},
    "report": {
        "interactive": False,
        "display_name": "Report what it gets",
        "cmd": [
            *JOB,
            "report",
            "{text}",
            "{count}",
            "{ratio}",
            "{mode}",
            "{folder}",
            ["--loud", "{loud}"],
            ["--note", "{note}"],
        ],
        "env": {"ECHO_TEXT": "{text}", "ECHO_JOINED": "<{text}|{count}>"},
        "parameters": {
            "text": {"type": "string", "required": True, "help": "any text"},
            "count": {"type": "int", "default": 3, "min": 1, "max": 10},
            "ratio": {"type": "float", "default": 0.5, "min": 0, "max": 1},
            "mode": {"type": "choice", "label": "Speed", "choices": ["fast", "exact"], "default": "fast"},
            "folder": {"type": "path", "default": "."},
            "loud": {"type": "bool", "default": False},
            "note": {"type": "string"},
        },
    },
    "exit": {
        "interactive": False,
        "cmd": [*JOB, "exit", "{code}"],
        "parameters": {"code": {"type": "int", "default": 0, "min": 0, "max": 255}},
    },
    "signal": {"interactive": False, "cmd": [*JOB, "signal", "9"]},
    "sparse": {
        "interactive": False,
        "cmd": [*JOB, "sparse", "{size}"],
        "parameters": {"size": {"type": "int", "default": 0, "min": 0}},
    },
    "sleep": {
        "interactive": False,
        "cmd": [*JOB, "sleep", "{seconds}"],
        "parameters": {"seconds": {"type": "float", "default": 1, "min": 0, "max": 600}},
    },
    "alloc": {
        "interactive": False,
        "cmd": [*JOB, "alloc", "{mb}"],
        "parameters": {"mb": {"type": "int", "default": 10, "min": 1, "max": 4096}},
        "limits": {"memory": "4G", "cpus": 2},
    },
    "lines": {
        "interactive": False,
        "cmd": [*JOB, "lines", "{n}", "{seconds}"],
        "parameters": {"n": {"type": "int", "default": 5}, "seconds": {"type": "float", "default": 0.2}},
    },
    "count": {
        "interactive": False,
        "cmd": [*JOB, "count", "{file}"],
        "parameters": {"file": {"type": "string", "required": True}},
    },
    "wait": {
        "interactive": False,
        "cmd": [*JOB, "wait", "{file}"],
        "parameters": {"file": {"type": "string", "required": True}},
    },
    "write": {
        "interactive": False,
        "cmd": [*JOB, "write", "{size}"],
        "parameters": {"size": {"type": "int", "default": 1000, "min": 0}},
    },
    "limited": {"interactive": False, "cmd": [*JOB, "sleep", "30"], "time_limit_seconds": 2},
    "missing": {"interactive": False, "cmd": ["/nonexistent/program", "x"]},
    # leaves a process in a session of its own that looks ended (its first thread gone,
    # a second on), and its pid in the workspace
    "ghost": {
        "interactive": False,
        "cmd": [
            "sh",
            "-c",
            f"setsid /usr/bin/python3 -c '{GHOST}' </dev/null >/dev/null 2>&1 & echo $! > ghost.pid;"
            " while ! grep -q zombie /proc/$!/status; do sleep 0.05; done; echo left",
        ],
    },
}


def shipped_job_type(name: str) -> dict:
    """A job type of the shipped jupyterhub_config.py, as the hub reads it."""
    config = Config()
    exec((REPO / "jupyterhub_config.py").read_text(), {"get_config": lambda: config})
    return config.UWSHub.job_types[name]


JOB_TYPES["count-lines"] = shipped_job_type("count-lines")

BATCH_CONFIG = f"""
c.UWSHub.system_users = True
c.UWSHub.job_reconcile_interval = 1
c.UWSHub.workspace_usage_interval = 1
c.Authenticator.admin_users = {{"uwsadmin"}}
c.WorkspaceLocalProcessSpawner.kill_grace_seconds = 2
c.UWSHub.job_types = {JOB_TYPES!r}
"""


@pytest.fixture(scope="module")
def bhub(make_hub, system_users):
    return make_hub(BATCH_CONFIG)


@pytest.fixture(scope="module")
def owner(bhub):
    return bhub.add_user("uwsalice")


@pytest.fixture(scope="module")
def other(bhub):
    return bhub.add_user("uwsbob")


@pytest.fixture
def ws(bhub, owner):
    return bhub.api("POST", "workspaces", owner, json={"name": f"batch {uuid.uuid4().hex[:8]}"}, expect=201)


def submit(hub, token, ws, job_type, expect=202, **parameters):
    r = hub.request("POST", f"workspaces/{ws['id']}/jobs", token, json={"job_type": job_type, "parameters": parameters})
    assert r.status_code == expect, r.text
    return r.json()


def finish(hub, token, job, timeout=60):
    return hub.wait_job(job["id"], token, TERMINAL, timeout=timeout)


def log_of(hub, token, job, **kw):
    return hub.request("GET", f"jobs/{job['id']}/log", token, **kw)


def test_job_types_show_their_parameters(bhub, owner):
    types = {jt["name"]: jt for jt in bhub.api("GET", "job-types", owner, expect=200)}
    assert types["report"]["interactive"] is False
    params = {p["name"]: p for p in types["report"]["parameters"]}
    assert params["count"] == {
        "name": "count",
        "type": "int",
        "label": "Count",
        "help": "",
        "default": 3,
        "required": False,
        "min": 1,
        "max": 10,
        "choices": None,
        "max_length": 4096,
    }
    assert params["mode"]["choices"] == ["fast", "exact"]
    assert params["mode"]["label"] == "Speed"
    assert types["minimal"]["parameters"] == []
    # the command is the admin's: never shown
    assert "cmd" not in types["report"]


def test_a_job_that_exits_0_completes_with_its_log_and_results(bhub, owner, ws):
    job = submit(bhub, owner, ws, "report", text="hello", loud=True)
    assert (job["status"], job["interactive"], job["results_dir"]) == ("pending", False, f"results/{job['id']}")
    assert job["parameters"] == {"text": "hello", "count": 3, "ratio": 0.5, "mode": "fast", "folder": ".", "loud": True}
    done = finish(bhub, owner, job)
    assert (done["status"], done["exit_code"], done["exit_signal"]) == ("completed", 0, None), done
    assert done["reason"] == "The command exited with status 0"
    assert done["running_at"] and done["finished_at"] >= done["running_at"]
    # the log, whole
    r = log_of(bhub, owner, job)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    assert r.text == "reported\n"
    # the results, listed for the one job, with a download link through the files API
    [result] = done["results"]
    assert (result["path"], result["mime_type"]) == (f"results/{job['id']}/report.json", "application/json")
    download = bhub.request("GET", result["url"], owner)
    assert download.status_code == 200 and len(download.content) == result["size"]
    report = download.json()
    assert report["argv"] == ["hello", "3", "0.5", "fast", ws_dir(bhub, owner, ws), "--loud"]
    # it ran as the owner's account, in the workspace
    assert report["uid"] == pwd.getpwnam("uwsalice").pw_uid
    assert report["cwd"] == ws_dir(bhub, owner, ws)
    assert report["env"]["UWS_RESULTS_DIR"] == f"{ws_dir(bhub, owner, ws)}/results/{job['id']}"
    assert report["env"]["UWS_PARAM_TEXT"] == "hello" and report["env"]["ECHO_JOINED"] == "<hello|3>"
    # a batch job gets no credential of the hub's: nothing of it can reach its log
    assert not [name for name in report["env_names"] if "TOKEN" in name or name.startswith("JUPYTERHUB_")]
    # lists filter by workspace, status and job type
    page = bhub.api("GET", f"jobs?workspace={ws['id']}&status=completed&job_type=report", owner, expect=200)
    assert [j["id"] for j in page["items"]] == [job["id"]]
    assert bhub.api("GET", f"jobs?workspace={ws['id']}&job_type=exit", owner, expect=200)["items"] == []


def ws_dir(hub, token, ws):
    return str(hub.workspaces_root / "uwsalice" / ws["slug"])


def test_values_a_shell_would_read_arrive_literally(bhub, owner, ws):
    hostile = "; rm -rf / #\n$(id) `id` ${HOME} 'quoted' \"double\" | & > /tmp/x *"
    job = submit(bhub, owner, ws, "report", text=hostile, note="$(touch /tmp/pwned)\nline two", mode="exact")
    done = finish(bhub, owner, job)
    assert done["status"] == "completed", done
    report = bhub.request("GET", done["results"][0]["url"], owner).json()
    assert report["argv"] == [
        hostile,
        "3",
        "0.5",
        "exact",
        ws_dir(bhub, owner, ws),
        "--note",
        "$(touch /tmp/pwned)\nline two",
    ]
    assert report["env"]["ECHO_TEXT"] == hostile and report["env"]["UWS_PARAM_TEXT"] == hostile
    assert report["env"]["UWS_PARAM_NOTE"] == "$(touch /tmp/pwned)\nline two"


@pytest.mark.parametrize(
    "parameters, field, message",
    [
        ({"text": "x", "colour": "red"}, "colour", "unknown parameter"),
        ({}, "text", "required"),
        ({"text": 5}, "text", "must be a string"),
        ({"text": "x", "count": "5"}, "count", "must be an integer"),
        ({"text": "x", "count": 2.5}, "count", "must be an integer"),
        ({"text": "x", "count": True}, "count", "must be an integer"),
        ({"text": "x", "count": 11}, "count", "must be at most 10 (got 11)"),
        ({"text": "x", "ratio": -0.1}, "ratio", "must be at least 0 (got -0.1)"),
        ({"text": "x", "mode": "slow"}, "mode", "must be one of ['fast', 'exact'] (got 'slow')"),
        ({"text": "x", "loud": "yes"}, "loud", "must be true or false"),
        ({"text": "x", "folder": "../other"}, "folder", "Path must stay inside the workspace"),
        ({"text": "x", "folder": "/etc"}, "folder", "Path must be relative to the workspace"),
        ({"text": "x\x00y"}, "text", "must not contain NUL characters"),
    ],
)
def test_bad_parameters_are_refused_naming_the_field(bhub, owner, ws, parameters, field, message):
    r = bhub.request(
        "POST", f"workspaces/{ws['id']}/jobs", owner, json={"job_type": "report", "parameters": parameters}
    )
    assert r.status_code == 422, r.text
    assert f"parameters.{field}: {message}" in r.json()["message"], r.text


def test_an_interactive_job_type_takes_no_parameters(bhub, owner, ws):
    r = bhub.request("POST", f"workspaces/{ws['id']}/jobs", owner, json={"job_type": "minimal", "parameters": {"x": 1}})
    assert r.status_code == 422
    assert r.json()["message"] == "Job type 'minimal' is interactive and takes no parameters"


def test_a_job_that_exits_3_fails_and_its_owner_reads_why(bhub, owner, other, ws):
    job = submit(bhub, owner, ws, "exit", code=3)
    done = finish(bhub, owner, job)
    assert (done["status"], done["exit_code"], done["reason"]) == ("failed", 3, "The command exited with status 3")
    assert log_of(bhub, owner, job).text == "exiting with 3\n"
    # the tail, and a range
    tail = log_of(bhub, owner, job, headers={"Range": "bytes=-2"})
    assert (tail.status_code, tail.text, tail.headers["Content-Range"]) == (206, "3\n", "bytes 13-14/15")
    part = log_of(bhub, owner, job, headers={"Range": "bytes=0-6"})
    assert (part.status_code, part.text) == (206, "exiting")
    assert log_of(bhub, owner, job, headers={"Range": "bytes=99-"}).status_code == 416
    assert log_of(bhub, owner, job, headers={"Range": "lines=1"}).status_code == 400
    # numbers of thousands of digits (past what Python turns into an int: a 500) are past any end
    huge = "9" * 5000
    assert log_of(bhub, owner, job, headers={"Range": f"bytes={huge}-"}).status_code == 416
    assert log_of(bhub, owner, job, headers={"Range": f"bytes=0-{huge}"}).text == "exiting with 3\n"
    assert log_of(bhub, owner, job, headers={"Range": f"bytes=-{huge}"}).text == "exiting with 3\n"
    # nobody else reads it (not even who may read the job)
    assert log_of(bhub, other, job).status_code == 404


def test_a_job_killed_by_a_signal_fails_saying_which(bhub, owner, ws):
    done = finish(bhub, owner, submit(bhub, owner, ws, "signal"))
    assert (done["status"], done["exit_code"], done["exit_signal"]) == ("failed", None, 9)
    assert done["reason"] == "The command was killed by signal 9 (SIGKILL) — out of memory?"


def test_a_job_over_its_time_limit_fails_saying_so(bhub, owner, ws):
    done = finish(bhub, owner, submit(bhub, owner, ws, "limited"))
    assert done["status"] == "failed"
    assert done["reason"] == "The job reached its time limit of 2 s and was stopped (signal 15 (SIGTERM))"


def test_a_job_over_its_memory_fails_saying_so(bhub, owner, ws):
    r = bhub.request(
        "POST",
        f"workspaces/{ws['id']}/jobs",
        owner,
        json={"job_type": "alloc", "parameters": {"mb": 400}, "resources": {"memory": "200M"}},
    )
    assert r.status_code == 202, r.text
    done = finish(bhub, owner, r.json())
    assert done["status"] == "failed", done
    assert done["reason"].startswith("The job went over its memory limit of 200M: an allocation failed (RLIMIT_AS)")
    assert "MemoryError" in log_of(bhub, owner, done).text
    # within its limit, the same job completes
    r = bhub.request(
        "POST",
        f"workspaces/{ws['id']}/jobs",
        owner,
        json={"job_type": "alloc", "parameters": {"mb": 20}, "resources": {"memory": "500M"}},
    )
    assert finish(bhub, owner, r.json())["status"] == "completed"


def test_what_a_job_leaves_looking_ended_ends_with_it(bhub, owner, ws):
    """A process the command leaves in a session of its own, whose first thread ended
    while another runs on (``pthread_exit`` in ``main``), reads as a zombie in ``/proc``
    but runs, as the job's account: the job's wrapper took it for ended and waited for
    it forever, so the job never ended (past its time limit; a stop left the process
    running). It is killed with the job's other leftovers, and the job completes."""
    done = finish(bhub, owner, submit(bhub, owner, ws, "ghost"), timeout=90)
    assert (done["status"], log_of(bhub, owner, done).text.split()) == ("completed", ["left"])
    pid = int(bhub.request("GET", f"workspaces/{ws['id']}/files/ghost.pid", owner).text)
    assert not os.path.exists(f"/proc/{pid}")


def test_a_command_that_cannot_run_fails_saying_why(bhub, owner, ws):
    done = finish(bhub, owner, submit(bhub, owner, ws, "missing"))
    assert done["status"] == "failed"
    assert done["reason"] == (
        "The command could not be run: cannot run '/nonexistent/program': No such file or directory"
    )


def test_batch_jobs_run_beside_the_workspace_server_and_each_other(bhub, owner, ws):
    lab = submit(bhub, owner, ws, "minimal")
    sleepers = [submit(bhub, owner, ws, "sleep", seconds=30) for _ in range(2)]
    assert bhub.wait_job(lab["id"], owner, {"running"} | TERMINAL)["status"] == "running"
    for job in sleepers:
        assert bhub.wait_job(job["id"], owner, {"running"} | TERMINAL)["status"] == "running"
    # the workspace's one interactive job is still its active job
    assert bhub.api("GET", f"workspaces/{ws['id']}", owner)["active_job"]["id"] == lab["id"]
    # a stop ends a batch job cancelled; the workspace is busy until all have ended
    for job in sleepers:
        assert bhub.api("POST", f"jobs/{job['id']}/stop", owner, expect=202)["status"] == "stopping"
    for job in sleepers:
        done = finish(bhub, owner, job)
        assert (done["status"], done["reason"], done["exit_signal"]) == ("cancelled", "Stopped on request", 15)
    assert bhub.api("GET", f"workspaces/{ws['id']}", owner)["status"] == "active"
    bhub.api("POST", f"jobs/{lab['id']}/stop", owner, expect=202)
    finish(bhub, owner, lab)
    assert bhub.api("GET", f"workspaces/{ws['id']}", owner)["status"] == "idle"


def test_a_workspace_is_not_deleted_under_its_running_batch_job(bhub, owner, ws):
    """A workspace's delete while a batch job of it runs: a 409 that says which, not a
    500, and once the job ended the workspace goes."""
    release = f"/tmp/uws-batch-release-{uuid.uuid4().hex[:8]}"
    job = submit(bhub, owner, ws, "wait", file=release)
    assert bhub.wait_job(job["id"], owner, {"running"} | TERMINAL)["status"] == "running"
    r = bhub.request("DELETE", f"workspaces/{ws['id']}", owner)
    assert r.status_code == 409 and f"has a running job (id {job['id']})" in r.json()["message"], r.text
    open(release, "w").close()
    assert finish(bhub, owner, job)["status"] == "completed"
    bhub.api("DELETE", f"workspaces/{ws['id']}", owner, expect=202)


def test_deleting_a_finished_job_drops_its_log_and_keeps_its_results_unless_asked(bhub, owner, ws):
    running = submit(bhub, owner, ws, "sleep", seconds=30)
    r = bhub.request("DELETE", f"jobs/{running['id']}", owner)
    assert r.status_code == 409 and "stop it and wait for it to end" in r.json()["message"]
    bhub.api("POST", f"jobs/{running['id']}/stop", owner, expect=202)
    assert finish(bhub, owner, running, timeout=20)["status"] == "cancelled"
    first = finish(bhub, owner, submit(bhub, owner, ws, "report", text="a"))
    second = finish(bhub, owner, submit(bhub, owner, ws, "report", text="b"))
    assert bhub.request("DELETE", f"jobs/{first['id']}", owner).status_code == 200
    assert bhub.request("GET", f"jobs/{first['id']}", owner).status_code == 404
    assert bhub.request("GET", first["results"][0]["url"], owner).status_code == 200
    assert bhub.request("DELETE", f"jobs/{second['id']}?results=true", owner).status_code == 200
    assert bhub.request("GET", second["results"][0]["url"], owner).status_code == 404
    assert bhub.request("DELETE", f"jobs/{running['id']}?results=maybe", owner).status_code == 400


@pytest.mark.parametrize("planted", ["a link out of the workspace", "a FIFO"])
def test_a_results_folder_swapped_for_a_link_or_a_fifo_is_no_results_and_the_job_still_reads(bhub, owner, ws, planted):
    """A job's results folder is in its workspace, where the job and every editor put what
    they like: one swapped for a link out of the workspace, or a FIFO, made the job
    itself unreadable (GET /hub/api/jobs/{id} and its UWS document, a 500) for everyone.
    The job reads, with no results; nothing is listed of where the link points, and a
    delete with its results removes the link or FIFO itself."""
    job = finish(bhub, owner, submit(bhub, owner, ws, "report", text="a"))
    account = pwd.getpwnam("uwsalice")
    folder = bhub.workspaces_root / "uwsalice" / ws["slug"] / "results" / str(job["id"])
    subprocess.run(["rm", "-rf", str(folder)], check=True)
    if planted == "a FIFO":
        os.mkfifo(folder)
    else:
        folder.symlink_to("/etc")
    os.lchown(folder, account.pw_uid, account.pw_gid)
    got = bhub.api("GET", f"jobs/{job['id']}", owner, expect=200)
    assert got["status"] == "completed" and got["results"] == []
    r = bhub.request("GET", f"/hub/api/uws/report/{job['id']}", owner)
    assert r.status_code == 200 and "COMPLETED" in r.text, r.text
    assert bhub.request("DELETE", f"jobs/{job['id']}?results=true", owner).status_code == 200
    assert not os.path.lexists(folder) and os.path.isdir("/etc")


def test_a_stop_as_the_job_starts_cancels_it(bhub, owner, ws):
    """A stop that comes while the job's wrapper is starting (its run file not written
    yet) is not lost: the command is stopped, not left to run its whole course."""
    jobs = [submit(bhub, owner, ws, "sleep", seconds=30) for _ in range(3)]
    for job in jobs:
        bhub.api("POST", f"jobs/{job['id']}/stop", owner, expect=202)
    for job in jobs:
        done = finish(bhub, owner, job, timeout=20)
        assert (done["status"], done["reason"]) == ("cancelled", "Stopped on request"), done


def test_a_log_is_followed_live_and_resumed(bhub, owner, ws):
    job = submit(bhub, owner, ws, "lines", n=6, seconds=0.7)
    events, thread = follow_log(bhub, owner, job)
    thread.join(60)
    logs = [e for e in events if e[0] == "log"]
    text = "\n".join(e[1] for e in logs)
    assert text == "\n".join(f"line {i}" for i in range(6))
    # the lines came as they were written, not all at the end
    assert len(logs) >= 3 and logs[-1][3] - logs[0][3] > 1.5
    end = json.loads(events[-1][1])
    assert events[-1][0] == "end" and (end["status"], end["exit_code"]) == ("completed", 0)
    # resumed after the third line: the rest only
    third = next(e for e in logs if e[1].endswith("line 2"))
    again, thread = follow_log(bhub, owner, job, headers={"Last-Event-ID": third[2]})
    thread.join(30)
    assert "\n".join(e[1] for e in again if e[0] == "log") == "line 3\nline 4\nline 5"


def test_streams_open_when_the_hub_stops_end_without_an_error(bhub, owner, ws):
    """A hub stopped (SIGTERM) while readers follow a log and the events ends their
    streams as finished responses, and its log says nothing went wrong (tornado logged
    "Cannot send error response after headers written" for each stream open then)."""
    job = submit(bhub, owner, ws, "lines", n=300, seconds=0.1)
    events, thread = follow_log(bhub, owner, job)
    watched = bhub.request("GET", "events", owner, stream=True)
    assert watched.status_code == 200
    wait_for(lambda: any(e[0] == "log" for e in events), 30, what="the first log lines")
    logged = len(bhub.log_text())
    bhub.stop()
    thread.join(30)
    assert not thread.is_alive(), "the log stream must end with the hub"
    errors = [line for line in bhub.log_text()[logged:].splitlines() if line.startswith("[E ")]
    assert errors == []
    watched.close()
    bhub.start()
    bhub.api("POST", f"jobs/{job['id']}/stop", owner)
    finish(bhub, owner, job)


def test_a_hub_killed_while_jobs_run_finds_every_outcome(bhub, owner, ws):
    counter = f"/tmp/uws-batch-count-{uuid.uuid4().hex[:8]}"
    release = f"/tmp/uws-batch-release-{uuid.uuid4().hex[:8]}"
    runs_on = submit(bhub, owner, ws, "wait", file=release)
    ends_meanwhile = submit(bhub, owner, ws, "exit", code=3)
    counted = submit(bhub, owner, ws, "count", file=counter)
    for job in (runs_on, counted):
        assert bhub.wait_job(job["id"], owner, {"running"} | TERMINAL)["status"] == "running"
    bhub.wait_job(ends_meanwhile["id"], owner, {"running"} | TERMINAL)
    bhub.stop(signal.SIGKILL)
    time.sleep(4)  # the exit-3 job and the counting job end while no hub runs
    bhub.start()
    assert finish(bhub, owner, ends_meanwhile)["reason"] == "The command exited with status 3"
    done = finish(bhub, owner, counted)
    assert done["status"] == "completed"
    still = bhub.api("GET", f"jobs/{runs_on['id']}", owner)
    assert still["status"] == "running", still  # adopted: it runs until released
    open(release, "w").close()
    assert finish(bhub, owner, runs_on)["status"] == "completed"
    # the counting job ran once
    with open(counter) as f:
        assert f.read().split() == [str(counted["id"])]


def hub_children(hub) -> dict[int, bytes]:
    """The hub process's children: pid -> command line."""
    found = {}
    for task in os.listdir(f"/proc/{hub.proc.pid}/task"):
        with open(f"/proc/{hub.proc.pid}/task/{task}/children") as f:
            for pid in f.read().split():
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as c:
                        found[int(pid)] = c.read()
                except OSError:
                    pass
    return found


def launchers(hub) -> list[int]:
    return [pid for pid, cmdline in hub_children(hub).items() if b"--launcher" in cmdline.split(b"\0")]


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_one_resident_launcher_starts_every_job(bhub, owner, ws):
    """Local batch jobs are forked by one resident launcher, a child of the hub: not one
    interpreter per job started by the hub. Their wrappers are not the hub's children
    (nor zombies of the launcher), and carry their hub and job as before."""
    waiting = f"/tmp/uws-batch-release-{uuid.uuid4().hex[:8]}"
    runs_on = submit(bhub, owner, ws, "wait", file=waiting)
    jobs = [submit(bhub, owner, ws, "exit", code=0) for _ in range(6)]
    for job in jobs:
        assert finish(bhub, owner, job)["status"] == "completed"
    assert bhub.wait_job(runs_on["id"], owner, {"running"} | TERMINAL)["status"] == "running"
    [launcher] = launchers(bhub)
    wrappers = [pid for pid, cmdline in hub_children(bhub).items() if b"wrapper.py" in cmdline and pid != launcher]
    assert wrappers == []
    wrapper_pid = int(bhub.api("GET", f"jobs/{runs_on['id']}", owner)["resource_id"])
    with open(f"/proc/{wrapper_pid}/environ", "rb") as f:
        env = f.read().split(b"\0")
    assert f"UWS_JOB_ID={runs_on['id']}".encode() in env and b"UWS_JOB_WRAPPER=1" in env
    with open(f"/proc/{wrapper_pid}/stat") as f:
        assert int(f.read().rsplit(")", 1)[1].split()[1]) == launcher
    # the job's command leads its own session, lowered to the job's priority
    with open(f"/proc/{wrapper_pid}/task/{wrapper_pid}/children") as f:
        [command] = [int(pid) for pid in f.read().split()]
    assert os.getsid(command) == command and session_nice(command) in (None, 10)
    # the launcher keeps no zombies of the jobs that ended
    with open(f"/proc/{launcher}/task/{launcher}/children") as f:
        assert [int(pid) for pid in f.read().split()] == [wrapper_pid]
    # it has nothing of the hub's environment
    with open(f"/proc/{launcher}/environ", "rb") as f:
        assert sorted(v.split(b"=")[0] for v in f.read().split(b"\0") if v) == [
            b"LANG",
            b"PATH",
            b"UWS_HUB_ID",
            b"UWS_JOB_ID",
            b"UWS_JOB_WRAPPER",
        ]
    open(waiting, "w").close()
    assert finish(bhub, owner, runs_on)["status"] == "completed"


def test_a_launcher_killed_while_jobs_run_is_replaced_and_its_jobs_run_on(bhub, owner, ws):
    counter = f"/tmp/uws-batch-count-{uuid.uuid4().hex[:8]}"
    release = f"/tmp/uws-batch-release-{uuid.uuid4().hex[:8]}"
    runs_on = submit(bhub, owner, ws, "wait", file=release)
    assert bhub.wait_job(runs_on["id"], owner, {"running"} | TERMINAL)["status"] == "running"
    [launcher] = launchers(bhub)
    os.kill(launcher, signal.SIGKILL)
    wait_for(lambda: gone(launcher), 10, what="the launcher's end")
    # the next job gets a new launcher
    counted = submit(bhub, owner, ws, "count", file=counter)
    assert finish(bhub, owner, counted)["status"] == "completed"
    [replaced] = launchers(bhub)
    assert replaced != launcher
    # the job started by the killed launcher ran on, and its end is seen at once
    assert bhub.api("GET", f"jobs/{runs_on['id']}", owner)["status"] == "running"
    open(release, "w").close()
    assert finish(bhub, owner, runs_on, timeout=10)["status"] == "completed"
    with open(counter) as f:
        assert f.read().split() == [str(counted["id"])]
    assert "The batch job launcher" in bhub.log_text()


def test_a_hub_killed_takes_its_launcher_along_but_not_the_jobs(bhub, owner, ws):
    """The launcher ends with the hub (its socket closes); the job it started runs on,
    and the restarted hub adopts it and starts a launcher of its own."""
    release = f"/tmp/uws-batch-release-{uuid.uuid4().hex[:8]}"
    runs_on = submit(bhub, owner, ws, "wait", file=release)
    assert bhub.wait_job(runs_on["id"], owner, {"running"} | TERMINAL)["status"] == "running"
    [launcher] = launchers(bhub)
    os.kill(bhub.proc.pid, signal.SIGKILL)
    bhub.proc.wait()
    wait_for(lambda: gone(launcher), 10, what="the launcher's end")
    bhub.start()
    assert bhub.api("GET", f"jobs/{runs_on['id']}", owner)["status"] == "running"
    open(release, "w").close()
    assert finish(bhub, owner, runs_on)["status"] == "completed"
    assert finish(bhub, owner, submit(bhub, owner, ws, "exit", code=0))["status"] == "completed"
    assert len(launchers(bhub)) == 1


# ---------------------------------------------------------------- the fair queue
QUEUE_CONFIG = (
    BATCH_CONFIG
    + """
c.UWSHub.quota_concurrent_jobs = 2
c.UWSHub.max_running_batch_jobs = 3
"""
)


@pytest.fixture(scope="module")
def qhub(make_hub, system_users):
    return make_hub(QUEUE_CONFIG)


def test_twenty_jobs_of_two_users_queue_fairly(qhub):
    ann, ben = qhub.add_user("uwsalice"), qhub.add_user("uwsbob")
    spaces = {
        t: qhub.api("POST", "workspaces", t, json={"name": f"queue {uuid.uuid4().hex[:8]}"}, expect=201)
        for t in (ann, ben)
    }
    # every job runs until the release file exists: nothing ends before all 20 wait
    release = f"/tmp/uws-queue-release-{uuid.uuid4().hex[:8]}"
    launched = {ann: [], ben: []}
    for token in (ann, ben):  # ann's ten first, then ben's
        for _ in range(10):
            r = qhub.request(
                "POST",
                f"workspaces/{spaces[token]['id']}/jobs",
                token,
                json={"job_type": "wait", "parameters": {"file": release}, "resources": {"cpus": 2}},
            )
            assert r.status_code == 202, r.text
            launched[token].append(r.json()["id"])
    # waiting jobs say why
    waiting = qhub.api("GET", f"jobs/{launched[ben][-1]}", ben)
    assert waiting["status"] == "queued" and waiting["reason"].startswith("Waiting for a slot"), waiting
    # an interactive launch keeps its immediate answer: over the quota, refused at once
    r = qhub.request("POST", f"workspaces/{spaces[ann]['id']}/jobs", ann, json={"job_type": "minimal"})
    assert r.status_code == 422 and r.json()["message"].startswith("Concurrent job quota: your unfinished jobs"), r.text
    # two of each user's jobs may run (their quota), three on the hub: ann's first two and ben's first
    for job_id, token in ((launched[ann][0], ann), (launched[ann][1], ann), (launched[ben][0], ben)):
        assert qhub.wait_job(job_id, token, {"running"} | TERMINAL)["status"] == "running"
    still = [qhub.api("GET", f"jobs/{i}", t)["status"] for t in (ann, ben) for i in launched[t]]
    assert still.count("running") == 3 and still.count("queued") == 17, still
    open(release, "w").close()
    done = {t: [finish(qhub, t, {"id": i}, timeout=120) for i in ids] for t, ids in launched.items()}
    jobs = [j for js in done.values() for j in js]
    assert {j["status"] for j in jobs} == {"completed"}
    # FIFO within each user (submitted_at: when the queue gave each its slot)
    for token, ids in launched.items():
        started = sorted(done[token], key=lambda j: j["submitted_at"])
        assert [j["id"] for j in started] == ids
    # never more than 2 at once per user, 3 on the hub
    moments = sorted((j["running_at"], 1, j["owner"]) for j in jobs) + sorted(
        (j["finished_at"], -1, j["owner"]) for j in jobs
    )
    running = {"uwsalice": 0, "uwsbob": 0}
    for _, change, who in sorted(moments, key=lambda m: (m[0], m[1])):
        running[who] += change
        assert running[who] <= 2 and sum(running.values()) <= 3, running
    # round-robin: while both have jobs waiting, neither gets more than 2 starts ahead of the other
    order = [j["owner"] for j in sorted(jobs, key=lambda j: j["submitted_at"])]
    for n in range(1, len(order) + 1):
        a, b = order[:n].count("uwsalice"), order[:n].count("uwsbob")
        if a < 10 and b < 10:
            assert abs(a - b) <= 2, [
                (j["owner"][3], j["id"], j["submitted_at"][11:], j["running_at"][11:], j["finished_at"][11:])
                for j in sorted(jobs, key=lambda j: j["submitted_at"])
            ]
    # core-hours are the real run time times the cpus
    usage = qhub.api("GET", "quotas/uwsbob", ben, expect=200)["usage"]
    ran = sum((parse(j["finished_at"]) - parse(j["running_at"])).total_seconds() * 2 for j in done[ben])
    assert abs(usage["core_hours"] * 3600 - ran) <= 1, (usage, ran)


def test_a_waiting_job_whose_type_is_retired_fails_and_the_queue_goes_on(make_hub, system_users):
    """A job type taken out of the configuration (the hub restarted) while a job of it
    waited for a slot: when a slot freed, the queue chose it and its check failed on the
    missing type, at each of the queue's retries, and no other job ever started. It fails
    saying why, and the next job starts."""
    config = QUEUE_CONFIG + "c.UWSHub.max_running_batch_jobs = 1\n"
    retired = {**JOB_TYPES, "retired": JOB_TYPES["exit"]}
    hub = make_hub(config + f"c.UWSHub.job_types = {retired!r}\n")
    ann, ben = hub.add_user("uwsalice"), hub.add_user("uwsbob")
    spaces = {t: hub.api("POST", "workspaces", t, json={"name": "retired"}, expect=201) for t in (ann, ben)}
    release = f"/tmp/uws-retired-release-{uuid.uuid4().hex[:8]}"
    runs = submit(hub, ann, spaces[ann], "wait", file=release)
    assert hub.wait_job(runs["id"], ann, {"running"} | TERMINAL)["status"] == "running"
    old = submit(hub, ann, spaces[ann], "retired", code=0)
    after = submit(hub, ben, spaces[ben], "exit", code=0)
    assert hub.wait_job(after["id"], ben, {"queued"} | TERMINAL)["status"] == "queued"
    hub.stop()
    hub.config_file.write_text(hub.config_file.read_text() + f"c.UWSHub.job_types = {JOB_TYPES!r}\n")
    hub.start()
    open(release, "w").close()
    assert finish(hub, ann, runs)["status"] == "completed"
    failed = finish(hub, ann, old)
    assert failed["status"] == "failed" and "Unknown job type 'retired'" in failed["reason"], failed
    assert finish(hub, ben, after)["status"] == "completed"


def parse(timestamp: str) -> datetime:
    return datetime.fromisoformat(timestamp.rstrip("Z"))


def test_a_workspace_of_thousands_of_folders_is_measured_with_few_descriptors(bhub, owner, ws):
    """A job can make thousands of folders side by side (or one in another): the usage scan
    opened every folder of a level at once, so 2000 of them took all of a hub's 1024
    descriptors, and the pass failed there each time: neither that workspace nor any
    measured after it was counted again (their disk quotas no longer held)."""
    directory = bhub.workspaces_root / ws["owner"] / ws["slug"]
    for i in range(2000):
        (directory / f"d{i}").mkdir()
        (directory / f"d{i}" / "f").write_bytes(b"x")
    (directory / "deep").mkdir()
    make_deep(directory / "deep", 600, b"at the bottom")
    other = bhub.api("POST", "workspaces", owner, json={"name": f"batch {uuid.uuid4().hex[:8]}"}, expect=201)
    with few_descriptors(bhub):
        finish(bhub, owner, submit(bhub, owner, ws, "write", size=1000))
        finish(bhub, owner, submit(bhub, owner, other, "write", size=1234))
        wait_for(
            lambda: bhub.api("GET", f"workspaces/{ws['id']}", owner)["disk_usage_bytes"] == 3013,
            30,
            what="the folders' files and the result to be counted",
        )
        wait_for(
            lambda: bhub.api("GET", f"workspaces/{other['id']}", owner)["disk_usage_bytes"] == 1234,
            30,
            what="the next workspace to be measured too",
        )
    assert len(os.listdir(f"/proc/{bhub.proc.pid}/fd")) < 200


def test_results_count_toward_the_disk_quota(bhub, owner, ws):
    jobs = [finish(bhub, owner, submit(bhub, owner, ws, "write", size=size)) for size in (1000, 2345)]
    assert [[r["size"] for r in j["results"]] for j in jobs] == [[1000], [2345]]
    # the workspace ran jobs since it was last measured: the next pass counts their results
    wait_for(
        lambda: bhub.api("GET", f"workspaces/{ws['id']}", owner)["disk_usage_bytes"] == 3345,
        30,
        what="the results to be counted in the workspace's disk usage",
    )


def test_who_reads_and_deletes_a_batch_jobs_log_and_results(bhub, owner, other):
    """The job, its status and its results go to whoever may read the workspace; its log
    (which may hold the owner's secrets) to the owner and admins only; a delete to
    whoever may launch jobs in it. Strangers learn nothing (404), anonymous gets 403."""
    editor, viewer = other, bhub.add_user("uwscarol")
    stranger, admin = bhub.add_user("uwsdave"), bhub.add_user("uwsadmin", admin=True)
    ws = bhub.api("POST", "workspaces", owner, json={"name": f"shared {uuid.uuid4().hex[:8]}"}, expect=201)
    bhub.api("POST", f"workspaces/{ws['id']}/shares", owner, json={"user": "uwsbob", "level": "editor"}, expect=201)
    bhub.api("POST", f"workspaces/{ws['id']}/shares", owner, json={"user": "uwscarol", "level": "viewer"}, expect=201)
    job = finish(bhub, owner, submit(bhub, owner, ws, "report", text="secret-ish"))
    result = job["results"][0]["url"]

    def answers(token):
        got = {
            "job": bhub.request("GET", f"jobs/{job['id']}", token).status_code,
            "log": log_of(bhub, token, job).status_code,
            "tail": log_of(bhub, token, job, headers={"Range": "bytes=-5"}).status_code,
            "follow": bhub.request("GET", f"jobs/{job['id']}/log/stream", token, stream=True).status_code,
            "output": bhub.request("GET", f"jobs/{job['id']}/output", token).status_code,
            "result": bhub.request("GET", result, token).status_code,
            "listed": job["id"] in [j["id"] for j in bhub.api("GET", f"jobs?workspace={ws['id']}", token)["items"]]
            if token
            else None,
        }
        return got

    read_all = {"job": 200, "log": 200, "tail": 206, "follow": 200, "output": 200, "result": 200, "listed": True}
    collaborator = {**read_all, "log": 403, "tail": 403, "follow": 403, "output": 403}
    assert answers(owner) == read_all
    assert answers(admin) == read_all
    assert answers(editor) == collaborator
    assert answers(viewer) == collaborator
    assert answers(stranger) == {
        "job": 404,
        "log": 404,
        "tail": 404,
        "follow": 404,
        "output": 404,
        "result": 404,
        "listed": False,
    }
    assert answers(None) == {
        "job": 403,
        "log": 403,
        "tail": 403,
        "follow": 403,
        "output": 403,
        "result": 403,
        "listed": None,
    }
    forbidden = log_of(bhub, viewer, job).json()["message"]
    assert forbidden == "A job's log is shown to its owner and admins only"
    # deleting: not by a stranger, anonymous or a viewer; by an editor, the owner or an admin
    assert bhub.request("DELETE", f"jobs/{job['id']}", stranger).status_code == 404
    assert bhub.request("DELETE", f"jobs/{job['id']}", None).status_code == 403
    assert bhub.request("DELETE", f"jobs/{job['id']}", viewer).status_code == 403
    assert bhub.request("GET", f"jobs/{job['id']}", owner).status_code == 200
    for token in (editor, owner, admin):
        done = finish(bhub, owner, submit(bhub, owner, ws, "exit"))
        assert bhub.request("DELETE", f"jobs/{done['id']}", token).status_code == 200
        assert bhub.request("GET", f"jobs/{done['id']}", owner).status_code == 404
    # the viewer may not delete results with a job either; the first job is still there
    assert bhub.request("DELETE", f"jobs/{job['id']}?results=true", viewer).status_code == 403
    assert bhub.request("GET", result, owner).status_code == 200


def test_a_log_of_any_size_is_sent_without_the_hub_holding_it(bhub, owner, ws):
    """A job makes its log as large as it likes at no cost (a hole: its output is its
    own descriptor, which it may truncate to any length): the hub sends a log, whole or
    a range of it, in pieces, never reading it into its memory at once. Here the hub
    may map 512 MiB more than it has; the log is 4 GiB."""
    size = 4 << 30
    job = finish(bhub, owner, submit(bhub, owner, ws, "sparse", size=size))
    assert job["status"] == "completed", job
    limit = ["prlimit", f"--pid={bhub.proc.pid}"]
    with open(f"/proc/{bhub.proc.pid}/status") as f:
        mapped = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    subprocess.run([*limit, f"--as={mapped + (512 << 20)}:unlimited"], check=True)
    try:
        for status, headers in ((200, {}), (206, {"Range": "bytes=0-"})):
            with bhub.request("GET", f"jobs/{job['id']}/log", owner, headers=headers, stream=True) as r:
                assert r.status_code == status, r.headers
                first = next(r.iter_content(1 << 20))
                assert first.startswith(b"growing\n"), first[:20]
        tail = log_of(bhub, owner, job, headers={"Range": "bytes=-3"})
        assert (tail.status_code, tail.content, tail.headers["Content-Range"]) == (
            206,
            b"\0\0\0",
            f"bytes {size - 3}-{size - 1}/{size}",
        )
    finally:
        subprocess.run([*limit, "--as=unlimited:unlimited"], check=True)


@pytest.mark.parametrize(
    "where, headers",
    [("jobs/{id}/log", {}), ("jobs/{id}/log", {"Range": "bytes=0-"}), ("/hub/api/uws/sparse/{id}/log", {})],
    ids=["whole", "a range", "UWS"],
)
def test_a_log_download_under_way_is_cut_off_once_its_reader_loses_the_right(make_hub, system_users, where, headers):
    """A log is as long as its job likes (a hole of 4 GiB here), and its download lasts
    as long as its reader likes: a reader whose token was deleted meanwhile got the rest
    of it. Their right is asked again every ``stream_recheck_seconds``, as for a zip:
    the download is cut off (not ended early, which would look like a whole, shorter
    log)."""
    hub = make_hub(BATCH_CONFIG + "c.UWSHub.stream_recheck_seconds = 1\n")
    alice = hub.add_user("uwsalice")
    ws = hub.api("POST", "workspaces", alice, json={"name": f"log {uuid.uuid4().hex[:6]}"}, expect=201)
    size = 4 << 30
    job = finish(hub, alice, submit(hub, alice, ws, "sparse", size=size))
    assert job["status"] == "completed", job
    minted = hub.api("POST", "users/uwsalice/tokens", json={"note": "log download"}, expect=201)
    received = 0
    # (the proxy leaves its reader waiting when the hub cuts a download off: a read timeout,
    # short, as data that still flows comes at once)
    url = where.format(id=job["id"])
    with hub.request(
        "GET", url, minted["token"], headers=headers, stream=True, timeout=(15, READ_TIMEOUT_AFTER_A_CUT)
    ) as r:
        assert r.status_code in (200, 206), r.text
        chunks = r.iter_content(64 * 1024)
        received += len(next(chunks))  # the buffers between fill: the hub waits for the reader
        hub.api("DELETE", f"users/uwsalice/tokens/{minted['id']}", expect=204)
        time.sleep(2)  # past a recheck: the next piece asks again
        with pytest.raises(requests.exceptions.RequestException):
            for chunk in chunks:
                received += len(chunk)
    assert received < size
    # the owner's own token still reads it
    tail = log_of(hub, alice, job, headers={"Range": "bytes=-3"})
    assert tail.content == b"\0\0\0"


def address_space_limit(pid: int) -> str:
    with open(f"/proc/{pid}/limits") as f:
        return next(line.split()[3] for line in f if line.startswith("Max address space"))


def test_an_interactive_server_gets_its_cpus_and_memory_limit_too(bhub, owner, ws):
    r = bhub.request(
        "POST",
        f"workspaces/{ws['id']}/jobs",
        owner,
        json={"job_type": "minimal", "resources": {"cpus": 1, "memory": "400M"}},
    )
    assert r.status_code == 202, r.text
    job = bhub.wait_job(r.json()["id"], owner, {"running"} | TERMINAL)
    assert job["status"] == "running", job
    pid = int(job["resource_id"])
    # this machine has no cgroup v2 memory controller: RLIMIT_AS, set before the server ran
    assert len(os.sched_getaffinity(pid)) == 1
    assert address_space_limit(pid) == str(400 * 1024 * 1024)
    # its wrapper lowered its session's priority too (as root, before the account switch)
    assert os.getsid(pid) == pid and session_nice(pid) in (None, 10)
    assert pwd.getpwuid(os.stat(f"/proc/{pid}").st_uid).pw_name == "uwsalice"
    # within its memory the server works; over it, it ends, and the reason says why
    assert bhub.request("GET", f"/user/uwsalice/{job['server_name']}/uws-test-alloc/10", owner).text == str(10 * MB)
    bhub.request("GET", f"/user/uwsalice/{job['server_name']}/uws-test-alloc/800", owner)
    done = finish(bhub, owner, job)
    assert done["status"] == "failed", done
    assert done["reason"] == (
        "The server went over its memory limit of 400M: an allocation failed (RLIMIT_AS); it exited with status 1"
    ), done
    # a server that asks for no limits starts as it always did
    plain = submit(bhub, owner, ws, "minimal")
    plain = bhub.wait_job(plain["id"], owner, {"running"} | TERMINAL)
    assert address_space_limit(int(plain["resource_id"])) == "unlimited"
    bhub.api("POST", f"jobs/{plain['id']}/stop", owner, expect=202)
    finish(bhub, owner, plain)


def test_the_shipped_example_counts_the_lines_of_a_workspaces_files(bhub, owner):
    """The example batch job type of jupyterhub_config.py, as a newcomer runs it."""
    files = [
        {"path": "a.txt", "content": "one\ntwo\nthree\n"},
        {"path": "sub/b.py", "content": "x = 1\ny = 2"},
        {"path": "data.bin", "content": "AAEC", "encoding": "base64"},
        {"path": ".hidden", "content": "h\n"},
    ]
    ws = bhub.api(
        "POST", "workspaces", owner, json={"name": f"count {uuid.uuid4().hex[:8]}", "files": files}, expect=201
    )
    types = {t["name"]: t for t in bhub.api("GET", "job-types", owner)}
    assert [p["name"] for p in types["count-lines"]["parameters"]] == ["folder", "pattern"]
    done = finish(bhub, owner, submit(bhub, owner, ws, "count-lines"))
    assert done["status"] == "completed", done
    [csv] = done["results"]
    assert (csv["path"], csv["mime_type"]) == (f"results/{done['id']}/line_counts.csv", "text/csv")
    rows = bhub.request("GET", csv["url"], owner).text.splitlines()
    assert rows == ["path,lines,bytes", "a.txt,3,14", "sub/b.py,2,11"]
    log = log_of(bhub, owner, done).text
    assert "skipped data.bin: not text" in log and log.endswith(f"2 files, 5 lines; wrote {csv_path(bhub, ws, done)}\n")
    # a pattern narrows it; earlier results are not counted
    again = finish(bhub, owner, submit(bhub, owner, ws, "count-lines", pattern="*.py"))
    assert bhub.request("GET", again["results"][0]["url"], owner).text.splitlines() == [
        "path,lines,bytes",
        "sub/b.py,2,11",
    ]


def csv_path(hub, ws, job) -> str:
    return str(hub.workspaces_root / "uwsalice" / ws["slug"] / "results" / str(job["id"]) / "line_counts.csv")
