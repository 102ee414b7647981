"""Quotas, enforced on a real hub: each limit refused exactly at its edge with a
message naming the limit and the excess; the core-hour budget stops a running
job; warnings at 90%; overrides per user and per group."""

from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import signal
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pytest
from jupyterhub import orm as hub_orm
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from uws_hub import dbutil
from uws_hub.orm import Workspace
from uws_hub.quotas.service import Limits, QuotaExceeded, QuotaService

from ..helpers import MINIMAL_CMD, create_jupyterhub_tables, launch, sse_replay
from ..hubutil import REPO, wait_for

GiB = 1024**3


@pytest.fixture(scope="module")
def qhub(make_hub):
    hub = make_hub(f"""
c.Authenticator.admin_users = set()
c.UWSHub.job_reconcile_interval = 1
c.UWSHub.quota_interval_seconds = 0.5
c.UWSHub.quota_disk_bytes = 1000
c.UWSHub.quota_concurrent_jobs = 1
c.UWSHub.quota_max_cpus = 2
c.UWSHub.quota_max_memory_bytes = "1G"
c.UWSHub.quota_max_gpus = 0
c.UWSHub.quota_core_hours = 1000
c.UWSHub.job_types = {{"minimal": {{"display_name": "Minimal", "cmd": {MINIMAL_CMD!r}}}}}
""")
    return hub


def user(hub) -> tuple[str, str]:
    name = f"q{uuid.uuid4().hex[:8]}"
    return name, hub.add_user(name)


def workspace(hub, token) -> dict:
    return hub.api("POST", "workspaces", token, json={"name": f"q {uuid.uuid4().hex[:6]}"}, expect=201)


def put(hub, token, ws, path, data: bytes):
    return hub.request("PUT", f"workspaces/{ws['id']}/files/{path}", token, data=data)


def refusal(r, status: int = 422) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    return r.json()["message"]


def notifications(hub, token) -> list[dict]:
    """The caller's notifications, replayed from the event stream."""
    return [e for e in sse_replay(hub, token, "last_event_id=0", seconds=1) if e["kind"] == "notification"]


def test_disk_quota_at_its_edge(qhub):
    name, token = user(qhub)
    a, b = workspace(qhub, token), workspace(qhub, token)
    assert put(qhub, token, a, "one.bin", b"x" * 600).status_code == 201
    assert put(qhub, token, b, "two.bin", b"x" * 300).status_code == 201
    # 900 of 1000 bytes: the 90% warning
    wait_for(
        lambda: [n for n in notifications(qhub, token) if n["data"].get("quota") == "disk_bytes"],
        10,
        what="the disk warning",
    )
    # exactly to the limit is fine, one byte more is not
    assert put(qhub, token, b, "three.bin", b"x" * 100).status_code == 201
    message = refusal(put(qhub, token, a, "four.bin", b"x"))
    # said to the owner, with what they can do about it
    assert message == (
        "Disk quota: your workspaces would use 1001 bytes (1001 bytes), the limit is"
        " 1000 bytes (1000 bytes); over by 1 byte (1 bytes). Delete files or workspaces you no"
        " longer need, or ask an administrator for more."
    )
    # replacing a file counts only the difference
    assert put(qhub, token, a, "one.bin", b"y" * 600).status_code == 201
    assert "over by 2 bytes" in refusal(put(qhub, token, a, "one.bin", b"y" * 602))
    # a streamed upload without Content-Length is stopped as it goes over
    # to the hub itself: when the hub refuses mid-body, node CHP may answer 503 instead (docs/admin-guide.md)
    conn = http.client.HTTPConnection("127.0.0.1", qhub.hub_port, timeout=30)
    conn.putrequest("PUT", f"/hub/api/workspaces/{a['id']}/files/streamed.bin")
    conn.putheader("Authorization", f"token {token}")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    conn.send(b"20\r\n" + b"z" * 32 + b"\r\n0\r\n\r\n")
    r = conn.getresponse()
    body = json.loads(r.read())
    assert r.status == 422 and "over by at least 32 bytes" in body["message"], body
    assert not any(
        p.name.startswith(".uws-upload") or p.name == "streamed.bin"
        for p in (qhub.workspaces_root / name / a["slug"]).iterdir()
    )
    assert sum(w["disk_usage_bytes"] for w in qhub.api("GET", "workspaces", token)["items"]) == 1000
    # an admin raises the user's limit
    qhub.api("PUT", f"quotas/{name}", json={"disk_bytes": 2000}, expect=200)
    assert put(qhub, token, a, "four.bin", b"x").status_code == 201


