"""Sharing, for real: two and three system users, JupyterLab through the proxy,
POSIX groups on disk, copies made in the background, and the mails a real SMTP
server receives.

- collaborate: an editor (a user) and a viewer (through a hub group) reach the
  owner's running JupyterLab through the proxy with their tokens and read
  (only its launcher, the owner, writes there); the editor writes through the
  hub (and the hub's jobs), not as their account outside it: the workspace's POSIX
  group has no members;
  revoking refuses them at once (the hub) and at the server's next check
  (``server_auth_cache_seconds``);
- copy: accept gives an independent workspace with the same files, owned by
  the recipient; decline; a copy interrupted by killing the hub is finished
  after the restart;
- the recipient search shows names, not e-mail addresses.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import websocket

from .. import browserutil
from ..helpers import ADMIN_PASSWORD, MINIMAL_CMD, SSEReader, sse_replay
from ..hubutil import wait_for
from ..smtputil import SMTPServer

PASSWORD = "a long password for tests"
PEOPLE = {
    "uwsalice": ("alice@example.org", "Alice Liddell"),
    "uwsbob": ("bob@example.org", "Bob Builder"),
    "uwscarol": ("carol@example.org", "Carol Danvers"),
}


@pytest.fixture(scope="module")
def smtp():
    server = SMTPServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def shub(make_hub, system_users, smtp, group_prefix):
    hub = make_hub(f"""
c.UWSHub.system_users = True
c.UWSHub.job_reconcile_interval = 2
c.UWSHub.share_posix_group_prefix = {group_prefix!r}
c.UWSHub.copy_retry_seconds = 1
c.UWSHub.smtp_host = "127.0.0.1"
c.UWSHub.smtp_port = {smtp.port}
c.UWSHub.smtp_from = "uws-hub <hub@example.org>"
c.Authenticator.admin_users = {{"uwsadmin"}}
c.UWSHub.job_types = {{
    "jupyterlab": {{"display_name": "JupyterLab", "default_url": "/lab"}},
    "minimal": {{"display_name": "Minimal", "cmd": {MINIMAL_CMD!r}}},
}}
""")
    for name, (address, display) in PEOPLE.items():
        hub.api(
            "POST",
            "accounts",
            json={"username": name, "password": PASSWORD, "email": address, "display_name": display},
            expect=201,
        )
    hub.tokens = {name: hub.add_user(name) for name in PEOPLE}
    hub.group = f"lab-{uuid.uuid4().hex[:6]}"
    hub.api("POST", f"groups/{hub.group}", json={"users": ["uwscarol"]}, expect=201)
    return hub


def new_workspace(hub, token, files=None):
    body = {"name": f"shared {uuid.uuid4().hex[:6]}", "files": files or [{"path": "data.txt", "content": "data\n"}]}
    return hub.api("POST", "workspaces", token, json=body, expect=201)


def run_as(user: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", user, "--", *argv], capture_output=True, text=True, timeout=30)


def refused_within(check, seconds: float) -> float:
    """Poll ``check`` until it is true (refused, or let in); return how long it took."""
    start = time.monotonic()
    wait_for(check, seconds, interval=0.1, what="the server's answer to change")
    return time.monotonic() - start


@pytest.fixture(scope="module")
def lab(shub):
    """A workspace of alice's, running JupyterLab, shared with bob (editor) and
    with carol's group (viewer)."""
    alice = shub.tokens["uwsalice"]
    ws = new_workspace(shub, alice)
    job = shub.api("POST", f"workspaces/{ws['id']}/jobs", alice, json={"job_type": "jupyterlab"}, expect=202)
    job = shub.wait_job(job["id"], alice, {"running", "failed"}, timeout=90)
    assert job["status"] == "running", job["reason"]
    yield ws, job
    shub.api("POST", f"jobs/{job['id']}/stop", alice)
    shub.wait_job(job["id"], alice, {"completed", "cancelled", "failed"})


