"""The HuBMAP-compatible API on a real hub, driven as HuBMAP's portal drives it
(tests/hubmaputil.py): token exchange, a notebook workspace with a file and a
dataset symlink, JupyterLab started with resource options, polled every
second until running and opened through the proxy, a renewed session, a stop,
a share that a colleague accepts, the user search, a delete; strangers get
HuBMAP's answers and never another user's data."""

from __future__ import annotations

import json
import os
import threading
import uuid

import pytest
import requests
import websocket
from sqlalchemy import create_engine, inspect, text

from uws_hub import dbutil

from ..helpers import MINIMAL_CMD, make_old_database
from ..hubmaputil import GROUPS_TOKEN, ORIGIN, EntityAPI, Portal, exchange_token, validate
from ..hubutil import wait_for

DATASET = "0b2b5e4e6f8a4c3e9d1a2b3c4d5e6f70"
NOTEBOOK = json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
#: the portal's defaults (constants.ts), all within the job type's limits
OPTIONS = {"num_cpus": 1, "memory_mb": 1024, "time_limit_minutes": 180, "gpu_enabled": False}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    (root / DATASET).mkdir()
    (root / DATASET / "data.csv").write_text("a,b\n1,2\n")
    for path in (root, *root.parents):
        os.chmod(path, os.stat(path).st_mode | 0o005)
    api = EntityAPI(root)
    yield api
    api.stop()