def test_accepting_a_copy_over_the_disk_quota(qhub):
    owner, owner_token = user(qhub)
    name, token = user(qhub)
    ws = workspace(qhub, owner_token)
    assert put(qhub, owner_token, ws, "big.bin", b"x" * 700).status_code == 201
    mine = workspace(qhub, token)
    assert put(qhub, token, mine, "mine.bin", b"x" * 400).status_code == 201
    invite = qhub.api(
        "POST", f"workspaces/{ws['id']}/shares", owner_token, json={"kind": "copy", "user": name}, expect=201
    )
    message = refusal(qhub.request("POST", f"shares/{invite['id']}/accept", token))
    assert message.startswith("Disk quota: your workspaces would use 1.1 KiB (1100 bytes)")
    assert "over by 100 bytes (100 bytes). Delete files" in message
    assert qhub.api("GET", "shares?status=pending", token)["items"][0]["id"] == invite["id"]


def test_per_job_limits_and_concurrent_jobs(qhub):
    name, token = user(qhub)
    a, b = workspace(qhub, token), workspace(qhub, token)
    assert refusal(launch(qhub, token, a, resources={"cpus": 3}, expect=None)) == (
        "CPU limit per job: 3 cpus requested, the limit is 2 (over by 1). Request at most 2."
    )
    assert refusal(launch(qhub, token, a, resources={"memory": "2G"}, expect=None)) == (
        "Memory limit per job: 2.0 GiB requested, the limit is 1.0 GiB (over by 1.0 GiB). Request at most 1.0 GiB."
    )
    # a bare number is megabytes, as SLURM reads it (not bytes)
    assert refusal(launch(qhub, token, a, resources={"memory": "2048"}, expect=None)).startswith(
        "Memory limit per job: 2.0 GiB requested, the limit is 1.0 GiB (over by 1.0 GiB)."
    )
    assert refusal(launch(qhub, token, a, resources={"gpus": 1}, expect=None)) == (
        "GPU limit per job: 1 GPUs requested, the limit is 0 (over by 1). Request no GPUs."
    )
    r = launch(qhub, token, a, resources={"cpus": 2, "memory": "1G", "gpus": 0}, expect=None)
    assert r.status_code == 202, r.text
    job = r.json()
    assert refusal(launch(qhub, token, b, expect=None)) == (
        "Concurrent job quota: your unfinished jobs would be 2, the limit is 1 (over by 1). Stop one of your jobs first."
    )
    # a group override raises it for the group's members (the most generous group wins)
    group = f"qg{uuid.uuid4().hex[:6]}"
    qhub.api("POST", f"groups/{group}", json={"users": [name]}, expect=201)
    qhub.api("PUT", f"quotas/groups/{group}", json={"concurrent_jobs": 2}, expect=200)
    r = launch(qhub, token, b, expect=None)
    assert r.status_code == 202, r.text
    second = r.json()
    # ... and the user's own override wins over the group's
    qhub.api("PUT", f"quotas/{name}", json={"concurrent_jobs": 1}, expect=200)
    quota = qhub.api("GET", f"quotas/{name}", token, expect=200)
    assert quota["limits"]["concurrent_jobs"] == 1 and quota["usage"]["active_jobs"] == 2
    for j in (job, second):
        qhub.api("POST", f"jobs/{j['id']}/stop", token)
        qhub.wait_job(j["id"], token, {"completed", "cancelled", "failed"})


