"""The whole life of a workspace through the REST API, as a program would drive it:
create with seed files, upload, launch JupyterLab, open it through the proxy,
write a file from JupyterLab, stop, delete."""

from __future__ import annotations

import os
import pwd
import re
import threading
import time

from ..helpers import processes_of_job
from ..hubutil import wait_for


def test_workspace_job_lifecycle(hub, alice):
    # create, with a seed file
    ws = hub.api(
        "POST",
        "workspaces",
        alice,
        json={
            "name": "Cell counts 2026",
            "description": "counting cells",
            "files": [
                {"path": "data/counts.csv", "content": "a,b\n1,2\n"},
                {"path": "notes.bin", "content": "AAEC", "encoding": "base64"},
            ],
        },
        expect=201,
    )
    assert ws["slug"] == "cell-counts-2026"
    assert ws["status"] == "idle"
    assert ws["owner"] == "uwsalice"
    assert ws["disk_usage_bytes"] == len("a,b\n1,2\n") + 3
    directory = hub.workspaces_root / "uwsalice" / "cell-counts-2026"
    assert (directory / "data" / "counts.csv").read_text() == "a,b\n1,2\n"
    assert (directory / "notes.bin").read_bytes() == b"\x00\x01\x02"
    # files belong to alice's system account, the directory is private to her
    alice_uid = pwd.getpwnam("uwsalice").pw_uid
    assert os.stat(directory).st_uid == alice_uid
    assert os.stat(directory / "data" / "counts.csv").st_uid == alice_uid
    assert os.stat(directory).st_mode & 0o077 == 0

    # it is listed, and found by id
    listed = hub.api("GET", "workspaces", alice, expect=200)
    assert ws["id"] in [w["id"] for w in listed["items"]]
    assert hub.api("GET", f"workspaces/{ws['id']}", alice, expect=200)["description"] == "counting cells"

    # rename it (the slug stays)
    patched = hub.api("PATCH", f"workspaces/{ws['id']}", alice, json={"name": "Cell counts"}, expect=200)
    assert (patched["name"], patched["slug"]) == ("Cell counts", "cell-counts-2026")

    # upload and download a file
    r = hub.request("PUT", f"workspaces/{ws['id']}/files/results/out.txt", alice, data=b"42\n")
    assert r.status_code == 201, r.text
    assert r.json() == {"path": "results/out.txt", "size": 3}
    r = hub.request("GET", f"workspaces/{ws['id']}/files/results/out.txt", alice)
    assert r.status_code == 200 and r.content == b"42\n"
    names = {e["name"]: e["type"] for e in hub.api("GET", f"workspaces/{ws['id']}/files", alice)["items"]}
    assert names == {"data": "directory", "results": "directory", "notes.bin": "file"}

    # launch JupyterLab; watch the job go pending -> queued -> running
    job = hub.api("POST", f"workspaces/{ws['id']}/jobs", alice, json={"job_type": "jupyterlab"}, expect=202)
    assert job["status"] in ("pending", "queued")
    seen = [job["status"]]

    def running():
        j = hub.api("GET", f"jobs/{job['id']}", alice, expect=200)
        if j["status"] != seen[-1]:
            seen.append(j["status"])
        return j if j["status"] in ("running", "failed") else None

    job = wait_for(running, 60, interval=0.1, what="JupyterLab to run")
    assert job["status"] == "running", job["reason"]
    assert seen[-1] == "running" and set(seen) <= {"pending", "queued", "running"}
    assert job["queued_at"] and job["running_at"] and job["resource_id"]
    assert job["url"] == "/user/uwsalice/cell-counts-2026/lab"
    # the workspace is active while the job runs
    assert hub.api("GET", f"workspaces/{ws['id']}", alice)["status"] == "active"

    # JupyterLab answers through the proxy, its root is the workspace
    r = hub.request("GET", job["url"], alice)
    assert r.status_code == 200 and "JupyterLab" in r.text
    server = "/user/uwsalice/cell-counts-2026"
    contents = hub.api("GET", f"{server}/api/contents", alice, expect=200)
    assert {c["name"] for c in contents["content"]} == {"data", "results", "notes.bin"}
    # a file created in JupyterLab lands in the workspace, as alice
    hub.api(
        "PUT",
        f"{server}/api/contents/from-lab.txt",
        alice,
        json={"type": "file", "format": "text", "content": "made in lab"},
        expect=201,
    )
    assert (directory / "from-lab.txt").read_text() == "made in lab"
    assert os.stat(directory / "from-lab.txt").st_uid == alice_uid
    got = hub.request("GET", f"workspaces/{ws['id']}/files/from-lab.txt", alice)
    assert got.content == b"made in lab"

    # the process runs as alice, in the workspace
    pid = int(job["resource_id"])
    assert os.stat(f"/proc/{pid}").st_uid == alice_uid
    assert os.readlink(f"/proc/{pid}/cwd") == str(directory)

    # deleting is refused while the job runs, and nothing is lost
    r = hub.request("DELETE", f"workspaces/{ws['id']}", alice)
    assert r.status_code == 409
    assert "stop it before deleting" in r.json()["message"]
    assert directory.is_dir()

    # stop: stopping -> completed, the server is gone from the proxy
    stopped = hub.api("POST", f"jobs/{job['id']}/stop", alice, expect=202)
    assert stopped["status"] in ("stopping", "completed")
    job = hub.wait_job(job["id"], alice, {"completed", "failed", "cancelled"})
    assert job["status"] == "completed", job["reason"]
    assert job["finished_at"] and job["url"] is None
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 15, what="the server process to exit")
    assert hub.request("GET", f"{server}/api/contents", alice).status_code != 200
    # stopping again is harmless
    assert hub.api("POST", f"jobs/{job['id']}/stop", alice, expect=200)["status"] == "completed"
    assert hub.api("GET", f"workspaces/{ws['id']}", alice)["status"] == "idle"

    # delete: accepted, then gone with its directory
    assert hub.api("DELETE", f"workspaces/{ws['id']}", alice, expect=202)["status"] == "deleting"
    wait_for(
        lambda: hub.request("GET", f"workspaces/{ws['id']}", alice).status_code == 404,
        15,
        what="the workspace to be deleted",
    )
    assert not directory.exists()
    # its jobs went with it
    assert hub.request("GET", f"jobs/{job['id']}", alice).status_code == 404