@pytest.fixture(scope="module")
def hubmap_hub(make_hub, system_users, datasets, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    # where a test lets a stubborn job end (tests/minimal_server.py), read by the jobs' accounts
    hold = tmp_path_factory.mktemp("hold")
    for path in (hold, *hold.parents):
        os.chmod(path, os.stat(path).st_mode | 0o005)
    config = f"""
c.UWSHub.system_users = True
c.UWSHub.job_reconcile_interval = 2
c.UWSHub.copy_retry_seconds = 1
c.UWSHub.quota_max_cpus = 4
c.UWSHub.job_types = {{
    "jupyterlab": {{"display_name": "JupyterLab", "default_url": "/lab",
                   "limits": {{"cpus": 2, "memory": "8G", "time_limit": "8:00:00"}},
                   "default_resources": {{"cpus": 1, "memory": "1G"}}}},
    "minimal": {{"display_name": "Minimal test server", "cmd": {MINIMAL_CMD!r}}},
    "stubborn": {{"display_name": "Ignores SIGTERM", "cmd": {MINIMAL_CMD!r}, "env": {{"UWS_TEST_HOLD_DIR": {str(hold)!r}}}}},
}}
# long enough that a stubborn job ends when its test lets it, not at the spawner's SIGKILL
c.WorkspaceLocalProcessSpawner.term_timeout = 120
c.WorkspaceLocalProcessSpawner.kill_grace_seconds = 120
c.HubMAPCompat.enabled = True
c.HubMAPCompat.job_type_ids = {{"jupyter_lab": "jupyterlab"}}
c.HubMAPCompat.cors_origins = [{ORIGIN!r}]
c.HubMAPCompat.dataset_roots = [{str(datasets.root)!r}]
c.HubMAPCompat.dataset_lookup = {datasets.url + "/datasets/{uuid}/file-system-abs-path"!r}
c.HubMAPCompat.stop_wait_seconds = 60
"""
    hub = make_hub(config)
    hub.outside = outside
    hub.hold = hold
    return hub


def user_token(hub, name: str, email: str, first: str = "", last: str = "") -> str:
    """A token for ``name`` from POST tokens, with the tests' admin service as the trusted client."""
    r = exchange_token(
        hub,
        {
            "client_token": hub.admin_token,
            "user_info": {"username": name, "email": email, "first_name": first, "last_name": last},
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True and body["message"] == "Successful authentication."
    assert "data" not in body
    return body["token"]


@pytest.fixture(scope="module")
def alice(hubmap_hub):
    return Portal(hubmap_hub, user_token(hubmap_hub, "uwsalice", "alice@uni.example", "Alice", "Liddell"))


@pytest.fixture(scope="module")
def bob(hubmap_hub):
    return Portal(hubmap_hub, user_token(hubmap_hub, "uwsbob", "bob@uni.example", "Bob", "Builder"))


@pytest.fixture(scope="module")
def carol(hubmap_hub):
    return Portal(hubmap_hub, user_token(hubmap_hub, "uwscarol", "carol@uni.example", "Carol", "Stranger"))


def new_workspace(portal: Portal, **extra) -> dict:
    body = {
        "name": f"hubmap {uuid.uuid4().hex[:8]}",
        "description": "from the portal",
        "default_job_type": "jupyter_lab",
        "workspace_details": {"globus_groups_token": GROUPS_TOKEN, "files": [], "symlinks": []},
    }
    body.update(extra)
    return portal.create(body)


# ---------------------------------------------------------------- authentication
def test_credentials_as_hubmaps_server_checks_them(hubmap_hub, alice):
    url = hubmap_hub.url + "/hub/api/hubmap/workspaces"
    r = requests.get(url, timeout=30)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Token"
    assert r.json() == {"success": False, "message": "Authentication credentials were not provided."}
    # HuBMAP's docs show the header without its word: the server refuses that
    r = requests.get(url, headers={"UWS-Authorization": alice.token}, timeout=30)
    assert r.json() == {"success": False, "message": "Invalid auth header format."} and r.status_code == 401
    r = requests.get(url, headers={"UWS-Authorization": "Token nonsense"}, timeout=30)
    assert r.json() == {"success": False, "message": "Invalid token provided."} and r.status_code == 401
    # the word is not checked; JupyterHub's own header works too
    for headers in ({"UWS-Authorization": f"Bearer {alice.token}"}, {"Authorization": f"token {alice.token}"}):
        assert requests.get(url, headers=headers, timeout=30).status_code == 200
    # job types, parameters and status need no credentials, but a bad token is still refused
    for path in ("job_types", "parameters", "status"):
        assert requests.get(f"{hubmap_hub.url}/hub/api/hubmap/{path}", timeout=30).json()["success"] is True
        r = requests.get(
            f"{hubmap_hub.url}/hub/api/hubmap/{path}/", headers={"UWS-Authorization": "Token x"}, timeout=30
        )
        assert r.status_code == 401


def test_token_exchange_refusals(hubmap_hub, alice):
    post = lambda body: exchange_token(hubmap_hub, body)  # noqa: E731
    r = post({"user_info": {}})
    assert r.status_code == 400
    assert r.json()["message"] == "Missing client_token. Please have admin generate a token for you."
    r = post({"client_token": hubmap_hub.admin_token})
    assert r.json()["message"] == "Missing user_info. Please provide user_info to get user_token."
    refused = {"success": False, "message": "Incorrect authentication credentials."}
    # a user's token is no client token: it cannot issue tokens for others
    r = post({"client_token": alice.token, "user_info": {"username": "uwsbob", "email": "bob@uni.example"}})
    assert (r.status_code, r.json()) == (401, refused)
    # the same user name with another e-mail address
    r = post(
        {"client_token": hubmap_hub.admin_token, "user_info": {"username": "uwsalice", "email": "mallory@evil.example"}}
    )
    assert (r.status_code, r.json()) == (401, refused)
    r = post({"client_token": "not-a-token", "user_info": {"username": "x", "email": "x@y"}})
    assert (r.status_code, r.json()) == (401, refused)
    # no token holds a NUL (PostgreSQL cannot compare with one: a 500 there before)
    r = post({"client_token": "ab\u0000cd", "user_info": {"username": "x", "email": "x@y"}})
    assert (r.status_code, r.json()) == (401, refused)
    r = requests.post(hubmap_hub.url + "/hub/api/hubmap/tokens/", data=b"{not json", timeout=30)
    assert r.status_code == 400 and r.json()["success"] is False
    # JSON nested deeper than Python's parser recurses (anyone may send it: a 500 before)
    for deep in (b"[" * 100_000, b'{"a":' * 100_000):
        r = requests.post(hubmap_hub.url + "/hub/api/hubmap/tokens/", data=deep, timeout=30)
        assert r.status_code == 400 and "recursion" in r.json()["message"], r.text[:300]


def test_exchanged_tokens_are_scoped_and_expire(hubmap_hub, alice):
    me = requests.get(
        hubmap_hub.url + "/hub/api/user", headers={"Authorization": f"token {alice.token}"}, timeout=30
    ).json()
    assert me["name"] == "uwsalice"
    # not the user's full rights: no access to JupyterHub's admin or their tokens
    assert "tokens!user=uwsalice" not in me["scopes"] and "access:servers!user=uwsalice" in me["scopes"]
    r = requests.get(
        hubmap_hub.url + "/hub/api/users/uwsalice/tokens", headers={"Authorization": f"token {alice.token}"}, timeout=30
    )
    assert r.status_code in (403, 404)
    tokens = hubmap_hub.api("GET", "users/uwsalice/tokens", expect=200)["api_tokens"]
    hubmap = [t for t in tokens if t["note"] == "HuBMAP API token (POST tokens)"]
    assert hubmap and all(t["expires_at"] for t in hubmap)
    # a new user got their e-mail address and name
    user = hubmap_hub.api("GET", "users/uwsalice", expect=200)
    assert user["user_info"]["email"] == "alice@uni.example"
    assert user["user_info"]["display_name"] == "Alice Liddell"


# ---------------------------------------------------------------- the portal's flow
def test_portal_flow(hubmap_hub, alice, bob, datasets):
    """Create, start with resource options, open, renew, stop, share, accept, search, delete."""
    job_types = alice.job_types()
    assert job_types["jupyter_lab"] == {"id": "jupyter_lab", "name": "JupyterLab"}

    ws = alice.create(
        {
            "name": "Notebook workspace",
            "description": "with a dataset",
            "default_job_type": "jupyter_lab",
            "workspace_details": {
                "globus_groups_token": GROUPS_TOKEN,
                "files": [{"name": "blank.ipynb", "content": NOTEBOOK}],
                "symlinks": [{"name": f"datasets/{DATASET}", "dataset_uuid": DATASET}],
            },
        }
    )
    assert ws["status"] == "idle" and ws["default_job_type"] == "jupyter_lab"
    [ws] = alice.workspaces(ws["id"])
    details = ws["workspace_details"]
    assert details["current_workspace_details"] == {
        "files": [{"name": "/blank.ipynb"}],
        "symlinks": [{"name": f"/datasets/{DATASET}"}],
    }
    assert details["request_workspace_details"] == {
        "files": [{"name": "blank.ipynb"}],
        "symlinks": [{"name": f"datasets/{DATASET}", "dataset_uuid": DATASET}],
    }
    link = hubmap_hub.workspaces_root / "uwsalice" / "notebook-workspace" / "datasets" / DATASET
    assert os.readlink(link) == str(datasets.root / DATASET)

    # the portal lists workspaces only when the user has jobs: none yet
    assert alice.jobs() == [] or all(j["workspace_id"] != ws["id"] for j in alice.jobs())
    r = alice.start(ws["id"], "jupyter_lab", OPTIONS)
    assert r.status_code == 200, r.text
    started = r.json()["data"]["job"]
    assert started["status"] == "pending" and started["workspace_id"] == ws["id"]
    assert started["job_details"]["request_job_details"]["resource_options"] == {
        "num_cpus": 1,
        "memory_mb": 1024,
        "time_limit_minutes": 180,
        "gpu_enabled": False,
    }
    job = alice.wait_for_job(ws["id"], {"running"})
    assert job["id"] == started["id"]
    [listed] = alice.workspaces(ws["id"])
    assert listed["status"] == "active" and listed["datetime_last_job_launch"]

    # WorkspacePleaseWait: url_domain + url_path, then /tree/<notebook> before the query
    connection = job["job_details"]["current_job_details"]["connection_details"]
    url = connection["url_domain"] + connection["url_path"]
    base, _, query = url.partition("?")
    assert base.startswith(hubmap_hub.url + "/user/uwsalice/")
    page = requests.get(
        base + "/tree/blank.ipynb" + (f"?{query}" if query else ""),
        headers={"Authorization": f"token {alice.token}"},
        timeout=60,
    )
    assert page.status_code == 200 and "JupyterLab" in page.text

    # useRefreshSessions: stop, then start at once
    assert alice.stop(job["id"]).status_code == 200
    r = alice.start(ws["id"], "jupyter_lab", job["job_details"]["request_job_details"]["resource_options"])
    assert r.status_code == 200, r.text
    renewed = alice.wait_for_job(ws["id"], {"running"}, not_id=job["id"])
    assert [j["status"] for j in alice.jobs() if j["id"] == job["id"]] == ["complete"]

    r = alice.stop(renewed["id"])
    assert r.json() == {"message": "Job queued to stop.", "success": True}
    alice.wait_for_job(ws["id"], {"complete"}, not_id=job["id"])
    r = alice.stop(renewed["id"])
    assert (r.status_code, r.json()["message"]) == (400, "This job is not running or pending.")

    # share with a colleague found by name
    [found] = [u for u in alice.users("Bob") if u["username"] == "uwsbob"]
    assert (found["first_name"], found["last_name"]) == ("Bob", "Builder")
    assert all(u["username"] != "uwsalice" for u in alice.users(""))
    r = alice.share(ws["id"], [found["id"]])
    assert r.status_code == 200, r.text
    [sent] = r.json()["data"]["shared_workspaces"]
    assert sent["is_accepted"] is False and sent["original_workspace_id"]["id"] == ws["id"]
    invitation_id = sent["shared_workspace_id"]["id"]
    received = bob.invitations()["shared_workspaces"]
    [invitation] = [i for i in received if i["shared_workspace_id"]["id"] == invitation_id]
    assert invitation["original_workspace_id"]["user_id"]["username"] == "uwsalice"
    assert invitation["last_job_type"] == "jupyter_lab"
    assert invitation["last_resource_options"]["num_cpus"] == 1
    assert (
        invitation["shared_workspace_id"]["workspace_details"]["request_workspace_details"]["symlinks"][0][
            "dataset_uuid"
        ]
        == DATASET
    )
    assert bob.invitations(invitation_id)["shared_workspaces"][0]["is_accepted"] is False
    assert all(w["name"] != "Notebook workspace" for w in bob.workspaces())
    assert bob.accept(invitation_id).status_code == 200

    def copied():
        [i] = [i for i in bob.invitations()["shared_workspaces"] if i["original_workspace_id"]["id"] == ws["id"]]
        return i if i["shared_workspace_id"]["id"] > 0 else None

    accepted = wait_for(copied, 60, interval=1, what="the copy")
    assert accepted["is_accepted"] is True
    [copy] = bob.workspaces(accepted["shared_workspace_id"]["id"])
    assert copy["workspace_details"]["current_workspace_details"]["files"] == [{"name": "/blank.ipynb"}]
    # the copy is bob's; the workspace it came from is not: none of its files, then or later,
    # is shown him (they were, as they changed, for as long as the share was listed)
    alice.update(ws["id"], {"workspace_details": {"files": [{"name": "later.txt", "content": "x"}]}})
    original = copied()["original_workspace_id"]
    assert original["id"] == ws["id"] and original["user_id"]["username"] == "uwsalice"
    assert original["workspace_details"] == {
        "request_workspace_details": {"files": [], "symlinks": []},
        "current_workspace_details": {"files": [], "symlinks": []},
    }
    [own] = [i for i in alice.invitations()["original_workspaces"] if i["original_workspace_id"]["id"] == ws["id"]]
    assert {"name": "/later.txt"} in own["original_workspace_id"]["workspace_details"]["current_workspace_details"][
        "files"
    ]
    assert [
        i["is_accepted"]
        for i in alice.invitations()["original_workspaces"]
        if i["original_workspace_id"]["id"] == ws["id"]
    ] == [True]
    r = bob.decline(accepted["shared_workspace_id"]["id"])
    assert r.status_code == 400 and "has been accepted and cannot be deleted" in r.json()["message"]

    r = alice.delete(ws["id"])
    assert r.json() == {"message": f"Workspace {ws['id']} queued for deletion.", "success": True}
    wait_for(lambda: all(w["id"] != ws["id"] for w in alice.workspaces()), 60, what="the delete")
    # what the facade kept of it went with it (a new workspace may get its id)
    engine = create_engine(hubmap_hub.db_url)
    with engine.connect() as conn:
        left = conn.execute(
            text("SELECT count(*) FROM uws_hubmap_workspaces WHERE workspace_id = :id"), {"id": ws["id"]}
        ).scalar()
    engine.dispose()
    assert left == 0


# ---------------------------------------------------------------- strangers
def test_strangers_get_hubmaps_answers_and_nothing_else(hubmap_hub, alice, carol):
    ws = new_workspace(alice)
    r = alice.start(ws["id"], "minimal", {})
    assert r.status_code == 200, r.text
    job = r.json()["data"]["job"]
    wid, jid = ws["id"], job["id"]
    try:
        # reads: 200 with nothing and HuBMAP's not-found message
        r = carol.fetch("GET", f"/workspaces/{wid}")
        assert r.status_code == 200 and r.json() == {
            "message": "Workspace matching given parameters could not be found.",
            "success": True,
            "data": {"workspaces": []},
        }
        r = carol.fetch("GET", f"/jobs/{jid}")
        assert r.json()["data"] == {"jobs": []}
        assert all(j["id"] != jid for j in carol.jobs())
        assert all(w["id"] != wid for w in carol.workspaces())
        assert carol.fetch("GET", f"/jobs?workspace_id={wid}").json()["data"]["jobs"] == []
        # changes: HuBMAP's 404s
        for method, path, message in [
            ("PUT", f"/workspaces/{wid}", f"Workspace {wid} not found for user."),
            ("DELETE", f"/workspaces/{wid}", f"Workspace {wid} not found for user."),
            ("PUT", f"/workspaces/{wid}/start", f"Workspace {wid} not found for user."),
            ("PUT", f"/jobs/{jid}/stop", f"Job {jid} not found for user."),
        ]:
            r = carol.fetch(method, path, {"name": "mine now"} if method == "PUT" else None)
            assert (r.status_code, r.json()) == (404, {"success": False, "message": message}), (method, path)
        r = carol.share(wid, [1])
        assert r.status_code == 404
        assert carol.fetch("GET", f"/shared_workspaces/{wid}/").json()["data"] == {
            "original_workspaces": [],
            "shared_workspaces": [],
        }
        assert alice.workspaces(wid)[0]["name"] == ws["name"]
    finally:
        alice.stop(jid)
        alice.wait_for_job(wid, {"complete", "failed"})


# ---------------------------------------------------------------- routes and CORS
ROUTES = [
    "tokens",
    "workspaces",
    "workspaces/1",
    "workspaces/1/start",
    "jobs",
    "jobs/1",
    "jobs/1/stop",
    "job_types",
    "parameters",
    "users",
    "shared_workspaces",
    "shared_workspaces/1",
    "shared_workspaces/1/accept",
    "status",
]


@pytest.mark.parametrize("path", ROUTES)
def test_every_route_answers_with_and_without_its_slash(hubmap_hub, alice, path):
    for suffix in ("", "/"):
        r = requests.options(
            f"{hubmap_hub.url}/hub/api/hubmap/{path}{suffix}",
            timeout=30,
            allow_redirects=False,
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "PUT",
                "Access-Control-Request-Headers": "content-type,uws-authorization",
            },
        )
        # the browser's preflight: allowed, with the portal's header
        assert r.status_code == 204, (path, suffix, r.status_code)
        assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert "UWS-Authorization" in r.headers["Access-Control-Allow-Headers"]
        assert "PUT" in r.headers["Access-Control-Allow-Methods"]
        r = requests.get(
            f"{hubmap_hub.url}/hub/api/hubmap/{path}{suffix}",
            allow_redirects=False,
            timeout=30,
            headers={"UWS-Authorization": f"Token {alice.token}"},
        )
        assert r.status_code in (200, 400, 404, 405), (path, suffix, r.status_code)
        assert r.headers["Content-Type"].startswith("application/json")
        assert "success" in r.json()


def test_cors_only_for_configured_origins(hubmap_hub, alice):
    url = hubmap_hub.url + "/hub/api/hubmap/workspaces"
    r = requests.options(
        url, headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}, timeout=30
    )
    assert "Access-Control-Allow-Origin" not in r.headers
    r = requests.get(
        url, headers={"Origin": "https://evil.example", "UWS-Authorization": f"Token {alice.token}"}, timeout=30
    )
    assert "Access-Control-Allow-Origin" not in r.headers
    # errors carry it too, so that the portal can read them
    r = requests.get(url, headers={"Origin": ORIGIN}, timeout=30)
    assert r.status_code == 401 and r.headers["Access-Control-Allow-Origin"] == ORIGIN
    r = requests.patch(url, headers={"Origin": ORIGIN, "UWS-Authorization": f"Token {alice.token}"}, timeout=30)
    assert (r.status_code, r.json()["message"]) == (405, 'Method "PATCH" not allowed.')


# ---------------------------------------------------------------- workspaces
def test_symlinks_only_into_dataset_roots(hubmap_hub, alice):
    before = {w["id"] for w in alice.workspaces()}
    secret = hubmap_hub.outside / "secret.txt"
    secret.write_text("not yours")
    for target in (str(secret), "/etc", str(hubmap_hub.workspaces_root)):
        body = {
            "name": f"bad {uuid.uuid4().hex[:6]}",
            "description": "",
            "workspace_details": {"symlinks": [{"name": "data", "source_path": target}]},
        }
        r = alice.fetch("POST", "/workspaces/", body)
        assert r.status_code == 400 and "dataset roots" in r.json()["message"], r.text
    # a dataset the lookup does not know (the entity API refuses the token)
    r = alice.fetch(
        "POST",
        "/workspaces/",
        {
            "name": "bad token",
            "description": "",
            "workspace_details": {
                "globus_groups_token": "someone-elses",
                "symlinks": [{"name": "d", "dataset_uuid": DATASET}],
            },
        },
    )
    assert r.status_code == 400 and f"Dataset {DATASET} could not be looked up" in r.json()["message"]
    # nothing was made
    assert {w["id"] for w in alice.workspaces()} == before

    ws = new_workspace(alice)
    r = alice.update(
        ws["id"],
        {
            "workspace_details": {
                "globus_groups_token": GROUPS_TOKEN,
                "symlinks": [{"name": f"datasets/{DATASET}", "dataset_uuid": DATASET}],
            }
        },
    )
    assert r.json() == {"message": "Update successful.", "success": True}
    [ws] = alice.workspaces(ws["id"])
    assert ws["workspace_details"]["current_workspace_details"]["symlinks"] == [{"name": f"/datasets/{DATASET}"}]
    # the same link again is fine; the update adds, as HuBMAP's does
    assert (
        alice.update(
            ws["id"],
            {
                "workspace_details": {
                    "globus_groups_token": GROUPS_TOKEN,
                    "symlinks": [{"name": f"datasets/{DATASET}", "dataset_uuid": DATASET}],
                }
            },
        ).status_code
        == 200
    )
    # uws-hub's files API does not follow the link out of the workspace
    files = f"workspaces/{ws['id']}/files/datasets/{DATASET}/data.csv"
    r = hubmap_hub.request("GET", files, alice.token)
    assert r.status_code == 400 and "outside the workspace" in r.json()["message"]
    r = hubmap_hub.request("PUT", files, alice.token, data=b"overwritten")
    assert r.status_code == 400
    r = alice.update(ws["id"], {"workspace_details": {"symlinks": [{"name": "x", "source_path": "/etc"}]}})
    assert r.status_code == 400


def test_a_file_named_in_bytes_no_utf8_is_listed_with_a_replacement(hubmap_hub, alice):
    """A job names files as it likes, in bytes that are no UTF-8 too: the workspace's
    details listed such a name with a lone surrogate, which no URL (and no strict
    UTF-8 decoder) takes; it has U+FFFD, as the files API and zips have."""
    ws = alice.create({"name": f"odd {uuid.uuid4().hex[:6]}", "description": ""})
    directory = (
        hubmap_hub.workspaces_root / "uwsalice" / hubmap_hub.api("GET", f"workspaces/{ws['id']}", alice.token)["slug"]
    )
    with open(bytes(directory) + b"/odd\xff.txt", "wb") as f:
        f.write(b"odd")
    [ws] = alice.workspaces(ws["id"])
    assert ws["workspace_details"]["current_workspace_details"]["files"] == [{"name": "/odd\ufffd.txt"}]


def test_create_update_upload_and_refusals(hubmap_hub, alice):
    r = alice.fetch("POST", "/workspaces/", {"name": "no description"})
    assert (r.status_code, r.json()["message"]) == (400, "Missing required fields.")
    r = alice.fetch("POST", "/workspaces/", {"name": "x", "description": "", "default_job_type": "spark"})
    assert r.json()["message"] == "spark is not in the list of available job types."
    r = alice.fetch(
        "POST",
        "/workspaces/",
        {
            "name": "x",
            "description": "",
            "workspace_details": {"files": [{"name": "../../escape.txt", "content": "x"}]},
        },
    )
    assert r.json()["message"] == "File name cannot contain double dots."
    r = requests.post(alice.endpoint + "/workspaces", data="{", headers=alice.headers(), timeout=30)
    assert r.status_code == 400 and r.json()["message"].startswith("Invalid JSON")

    # the portal's Flask server creates from a notebook without the slash (routes_notebooks.py)
    r = requests.post(
        alice.endpoint + "/workspaces",
        headers={"UWS-Authorization": f"Token {alice.token}"},
        data=json.dumps(
            {
                "name": "From a notebook",
                "description": "From a notebook",
                "workspace_details": {
                    "globus_groups_token": GROUPS_TOKEN,
                    "files": [{"name": "nb.ipynb", "content": NOTEBOOK}],
                    "symlinks": [],
                },
            }
        ),
        timeout=60,
    )
    r.raise_for_status()
    wid = r.json()["data"]["workspace"]["id"]

    # the same name again (HuBMAP's names need not be unique)
    again = requests.post(
        alice.endpoint + "/workspaces",
        headers={"UWS-Authorization": f"Token {alice.token}"},
        data=json.dumps({"name": "From a notebook", "description": ""}),
        timeout=60,
    )
    assert again.status_code == 200, again.text
    assert again.json()["data"]["workspace"]["name"] == "From a notebook"
    assert again.json()["data"]["workspace"]["id"] != wid

    r = alice.update(
        wid,
        {
            "default_job_type": "jupyter_lab",
            "name": "Renamed",
            "workspace_details": {"files": [{"name": "notes/a.md", "content": "# a"}]},
        },
    )
    assert r.json() == {"message": "Update successful.", "success": True}
    # half of a UTF-16 pair escaped alone is no character, which no file holds (a 500 before)
    body = '{"workspace_details": {"files": [{"name": "half.txt", "content": "\\udfff"}]}}'
    r = requests.put(f"{alice.endpoint}/workspaces/{wid}", data=body, headers=alice.headers(), timeout=30)
    assert r.status_code == 400 and "surrogate" in r.json()["message"], r.text
    r = requests.put(
        f"{alice.endpoint}/workspaces/{wid}/upload",
        timeout=60,
        headers={"UWS-Authorization": f"Token {alice.token}"},
        files={"anything": ("../../up.txt", b"uploaded"), "other": ("data.bin", b"\x00\x01")},
    )
    assert r.json() == {"message": "Successful upload.", "success": True}
    r = requests.put(
        f"{alice.endpoint}/workspaces/{wid}/upload",
        timeout=60,
        headers={"UWS-Authorization": f"Token {alice.token}"},
        data=b"",
    )
    assert r.json()["message"] == "No files found in request."
    assert alice.fetch("PUT", f"/workspaces/{wid}/explode", {}).json()["message"] == "Invalid PUT type passed."
    [ws] = alice.workspaces(wid)
    assert ws["name"] == "Renamed" and ws["default_job_type"] == "jupyter_lab"
    files = {f["name"] for f in ws["workspace_details"]["current_workspace_details"]["files"]}
    assert files == {"/nb.ipynb", "/notes/a.md", "/up.txt", "/data.bin"}
    assert ws["disk_space"] >= len(NOTEBOOK) + 3 + 8 + 2
    assert hubmap_hub.api("GET", f"workspaces/{wid}/files/up.txt", alice.token).content == b"uploaded"
    assert ws["datetime_last_modified"].endswith("Z")


def test_an_upload_larger_than_the_body_limit_is_taken(hubmap_hub, alice):
    # HuBMAP's upload is read whole: its files may total the seed files' bound (UWSHub.max_seed_bytes),
    # more than what other routes read (UWSHub.max_request_body_bytes, 1 MiB)
    wid = new_workspace(alice)["id"]
    data = os.urandom(3 * 1024 * 1024)
    r = requests.put(
        f"{alice.endpoint}/workspaces/{wid}/upload",
        timeout=60,
        headers={"UWS-Authorization": f"Token {alice.token}"},
        files={"file": ("large.bin", data)},
    )
    assert r.status_code == 200, r.text[:300]
    assert r.json() == {"message": "Successful upload.", "success": True}
    assert hubmap_hub.api("GET", f"workspaces/{wid}/files/large.bin", alice.token).content == data


def test_start_refusals_in_hubmaps_words(hubmap_hub, alice):
    ws = new_workspace(alice, default_job_type=None)
    wid = ws["id"]
    r = alice.fetch("PUT", f"/workspaces/{wid}/start", {})
    assert (r.status_code, r.json()["message"]) == (400, "Missing job_type and no default job type set on workspace.")
    r = alice.start(wid, "nonexistent", {})
    assert r.json()["message"] == "nonexistent is not in the list of available job types."
    # over the job type's limits (2 CPUs), and a wrong type: HuBMAP's 422
    r = alice.start(wid, "jupyter_lab", {**OPTIONS, "num_cpus": 3})
    assert r.status_code == 422
    message = r.json()["message"]
    assert message.startswith("Invalid resource options found: [") and "cpus=3 is over the limit of 2" in message
    r = alice.start(wid, "jupyter_lab", {**OPTIONS, "gpu_enabled": "yes"})
    assert r.status_code == 422 and "gpu_enabled: Value 'yes' of type str does not match" in r.json()["message"]
    r = alice.start(wid, "jupyter_lab", {**OPTIONS, "num_cpus": 0})
    assert r.status_code == 422
    # one job at a time: a second start while the first runs is refused, and says why
    r = alice.start(wid, "minimal", {"num_cpus": 1, "unknown_option": 5})
    assert r.status_code == 200, r.text
    job = r.json()["data"]["job"]
    try:
        r = alice.start(wid, "minimal", {})
        assert r.status_code == 400 and "already has" in r.json()["message"]
        r = alice.delete(wid)
        assert r.json()["message"] == "Cannot delete workspace, jobs are running for this workspace."
    finally:
        alice.stop(job["id"])
    # the delete right after the stop waits for it
    r = alice.delete(wid)
    assert r.status_code == 200, r.text


def test_jobs_filters(hubmap_hub, alice):
    ws = new_workspace(alice)
    job = alice.start(ws["id"], "minimal", {}).json()["data"]["job"]
    alice.wait_for_job(ws["id"], {"running"})
    alice.stop(job["id"])
    alice.wait_for_job(ws["id"], {"complete"})
    assert [
        j["id"] for j in alice.fetch("GET", f"/jobs?workspace_id={ws['id']}&status=complete").json()["data"]["jobs"]
    ] == [job["id"]]
    assert alice.fetch("GET", f"/jobs?workspace_id={ws['id']}&status=running").json()["data"]["jobs"] == []
    assert (
        alice.fetch("GET", f"/jobs?job_type=minimal&workspace_id={ws['id']}").json()["data"]["jobs"][0]["id"]
        == job["id"]
    )
    [done] = alice.fetch("GET", f"/jobs/{job['id']}").json()["data"]["jobs"]
    assert done["resource_job_id"] > 0 and float(done["core_hours"]) > 0
    assert done["datetime_start"] and done["datetime_end"]


def test_invitations_declined_and_withdrawn(hubmap_hub, alice, bob, carol):
    ws = new_workspace(alice)
    ids = {u["username"]: u["id"] for u in alice.users("")}
    r = alice.share(ws["id"], [ids["uwsbob"], ids["uwscarol"]])
    assert r.status_code == 200, r.text
    to_bob, to_carol = [s["shared_workspace_id"]["id"] for s in r.json()["data"]["shared_workspaces"]]
    assert to_bob < 0 and to_carol < 0
    for bad in ([ids["uwsbob"], ids["uwsbob"]], [999999], "3"):
        r = alice.share(ws["id"], bad)
        assert r.status_code == 400, (bad, r.text)
    # a third party can neither see nor decline it
    assert carol.fetch("DELETE", f"/shared_workspaces/{to_bob}/").status_code == 404
    assert carol.accept(to_bob).status_code == 404
    assert bob.invitations(to_bob)["shared_workspaces"][0]["is_accepted"] is False
    accepted = bob.fetch("GET", "/shared_workspaces?is_accepted=True").json()["data"]["shared_workspaces"]
    assert all(i["is_accepted"] for i in accepted) and to_bob not in [i["shared_workspace_id"]["id"] for i in accepted]
    pending = bob.fetch("GET", "/shared_workspaces?is_accepted=f").json()["data"]["shared_workspaces"]
    assert to_bob in [i["shared_workspace_id"]["id"] for i in pending]
    # declined by bob, withdrawn by alice: gone for both
    assert bob.decline(to_bob).json() == {"message": f"Shared workspace {to_bob} queued for deletion.", "success": True}
    assert alice.decline(to_carol).status_code == 200
    sent = alice.invitations()["original_workspaces"]
    assert all(i["shared_workspace_id"]["id"] not in (to_bob, to_carol) for i in sent)
    assert bob.invitations(to_bob) == {"original_workspaces": [], "shared_workspaces": []}


def test_a_share_shows_the_last_job_before_it_was_sent(hubmap_hub, alice, bob):
    """HuBMAP's server records the workspace's last job type and resource options in a
    share when it is sent: the jobs its sender starts later are none of the recipient's
    business (their settings were shown to him, as they changed, before)."""
    ws = new_workspace(alice)
    [to_bob] = [u["id"] for u in alice.users("") if u["username"] == "uwsbob"]
    r = alice.share(ws["id"], [to_bob])
    assert r.status_code == 200, r.text
    [sent] = r.json()["data"]["shared_workspaces"]
    invitation_id = sent["shared_workspace_id"]["id"]
    job = alice.start(ws["id"], "minimal", {}).json()["data"]["job"]
    try:
        [received] = bob.invitations(invitation_id)["shared_workspaces"]
        [own] = [i for i in alice.invitations()["original_workspaces"] if i["original_workspace_id"]["id"] == ws["id"]]
        for share in (received, own):
            assert (share["last_job_type"], share["last_resource_options"]) == ("", {}), share
    finally:
        alice.wait_for_job(ws["id"], {"running"})
        alice.stop(job["id"])
        alice.wait_for_job(ws["id"], {"complete"})


def test_a_share_revoked_while_a_start_waits_launches_nothing(hubmap_hub, alice, bob):
    """A start right after a stop waits for the stop to finish: an editor whose share
    is revoked meanwhile launches nothing (it would run as them), as a new start of
    theirs would not."""
    ws = new_workspace(alice)
    owner = hubmap_hub.add_user("uwsalice")  # uws-hub's own API: an editor's share, not a copy
    shares = f"workspaces/{ws['id']}/shares"
    share = hubmap_hub.api("POST", shares, owner, json={"user": "uwsbob", "level": "editor"}, expect=201)
    r = alice.start(ws["id"], "stubborn", {})
    assert r.status_code == 200, r.text
    job = alice.wait_for_job(ws["id"], {"running"})
    assert alice.stop(job["id"]).status_code == 200
    answers = []
    starting = threading.Thread(target=lambda: answers.append(bob.start(ws["id"], "minimal", {})))
    starting.start()
    try:
        # bob's start waits for the stop, which ends only once released
        waiting = f"/hub/api/hubmap/workspaces/{ws['id']}/start waits for job {job['id']} to stop"
        wait_for(lambda: waiting in hubmap_hub.log_text(), 60, what="the start's wait")
        hubmap_hub.api("DELETE", f"{shares}/{share['id']}", owner, expect=200)
    finally:
        (hubmap_hub.hold / str(job["id"])).touch()
        starting.join(90)
    [r] = answers
    assert r.status_code == 404, r.text  # bob no longer reads the workspace
    assert r.json()["message"] == f"Workspace {ws['id']} not found for user."
    alice.wait_for_job(ws["id"], {"complete"})
    assert [j["id"] for j in alice.jobs() if j["workspace_id"] == ws["id"]] == [job["id"]]


def test_job_status_websocket(hubmap_hub, alice, carol):
    ws = new_workspace(alice)
    job = alice.start(ws["id"], "minimal", {}).json()["data"]["job"]
    url = hubmap_hub.url.replace("http", "ws", 1) + f"/hub/api/hubmap/jobs/{job['id']}"
    # the original's had no authorization; this one needs the token (a browser passes it as ?token=)
    with pytest.raises(websocket.WebSocketBadStatusException) as e:
        websocket.create_connection(url, timeout=30)
    assert e.value.status_code == 401
    with pytest.raises(websocket.WebSocketBadStatusException) as e:
        websocket.create_connection(f"{url}?token={carol.token}", timeout=30)
    assert e.value.status_code == 404
    conn = websocket.create_connection(f"{url}?token={alice.token}", timeout=60)
    try:
        seen = []
        while not seen or seen[-1]["status"] != "running":
            message = json.loads(conn.recv())
            assert set(message) == {"status", "current_job_details"}
            validate(
                jobs=[
                    {
                        "status": message["status"],
                        "job_details": {"current_job_details": message["current_job_details"]},
                    }
                ]
            )
            seen.append(message)
        assert "connection_details" in seen[-1]["current_job_details"]
        alice.stop(job["id"])
        while seen[-1]["status"] != "complete":
            seen.append(json.loads(conn.recv()))
    finally:
        conn.close()
    # the headers work too
    conn = websocket.create_connection(url, header=[f"UWS-Authorization: Token {alice.token}"], timeout=30)
    assert json.loads(conn.recv())["status"] == "complete"
    conn.close()


def test_parameters_and_status(hubmap_hub):
    body = requests.get(hubmap_hub.url + "/hub/api/hubmap/parameters/", timeout=30).json()
    by_name = {p["variable_name"]: p for p in body["data"]["parameters"]}
    assert by_name["num_cpus"]["validation"]["max"] == 2 and by_name["num_cpus"]["default_value"] == 1
    assert by_name["memory_mb"]["validation"]["max"] == 8192
    status = requests.get(hubmap_hub.url + "/hub/api/hubmap/status", timeout=30).json()
    assert status["success"] is True and status["version"]


def test_off_by_default(hub):
    r = hub.request("GET", "hubmap/job_types", hub.admin_token)
    assert r.status_code == 404


def test_upgrade_from_0006_adds_the_hubmap_table(db_url):
    url = db_url()
    make_old_database(url, "0006")
    engine = create_engine(url)
    dbutil.upgrade(engine)
    assert dbutil.current_revision(engine) == dbutil.head_revision()
    columns = {c["name"] for c in inspect(engine).get_columns("uws_hubmap_workspaces")}
    assert columns == {"workspace_id", "default_job_type", "request_details"}
    with engine.connect() as conn:
        assert conn.execute(text("SELECT name FROM uws_workspaces")).scalar() == "Old workspace"
    engine.dispose()


def test_a_deleted_copy_shows_none_of_the_original(hubmap_hub, alice, bob):
    """A recipient who accepted a copy and then deleted it holds neither: the share still
    lists the workspace it came from, without its files or its jobs, then or later."""
    ws = new_workspace(alice, workspace_details={"files": [{"name": "sent.txt", "content": "x"}], "symlinks": []})
    [found] = [u for u in alice.users("Bob") if u["username"] == "uwsbob"]
    r = alice.share(ws["id"], [found["id"]])
    assert r.status_code == 200, r.text
    [sent] = r.json()["data"]["shared_workspaces"]
    assert bob.accept(sent["shared_workspace_id"]["id"]).status_code == 200

    def copied():
        [i] = [i for i in bob.invitations()["shared_workspaces"] if i["original_workspace_id"]["id"] == ws["id"]]
        return i if i["shared_workspace_id"]["id"] > 0 else None

    copy_id = wait_for(copied, 60, interval=1, what="the copy")["shared_workspace_id"]["id"]
    r = bob.delete(copy_id)
    assert r.json()["success"] is True, r.text
    wait_for(lambda: all(w["id"] != copy_id for w in bob.workspaces()), 60, what="the delete")
    alice.update(ws["id"], {"workspace_details": {"files": [{"name": "private-later.txt", "content": "x"}]}})
    r = alice.start(ws["id"], "minimal", {})  # nor what she runs in it
    assert r.status_code == 200, r.text
    none = {"files": [], "symlinks": []}
    for shown in (bob.invitations()["shared_workspaces"], bob.invitations(copy_id)["shared_workspaces"]):
        [share] = [i for i in shown if i["original_workspace_id"]["id"] == ws["id"]]
        for side in ("original_workspace_id", "shared_workspace_id"):
            details = share[side]["workspace_details"]
            assert details == {"request_workspace_details": none, "current_workspace_details": none}, (side, details)
        assert (share["last_job_type"], share["last_resource_options"]) == ("", {}), share