def test_collaborate_editor_and_group_viewer(shub, lab, smtp):
    ws, job = lab
    alice, bob, carol = (shub.tokens[n] for n in ("uwsalice", "uwsbob", "uwscarol"))
    wid, server = ws["id"], f"/user/uwsalice/{ws['slug']}"
    directory = shub.workspaces_root / "uwsalice" / ws["slug"]

    # not shared yet: nobody else sees it or reaches its server
    for token in (bob, carol):
        assert shub.request("GET", f"workspaces/{wid}", token).status_code == 404
        assert shub.request("GET", f"{server}/api/contents/data.txt", token).status_code in (403, 404)

    shares = f"workspaces/{wid}/shares"
    editor = shub.api("POST", shares, alice, json={"user": "uwsbob", "level": "editor"}, expect=201)
    viewer = shub.api("POST", shares, alice, json={"group": shub.group, "level": "viewer"}, expect=201)
    assert (editor["kind"], editor["level"], editor["status"]) == ("collaborate", "editor", "accepted")
    assert viewer["group"] == shub.group
    # the grantees get a notification, and a mail
    assert "shared workspace" in smtp.wait_for("bob@example.org", "shared workspace")["Subject"]
    smtp.wait_for("carol@example.org", "shared workspace")
    # grantees cannot share it on, rename or delete it
    assert shub.request("POST", shares, bob, json={"user": "uwscarol"}).status_code == 403
    assert shub.request("PATCH", f"workspaces/{wid}", bob, json={"name": "mine"}).status_code == 403
    assert shub.request("DELETE", f"workspaces/{wid}", bob).status_code == 403

    # the hub: both read it, its files and its job; only the editor writes
    for token in (bob, carol):
        assert shub.api("GET", f"workspaces/{wid}", token, expect=200)["owner"] == "uwsalice"
        assert wid in [w["id"] for w in shub.api("GET", "workspaces", token, expect=200)["items"]]
        assert job["id"] in [j["id"] for j in shub.api("GET", f"jobs?workspace={wid}", token, expect=200)["items"]]
        assert shub.request("GET", f"workspaces/{wid}/files/data.txt", token).content == b"data\n"
    assert shub.request("PUT", f"workspaces/{wid}/files/from-bob.txt", bob, data=b"bob was here").status_code == 201
    r = shub.request("PUT", f"workspaces/{wid}/files/from-carol.txt", carol, data=b"x")
    assert r.status_code == 403 and "custom:uws:write:workspaces" in r.json()["message"]
    assert shub.request("POST", f"jobs/{job['id']}/stop", carol).status_code == 403
    # a read-only token of the editor stays read-only here too
    bob_ro = shub.api("POST", "users/uwsbob/tokens", json={"scopes": ["custom:uws:read:workspaces!user"]}, expect=201)[
        "token"
    ]
    assert shub.request("GET", f"workspaces/{wid}", bob_ro).status_code == 200
    assert shub.request("PUT", f"workspaces/{wid}/files/ro.txt", bob_ro, data=b"x").status_code == 403

    # the running JupyterLab through the proxy, with their tokens: both read; it runs as
    # alice, who launched it, so the editor writes through the hub, not in it, and the
    # viewer (a member of the shared group) reads only. The server asked the hub
    # about these tokens above: it trusts that answer for server_auth_cache_seconds (1)
    took = refused_within(lambda: shub.request("GET", f"{server}/api/contents/data.txt", bob).status_code == 200, 5)
    assert took < 2.5, took
    r = shub.request(
        "PUT",
        f"{server}/api/contents/lab-bob.txt",
        bob,
        json={"type": "file", "format": "text", "content": "written in lab by bob"},
    )
    assert r.status_code == 403, r.text
    r = shub.request("PUT", f"workspaces/{wid}/files/lab-bob.txt", bob, data=b"written in lab by bob")
    assert r.status_code == 201, r.text
    r = shub.request("GET", f"{server}/api/contents/lab-bob.txt?content=1", carol)
    assert r.status_code == 200 and r.json()["content"] == "written in lab by bob"
    r = shub.request(
        "PUT", f"{server}/api/contents/lab-carol.txt", carol, json={"type": "file", "format": "text", "content": "nope"}
    )
    assert r.status_code == 403
    assert shub.request("POST", f"{server}/api/kernels", carol, json={}).status_code == 403
    assert not (directory / "lab-carol.txt").exists()

    # on disk: the workspace's POSIX group, group-writable, has no members: the hub gives
    # it to its jobs there (tests/integration/test_editor_launches.py), and the editor's
    # own login does not reach the workspace
    st = os.stat(directory)
    assert st.st_mode & 0o2070 == 0o2070
    assert grp.getgrgid(st.st_gid).gr_mem == []
    r = run_as("uwsbob", "sh", "-c", f"echo from bob > {directory}/disk-bob.txt")
    assert r.returncode != 0 and "Permission denied" in r.stderr
    r = run_as("uwsalice", "sh", "-c", f"echo and alice >> {directory}/from-bob.txt")
    assert r.returncode == 0, r.stderr
    assert (directory / "from-bob.txt").read_text() == "bob was hereand alice\n"
    assert pwd.getpwuid(os.stat(directory / "from-bob.txt").st_uid).pw_name == "uwsalice"
    r = run_as("uwscarol", "ls", str(directory))
    assert r.returncode != 0 and "Permission denied" in r.stderr

    # events of the shared workspace reach the grantees' streams (replayed from the database)
    kinds = {e["kind"] for e in sse_replay(shub, carol, f"workspace={wid}&last_event_id=0")}
    assert {"workspace", "job", "share"} <= kinds

    # revoke the group: the viewer is refused by the hub at once, by the open server within its cache
    shub.api("DELETE", f"{shares}/{viewer['id']}", alice, expect=200)
    assert shub.request("GET", f"workspaces/{wid}", carol).status_code == 404
    assert sse_replay(shub, carol, f"workspace={wid}&last_event_id=0", seconds=1) == []
    took = refused_within(
        lambda: shub.request("GET", f"{server}/api/contents/data.txt", carol).status_code in (403, 404), 5
    )
    assert took < 2.5, took
    smtp.wait_for("carol@example.org", "no longer shared")

    # revoke the editor: hub, server and disk refuse at once
    shub.api("DELETE", f"{shares}/{editor['id']}", alice, expect=200)
    assert shub.request("PUT", f"workspaces/{wid}/files/late.txt", bob, data=b"x").status_code == 404
    took = refused_within(
        lambda: shub.request("GET", f"{server}/api/contents/data.txt", bob).status_code in (403, 404), 5
    )
    assert took < 2.5, took
    r = run_as("uwsbob", "sh", "-c", f"echo late > {directory}/late.txt")
    assert r.returncode != 0 and "Permission denied" in r.stderr
    # the owner keeps everything
    assert shub.request("GET", f"{server}/api/contents/data.txt", alice).status_code == 200
    assert shub.api("GET", shares, alice, expect=200)["items"] == []


