"""Quotas, enforced on a real hub: each limit refused exactly at its edge with a
message naming the limit and the excess; the core-hour budget stops a running
job; warnings at 90%; overrides per user and per group."""

from __future__ import annotations

import http.client
import json
import uuid

import pytest

from .conftest import MINIMAL_CMD
from .hubutil import wait_for

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
    events = []
    with hub.request("GET", "/hub/api/events?last_event_id=0", token, stream=True, timeout=(5, 1)) as r:
        try:
            for line in r.iter_lines(decode_unicode=True):
                if line.startswith("data:"):
                    events.append(json.loads(line[5:]))
        except Exception:
            pass
    return [e for e in events if e["kind"] == "notification"]


def test_disk_quota_at_its_edge(qhub):
    name, token = user(qhub)
    a, b = workspace(qhub, token), workspace(qhub, token)
    assert put(qhub, token, a, "one.bin", b"x" * 600).status_code == 201
    assert put(qhub, token, b, "two.bin", b"x" * 300).status_code == 201
    # 900 of 1000 bytes: the 90% warning
    wait_for(lambda: [n for n in notifications(qhub, token) if n["data"].get("quota") == "disk_bytes"], 10,
             what="the disk warning")
    # exactly to the limit is fine, one byte more is not
    assert put(qhub, token, b, "three.bin", b"x" * 100).status_code == 201
    message = refusal(put(qhub, token, a, "four.bin", b"x"))
    assert message == (f"Disk quota: {name}'s workspaces would use 1001 bytes (1001 bytes), the limit is"
                       " 1000 bytes (1000 bytes); over by 1 byte (1 bytes).")
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
    assert not any(p.name.startswith(".uws-upload") or p.name == "streamed.bin"
                   for p in (qhub.workspaces_root / name / a["slug"]).iterdir())
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
    invite = qhub.api("POST", f"workspaces/{ws['id']}/shares", owner_token, json={"kind": "copy", "user": name},
                      expect=201)
    message = refusal(qhub.request("POST", f"shares/{invite['id']}/accept", token))
    assert message.startswith(f"Disk quota: {name}'s workspaces would use 1.1 KiB (1100 bytes)")
    assert message.endswith("over by 100 bytes (100 bytes).")
    assert qhub.api("GET", "shares?status=pending", token)["items"][0]["id"] == invite["id"]


def launch(hub, token, ws, **resources):
    return hub.request("POST", f"workspaces/{ws['id']}/jobs", token, json={"job_type": "minimal",
                                                                             "resources": resources})


def test_per_job_limits_and_concurrent_jobs(qhub):
    name, token = user(qhub)
    a, b = workspace(qhub, token), workspace(qhub, token)
    assert refusal(launch(qhub, token, a, cpus=3)) == (
        "CPU limit per job: 3 cpus requested, the limit is 2 (over by 1).")
    assert refusal(launch(qhub, token, a, memory="2G")) == (
        "Memory limit per job: 2.0 GiB requested, the limit is 1.0 GiB (over by 1.0 GiB).")
    # a bare number is megabytes, as SLURM reads it (not bytes)
    assert refusal(launch(qhub, token, a, memory="2048")) == (
        "Memory limit per job: 2.0 GiB requested, the limit is 1.0 GiB (over by 1.0 GiB).")
    assert refusal(launch(qhub, token, a, gpus=1)) == "GPU limit per job: 1 GPUs requested, the limit is 0 (over by 1)."
    r = launch(qhub, token, a, cpus=2, memory="1G", gpus=0)
    assert r.status_code == 202, r.text
    job = r.json()
    assert refusal(launch(qhub, token, b)) == (
        f"Concurrent job quota: {name}'s unfinished jobs would be 2, the limit is 1 (over by 1). Stop a job first.")
    # a group override raises it for the group's members (the most generous group wins)
    group = f"qg{uuid.uuid4().hex[:6]}"
    qhub.api("POST", f"groups/{group}", json={"users": [name]}, expect=201)
    qhub.api("PUT", f"quotas/groups/{group}", json={"concurrent_jobs": 2}, expect=200)
    r = launch(qhub, token, b)
    assert r.status_code == 202, r.text
    second = r.json()
    # ... and the user's own override wins over the group's
    qhub.api("PUT", f"quotas/{name}", json={"concurrent_jobs": 1}, expect=200)
    quota = qhub.api("GET", f"quotas/{name}", token, expect=200)
    assert quota["limits"]["concurrent_jobs"] == 1 and quota["usage"]["active_jobs"] == 2
    for j in (job, second):
        qhub.api("POST", f"jobs/{j['id']}/stop", token)
        qhub.wait_job(j["id"], token, {"completed", "cancelled", "failed"})


def test_core_hour_budget_stops_a_running_job(qhub):
    name, token = user(qhub)
    ws = workspace(qhub, token)
    # 0.002 core-hours = 7.2 core-seconds: a 2-cpu job uses it up in 3.6 s
    qhub.api("PUT", f"quotas/{name}", json={"core_hours": 0.002}, expect=200)
    r = launch(qhub, token, ws, cpus=2)
    assert r.status_code == 202, r.text
    job = qhub.wait_job(r.json()["id"], token, {"running", "failed"})
    assert job["status"] == "running", job["reason"]
    job = qhub.wait_job(job["id"], token, {"completed", "failed", "cancelled"}, timeout=30)
    assert job["status"] == "failed"
    assert job["reason"].startswith(f"Core-hour quota used up: {name}'s jobs used 0.00")
    assert "core-hours this month, the limit is 0.002 (over by" in job["reason"]
    subjects = [n["data"]["subject"] for n in notifications(qhub, token)]
    assert subjects.count("Core-hour quota almost used up") + subjects.count("Core-hour quota used up") == 1
    message = refusal(launch(qhub, token, ws))
    assert message.startswith(f"Core-hour quota: {name}'s jobs used 0.00") and "the limit is 0.002" in message
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
    assert quota["defaults"] == {"disk_bytes": 1000, "core_hours": 1000.0, "concurrent_jobs": 1, "max_cpus": 2,
                                 "max_memory_bytes": GiB, "max_gpus": 0}
    assert quota["override"] is None