def test_only_one_job_per_workspace(hub, alice, workspace):
    """Two launches at the same moment: the database lets exactly one through."""
    results = []

    def launch():
        r = hub.request("POST", f"workspaces/{workspace['id']}/jobs", alice, json={"job_type": "jupyterlab"})
        results.append(r)

    threads = [threading.Thread(target=launch) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r.status_code for r in results)
    assert codes == [202, 409, 409], [r.text for r in results]
    job = next(r for r in results if r.status_code == 202).json()
    # the message names the job and its status at the time
    conflict = next(r for r in results if r.status_code == 409)
    assert re.fullmatch(
        rf"Workspace '{workspace['slug']}' already has a (pending|queued|running) job \(id {job['id']}\); stop it first\.",
        conflict.json()["message"],
    ), conflict.text
    jobs = hub.api("GET", f"jobs?workspace={workspace['id']}", alice, expect=200)
    assert [j["id"] for j in jobs["items"]] == [job["id"]]
    hub.wait_job(job["id"], alice, {"running", "failed"})
    hub.api("POST", f"jobs/{job['id']}/stop", alice, expect=202)
    assert hub.wait_job(job["id"], alice, {"completed", "cancelled", "failed"})["status"] == "completed"


def test_server_that_cannot_start_fails_with_its_reason(hub, alice, workspace):
    """A server whose process exits at once: 'failed' with its exit status (its output for its owner),
    well before JupyterHub's 30 s http_timeout would have given up on it."""
    started = time.monotonic()
    job = hub.api("POST", f"workspaces/{workspace['id']}/jobs", alice, json={"job_type": "broken"}, expect=202)
    job = hub.wait_job(job["id"], alice, {"failed", "running", "completed"}, timeout=20)
    assert time.monotonic() - started < 30
    assert job["status"] == "failed"
    assert job["reason"] == "The server failed to start: it exited with status 3 before it answered"
    # what it printed is for its owner, through the API
    assert "boom: the server cannot start" in hub.api("GET", f"jobs/{job['id']}/output", alice)["output"]
    # the workspace is free again
    ws = hub.api("GET", f"workspaces/{workspace['id']}", alice)
    assert ws["status"] == "idle" and ws["active_job"] is None


def test_stop_while_starting_cancels(hub, alice, workspace):
    job = hub.api("POST", f"workspaces/{workspace['id']}/jobs", alice, json={"job_type": "jupyterlab"}, expect=202)
    hub.api("POST", f"jobs/{job['id']}/stop", alice, expect=202)
    job = hub.wait_job(job["id"], alice, {"completed", "cancelled", "failed"})
    assert (job["status"], job["reason"]) == ("cancelled", "Stopped on request")
    assert job["running_at"] is None
    # the interrupted start left no server process behind
    directory = str(hub.workspaces_root / workspace["owner"] / workspace["slug"])
    wait_for(lambda: not processes_of_job(job["id"], directory), 15, what=f"job {job['id']}'s processes to end")
    # the workspace can run a job again
    again = hub.api("POST", f"workspaces/{workspace['id']}/jobs", alice, json={"job_type": "jupyterlab"}, expect=202)
    assert hub.wait_job(again["id"], alice, {"running", "failed"})["status"] == "running"
    hub.api("POST", f"jobs/{again['id']}/stop", alice, expect=202)
    hub.wait_job(again["id"], alice, {"completed"})


def test_a_server_stopped_as_soon_as_it_runs_stops_itself(hub, alice, workspace):
    """JupyterLab stopped the moment it runs is asked with SIGTERM, its own graceful stop.
    SIGINT (JupyterHub's first signal) is a KeyboardInterrupt to a server without a
    terminal: raised wherever it is, it broke out of the server's event loop, which then
    could not run the SIGTERM that followed, and the stop waited a minute for SIGKILL."""
    job = hub.api("POST", f"workspaces/{workspace['id']}/jobs", alice, json={"job_type": "jupyterlab"}, expect=202)
    assert hub.wait_job(job["id"], alice, {"running", "failed"})["status"] == "running"
    hub.api("POST", f"jobs/{job['id']}/stop", alice, expect=202)
    job = hub.wait_job(job["id"], alice, {"completed", "cancelled", "failed"})
    assert job["status"] == "completed", job["reason"]
    # the server says how it was asked to stop (its output, for its owner)
    output = hub.api("GET", f"jobs/{job['id']}/output", alice)["output"]
    assert "received signal 15, stopping" in output, output[-2000:]
    assert "Interrupted..." not in output
    # and it ran its own shutdown (its extensions', its kernels')
    assert re.search(r"Shutting down \d+ extensions", output), output[-2000:]