def test_a_burst_of_launches_takes_exactly_the_concurrent_jobs_quota(qhub):
    """Launches that arrive at once are each checked and stored before the next is looked
    at: a user with room for 3 jobs who launches in 10 workspaces at once gets exactly 3
    jobs, and 10 launches at once in one workspace make one job; every accepted job's
    ``pending`` event and each workspace's ``active`` are stored, in order, and nothing
    of a refused launch is."""
    name, token = user(qhub)
    qhub.api("PUT", f"quotas/{name}", json={"concurrent_jobs": 3}, expect=200)
    wss = [workspace(qhub, token) for _ in range(10)]
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda ws: launch(qhub, token, ws, expect=None), wss))
    assert sorted(r.status_code for r in answers) == [202] * 3 + [422] * 7, [r.text for r in answers]
    refused = [refusal(r) for r in answers if r.status_code == 422]
    assert all(message.startswith("Concurrent job quota: your unfinished jobs would be 4") for message in refused)
    jobs = [r.json() for r in answers if r.status_code == 202]
    quota = qhub.api("GET", f"quotas/{name}", token, expect=200)
    assert quota["usage"]["active_jobs"] == 3
    for job in jobs:
        qhub.api("POST", f"jobs/{job['id']}/stop", token)
        qhub.wait_job(job["id"], token, {"completed", "cancelled", "failed"})

    one = wss[0]
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda _: launch(qhub, token, one, expect=None), range(10)))
    assert sorted(r.status_code for r in answers) == [202] + [409] * 9, [r.text for r in answers]
    jobs.append(next(r.json() for r in answers if r.status_code == 202))
    qhub.api("POST", f"jobs/{jobs[-1]['id']}/stop", token)
    qhub.wait_job(jobs[-1]["id"], token, {"completed", "cancelled", "failed"})

    events = sse_replay(qhub, token, "last_event_id=0", seconds=1)
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    pending = [e["job_id"] for e in events if e["kind"] == "job" and e["status"] == "pending"]
    assert sorted(pending) == sorted(job["id"] for job in jobs)
    launched = {job["workspace_id"] for job in jobs}
    active = [e["workspace_id"] for e in events if e["kind"] == "workspace" and e["status"] == "active"]
    # each launch in an idle workspace made it active (the one workspace twice: once a job, again)
    assert sorted(active) == sorted(job["workspace_id"] for job in jobs) and set(active) == launched
    for ws in wss:
        got = qhub.api("GET", f"workspaces/{ws['id']}", token, expect=200)
        assert got["status"] == "idle" and (got["id"] in launched or got["last_used_at"] == ws["last_used_at"])


def test_quota_refusals_speak_to_their_reader(qhub):
    """The owner reads "your", a collaborator launching in the owner's workspace reads the
    owner's name; with a limit of 0 (nothing to stop) the message only says who can help."""
    name, token = user(qhub)
    editor, editor_token = user(qhub)
    ws = workspace(qhub, token)
    qhub.api("POST", f"workspaces/{ws['id']}/shares", token, json={"user": editor, "level": "editor"}, expect=201)
    qhub.api("PUT", f"quotas/{name}", json={"concurrent_jobs": 0}, expect=200)
    assert refusal(launch(qhub, token, ws, expect=None)) == (
        "Concurrent job quota: your unfinished jobs would be 1, the limit is 0 (over by 1)."
        " Ask an administrator to raise it."
    )
    assert refusal(launch(qhub, editor_token, ws, expect=None)) == (
        f"Concurrent job quota: {name}'s unfinished jobs would be 1, the limit is 0 (over by 1)."
        " An administrator can raise it."
    )
    qhub.api("PUT", f"quotas/{name}", json={"concurrent_jobs": 1}, expect=200)
    job = launch(qhub, token, ws)
    other = workspace(qhub, token)
    qhub.api("POST", f"workspaces/{other['id']}/shares", token, json={"user": editor, "level": "editor"}, expect=201)
    assert refusal(launch(qhub, editor_token, other, expect=None)) == (
        f"Concurrent job quota: {name}'s unfinished jobs would be 2, the limit is 1 (over by 1)."
        f" One of {name}'s jobs must end first."
    )
    # the editor's upload over the owner's disk quota names the owner, and suggests nothing the editor cannot do
    message = refusal(put(qhub, editor_token, ws, "big.bin", b"x" * 1001))
    assert message.startswith(f"Disk quota: {name}'s workspaces would use 1001 bytes") and message.endswith("bytes).")
    qhub.api("POST", f"jobs/{job['id']}/stop", token)
    qhub.wait_job(job["id"], token, {"completed", "cancelled", "failed"})


def test_core_hour_budget_stops_a_running_job(qhub):
    name, token = user(qhub)
    ws = workspace(qhub, token)
    # 0.002 core-hours = 7.2 core-seconds: a 2-cpu job uses it up in 3.6 s
    qhub.api("PUT", f"quotas/{name}", json={"core_hours": 0.002}, expect=200)
    r = launch(qhub, token, ws, resources={"cpus": 2}, expect=None)
    assert r.status_code == 202, r.text
    job = qhub.wait_job(r.json()["id"], token, {"running", "failed"})
    assert job["status"] == "running", job["reason"]
    job = qhub.wait_job(job["id"], token, {"completed", "failed", "cancelled"}, timeout=30)
    assert job["status"] == "failed"
    assert job["reason"].startswith(f"Core-hour quota used up: {name}'s jobs used 0.00")
    assert "core-hours this month, the limit is 0.002 (over by" in job["reason"]
    subjects = [n["data"]["subject"] for n in notifications(qhub, token)]
    assert subjects.count("Core-hour quota almost used up") + subjects.count("Core-hour quota used up") == 1
    message = refusal(launch(qhub, token, ws, expect=None))
    assert message.startswith("Core-hour quota: your jobs used 0.00") and "the limit is 0.002" in message
    assert message.endswith("It renews at the start of the next month.")
    usage = qhub.api("GET", f"quotas/{name}", token, expect=200)["usage"]
    # limits and usage are whole core-seconds: 0.002 core-hours is 7 of them
    assert 7 / 3600 <= usage["core_hours"] < 0.01 and usage["period"] == "month"