def test_editor_launches_the_owners_server(shub):
    alice, bob = shub.tokens["uwsalice"], shub.tokens["uwsbob"]
    ws = new_workspace(shub, alice)
    shub.api("POST", f"workspaces/{ws['id']}/shares", alice, json={"user": "uwsbob", "level": "editor"}, expect=201)
    # the editor's live stream (here the WebSocket) carries the owner's workspace
    live = websocket.create_connection(
        shub.url.replace("http", "ws") + "/hub/api/events/ws", header=[f"Authorization: token {bob}"], timeout=15
    )
    try:
        job = shub.api("POST", f"workspaces/{ws['id']}/jobs", bob, json={"job_type": "minimal"}, expect=202)
        assert job["owner"] == "uwsalice" and job["server_name"] == ws["slug"]
        job = shub.wait_job(job["id"], bob, {"running", "failed"})
        assert job["status"] == "running", job["reason"]
        statuses = []
        while "running" not in statuses:
            event = json.loads(live.recv())
            if event["kind"] == "job" and event["job_id"] == job["id"]:
                statuses.append(event["status"])
        assert statuses == ["pending", "queued", "running"]
    finally:
        live.close()
    assert job["url"].startswith(f"/user/uwsalice/{ws['slug']}/")
    events = sse_replay(shub, alice, f"job={job['id']}&last_event_id=0", seconds=1)
    assert [e["actor"] for e in events if e["kind"] == "job" and e["status"] == "pending"] == ["uwsbob"]
    shub.api("POST", f"jobs/{job['id']}/stop", bob, expect=202)
    assert shub.wait_job(job["id"], bob, {"completed", "failed"})["status"] == "completed"
    # deleting the workspace drops its JupyterHub roles with its shares
    role = f"uws-ws-{ws['id']}-editor"
    assert role in shub.api("GET", "users/uwsbob", expect=200)["roles"]
    shub.api("DELETE", f"workspaces/{ws['id']}", alice, expect=202)
    wait_for(lambda: role not in shub.api("GET", "users/uwsbob", expect=200)["roles"], 15, what="the role to go")


