"""API tokens: JupyterHub's header and the older HuBMAP workspaces server's
``UWS-Authorization: Token …``, scopes, and the token page (create, use, revoke)."""

from __future__ import annotations

import re

import pytest
import requests

from .. import browserutil
from ..helpers import ADMIN_PASSWORD

READ_ONLY = ["custom:uws:read:workspaces!user"]


def uws_get(hub, path, header_value, method="GET", **kw):
    return requests.request(
        method, hub.url + "/hub/api/" + path, headers={"UWS-Authorization": header_value}, timeout=30, **kw
    )


def test_uws_authorization_header_carries_a_jupyterhub_token(hub, alice):
    r = uws_get(hub, "workspaces", f"Token {alice}")
    assert r.status_code == 200, r.text
    assert "items" in r.json()
    # writes too, with no XSRF token: it is token authentication
    r = uws_get(hub, "workspaces", f"Token {alice}", "POST", json={"name": "from an old client"})
    assert r.status_code == 201, r.text
    wid = r.json()["id"]
    assert uws_get(hub, f"workspaces/{wid}", f"token {alice}").json()["name"] == "from an old client"
    assert uws_get(hub, f"workspaces/{wid}", f"Token {alice}", "DELETE").status_code in (200, 202, 204)
    # bad tokens and bad headers are refused
    assert uws_get(hub, "workspaces", "Token not-a-token").status_code == 403
    assert uws_get(hub, "workspaces", alice).status_code == 403
    assert uws_get(hub, "workspaces", f"Basic {alice}").status_code == 403


def test_bearer_and_token_schemes(hub, alice):
    for scheme in ("token", "Token", "Bearer", "bearer"):
        r = requests.get(hub.url + "/hub/api/workspaces", headers={"Authorization": f"{scheme} {alice}"}, timeout=30)
        assert r.status_code == 200, (scheme, r.text)


def test_uws_header_is_only_for_uws_hubs_api(hub, alice):
    """JupyterHub's own API keeps its own header (the compatibility is for workspace clients)."""
    assert uws_get(hub, "user", f"Token {alice}").status_code == 403
    assert hub.request("GET", "user", alice).status_code == 200


@pytest.mark.parametrize("header", ["Authorization", "UWS-Authorization"])
def test_read_only_token_cannot_launch_or_delete(hub, alice, workspace, header):
    token = hub.api("POST", "users/uwsalice/tokens", json={"scopes": READ_ONLY, "note": "read only"}, expect=201)[
        "token"
    ]
    scheme = "token" if header == "Authorization" else "Token"
    h = {header: f"{scheme} {token}"}
    wid = workspace["id"]
    base = hub.url + "/hub/api/"
    assert requests.get(base + f"workspaces/{wid}", headers=h, timeout=30).status_code == 200
    r = requests.post(base + f"workspaces/{wid}/jobs", headers=h, json={"job_type": "jupyterlab"}, timeout=30)
    assert r.status_code == 403 and "custom:uws:launch:jobs" in r.json()["message"]
    r = requests.delete(base + f"workspaces/{wid}", headers=h, timeout=30)
    assert r.status_code == 403 and "custom:uws:write:workspaces" in r.json()["message"]
    r = requests.post(base + "workspaces", headers=h, json={"name": "nope"}, timeout=30)
    assert r.status_code == 403
    # JupyterHub's own server API refuses it too
    r = hub.request("POST", "users/uwsalice/servers/x", token)
    assert r.status_code == 403
    ws = hub.api("GET", f"workspaces/{wid}", alice, expect=200)
    assert ws["status"] == "idle" and ws["active_job"] is None


@pytest.mark.browser
def test_users_create_and_revoke_tokens_on_the_token_page(hub, system_users, browser):
    from playwright.sync_api import expect

    _, page = browserutil.login(hub, browser, "uwsadmin", ADMIN_PASSWORD)
    page.click("nav >> text=Token")
    page.wait_for_url(re.compile(r".*/hub/token$"))
    page.fill("#token-note", "read-only from the page")
    page.fill("#token-scopes", " ".join(READ_ONLY))
    page.click("#request-token-form button[type=submit]")
    expect(page.locator("#token-area")).to_be_visible()
    token = page.locator("#token-result").inner_text().strip()
    assert re.fullmatch(r"[0-9a-f]{32}", token), token

    # it works, with its scopes only, through both headers
    assert uws_get(hub, "workspaces", f"Token {token}").status_code == 200
    assert hub.request("GET", "workspaces", token).status_code == 200
    assert uws_get(hub, "workspaces", f"Token {token}", "POST", json={"name": "no"}).status_code == 403

    # the list shows it; revoke it there
    page.reload()
    row = page.locator("#api-tokens-table tr.token-row", has_text="read-only from the page")
    expect(row).to_have_count(1)
    row.locator(".revoke-token-btn").click()
    expect(row).to_have_count(0)
    assert uws_get(hub, "workspaces", f"Token {token}").status_code == 403
    assert hub.request("GET", "workspaces", token).status_code == 403
