"""The tokens visitors' logins give a live server are worth nothing on the hub, for real.

Whoever opens a job's server in a browser logs into it through JupyterHub's
OAuth, and the server's process (the code of whoever launched it) holds the
token it gets: it exchanges the code with its own secret, and sees the token
on every request. Here the tests do what that code can: authorize the
server's OAuth client as the visitor (a real login session), exchange the
code with the server's secret (read from the process, as the process can),
and use the token against every kind of API of the hub: uws-hub's workspaces,
files, shares, jobs, quotas and notifications, HuBMAP's and UWS's interfaces,
JupyterHub's own users, tokens and servers. For the owner visiting the server
an editor launched, and the editor, the viewer and an admin visiting the
owner's server, the token names its user and opens that server, nothing else:
not the visitor's own workspaces, nor the server's workspace, nor any
workspace shared with the visitor (whose owner the server's launcher may not
even know). A user admin (``admin:users``, no ``access:servers``) gets no
token at all, and an anonymous visitor is sent to log in.
"""

from __future__ import annotations

import pytest
import requests

from ..authutil import login
from ..helpers import (
    ADMIN_PASSWORD,
    MULTIUSER_CONFIG,
    launch,
    oauth_authorize,
    oauth_token,
    server_token,
    shared_workspace,
)

OWNER, EDITOR, VIEWER, ADMIN, USER_ADMIN = "uwsalice", "uwscarol", "uwsbob", "uwsadmin", "uwskeeper"
PASSWORD = "a long password for tests"
ENDED = {"completed", "failed", "cancelled"}


@pytest.fixture(scope="module")
def vhub(make_hub, system_users, group_prefix):
    hub = make_hub(
        MULTIUSER_CONFIG
        + f"""
c.UWSHub.share_posix_group_prefix = {group_prefix!r}
c.UWSHub.job_types["sleeper"] = {{"interactive": False, "cmd": ["sleep", "600"]}}
c.JupyterHub.load_roles.append({{"name": "user-keeper", "scopes": ["admin:users", "list:users", "read:users"],
                                "users": [{USER_ADMIN!r}]}})
c.HubMAPCompat.enabled = True
"""
    )
    for name in (OWNER, EDITOR, VIEWER, USER_ADMIN):
        hub.api("POST", "accounts", json={"username": name, "password": PASSWORD}, expect=201)
    hub.tokens = {name: hub.add_user(name, admin=name == ADMIN) for name in (OWNER, EDITOR, VIEWER, ADMIN, USER_ADMIN)}
    return hub


def workspace(hub, owner: str, **shares: str) -> dict:
    """A new workspace of ``owner``'s with a file, shared with each user of ``shares`` at its level."""
    return shared_workspace(hub, hub.tokens[owner], shares, name="visited")


@pytest.fixture(scope="module")
def scene(vhub):
    """The server's workspace (alice's; carol edits it, bob views it), a workspace shared
    with each visitor by someone else (bob's with alice, carol and the admin; carol's with
    bob), and a
    batch job of alice's running elsewhere."""
    ws = workspace(vhub, OWNER, **{EDITOR: "editor", VIEWER: "viewer"})
    bobs = workspace(vhub, VIEWER, **{OWNER: "editor", EDITOR: "editor", ADMIN: "editor"})
    shared_with = {OWNER: bobs, EDITOR: bobs, ADMIN: bobs}
    shared_with[VIEWER] = workspace(vhub, EDITOR, **{VIEWER: "editor"})
    other = launch(vhub, vhub.tokens[OWNER], workspace(vhub, OWNER), job_type="sleeper")
    yield ws, shared_with, other
    vhub.api("POST", f"jobs/{other['id']}/stop", vhub.tokens[OWNER])


@pytest.fixture(scope="module", params=[OWNER, EDITOR], ids=["owners-server", "editors-server"])
def server(request, vhub, scene):
    """A running server in the shared workspace, launched by the owner or by the editor."""
    ws = scene[0]
    job = launch(vhub, vhub.tokens[request.param], ws)
    job = vhub.wait_job(job["id"], vhub.tokens[OWNER], {"running"} | ENDED, timeout=60)
    assert job["status"] == "running", job["reason"]
    yield job
    vhub.api("POST", f"jobs/{job['id']}/stop", vhub.tokens[OWNER], expect=202)
    vhub.wait_job(job["id"], vhub.tokens[OWNER], ENDED)


def visitor_session(hub, who: str) -> requests.Session:
    """A browser logged into the hub as ``who``."""
    logged_in = login(hub, who, ADMIN_PASSWORD if who == ADMIN else PASSWORD)
    assert logged_in.ok, logged_in
    return logged_in.session