def test_a_new_workspace_and_job_never_get_a_deleted_ones_id(shub, group_prefix):
    """SQLite gave a new row the highest id plus one: after the newest workspace was deleted,
    the next one got its id, and its first job the id of the deleted one's newest job, so
    they inherited what was left outside their rows: the roles and the POSIX group the old
    workspace's editor held (dropped in the background, after the row), the job's log, run
    file and exit record, its results, events and URLs."""
    alice, bob = shub.tokens["uwsalice"], shub.tokens["uwsbob"]
    old = new_workspace(shub, alice)
    shub.api("POST", f"workspaces/{old['id']}/shares", alice, json={"user": "uwsbob", "level": "editor"}, expect=201)
    old_group = f"{group_prefix}{old['id']}"
    old_dir = shub.workspaces_root / "uwsalice" / old["slug"]
    wait_for(lambda: os.stat(old_dir).st_gid == grp.getgrnam(old_group).gr_gid, 10, what="the workspace's group")
    old_jobs = []
    for _ in range(2):
        job = shub.api("POST", f"workspaces/{old['id']}/jobs", alice, json={"job_type": "minimal"}, expect=202)
        assert shub.wait_job(job["id"], alice, {"running", "failed"})["status"] == "running"
        shub.api("POST", f"jobs/{job['id']}/stop", alice, expect=202)
        assert shub.wait_job(job["id"], alice, {"completed", "failed"})["status"] == "completed"
        old_jobs.append(job["id"])
    shub.api("DELETE", f"workspaces/{old['id']}", alice, expect=202)
    wait_for(lambda: shub.request("GET", f"workspaces/{old['id']}", alice).status_code == 404, 30, what="the deletion")

    ws = new_workspace(shub, alice)
    assert ws["id"] > old["id"]
    job = shub.api("POST", f"workspaces/{ws['id']}/jobs", alice, json={"job_type": "minimal"}, expect=202)
    assert job["id"] > max(old_jobs)
    assert shub.wait_job(job["id"], alice, {"running", "failed"})["status"] == "running"
    shub.api("POST", f"jobs/{job['id']}/stop", alice, expect=202)
    shub.wait_job(job["id"], alice, {"completed", "failed"})
    # the old workspace's editor got nothing of the new one: no role, no group, no access
    wait_for(
        lambda: not any(r.startswith(f"uws-ws-{old['id']}-") for r in shub.api("GET", "users/uwsbob")["roles"]),
        15,
        what="the old workspace's roles to go",
    )
    assert not [r for r in shub.api("GET", "users/uwsbob", expect=200)["roles"] if r.startswith(f"uws-ws-{ws['id']}-")]
    assert shub.request("GET", f"workspaces/{ws['id']}", bob).status_code == 404
    with pytest.raises(KeyError):
        grp.getgrnam(f"{group_prefix}{ws['id']}")
    # and the new job's history is its own: one launch
    events = sse_replay(shub, alice, f"job={job['id']}&last_event_id=0", seconds=1)
    assert [e["status"] for e in events if e["kind"] == "job"][:1] == ["pending"]
    assert [e["status"] for e in events if e["kind"] == "job"].count("pending") == 1


def test_a_viewer_gets_no_event_of_the_commit_that_ends_their_share(shub):
    """A stream decides whether its caller may see a workspace's events when it subscribes,
    and keeps the answer until the shares change (the share service's ``version``). The
    version was bumped after the commit that revoked a share, and that commit's own event
    (``revoked``, with who revoked it) was offered to the streams before: the one of the
    viewer just revoked still said yes. The re-share afterwards is what the viewer sees."""
    alice, bob = shub.tokens["uwsalice"], shub.tokens["uwsbob"]
    wid = new_workspace(shub, alice)["id"]
    shares = f"workspaces/{wid}/shares"
    share = shub.api("POST", shares, alice, json={"user": "uwsbob", "level": "viewer"}, expect=201)
    stream = SSEReader(shub, bob, f"?workspace={wid}")  # (subscribed: it answered)
    try:
        shub.api("DELETE", f"{shares}/{share['id']}", alice, expect=200)
        again = shub.api("POST", shares, alice, json={"user": "uwsbob", "level": "viewer"}, expect=201)
        # the stream's events come in order: one of the revoke would be before this one
        wait_for(lambda: stream.events, 15, what="the event of bob's new share")
        assert [(e["status"], e["data"]["share_id"]) for e in stream.events] == [("shared", again["id"])]
    finally:
        stream.close()


