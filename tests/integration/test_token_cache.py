"""uws-hub's API handlers find a request's token by a remembered id (uws_hub.tokenids,
instead of JupyterHub's ``APIToken.find``): against a real hub, every way JupyterHub
refuses a token refuses it at once here too, whatever was remembered of it: revoked
through the API, its user deleted, expired, its server stopped; a token given the id of
a deleted one is its own; the owner's roles changed; tokens that look alike
(review3: these hold on the code of today and after the token cache; they guard it)."""

from __future__ import annotations

import time
import uuid

import pytest
import requests

from ..helpers import MINIMAL_CMD
from ..hubutil import wait_for

TERMINAL = {"completed", "failed", "cancelled"}
READ = ["custom:uws:read:workspaces!user"]

CONFIG = f"""
c.UWSHub.job_types = {{"minimal": {{"display_name": "Minimal test server", "cmd": {MINIMAL_CMD!r}}}}}
# the server's own token may read its user's workspaces: what it reaches shows whether it is taken
c.Spawner.server_token_scopes = {READ!r}
c.Authenticator.admin_users = {{"tokadmin"}}
"""


@pytest.fixture(scope="module")
def thub(make_hub):
    return make_hub(CONFIG)


def user(hub, name: str | None = None) -> str:
    name = name or f"tok{uuid.uuid4().hex[:8]}"
    hub.api("POST", f"users/{name}", expect=201)
    return name


def token_of(hub, name: str, **body) -> dict:
    return hub.api("POST", f"users/{name}/tokens", json={"note": "test", **body}, expect=201)


def workspace_names(hub, token: str, header: str = "Authorization") -> set[str] | None:
    """The workspaces ``token`` lists through uws-hub's API; None if it is refused."""
    scheme = "token" if header == "Authorization" else "Token"
    r = requests.get(hub.url + "/hub/api/workspaces", headers={header: f"{scheme} {token}"}, timeout=30)
    assert r.status_code in (200, 403), r.text
    return {ws["name"] for ws in r.json()["items"]} if r.status_code == 200 else None


def own_workspace(hub, token: str) -> str:
    name = f"tok {uuid.uuid4().hex[:8]}"
    hub.api("POST", "workspaces", token, json={"name": name}, expect=201)
    return name


def test_a_token_revoked_through_the_api_is_refused_at_once(thub):
    name = user(thub)
    token = token_of(thub, name, scopes=READ)
    for _ in range(3):  # remembered from the first
        assert workspace_names(thub, token["token"]) == set()
    thub.api("DELETE", f"users/{name}/tokens/{token['id']}", expect=204)
    assert workspace_names(thub, token["token"]) is None
    assert workspace_names(thub, token["token"], header="UWS-Authorization") is None


def test_a_deleted_users_tokens_are_refused_and_not_their_successors(thub):
    name = user(thub)
    token = token_of(thub, name)["token"]
    mine = own_workspace(thub, token)
    assert workspace_names(thub, token) == {mine}
    thub.api("DELETE", f"users/{name}", expect=204)
    assert workspace_names(thub, token) is None
    # a new user of the same name: the old token is not theirs either
    user(thub, name)
    fresh = token_of(thub, name)["token"]
    assert workspace_names(thub, fresh) == set()
    assert workspace_names(thub, token) is None


def test_an_expired_token_is_refused(thub):
    name = user(thub)
    token = token_of(thub, name, scopes=READ, expires_in=2)["token"]
    assert workspace_names(thub, token) == set()
    # a wait for the expiry (JupyterHub's own lookup refuses it from then on): no timing asserted
    wait_for(lambda: workspace_names(thub, token) is None, 30, interval=0.5, what="the token to expire")
    time.sleep(1)
    assert workspace_names(thub, token) is None


def test_a_token_given_the_id_of_a_deleted_one_is_its_own(thub):
    """SQLite gives the highest id again once its row is gone: the new token, another
    user's, gets the id the remembered one had (on PostgreSQL ids are not reused: the
    same answers hold)."""
    ann, ben = user(thub), user(thub)
    first = token_of(thub, ann)
    anns = own_workspace(thub, first["token"])
    assert workspace_names(thub, first["token"]) == {anns}
    thub.api("DELETE", f"users/{ann}/tokens/{first['id']}", expect=204)
    second = token_of(thub, ben)
    if thub.db_url.startswith("sqlite"):
        assert second["id"] == first["id"]
    bens = own_workspace(thub, second["token"])
    assert workspace_names(thub, second["token"]) == {bens}
    assert workspace_names(thub, first["token"]) is None
    assert workspace_names(thub, second["token"]) == {bens}


def test_a_servers_token_is_refused_once_the_server_stopped(thub):
    name = user(thub)
    token = token_of(thub, name)["token"]
    ws = thub.api("POST", "workspaces", token, json={"name": f"tok {uuid.uuid4().hex[:8]}"}, expect=201)
    job = thub.api("POST", f"workspaces/{ws['id']}/jobs", token, json={"job_type": "minimal"}, expect=202)
    job = thub.wait_job(job["id"], token, {"running"} | TERMINAL)
    assert job["status"] == "running", job["reason"]
    with open(f"/proc/{job['resource_id']}/environ", "rb") as f:
        env = f.read().split(b"\0")
    [server_token] = [v.split(b"=", 1)[1].decode() for v in env if v.startswith(b"JUPYTERHUB_API_TOKEN=")]
    for _ in range(2):
        assert workspace_names(thub, server_token) == {ws["name"]}
    thub.api("POST", f"jobs/{job['id']}/stop", token)
    assert thub.wait_job(job["id"], token, TERMINAL)["status"] in TERMINAL
    assert workspace_names(thub, server_token) is None
    # the user's own token is untouched
    assert workspace_names(thub, token) == {ws["name"]}


def test_the_owners_roles_are_read_afresh_not_remembered_with_the_token(thub):
    ann, ben = user(thub), user(thub)
    anns, bens = token_of(thub, ann)["token"], token_of(thub, ben)["token"]
    theirs = thub.api("POST", "workspaces", bens, json={"name": f"tok {uuid.uuid4().hex[:8]}"}, expect=201)
    admin = thub.add_user("tokadmin")
    assert thub.request("GET", f"workspaces/{theirs['id']}", anns).status_code == 404
    thub.api("PATCH", f"users/{ann}", admin, json={"admin": True}, expect=200)
    assert thub.request("GET", f"workspaces/{theirs['id']}", anns).status_code == 200
    thub.api("PATCH", f"users/{ann}", admin, json={"admin": False}, expect=200)
    assert thub.request("GET", f"workspaces/{theirs['id']}", anns).status_code == 404


def test_tokens_that_look_alike_are_not_taken_for_each_other(thub):
    name = user(thub)
    token = token_of(thub, name, scopes=READ)["token"]
    assert workspace_names(thub, token) == set()
    # the same prefix (JupyterHub's lookup key), one character changed, cut short, longer
    for fake in (token[:-1] + ("0" if token[-1] != "0" else "1"), token[:-1], token + "0", token[:4] + "x" * 28):
        assert workspace_names(thub, fake) is None, fake
    # and none of them, tried first, spoils the real one
    other = token_of(thub, name, scopes=READ)["token"]
    assert workspace_names(thub, other[:-1] + ("0" if other[-1] != "0" else "1")) is None
    assert workspace_names(thub, other) == set()
    assert workspace_names(thub, token) == set()