def probes(hub, who: str, scene, job: dict) -> list[tuple[str, str, dict]]:
    """What the server's code tries with ``who``'s token: (method, path, request arguments),
    reads first, deleting last."""
    ws, shared_with, other = scene
    found = [("GET", "workspaces", {}), ("GET", "jobs", {}), ("GET", "shares", {}), ("GET", "notifications", {})]
    found += [("GET", f"quotas/{who}", {}), ("GET", "usage", {}), ("GET", f"jobs/{job['id']}", {})]
    found += [("GET", f"users/{who}/tokens", {}), ("POST", f"users/{who}/tokens", {"json": {"note": "harvested"}})]
    found += [("POST", f"jobs/{other['id']}/stop", {}), ("POST", f"jobs/{job['id']}/stop", {})]
    found += [("DELETE", f"users/{OWNER}/servers/{job['server_name']}", {})]
    found += [("POST", f"users/{who}/servers/harvested", {})]
    found += [("GET", "/hub/api/uws/sleeper", {}), ("POST", "/hub/api/uws/sleeper", {"data": {"WORKSPACE": ws["id"]}})]
    targets = [ws["id"], shared_with[who]["id"]]
    for target in targets:
        found += [("GET", f"/hub/api/hubmap/workspaces/{target}", {})]
        found += [("PUT", f"/hub/api/hubmap/workspaces/{target}", {"json": {"description": "harvested"}})]
        found += [("GET", f"workspaces/{target}", {}), ("GET", f"workspaces/{target}/files", {})]
        found += [("GET", f"workspaces/{target}/files/data.txt", {}), ("GET", f"workspaces/{target}/shares", {})]
        found += [("PUT", f"workspaces/{target}/files/harvested.txt", {"data": b"harvested"})]
        found += [("DELETE", f"workspaces/{target}/files/data.txt", {})]
        found += [("PATCH", f"workspaces/{target}", {"json": {"name": "harvested"}})]
        share = {"json": {"user": ADMIN if who != ADMIN else OWNER, "level": "editor"}}
        found += [("POST", f"workspaces/{target}/shares", share)]
        found += [("POST", f"workspaces/{target}/jobs", {"json": {"job_type": "sleeper"}})]
    return found + [("DELETE", f"workspaces/{target}", {}) for target in targets]


def reached(hub, token: str, probes: list[tuple[str, str, dict]]) -> list[str]:
    """The probes ``token`` was not refused (401, 403, 404 or 405 from the hub)."""
    found = []
    for method, path, kwargs in probes:
        headers = {"UWS-Authorization": f"Token {token}"} if "/hubmap/" in path else {}
        r = hub.request(method, path, None if headers else token, headers=headers, allow_redirects=False, **kwargs)
        if r.status_code not in (401, 403, 404, 405):
            found.append(f"{method} {path}: {r.status_code} {r.text[:120]!r}")
    return found


@pytest.mark.parametrize("visitor", [OWNER, EDITOR, VIEWER, ADMIN])
def test_a_visitors_token_for_a_server_names_them_and_opens_that_server_only(vhub, scene, server, visitor):
    if visitor == OWNER and server["launcher"] == OWNER:
        pytest.skip("the owner's own server is the owner's own code")
    if visitor == EDITOR and server["launcher"] == EDITOR:
        pytest.skip("the editor's own server is the editor's own code")
    token = oauth_token(vhub, visitor_session(vhub, visitor), server, server_token(server))
    me = vhub.api("GET", "user", token, expect=200)
    assert me["name"] == visitor
    assert reached(vhub, token, probes(vhub, visitor, scene, server)) == []
    # what JupyterHub always grants (the visitor's name and groups, this server, no other)
    # and, for who holds it, the scope on this server that only its guard reads
    this = f"{OWNER}/{server['server_name']}"
    always = {f"read:users:name!user={visitor}", f"read:users:groups!user={visitor}", f"access:servers!server={this}"}
    assert always <= set(me["scopes"]) <= always | {f"custom:uws:write:servers!server={this}"}, me["scopes"]


@pytest.mark.expect_log_errors(rf"User <User\({USER_ADMIN} .*> not allowed to access Server at /user/{OWNER}/")
def test_a_user_admin_and_anonymous_give_a_server_no_token(vhub, server):
    # a user admin (admin:users, no access:servers): JupyterHub refuses the login into the server
    r = oauth_authorize(vhub, visitor_session(vhub, USER_ADMIN), server)
    assert r.status_code == 403, (r.status_code, r.text[:200])
    # anonymous: sent to log in, with no credential for the server to keep
    r = oauth_authorize(vhub, requests.Session(), server)
    assert r.status_code == 302 and "/hub/login" in r.headers["Location"], r.headers