def test_share_requests_are_checked(shub):
    alice, bob = shub.tokens["uwsalice"], shub.tokens["uwsbob"]
    ws = new_workspace(shub, alice)
    shares = f"workspaces/{ws['id']}/shares"
    for body in (
        {},
        {"user": "uwsbob", "group": shub.group},
        {"user": "uwsbob", "level": "owner"},
        {"kind": "copy", "group": shub.group},
        {"kind": "copy", "user": "uwsbob", "level": "viewer"},
        {"user": "uwsbob", "name": "x"},
        {"user": "uwsbob", "extra": 1},
    ):
        assert shub.request("POST", shares, alice, json=body).status_code == 422, body
    assert shub.request("POST", shares, alice, json={"user": "nobody-here"}).status_code == 400
    assert shub.request("POST", shares, alice, json={"user": "uwsalice"}).status_code == 422
    assert shub.request("GET", shares, bob).status_code == 404
    first = shub.api("POST", shares, alice, json={"user": "uwsbob"}, expect=201)
    assert first["level"] == "viewer"
    again = shub.api("POST", shares, alice, json={"user": "uwsbob", "level": "editor"}, expect=200)
    assert (again["id"], again["level"]) == (first["id"], "editor")
    assert shub.request("DELETE", f"{shares}/99999", alice).status_code == 404
    assert shub.request("POST", f"shares/{first['id']}/accept", bob).status_code == 409
    # the recipient search: names and display names, no addresses, not the caller
    found = shub.api("GET", "share-recipients?q=bob", alice, expect=200)
    assert found["users"] == [{"name": "uwsbob", "display_name": "Bob Builder"}]
    assert shub.api("GET", "share-recipients?q=liddell", bob, expect=200)["users"][0]["name"] == "uwsalice"
    assert shub.api("GET", "share-recipients?q=example.org", alice, expect=200)["users"] == []
    assert shub.api("GET", "share-recipients?q=uwsalice", alice, expect=200)["users"] == []
    assert shub.group in [g["name"] for g in shub.api("GET", f"share-recipients?q={shub.group}", alice)["groups"]]
    assert shub.request("GET", "share-recipients", alice).status_code == 400


def test_a_workspaces_group_never_has_members_even_after_an_owners_rename(shub, group_prefix):
    """Editors' accounts were members of a workspace's group (``gpasswd -M``), which gave the
    group to every process of theirs outside the hub. The group has no members, and one a
    hub before this one filled is emptied at the next change. A user admin renaming the
    owner (JupyterHub's ``PATCH /users``) to ``daemon`` made the system account ``daemon``
    a member of the group (its files, group writable); it stays out, as everyone does."""
    name = f"uwso{uuid.uuid4().hex[:6]}"
    subprocess.run(["useradd", "--no-create-home", name], check=True)
    try:
        owner = shub.add_user(name)
        ws = new_workspace(shub, owner)
        shares = f"workspaces/{ws['id']}/shares"
        shub.api("POST", shares, owner, json={"user": "uwsbob", "level": "editor"}, expect=201)
        group = f"{group_prefix}{ws['id']}"
        directory = shub.workspaces_root / name / ws["slug"]
        wait_for(lambda: os.stat(directory).st_gid == grp.getgrnam(group).gr_gid, 10, what="the group")
        assert grp.getgrnam(group).gr_mem == []
        # what a hub before this one made of it
        # (no account of other tests: their jobs started meanwhile would hold the group)
        subprocess.run(["gpasswd", "-M", name, group], check=True, capture_output=True)
        shub.api("PATCH", f"users/{name}", json={"name": "daemon"}, expect=200)
        shub.api("POST", shares, owner, json={"user": "uwscarol", "level": "editor"}, expect=201)
        wait_for(lambda: grp.getgrnam(group).gr_mem == [], 10, what="the group's members to go")
        shub.api("DELETE", "users/daemon", expect=204)
    finally:
        subprocess.run(["userdel", name], check=False)


def tree(path: Path) -> dict[str, bytes | str]:
    out = {}
    for p in sorted(path.rglob("*")):
        rel = str(p.relative_to(path))
        out[rel] = ("link:" + os.readlink(p)) if p.is_symlink() else (p.read_bytes() if p.is_file() else "dir")
    return out


