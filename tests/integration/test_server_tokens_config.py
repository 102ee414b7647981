"""What a hub's config adds to a server's tokens cannot give a server's code uws-hub's
scopes of someone else, for real.

- ``Spawner.oauth_client_allowed_scopes``: the server's process holds the token
  each visitor's login gives it (test_visitor_tokens.py). With a workspace scope
  among what the config allows (in any form, ``!user`` too: uws-hub's sharing
  rules count a workspace scope in any form), the server's code would act on the
  hub as its visitors. The hub leaves uws-hub's scopes (but
  ``custom:uws:write:servers``, which no API takes) and the JupyterHub scopes it
  counts as them (``admin:servers``, ``admin:users``), and ``inherit`` (all the
  visitor holds), out of what the config adds.
- ``Spawner.server_token_scopes``: the server's own API token is its owner's, and
  the process of a server an editor launched is the editor's code. Such a server's
  token gets JupyterHub's ``server`` role only (its activity, its own server),
  whatever the config asks; the owner's own servers get what the config says.
"""

from __future__ import annotations

import pytest

from ..authutil import login
from ..helpers import MULTIUSER_CONFIG, launch, oauth_token, server_token, shared_workspace

OWNER, VIEWER, EDITOR = "uwsalice", "uwsbob", "uwscarol"
PASSWORD = "a long password for tests"
ENDED = {"completed", "failed", "cancelled"}
#: what an admin's config allows a server's OAuth client: uws-hub's scopes on the visitor's
#: own workspaces, JupyterHub's admin scope on their servers, and all they hold (inherit)
CONFIGURED = [
    "inherit",
    "custom:uws:read:workspaces!user",
    "custom:uws:write:workspaces!user",
    "custom:uws:share:workspaces!user",
    "admin:servers!user",
    "read:users:groups!user",
]


@pytest.fixture(scope="module")
def chub(make_hub, system_users, group_prefix):
    hub = make_hub(
        MULTIUSER_CONFIG
        + f"""
c.UWSHub.share_posix_group_prefix = {group_prefix!r}
c.Spawner.oauth_client_allowed_scopes = {CONFIGURED!r}
# the servers' own tokens may read their owner's workspaces
c.Spawner.server_token_scopes = ["custom:uws:read:workspaces!user", "users:activity!user", "access:servers!server"]
"""
    )
    for name in (OWNER, VIEWER, EDITOR):
        hub.api("POST", "accounts", json={"username": name, "password": PASSWORD}, expect=201)
    hub.tokens = {name: hub.add_user(name) for name in (OWNER, VIEWER, EDITOR)}
    return hub


def test_configured_client_scopes_give_a_server_no_uws_hub_scope_of_its_visitors(chub):
    ws = shared_workspace(chub, chub.tokens[OWNER], {VIEWER: "viewer"}, name="visited")
    # the viewer's own workspace, and one shared with them by someone else
    own = shared_workspace(chub, chub.tokens[VIEWER], {}, name="own")
    job = launch(chub, chub.tokens[OWNER], ws)
    job = chub.wait_job(job["id"], chub.tokens[OWNER], {"running"} | ENDED, timeout=60)
    assert job["status"] == "running", job["reason"]
    try:
        logged_in = login(chub, VIEWER, PASSWORD)
        assert logged_in.ok, logged_in
        token = oauth_token(chub, logged_in.session, job, server_token(job))
        scopes = chub.api("GET", "user", token, expect=200)["scopes"]
        assert not [s for s in scopes if s.startswith(("custom:uws:", "admin:"))], scopes
        # what the config adds that uws-hub gives no meaning is left as configured
        assert f"read:users:groups!user={VIEWER}" in scopes, scopes
        for target in (own, ws):
            for method, path in (("GET", f"workspaces/{target['id']}/files/data.txt"), ("GET", "workspaces")):
                r = chub.request(method, path, token)
                assert r.status_code in (403, 404), (method, path, r.status_code, r.text[:200])
    finally:
        chub.api("POST", f"jobs/{job['id']}/stop", chub.tokens[OWNER], expect=202)
        chub.wait_job(job["id"], chub.tokens[OWNER], ENDED)


def running(hub, launcher: str, ws: dict) -> dict:
    job = launch(hub, hub.tokens[launcher], ws)
    job = hub.wait_job(job["id"], hub.tokens[launcher], {"running"} | ENDED, timeout=60)
    assert job["status"] == "running", job["reason"]
    return job


def stop(hub, job: dict) -> None:
    hub.api("POST", f"jobs/{job['id']}/stop", hub.tokens[OWNER], expect=202)
    hub.wait_job(job["id"], hub.tokens[OWNER], ENDED)


def test_the_token_of_a_server_an_editor_launched_gets_none_of_the_owners_configured_scopes(chub):
    private = shared_workspace(chub, chub.tokens[OWNER], {}, name="private")
    ws = shared_workspace(chub, chub.tokens[OWNER], {EDITOR: "editor"}, name="edited")
    job = running(chub, EDITOR, ws)
    try:
        token = server_token(job)  # what the editor's code reads in its environment
        me = chub.api("GET", "user", token, expect=200)
        assert me["name"] == OWNER
        assert not [s for s in me["scopes"] if s.startswith("custom:uws:")], me["scopes"]
        for path in ("workspaces", f"workspaces/{private['id']}/files/data.txt", f"workspaces/{ws['id']}"):
            r = chub.request("GET", path, token)
            assert r.status_code in (403, 404), (path, r.status_code, r.text[:200])
    finally:
        stop(chub, job)
    # the owner's own server gets what the config says, as before
    job = running(chub, OWNER, ws)
    try:
        r = chub.request("GET", f"workspaces/{private['id']}/files/data.txt", server_token(job))
        assert r.status_code == 200 and r.text == "data\n", (r.status_code, r.text[:200])
    finally:
        stop(chub, job)


#: the user role's scopes as uws-hub's admin guide listed them before custom:uws:write:servers
OLD_USER_SCOPES = {
    "access:services",
    "custom:uws:read:workspaces!user",
    "custom:uws:write:workspaces!user",
    "custom:uws:launch:jobs!user",
    "custom:uws:share:workspaces!user",
}


def test_a_user_role_without_uws_hubs_user_scopes_is_warned_of_at_startup(make_hub):
    # (an upgraded hub whose config sets the user role's scopes as the admin guide said)
    hub = make_hub(f"c.JupyterHub.extra_user_scopes = {OLD_USER_SCOPES!r}\n")
    assert "The 'user' role lacks custom:uws:write:servers!user" in hub.log_text()
    # uws-hub's default: no warning
    assert "The 'user' role lacks" not in make_hub("").log_text()
