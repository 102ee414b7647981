"""``POST /hub/api/jobs/{id}/wake`` tried by everyone but the job's own server, and with
what a hostile client sends (review3): only the job's own server token is taken (here a
local job, whose start does not wait: 409); the workspace's viewer, editor, a user admin,
an admin, the owner's own token, anonymous: 403; ids that cannot be a job's: 404; other
methods: 405; never a 500. These hold on the code of today: they guard it. (The SLURM
start a wake speeds up: tests/integration/test_slurm.py.)"""

from __future__ import annotations

import uuid

import pytest
import requests

from ..helpers import MINIMAL_CMD

TERMINAL = {"completed", "failed", "cancelled"}

CONFIG = f"""
c.UWSHub.job_types = {{"minimal": {{"display_name": "Minimal test server", "cmd": {MINIMAL_CMD!r}}}}}
c.Authenticator.admin_users = {{"wakeadmin"}}
c.JupyterHub.load_roles.append({{"name": "wake-user-admin", "scopes": ["admin:users"], "users": ["wakekeeper"]}})
"""


@pytest.fixture(scope="module")
def whub(make_hub):
    return make_hub(CONFIG)


def server_token(job) -> str:
    with open(f"/proc/{job['resource_id']}/environ", "rb") as f:
        env = f.read().split(b"\0")
    [token] = [v.split(b"=", 1)[1].decode() for v in env if v.startswith(b"JUPYTERHUB_API_TOKEN=")]
    return token


def test_only_the_jobs_own_server_wakes_and_nothing_is_a_500(whub):
    owner, viewer, editor = (whub.add_user(f"wake{n}") for n in ("owner", "viewer", "editor"))
    keeper, admin = whub.add_user("wakekeeper"), whub.add_user("wakeadmin")
    ws = whub.api("POST", "workspaces", owner, json={"name": f"wake {uuid.uuid4().hex[:8]}"}, expect=201)
    for name, level in (("wakeviewer", "viewer"), ("wakeeditor", "editor")):
        whub.api("POST", f"workspaces/{ws['id']}/shares", owner, json={"user": name, "level": level}, expect=201)
    job = whub.api("POST", f"workspaces/{ws['id']}/jobs", owner, json={"job_type": "minimal"}, expect=202)
    job = whub.wait_job(job["id"], owner, {"running"} | TERMINAL)
    assert job["status"] == "running", job["reason"]
    own = server_token(job)
    wake = f"/hub/api/jobs/{job['id']}/wake"
    try:
        for who in (None, owner, viewer, editor, keeper, admin, whub.admin_token, own[:-1], own + "0"):
            r = whub.request("POST", wake, who)
            assert r.status_code == 403, (who, r.status_code, r.text)
        # the UWS header carries the same token, with the same answer
        r = requests.post(whub.url + wake, headers={"UWS-Authorization": f"Token {own}"}, timeout=30)
        assert r.status_code == 409, r.text
        assert whub.request("POST", wake, own).status_code == 409  # a local start does not wait
        for bad in ("0", "-1", "1e3", "99999999999", "2147483648", "%00", "%C3%A9", "1%2F2", "..", " 1"):
            for who in (None, own):
                r = whub.request("POST", f"/hub/api/jobs/{bad}/wake", who)
                assert r.status_code in (400, 403, 404), (bad, who, r.status_code, r.text)
        for method in ("GET", "PUT", "DELETE", "PATCH"):
            assert whub.request(method, wake, own).status_code == 405
    finally:
        whub.api("POST", f"jobs/{job['id']}/stop", owner, expect=None)
    assert whub.wait_job(job["id"], owner, TERMINAL)["status"] in TERMINAL
    # once the job ended, its token is gone: 403
    assert whub.request("POST", wake, own).status_code == 403