def test_copy_accept_and_decline(shub, smtp):
    alice, bob, carol = (shub.tokens[n] for n in ("uwsalice", "uwsbob", "uwscarol"))
    ws = new_workspace(
        shub,
        alice,
        files=[
            {"path": "data.txt", "content": "data\n"},
            {"path": "sub/deeper/table.csv", "content": "a,b\n1,2\n"},
            {"path": "blob.bin", "content": "AAECAwQ=", "encoding": "base64"},
        ],
    )
    src = shub.workspaces_root / "uwsalice" / ws["slug"]
    (src / "sub" / "link-inside").symlink_to("deeper/table.csv")
    (src / "link-outside").symlink_to("/etc/passwd")
    (src / "link-up").symlink_to("../../uwsbob")

    invite = shub.api(
        "POST",
        f"workspaces/{ws['id']}/shares",
        alice,
        json={"kind": "copy", "user": "uwsbob", "name": "My copy"},
        expect=201,
    )
    assert (invite["status"], invite["copy"]["state"]) == ("pending", None)
    assert (
        shub.request(
            "POST", f"workspaces/{ws['id']}/shares", alice, json={"kind": "copy", "user": "uwsbob"}
        ).status_code
        == 409
    )
    mail = smtp.wait_for("bob@example.org", "sent you a copy")
    assert "Accept it" in mail.get_content() and "/hub/shared" in mail.get_content()
    pending = shub.api("GET", "shares?status=pending", bob, expect=200)["items"]
    assert [s["id"] for s in pending] == [invite["id"]]
    # only the recipient accepts
    assert shub.request("POST", f"shares/{invite['id']}/accept", carol).status_code == 404
    accepted = shub.api("POST", f"shares/{invite['id']}/accept", bob, expect=202)
    assert accepted["status"] == "accepted" and accepted["copy"]["state"] in ("queued", "copying", "placing", "done")

    def done():
        share = next(s for s in shub.api("GET", "shares?status=accepted", bob)["items"] if s["id"] == invite["id"])
        return share if share["copy"]["state"] in ("done", "failed") else None

    share = wait_for(done, 30, what="the copy")
    assert share["copy"]["state"] == "done", share["copy"]["error"]
    copy = shub.api("GET", f"workspaces/{share['copy']['workspace_id']}", bob, expect=200)
    assert (copy["owner"], copy["name"], copy["status"]) == ("uwsbob", "My copy", "idle")
    dst = shub.workspaces_root / "uwsbob" / copy["slug"]
    expected = {k: v for k, v in tree(src).items() if k not in ("link-outside", "link-up")}
    assert tree(dst) == expected
    assert copy["disk_usage_bytes"] == 5 + 8 + 5
    owners = {pwd.getpwuid(os.lstat(p).st_uid).pw_name for p in [dst, *dst.rglob("*")]}
    assert owners == {"uwsbob"}
    assert not [p for p in (shub.workspaces_root / "uwsbob").iterdir() if p.name.startswith(".uws-copy-")]
    # independent: changing one leaves the other alone
    shub.request("PUT", f"workspaces/{ws['id']}/files/data.txt", alice, data=b"changed")
    assert shub.request("GET", f"workspaces/{copy['id']}/files/data.txt", bob).content == b"data\n"
    assert shub.request("GET", f"workspaces/{ws['id']}", bob).status_code == 404
    smtp.wait_for("bob@example.org", "is ready")
    smtp.wait_for("alice@example.org", "accepted the copy")

    # decline
    invite = shub.api(
        "POST", f"workspaces/{ws['id']}/shares", alice, json={"kind": "copy", "user": "uwscarol"}, expect=201
    )
    declined = shub.api("POST", f"shares/{invite['id']}/decline", carol, expect=200)
    assert declined["status"] == "declined"
    assert shub.request("POST", f"shares/{invite['id']}/accept", carol).status_code == 409
    smtp.wait_for("alice@example.org", "declined the copy")
    assert [s["id"] for s in shub.api("GET", "shares?status=declined", carol)["items"]] == [invite["id"]]
    assert shub.request("GET", "shares?status=bogus", carol).status_code == 400


