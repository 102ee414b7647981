"""The REST API's contract: validation (4xx, never 5xx), pagination, scopes,
and JupyterHub's own API next to it, unchanged."""

from __future__ import annotations

import os
import select
import signal
import socket
import time
import uuid

import pytest


def test_job_types(hub, alice):
    types = {t["name"]: t for t in hub.api("GET", "job-types", alice, expect=200)}
    assert types["jupyterlab"]["display_name"] == "JupyterLab"
    assert types["jupyterlab"]["default_resource"] == "local"
    assert "cmd" not in types["jupyterlab"]  # commands are the admin's business


@pytest.mark.parametrize(
    "body, status, words",
    [
        ("not json", 400, "Invalid JSON"),
        ([1, 2], 400, "JSON object"),
        ({}, 422, "name"),
        ({"name": ""}, 422, "name"),
        ({"name": "   "}, 422, "blank"),
        ({"name": "x", "color": "red"}, 422, "color"),
        ({"name": "x", "files": [{"path": "../up", "content": "x"}]}, 422, "inside the workspace"),
        ({"name": "x", "files": [{"path": "/abs", "content": "x"}]}, 422, "relative"),
        ({"name": "x", "files": [{"path": "a", "content": "%%%", "encoding": "base64"}]}, 422, "base64"),
        ({"name": "x", "files": [{"path": "a", "content": "x", "encoding": "rot13"}]}, 422, "encoding"),
        ({"name": 5}, 422, "name"),
    ],
)
def test_create_workspace_validation(hub, alice, body, status, words):
    kw = {"data": body} if isinstance(body, str) else {"json": body}
    r = hub.request("POST", "workspaces", alice, **kw)
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    assert words in r.json()["message"]
    # nothing was left behind by a refused create
    names = [w["name"] for w in hub.api("GET", "workspaces", alice)["items"]]
    assert "x" not in names


def test_duplicate_name_is_a_conflict(hub, alice):
    name = f"dup {uuid.uuid4().hex[:6]}"
    hub.api("POST", "workspaces", alice, json={"name": name}, expect=201)
    r = hub.request("POST", "workspaces", alice, json={"name": name.upper()})
    assert r.status_code == 409 and "already have a workspace" in r.json()["message"]


def test_the_same_name_for_two_users_is_fine(hub, alice, bob):
    name = f"shared name {uuid.uuid4().hex[:6]}"
    a = hub.api("POST", "workspaces", alice, json={"name": name}, expect=201)
    b = hub.api("POST", "workspaces", bob, json={"name": name}, expect=201)
    assert a["slug"] == b["slug"] and a["id"] != b["id"]


@pytest.mark.parametrize("wid", ["abc", "0", "-1", "99999999", "1.5", "9" * 40])
def test_bad_ids_are_not_found(hub, alice, wid):
    for path in (f"workspaces/{wid}", f"workspaces/{wid}/files", f"jobs/{wid}"):
        r = hub.request("GET", path, alice)
        assert r.status_code == 404, (path, r.text)


@pytest.mark.parametrize(
    "body, status, words",
    [
        ({}, 422, "job_type"),
        ({"job_type": "nope"}, 422, "Unknown job type"),
        ({"job_type": "jupyterlab", "resource": "mars"}, 422, "cannot run on"),
        ({"job_type": "jupyterlab", "resources": {"cpus": 0}}, 422, "cpus"),
        ({"job_type": "jupyterlab", "resources": {"memory": "lots"}}, 422, "memory"),
        ({"job_type": "jupyterlab", "extra": 1}, 422, "extra"),
    ],
)
def test_launch_validation(hub, alice, workspace, body, status, words):
    r = hub.request("POST", f"workspaces/{workspace['id']}/jobs", alice, json=body)
    assert r.status_code == status, r.text
    assert words in r.json()["message"]
    assert hub.api("GET", f"jobs?workspace={workspace['id']}", alice)["items"] == []