def test_quota_and_usage_api_visibility(qhub):
    name, token = user(qhub)
    other, _ = user(qhub)
    assert qhub.request("GET", f"quotas/{other}", token).status_code == 404
    assert qhub.request("PUT", f"quotas/{name}", token, json={"disk_bytes": 10**9}).status_code == 403
    assert [u["user"] for u in qhub.api("GET", "usage", token, expect=200)["items"]] == [name]
    quota = qhub.api("GET", f"quotas/{name}", token, expect=200)
    assert quota["defaults"] == {
        "disk_bytes": 1000,
        "core_hours": 1000.0,
        "concurrent_jobs": 1,
        "max_cpus": 2,
        "max_memory_bytes": GiB,
        "max_gpus": 0,
    }
    assert quota["override"] is None


# ---------------------------------------------------------------- disk space reserved before it is written
KiB, MiB = 1024, 1024**2


def test_over_the_disk_quota_deleting_frees_room_at_once(qhub):
    """A user over the quota (an admin lowered it) frees room through the files API,
    without launching a job: deleting a file or a folder, or moving a file over
    another, counts at once."""
    name, token = user(qhub)
    ws = workspace(qhub, token)
    for path in ("keep.bin", "old/a.bin", "old/b.bin", "dup.bin"):
        assert put(qhub, token, ws, path, b"x" * 200).status_code == 201
    qhub.api("PUT", f"quotas/{name}", json={"disk_bytes": 500}, expect=200)
    assert "over by 301 bytes" in refusal(put(qhub, token, ws, "more.bin", b"x"))
    files = f"workspaces/{ws['id']}/files"
    assert qhub.api("DELETE", f"{files}/old?recursive=1", token, expect=200)["freed_bytes"] == 400
    qhub.api("PATCH", f"{files}/dup.bin", token, json={"path": "keep.bin", "overwrite": True}, expect=200)
    assert disk_used(qhub, token) == 200
    assert put(qhub, token, ws, "more.bin", b"x" * 300).status_code == 201
    assert workspace_files(qhub, name, ws) == ["keep.bin", "more.bin"]


def workspace_files(hub, name: str, ws: dict) -> list[str]:
    return sorted(p.name for p in (hub.workspaces_root / name / ws["slug"]).iterdir())


def disk_used(hub, token) -> int:
    return sum(w["disk_usage_bytes"] for w in hub.api("GET", "workspaces", token, expect=200)["items"])


def test_seed_files_count_against_the_disk_quota(qhub):
    name, token = user(qhub)
    big = {"path": "big.bin", "content": base64.b64encode(b"x" * MiB).decode(), "encoding": "base64"}
    message = refusal(qhub.request("POST", "workspaces", token, json={"name": "seeded", "files": [big]}))
    assert message.startswith(
        "Disk quota: your workspaces would use 1.0 MiB (1048576 bytes), the limit is"
        " 1000 bytes (1000 bytes); over by 1023.0 KiB (1047576 bytes)."
    )
    # nothing is left behind: no workspace, no directory
    assert qhub.api("GET", "workspaces", token, expect=200)["items"] == []
    assert not (qhub.workspaces_root / name / "seeded").exists()
    # seeds up to the limit are fine, and are the workspace's usage
    seeds = [{"path": "a.txt", "content": "a" * 600}, {"path": "sub/b.txt", "content": "b" * 400}]
    ws = qhub.api("POST", "workspaces", token, json={"name": "seeded", "files": seeds}, expect=201)
    assert ws["disk_usage_bytes"] == 1000
    assert "over by 1 byte (1 bytes)" in refusal(
        qhub.request("POST", "workspaces", token, json={"name": "more", "files": [{"path": "c", "content": "c"}]})
    )
    assert "over by 1 byte (1 bytes)" in refusal(put(qhub, token, ws, "c.txt", b"c"))