def test_interrupted_copy_is_finished_after_a_restart(make_hub, tmp_path):
    hub = make_hub("c.UWSHub.copy_retry_seconds = 0.5\nc.Authenticator.admin_users = set()\n")
    alice, bob = hub.add_user("copyalice"), hub.add_user("copybob")
    ws = hub.api("POST", "workspaces", alice, json={"name": "many files"}, expect=201)
    src = hub.workspaces_root / "copyalice" / ws["slug"]
    count = 10_000
    for i in range(count // 100):
        d = src / f"d{i:03d}"
        d.mkdir()
        for j in range(100):
            (d / f"f{j:03d}.txt").write_bytes(b"x" * (i + j))
    invite = hub.api(
        "POST", f"workspaces/{ws['id']}/shares", alice, json={"kind": "copy", "user": "copybob"}, expect=201
    )
    hub.api("POST", f"shares/{invite['id']}/accept", bob, expect=202)
    parent = hub.workspaces_root / "copybob"

    def copying():
        temp = [p for p in parent.iterdir() if p.name.startswith(".uws-copy-")] if parent.exists() else []
        return temp and next(temp[0].glob("d*/*.txt"), None) and temp[0]

    temp = wait_for(copying, 30, interval=0.02, what="the copy to start")
    os.killpg(hub.proc.pid, signal.SIGKILL)  # the hub and its proxy, mid-copy
    hub.proc.wait()
    partial = sum(1 for _ in temp.rglob("*.txt"))
    assert 0 < partial < count, partial
    assert [p.name for p in parent.iterdir()] == [temp.name]  # no workspace directory

    hub.start()
    share = wait_for(
        lambda: next(
            (
                s
                for s in hub.api("GET", "shares?status=accepted", bob)["items"]
                if s["copy"]["state"] in ("done", "failed")
            ),
            None,
        ),
        60,
        what="the copy after the restart",
    )
    assert share["copy"]["state"] == "done", share["copy"]["error"]
    assert share["copy"]["attempts"] == 2
    [copy] = hub.api("GET", "workspaces", bob, expect=200)["items"]
    dst = parent / copy["slug"]
    assert sum(1 for _ in dst.rglob("*.txt")) == count
    assert not temp.exists()
    assert copy["disk_usage_bytes"] == sum(i + j for i in range(count // 100) for j in range(100))


# ---------------------------------------------------------------- in the browser
def login(hub, browser, name: str, password: str = PASSWORD):
    return browserutil.login(hub, browser, name, password)


@pytest.mark.expect_log_errors("User <User\\(uwscarol [^>]*> not allowed to access Server at /user/uwsalice/")
@pytest.mark.browser
def test_group_member_opens_the_shared_server_in_the_browser(shub, lab, browser):
    """A member of a group the workspace is shared with: JupyterLab through
    JupyterHub's OAuth, read-only; revoked, the next load is refused."""
    from playwright.sync_api import expect

    ws, _ = lab
    alice = shub.tokens["uwsalice"]
    share = shub.api(
        "POST", f"workspaces/{ws['id']}/shares", alice, json={"group": shub.group, "level": "viewer"}, expect=201
    )
    context, page = login(shub, browser, "uwscarol")
    try:
        page.goto(f"{shub.url}/hub/shared")
        expect(page.locator("#collaborations")).to_contain_text(ws["name"])
        expect(page.locator("#collaborations")).to_contain_text(f"group {shub.group}")
        page.goto(f"{shub.url}/user/uwsalice/{ws['slug']}/lab")
        # JupyterHub asks carol to authorize alice's server to know who she is
        browserutil.authorize(page)
        page.wait_for_url(re.compile(rf".*/user/uwsalice/{ws['slug']}/lab.*"))
        expect(page.locator(".jp-DirListing-content")).to_contain_text("data.txt", timeout=60_000)
        # read-only: the server refuses to save, or to change alice's settings, in her name
        server = f"/user/uwsalice/{ws['slug']}/"
        assert (
            browserutil.put_from_page(
                page,
                server + "api/contents/carol-was-here.txt",
                {"type": "file", "format": "text", "content": "from carol"},
            )
            == 403
        )
        assert (
            browserutil.put_from_page(
                page,
                server + "lab/api/settings/@jupyterlab/apputils-extension:themes",
                {"raw": '{"theme": "JupyterLab Dark"}'},
            )
            == 403
        )
        # revoked: the next load is refused (after the server's 1 s cache)
        shub.api("DELETE", f"workspaces/{ws['id']}/shares/{share['id']}", alice, expect=200)
        time.sleep(1.2)
        response = page.goto(f"{shub.url}/user/uwsalice/{ws['slug']}/api/contents/data.txt")
        assert response.status in (403, 404), response.status
        assert "data\n" not in page.content()
        page.goto(f"{shub.url}/user/uwsalice/{ws['slug']}/lab")
        expect(page.locator("body")).not_to_contain_text("data.txt")
        expect(page.locator("body")).to_contain_text("403")
    finally:
        context.close()


@pytest.mark.browser
def test_share_dialog_invitation_and_quota_pages(shub, browser):
    from playwright.sync_api import expect

    alice = shub.tokens["uwsalice"]
    ws = new_workspace(shub, alice)
    context, page = login(shub, browser, "uwsalice")
    try:
        # My workspaces: the quota bars
        expect(page.locator("#quota-disk .quota-text")).to_contain_text("(no limit)")
        expect(page.locator("#quota-jobs .quota-text")).to_have_text(re.compile(r"^\d+ \(no limit\)$"))
        # the label says core-hours: the text does not again
        expect(page.locator("#quota-core .quota-text")).to_have_text(re.compile(r"^[0-9.]+ \(no limit\)$"))
        # the share dialog: find bob, share as editor; then send carol a copy
        page.goto(f"{shub.url}/hub/workspaces/{ws['id']}")
        page.click("#share-open")
        expect(page.locator("#share-none")).to_be_visible()
        page.fill("#share-search", "Builder")
        page.click(".share-result:has-text('Bob Builder')")
        page.select_option("#share-level", "editor")
        page.click("#share-submit")
        expect(page.locator("#share-list tbody")).to_contain_text("uwsbob")
        expect(page.locator("#share-list tbody tr").first.locator(".share-level-select")).to_have_value("editor")
        page.fill("#share-search", "carol")
        page.click(".share-result:has-text('uwscarol')")
        page.select_option("#share-kind", "copy")
        page.fill("#share-copy-name", "Carol's copy")
        page.click("#share-submit")
        expect(page.locator("#share-list tbody")).to_contain_text("pending")
        shares = shub.api("GET", f"workspaces/{ws['id']}/shares", alice, expect=200)["items"]
        assert {(s["user"], s["kind"], s["level"]) for s in shares} == {
            ("uwsbob", "collaborate", "editor"),
            ("uwscarol", "copy", None),
        }
    finally:
        context.close()

    # carol accepts on "Shared with me"; the page follows the copy live
    context, page = login(shub, browser, "uwscarol")
    try:
        page.goto(f"{shub.url}/hub/shared")
        expect(page.locator("#invitations")).to_contain_text(ws["name"])
        page.click(".accept-share")
        expect(page.locator("#copies")).to_contain_text("Carol's copy", timeout=30_000)
        expect(page.locator("#notifications")).to_contain_text("is ready", timeout=30_000)
        page.click("#copies a")
        expect(page.locator("h1")).to_have_text("Carol's copy")
        expect(page.locator("#files")).to_contain_text("data.txt")
    finally:
        context.close()

    # bob sees it shared with him, as editor (no delete button, no share button)
    context, page = login(shub, browser, "uwsbob")
    try:
        page.goto(f"{shub.url}/hub/workspaces/{ws['id']}")
        expect(page.locator("#my-level")).to_have_text("editor")
        expect(page.locator("#upload-form")).to_be_visible()
        assert page.locator("#delete-workspace").count() == 0 and page.locator("#share-open").count() == 0
    finally:
        context.close()

    # the admin's usage page: sortable, and overrides
    context, page = login(shub, browser, "uwsadmin", ADMIN_PASSWORD)
    try:
        page.click("#thenavbar >> text=Quotas")
        page.wait_for_url(re.compile(r".*/hub/admin/quotas$"))
        expect(page.locator("#usage tbody")).to_contain_text("uwscarol")
        page.click("a.usage-sort[data-sort=disk_bytes]")
        page.click("a.usage-sort[data-sort=disk_bytes]")  # again: largest first
        wait_for(lambda: page.locator("#usage tbody tr").count() >= 4, 10, what="the usage rows")

        def disk_order():
            users = page.locator("#usage tbody .usage-user").all_inner_texts()
            usage = {u["user"]: u["disk_bytes"] for u in shub.api("GET", "usage?limit=200")["items"]}
            return [usage[u] for u in users] == sorted((usage[u] for u in users), reverse=True)

        wait_for(disk_order, 10, what="the rows sorted by disk, largest first")
        # no limits (this hub sets none) in words, as the form below says them
        carol = page.locator("#usage tr[data-user=uwscarol]")
        expect(carol.locator(".usage-jobs")).to_have_text(re.compile(r"^\d+ / no limit$"))
        expect(carol.locator(".usage-per-job")).to_have_text("no limits")
        # each field's default in words, in a line of its own under it (a placeholder
        # in the narrow field was cut off)
        defaults = shub.api("GET", "quotas/uwsbob", expect=200)["defaults"]
        disk = defaults["disk_bytes"]
        expect(page.locator("#override-disk_bytes-default")).to_have_text(
            "Default: no limit" if disk is None else re.compile(r"^Default: [0-9.]+ (bytes|[KMGTP]iB)$")
        )
        expect(page.get_by_label("Jobs at once")).to_have_accessible_description(
            f"Default: {defaults['concurrent_jobs'] if defaults['concurrent_jobs'] is not None else 'no limit'}"
        )
        for field in page.locator(".override-field").all():
            assert field.evaluate("f => f.scrollWidth <= f.clientWidth && !f.placeholder"), field
        page.fill("#override-name", "uwsbob")
        page.fill("#override-disk_bytes", "2G")
        page.fill("#override-concurrent_jobs", "3")
        page.click("#override-save")
        expect(page.locator("#notice")).to_have_text("Saved.")
        override = shub.api("GET", "quotas/uwsbob", expect=200)["override"]
        assert (override["disk_bytes"], override["concurrent_jobs"], override["max_cpus"]) == (2 * 1024**3, 3, None)
        expect(page.locator("#usage tr[data-user=uwsbob] .usage-override")).to_have_text("yes")
        page.click("#override-clear")
        expect(page.locator("#usage tr[data-user=uwsbob] .usage-override")).to_have_text("")
        assert shub.api("GET", "quotas/uwsbob", expect=200)["override"] is None
    finally:
        context.close()