def test_list_filters_are_validated(hub, alice):
    assert hub.request("GET", "jobs?status=bogus", alice).status_code == 400
    assert hub.request("GET", "workspaces?status=bogus", alice).status_code == 400
    assert hub.request("GET", "jobs?workspace=abc", alice).status_code == 404
    assert hub.request("GET", "workspaces?limit=abc", alice).status_code == 400


def test_pagination(hub):
    token = hub.add_user("uwscarol")
    for i in range(5):
        hub.api("POST", "workspaces", token, json={"name": f"page {i}"}, expect=201)
    page = hub.api("GET", "workspaces?limit=2", token, expect=200)
    assert len(page["items"]) == 2 and page["_pagination"]["total"] == 5
    seen = [w["name"] for w in page["items"]]
    while page["_pagination"]["next"]:
        page = hub.api("GET", page["_pagination"]["next"]["url"], token, expect=200)
        seen += [w["name"] for w in page["items"]]
    assert seen == [f"page {i}" for i in range(5)]


def test_patch_validation(hub, alice, workspace):
    wid = workspace["id"]
    assert hub.request("PATCH", f"workspaces/{wid}", alice, json={"name": ""}).status_code == 422
    assert hub.request("PATCH", f"workspaces/{wid}", alice, json={"slug": "other"}).status_code == 422
    assert hub.api("GET", f"workspaces/{wid}", alice)["name"] == workspace["name"]


def test_read_only_token_cannot_change_anything(hub, alice, workspace):
    token = hub.api("POST", "users/uwsalice/tokens", json={"scopes": ["custom:uws:read:workspaces!user"]}, expect=201)[
        "token"
    ]
    wid = workspace["id"]
    assert hub.api("GET", f"workspaces/{wid}", token, expect=200)["id"] == wid
    assert hub.request("GET", f"workspaces/{wid}/files/README.md", token).status_code == 200
    for method, path, body in [
        ("POST", f"workspaces/{wid}/jobs", {"job_type": "jupyterlab"}),
        ("DELETE", f"workspaces/{wid}", None),
        ("PATCH", f"workspaces/{wid}", {"name": "renamed"}),
        ("POST", "workspaces", {"name": "new one"}),
    ]:
        r = hub.request(method, path, token, json=body)
        assert r.status_code == 403, (method, path, r.text)
        assert "custom:uws:" in r.json()["message"]
    r = hub.request("PUT", f"workspaces/{wid}/files/new.txt", token, data=b"x")
    assert r.status_code == 403
    assert hub.api("GET", f"workspaces/{wid}", alice)["status"] == "idle"


def test_unauthenticated_requests_are_refused(hub, workspace):
    for path in ("workspaces", f"workspaces/{workspace['id']}", "jobs", "job-types"):
        assert hub.request("GET", path).status_code == 403


def test_jupyterhub_api_is_unchanged(hub):
    """Admins and tools (idle-culler, scripts) keep using JupyterHub's own API;
    a user made there works in the workspaces API with a token made there."""
    name = f"uwsapi{uuid.uuid4().hex[:6]}"
    user = hub.api("POST", f"users/{name}", expect=201)
    assert user["name"] == name
    hub.api("POST", "groups/uws-testers", json={"users": [name]}, expect=201)
    assert name in hub.api("GET", "groups/uws-testers", expect=200)["users"]
    users = hub.api("GET", "users?state=inactive", expect=200)
    assert name in [u["name"] for u in users]
    token = hub.api("POST", f"users/{name}/tokens", json={"note": "script"}, expect=201)["token"]
    me = hub.api("GET", "user", token, expect=200)
    assert me["name"] == name and "custom:uws:write:workspaces!user=" + name in me["scopes"]
    hub.api("GET", "job-types", token, expect=200)
    # no system account: the hub says so instead of failing later
    r = hub.request("POST", "workspaces", token, json={"name": "scripted"})
    assert r.status_code == 409 and "system account" in r.json()["message"]
    hub.api("DELETE", f"users/{name}", expect=204)
    assert hub.request("GET", "user", token).status_code == 403


