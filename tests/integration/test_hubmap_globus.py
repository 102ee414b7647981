"""``POST tokens`` with a Globus token, as the HuBMAP portal's Flask server sends it at
login (``{"auth_token": <the user's Globus groups token>}``), on a hub that logs in
with Globus, against the OpenID provider standing in for Globus Auth
(tests/oidcmock.py: token introspection, the Groups API). And a hub whose
authenticator has no exchange says so."""

from __future__ import annotations

import secrets
from urllib.parse import parse_qs, urlencode, urlparse

import pytest
import requests

from ..helpers import MINIMAL_CMD
from ..hubmaputil import ORIGIN, Portal, exchange_token
from ..oidcutil import GLOBUS_USERS, READER_TOKEN, Provider, globus_config, oauth_login

GINA, HENRY, IVAN, ROOT, GINA_2 = (u["sub"] for u in GLOBUS_USERS)


@pytest.fixture(scope="module")
def globus(tmp_path_factory):
    provider = Provider(GLOBUS_USERS, tmp_path_factory.mktemp("globus"), globus=True)
    yield provider
    provider.stop()


@pytest.fixture(scope="module")
def globus_hub(make_hub, globus):
    config = (
        globus_config(globus)
        + f"""
c.UWSHub.job_types = {{"minimal": {{"display_name": "Minimal test server", "cmd": {MINIMAL_CMD!r}}}}}
c.HubMAPCompat.enabled = True
c.HubMAPCompat.cors_origins = [{ORIGIN!r}]
"""
    )
    return make_hub(config, env={"JUPYTERHUB_CRYPT_KEY": secrets.token_hex(32)})


def groups_token(provider: Provider, sub: str) -> str:
    """A Globus Groups token of ``sub``, as the portal holds one after its own Globus login
    (the authorization-code flow of another client, the portal, at the provider)."""
    s = requests.Session()
    redirect = "http://127.0.0.1:9/portal-callback"
    query = urlencode(
        {
            "response_type": "code",
            "client_id": "hubmap-portal",
            "redirect_uri": redirect,
            "scope": "openid profile email",
            "state": "portal",
        }
    )
    r = s.post(f"{provider.url}/oauth2/authorize?{query}", data={"sub": sub}, allow_redirects=False, timeout=30)
    assert r.status_code == 302, r.text
    code = parse_qs(urlparse(r.headers["Location"]).query)["code"][0]
    r = s.post(
        f"{provider.url}/oauth2/token",
        auth=("hubmap-portal", "portal-secret"),
        timeout=30,
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": redirect},
    )
    assert r.status_code == 200, r.text
    [token] = [t["access_token"] for t in r.json()["other_tokens"] if t["resource_server"] == "groups.api.globus.org"]
    return token


def test_globus_token_for_a_hub_token(globus_hub, globus):
    """A new user, created by the exchange as a login would create them, launches a job."""
    r = exchange_token(globus_hub, {"auth_token": groups_token(globus, GINA)})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["success"], body["message"]) == (True, "Successful authentication.")
    user = globus_hub.api("GET", "users/gina", expect=200)
    assert user["user_info"]["email"] == "gina@uni.example"
    assert user["user_info"]["external_ids"] == {"globus": GINA}
    assert user["admin"] is False

    portal = Portal(globus_hub, body["token"])
    ws = portal.create({"name": "globus ws", "description": "", "workspace_details": {"files": [], "symlinks": []}})
    r = portal.start(ws["id"], "minimal", {})
    assert r.status_code == 200, r.text
    job = portal.wait_for_job(ws["id"], {"running"})
    portal.stop(job["id"])
    portal.wait_for_job(ws["id"], {"complete"})


def test_globus_refusals(globus_hub, globus):
    # in no allowed Globus group: HuBMAP's 403
    r = exchange_token(globus_hub, {"auth_token": groups_token(globus, HENRY)})
    assert r.status_code == 403
    assert r.json() == {
        "success": False,
        "message": "User is not a member of any allowed Globus groups. Please contact your administrator for access.",
    }
    # an identity from another provider, with the login's message
    r = exchange_token(globus_hub, {"auth_token": groups_token(globus, IVAN)})
    assert r.status_code == 403 and "restricted to globusid.org accounts" in r.json()["message"]
    assert globus_hub.request("GET", "users/henry", globus_hub.admin_token).status_code == 404
    # not a token Globus knows
    r = exchange_token(globus_hub, {"auth_token": "forged"})
    assert r.status_code == 401 and r.json()["message"] == "Incorrect authentication credentials."
    r = exchange_token(globus_hub, {"client_token": globus_hub.admin_token, "user_info": {"username": "x"}})
    assert (r.status_code, r.json()["message"]) == (400, "Missing auth_token.")


def test_globus_exchange_of_another_person_with_a_users_name_says_why(globus_hub, globus):
    """Another person whom Globus names as a hub user is refused with the login's words
    (earlier versions answered the message template, ``"%s"``)."""
    assert exchange_token(globus_hub, {"auth_token": groups_token(globus, GINA)}).status_code == 200
    r = exchange_token(globus_hub, {"auth_token": groups_token(globus, GINA_2)})
    assert r.status_code == 403, r.text
    assert r.json()["success"] is False
    assert r.json()["message"].startswith("The user name 'gina' belongs to another person on this hub")
    user = globus_hub.api("GET", "users/gina", expect=200)
    assert user["user_info"]["external_ids"] == {"globus": GINA}


def test_globus_exchange_keeps_a_users_login_tokens(globus_hub, globus):
    """Someone who logged in on the hub keeps the tokens of that login (jobs get them)."""
    assert oauth_login(globus_hub, ROOT).status_code == 302
    before = globus_hub.api("GET", "users/root", READER_TOKEN, expect=200)
    assert before["admin"] is True
    r = exchange_token(globus_hub, {"auth_token": groups_token(globus, ROOT)})
    assert r.status_code == 200, r.text
    after = globus_hub.api("GET", "users/root", READER_TOKEN, expect=200)
    assert after["auth_state"]["tokens"] == before["auth_state"]["tokens"]
    assert after["auth_state"]["tokens"]["transfer.api.globus.org"]["refresh_token"]


def test_other_authenticators_have_no_exchange(make_hub):
    hub = make_hub('c.JupyterHub.authenticator_class = "dummy"\nc.HubMAPCompat.enabled = True\n')
    try:
        r = exchange_token(hub, {"client_token": hub.admin_token, "user_info": {"username": "a", "email": "a@b"}})
        assert r.status_code == 400
        assert r.json()["message"].startswith("This hub logs in with DummyAuthenticator, which has no token exchange")
    finally:
        hub.stop()