def start_upload(hub, token, ws: dict, path: str, length: int, first: bytes) -> http.client.HTTPConnection:
    """An upload of ``length`` bytes, to the hub itself, of which only ``first`` is sent so far."""
    conn = http.client.HTTPConnection("127.0.0.1", hub.hub_port, timeout=30)
    conn.putrequest("PUT", f"/hub/api/workspaces/{ws['id']}/files/{path}")
    conn.putheader("Authorization", f"token {token}")
    conn.putheader("Content-Length", str(length))
    conn.endheaders()
    conn.send(first)
    return conn


def wait_for_upload_bytes(hub, name: str, ws: dict, size: int):
    """Wait until an upload's temporary file holds ``size`` bytes (the hub reserved its room before)."""
    directory = hub.workspaces_root / name / ws["slug"]

    def written():
        return [p for p in directory.iterdir() if p.name.startswith(".uws-upload-") and p.stat().st_size >= size]

    wait_for(written, 15, interval=0.05, what=f"{size} bytes of the upload on disk")


def test_parallel_uploads_share_the_room_there_is(qhub):
    name, token = user(qhub)
    ws = workspace(qhub, token)
    qhub.api("PUT", f"quotas/{name}", json={"disk_bytes": MiB + MiB // 2}, expect=200)
    # six uploads of 1 MiB under way at once, with room for one
    conns = [start_upload(qhub, token, ws, f"part{i}.bin", MiB, bytes([65 + i]) * (100 * KiB)) for i in range(6)]
    wait_for_upload_bytes(qhub, name, ws, 100 * KiB)
    for i, conn in enumerate(conns):
        conn.send(bytes([65 + i]) * (MiB - 100 * KiB))
    answers = []
    for conn in conns:
        r = conn.getresponse()
        answers.append((r.status, json.loads(r.read())))
        conn.close()
    assert sorted(status for status, _ in answers) == [201] + [422] * 5, answers
    for status, body in answers:
        if status == 422:
            assert body["message"].startswith("Disk quota: your workspaces would use 2.0 MiB (2097152 bytes")
    [won] = [body["path"] for status, body in answers if status == 201]
    assert workspace_files(qhub, name, ws) == [won]  # and no temporary files
    assert disk_used(qhub, token) == MiB


def test_an_upload_holds_its_room_until_it_ends(qhub):
    name, token = user(qhub)
    ws = workspace(qhub, token)
    qhub.api("PUT", f"quotas/{name}", json={"disk_bytes": MiB}, expect=200)
    # an upload of 1 MiB in progress holds the whole quota...
    conn = start_upload(qhub, token, ws, "slow.bin", MiB, b"s" * (100 * KiB))
    wait_for_upload_bytes(qhub, name, ws, 100 * KiB)
    message = refusal(put(qhub, token, ws, "fast.bin", b"f" * KiB))
    assert message.startswith(
        "Disk quota: your workspaces would use 1.0 MiB (1049600 bytes, 1048576 of them reserved"
        " by uploads and copies in progress), the limit is 1.0 MiB (1048576 bytes);"
        " over by 1.0 KiB (1024 bytes)."
    )
    # ... until its client goes away mid-body: then the room is free again
    conn.close()
    wait_for(
        lambda: put(qhub, token, ws, "fast.bin", b"f" * MiB).status_code == 201,
        15,
        what="the room of the cut upload to be released",
    )
    assert workspace_files(qhub, name, ws) == ["fast.bin"]
    assert disk_used(qhub, token) == MiB
    # a streamed upload refused midway releases what it held: the room is there for the next one
    qhub.api("PUT", f"quotas/{name}", json={"disk_bytes": 2 * MiB}, expect=200)
    conn = http.client.HTTPConnection("127.0.0.1", qhub.hub_port, timeout=30)
    conn.putrequest("PUT", f"/hub/api/workspaces/{ws['id']}/files/streamed.bin")
    conn.putheader("Authorization", f"token {token}")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    chunk = b"z" * (64 * KiB)
    for _ in range(17):  # 1 MiB + 64 KiB
        conn.send(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
    conn.send(b"0\r\n\r\n")
    r = conn.getresponse()
    body = json.loads(r.read())
    conn.close()
    assert r.status == 422 and "over by at least" in body["message"], body
    assert put(qhub, token, ws, "second.bin", b"2" * MiB).status_code == 201
    assert workspace_files(qhub, name, ws) == ["fast.bin", "second.bin"]
    assert disk_used(qhub, token) == 2 * MiB


def test_accepting_a_copy_counts_uploads_in_progress(qhub):
    owner, owner_token = user(qhub)
    name, token = user(qhub)
    qhub.api("PUT", f"quotas/{owner}", json={"disk_bytes": 10 * MiB}, expect=200)
    qhub.api("PUT", f"quotas/{name}", json={"disk_bytes": MiB + MiB // 2}, expect=200)
    source = workspace(qhub, owner_token)
    assert put(qhub, owner_token, source, "data.bin", b"d" * MiB).status_code == 201
    mine = workspace(qhub, token)
    conn = start_upload(qhub, token, mine, "upload.bin", MiB, b"u" * (100 * KiB))
    wait_for_upload_bytes(qhub, name, mine, 100 * KiB)
    invite = qhub.api(
        "POST", f"workspaces/{source['id']}/shares", owner_token, json={"kind": "copy", "user": name}, expect=201
    )
    message = refusal(qhub.request("POST", f"shares/{invite['id']}/accept", token))
    assert message.startswith(
        "Disk quota: your workspaces would use 2.0 MiB (2097152 bytes, 1048576 of them"
        " reserved by uploads and copies in progress)"
    )
    conn.send(b"u" * (MiB - 100 * KiB))
    r = conn.getresponse()
    assert r.status == 201, r.read()
    conn.close()
    assert disk_used(qhub, token) == MiB


def test_a_copy_and_an_upload_never_both_take_the_last_room(qhub):
    owner, owner_token = user(qhub)
    name, token = user(qhub)
    qhub.api("PUT", f"quotas/{name}", json={"disk_bytes": MiB + MiB // 2}, expect=200)
    source = workspace(qhub, owner_token)
    # 1 MiB in 8192 files, put there behind the hub's back (as a job would): a copy that takes a while
    src = qhub.workspaces_root / owner / source["slug"]
    for i in range(64):
        (src / f"d{i:02d}").mkdir()
        for j in range(128):
            (src / f"d{i:02d}" / f"f{j:03d}").write_bytes(b"x" * 128)
    mine = workspace(qhub, token)
    invite = qhub.api(
        "POST", f"workspaces/{source['id']}/shares", owner_token, json={"kind": "copy", "user": name}, expect=201
    )
    qhub.api("POST", f"shares/{invite['id']}/accept", token, expect=202)
    wait_for(
        lambda: [p for p in (qhub.workspaces_root / name).iterdir() if p.name.startswith(".uws-copy-")],
        30,
        interval=0.02,
        what="the copy to start",
    )
    uploaded = put(qhub, token, mine, "upload.bin", b"u" * MiB)

    def copy():
        [share] = [
            s for s in qhub.api("GET", "shares?status=accepted", token, expect=200)["items"] if s["id"] == invite["id"]
        ]
        return share["copy"] if share["copy"]["state"] in ("done", "failed") else None

    copy = wait_for(copy, 60, what="the copy")
    # whichever came first got the room; the other was refused, naming the quota
    assert (uploaded.status_code == 201) != (copy["state"] == "done"), (uploaded.text, copy)
    if uploaded.status_code == 201:
        assert copy["error"].startswith(f"Disk quota: {name}'s workspaces would use 2.0 MiB"), copy
    else:
        assert refusal(uploaded).startswith("Disk quota: your workspaces would use 2.0 MiB")
    assert disk_used(qhub, token) == MiB
    # nothing stays reserved: the rest of the room is free
    assert put(qhub, token, mine, "rest.bin", b"r" * (MiB // 2)).status_code == 201


def test_a_hub_restart_frees_the_room_of_uploads_it_cut(make_hub):
    hub = make_hub("c.Authenticator.admin_users = set()\nc.UWSHub.quota_disk_bytes = 1048576\n")
    name, token = user(hub)
    ws = workspace(hub, token)
    conn = start_upload(hub, token, ws, "cut.bin", MiB, b"c" * (100 * KiB))
    wait_for_upload_bytes(hub, name, ws, 100 * KiB)
    os.killpg(hub.proc.pid, signal.SIGKILL)  # the hub and its proxy, mid-upload
    hub.proc.wait()
    conn.close()
    hub.start()
    assert put(hub, token, ws, "whole.bin", b"w" * MiB).status_code == 201
    assert disk_used(hub, token) == MiB


def test_core_hours_of_ended_batch_jobs_count_across_a_hub_restart(make_hub):
    """A start's core-hour check reads the run time of the owner's ended jobs as kept
    when each ended (no longer every job of the period): it is the jobs' real run
    time, after the hub was killed and started again too, and a launch over the
    quota is refused as before. A user over the quota who deletes their finished
    jobs and their workspace gets no core-hours back: the next launch is refused
    all the same and their usage (theirs, and the accounting loop's list) stays."""
    hub = make_hub(
        "c.Authenticator.admin_users = set()\nc.UWSHub.system_users = False\n"
        "c.UWSHub.quota_core_hours = 1000\nc.UWSHub.quota_interval_seconds = 0.5\n"
        'c.UWSHub.job_types = {"nap": {"interactive": False, "cmd": ["sleep", "1"],'
        ' "default_resources": {"cpus": 2}}}\n'
    )
    name, token = user(hub)
    ws = workspace(hub, token)
    ended = [
        hub.wait_job(launch(hub, token, ws, job_type="nap")["id"], token, {"completed", "failed"}) for _ in range(2)
    ]
    assert [j["status"] for j in ended] == ["completed", "completed"], ended
    at = datetime.fromisoformat
    ran = sum(2 * (at(j["finished_at"]) - at(j["running_at"])).total_seconds() for j in ended)

    def used() -> float:
        return hub.api("GET", f"quotas/{name}", token, expect=200)["usage"]["core_hours"] * 3600

    before = used()
    assert abs(before - ran) <= 1, (before, ran)  # (whole core-seconds)
    os.killpg(hub.proc.pid, signal.SIGKILL)
    hub.proc.wait()
    hub.start()
    assert used() == before
    # a quota below what they used (3.6 core-seconds of 2 × 2 cpus × 1 s or more): refused;
    # above: accepted
    hub.api("PUT", f"quotas/{name}", json={"core_hours": 0.001}, expect=200)
    message = refusal(launch(hub, token, ws, job_type="nap", expect=None))
    assert message.startswith("Core-hour quota: your jobs used 0.00") and "the limit is 0.001 (over by" in message
    hub.api("PUT", f"quotas/{name}", json={"core_hours": 1}, expect=200)
    job = hub.wait_job(launch(hub, token, ws, job_type="nap")["id"], token, {"completed", "failed"})
    assert job["status"] == "completed" and used() > before
    # over the quota again, the user deletes their finished job, then the workspace with
    # the others: compute consumed stays consumed
    hub.api("PUT", f"quotas/{name}", json={"core_hours": 0.001}, expect=200)
    total = used()

    def listed() -> float:  # (the accounting loop's reading, as the usage page shows it)
        [item] = hub.api("GET", "usage", token, expect=200)["items"]
        return item["core_hours"] * 3600

    def refused() -> None:
        message = refusal(launch(hub, token, workspace(hub, token), job_type="nap", expect=None))
        assert message.startswith(f"Core-hour quota: your jobs used {total / 3600:.3f}".rstrip("0")), message

    wait_for(lambda: listed() == total, timeout=30)
    hub.api("DELETE", f"jobs/{job['id']}", token, expect=200)
    assert used() == total
    refused()
    hub.api("DELETE", f"workspaces/{ws['id']}", token, expect=202)
    wait_for(lambda: hub.request("GET", f"workspaces/{ws['id']}", token).status_code == 404, timeout=30)
    assert used() == total
    refused()
    measured = hub.api("GET", "usage", token, expect=200)["items"][0]["measured_at"]
    wait_for(lambda: hub.api("GET", "usage", token, expect=200)["items"][0]["measured_at"] != measured, timeout=30)
    assert listed() == total


@pytest.fixture
def quota_db(db_url):
    """A database with uws-hub's tables and one user, and a function making a QuotaService
    on a new session of it (what a hub makes, without the hub)."""
    url = db_url()
    uid = create_jupyterhub_tables(url, user="racer")
    engine = create_engine(url)
    dbutil.prepare(engine, allow_upgrade=False, log=logging.getLogger("test"))
    sessions = []

    def service(disk_bytes: int) -> tuple[QuotaService, hub_orm.User]:
        db = Session(engine)
        sessions.append(db)
        quotas = QuotaService(
            db,
            notifier=None,
            log=logging.getLogger("test"),
            defaults=Limits(disk_bytes=disk_bytes),
            period="month",
            warning_fraction=2.0,
        )
        return quotas, db.get(hub_orm.User, uid)

    yield engine, service
    for db in sessions:
        db.close()
    engine.dispose()


def test_reservations_hold_across_database_connections(quota_db):
    """Writes of one user through separate connections at once cannot each take the same
    free bytes: the owner's reservation row is locked while one of them decides."""
    engine, service = quota_db
    rounds, writers = 10, 8
    barrier = threading.Barrier(writers)

    def write(_) -> list[bool]:
        quotas, owner = service(3 * MiB // 2)
        granted = []
        for _ in range(rounds):
            barrier.wait()
            try:
                reservation = quotas.reserve_disk(owner, MiB)
            except QuotaExceeded:
                granted.append(False)
                barrier.wait()
                continue
            granted.append(True)
            barrier.wait()  # everyone has tried while this one held the room
            quotas.release_disk(reservation)
        return granted

    with ThreadPoolExecutor(writers) as pool:
        results = list(pool.map(write, range(writers)))
    assert [sum(r[i] for r in results) for i in range(rounds)] == [1] * rounds
    with engine.connect() as conn:
        assert conn.execute(text("SELECT reserved_bytes FROM uws_disk_reservations")).scalar() == 0


def test_a_measurement_is_not_stored_over_a_write(quota_db):
    """The usage loop walks a directory in a thread: what it counted is stale if a write of
    the owner committed meanwhile, or is still under way (its temporary file was counted)."""
    _, service = quota_db
    quotas, owner = service(MiB)
    ws = Workspace(owner=owner, slug="w", name="w", directory="/nonexistent/racer/w", disk_usage_bytes=100)
    quotas.db.add(ws)
    quotas.db.commit()
    assert quotas.record_measured(ws, 100, 150) and ws.disk_usage_bytes == 150
    reservation = quotas.reserve_disk(owner, 10)
    assert not quotas.record_measured(ws, 150, 400)  # a write is under way
    quotas.commit_disk(reservation, ws, 10)
    assert ws.disk_usage_bytes == 160
    assert not quotas.record_measured(ws, 150, 150)  # walked before that write committed
    assert quotas.record_measured(ws, 160, 170) and ws.disk_usage_bytes == 170
    # the measurement at a job's end: stored, but the next pass measures the workspace again
    measured_at = ws.usage_measured_at
    assert quotas.record_measured(ws, 170, 180, settled=False) and ws.disk_usage_bytes == 180
    assert ws.usage_measured_at == measured_at


# ---------------------------------------------------------------- what a job wrote counts at its end
WRITE_JOB = {
    "interactive": False,
    "cmd": [sys.executable, str(REPO / "tests" / "batch_job.py"), "write", "{size}"],
    "parameters": {"size": {"type": "int", "default": 100, "min": 0}},
}


@pytest.fixture(scope="module")
def jhub(make_hub, system_users):
    """Jobs run as their owners; the periodic usage pass never comes again during the
    tests (it measures every workspace once, at start)."""
    return make_hub(f"""
c.UWSHub.system_users = True
c.UWSHub.job_reconcile_interval = 1
c.UWSHub.workspace_usage_interval = 3600
c.UWSHub.quota_disk_bytes = 1000
c.UWSHub.job_types = {{"minimal": {{"cmd": {MINIMAL_CMD!r}}}, "write": {WRITE_JOB!r}}}
""")


def test_what_a_job_wrote_counts_when_it_ends(jhub):
    """A batch job's results count toward the disk quota as soon as the job ends, not at the
    next periodic pass (an hour away here): a job that wrote over the quota leaves its owner
    over it at once, and the next upload is refused. An interactive job's end too."""
    token = jhub.add_user("uwsalice")
    ws = workspace(jhub, token)

    def usage() -> int:
        return jhub.api("GET", f"workspaces/{ws['id']}", token, expect=200)["disk_usage_bytes"]

    # the second job writes past the quota: its owner is over it as soon as it ends
    for size, total in ((600, 600), (700, 1300)):
        job = jhub.api(
            "POST",
            f"workspaces/{ws['id']}/jobs",
            token,
            json={"job_type": "write", "parameters": {"size": size}},
            expect=202,
        )
        assert jhub.wait_job(job["id"], token, {"completed", "failed"})["status"] == "completed"
        wait_for(lambda total=total: usage() == total, 30, what=f"the results of {size} bytes to be counted")
    assert jhub.api("GET", "quotas/uwsalice", token, expect=200)["usage"]["disk_bytes"] == 1300
    assert "over by 301 bytes" in refusal(put(jhub, token, ws, "more.bin", b"x"))
    # what an interactive job's server wrote counts when the job ends
    other = workspace(jhub, token)
    job = launch(jhub, token, other)
    assert jhub.wait_job(job["id"], token, {"running", "failed"})["status"] == "running"
    (jhub.workspaces_root / "uwsalice" / other["slug"] / "notes.txt").write_bytes(b"x" * 50)
    jhub.api("POST", f"jobs/{job['id']}/stop", token, expect=202)
    assert jhub.wait_job(job["id"], token, {"completed", "failed", "cancelled"})["status"] == "completed"
    wait_for(
        lambda: jhub.api("GET", f"workspaces/{other['id']}", token, expect=200)["disk_usage_bytes"] == 50,
        30,
        what="the interactive job's file to be counted",
    )