@pytest.mark.parametrize("name", ["root", "daemon", "nobody"])
def test_a_user_named_after_a_system_account_gets_nothing_of_it(hub, name):
    """A user admin (or an identity provider whose users choose their names) can make a
    hub user named ``root``: with ``system_users`` its workspaces would be that account's
    files and its jobs that account's processes. Accounts below ``system_users_min_uid``
    and ``nobody`` are never a user's: a 409 that says why, and no directory made."""
    hub.api("POST", f"users/{name}", expect=201)
    token = hub.api("POST", f"users/{name}/tokens", json={"note": "script"}, expect=201)["token"]
    r = hub.request("POST", "workspaces", token, json={"name": "mine"})
    assert r.status_code == 409, r.text
    assert f"User {name!r} has the name of a system account" in r.json()["message"]
    assert not (hub.workspaces_root / name).exists()
    assert hub.api("GET", "workspaces", token)["items"] == []
    hub.api("DELETE", f"users/{name}", expect=204)


@pytest.mark.expect_log_errors(
    "Error starting uwsalice's server: HTTP 400: Bad Request \\(This server runs workspace jobs only"
)
def test_jupyterhub_server_api_cannot_bypass_workspaces(hub, alice):
    """Starting a server through JupyterHub's own API does not dodge workspaces."""
    r = hub.request("POST", "users/uwsalice/servers/sneaky", alice)
    assert 400 <= r.status_code < 500, r.text
    assert "workspace" in r.json()["message"]
    server = hub.api("GET", "users/uwsalice", alice)["servers"].get("sneaky")
    assert not server or not server["ready"]


@pytest.mark.parametrize(
    "method, path, status, message",
    [
        ("GET", "nonsense", 404, "No such API endpoint: GET /hub/api/nonsense"),
        ("POST", "workspaces/1/nonsense", 404, "No such API endpoint: POST /hub/api/workspaces/1/nonsense"),
        ("DELETE", "job-types", 405, "Method Not Allowed"),
    ],
)
def test_every_api_error_has_a_message(hub, alice, method, path, status, message):
    """Unknown routes and methods answer a JSON error with a message, as every error does."""
    r = hub.request(method, path, alice)
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json() == {"status": status, "message": message}


def test_an_upload_needs_a_file_path(hub, alice, workspace):
    r = hub.request("PUT", f"workspaces/{workspace['id']}/files/", alice, data=b"hello")
    assert (r.status_code, r.json()["message"]) == (400, "A file path is required")
    r = hub.request("GET", f"workspaces/{workspace['id']}/files/", alice)
    assert r.status_code == 400, r.text
    # nothing was stored, and the workspace's files are as they were
    assert [e["name"] for e in hub.api("GET", f"workspaces/{workspace['id']}/files", alice)["items"]] == ["README.md"]


def test_a_burst_of_connections_waits_for_the_hub_instead_of_being_dropped(make_hub):
    """300 connections that reach the hub at once, while it cannot accept them (paused
    here; busy in a real burst), are all held by its socket until it gets to them.
    With JupyterHub's backlog of 128 the kernel dropped the rest, and each of those
    waited for a TCP retransmission (1, 3, 7, 15 s) with the hub idle."""
    hub = make_hub("")
    token = hub.add_user("burst")
    socks = []
    os.kill(hub.proc.pid, signal.SIGSTOP)
    try:
        for _ in range(300):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", hub.hub_port))
            socks.append(sock)
        # an established connection is writable; one whose SYN was dropped is not (until
        # its retransmission, a second later at the earliest)
        pending = list(socks)
        deadline = time.monotonic() + 0.5
        while pending and time.monotonic() < deadline:
            _, writable, _ = select.select([], pending, [], 0.1)
            pending = [s for s in pending if s not in writable]
        assert not pending, f"{len(pending)} of 300 connections were not taken while the hub was busy"
    finally:
        os.kill(hub.proc.pid, signal.SIGCONT)
        for sock in socks:
            sock.close()
    # and the hub answers as before
    assert hub.api("GET", "/hub/api/user", token, expect=200)["name"] == "burst"
