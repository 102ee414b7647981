"""OpenID Connect and Globus logins on real hubs against a local OpenID provider
that speaks the real protocol (``oidc-provider-mock``, see tests/oidcmock.py):
end to end in Chromium, and the authorization-code flow driven over HTTP."""

from __future__ import annotations

import importlib.util
import json
import re
import secrets
import time

import pytest

from ..authutil import job_env, whoami
from ..oidcutil import (
    GLOBUS_ALLOWED_GROUP,
    GLOBUS_USERS,
    OIDC_USERS,
    READER,
    READER_TOKEN,
    Provider,
    globus_config,
    oauth_login,
)

pytest.importorskip("oauthenticator")
if importlib.util.find_spec("oidc_provider_mock") is None:  # runs in a subprocess: not imported here
    pytest.skip("oidc-provider-mock is not installed (pip install -e '.[test]')", allow_module_level=True)


# ---------------------------------------------------------------- generic OIDC
@pytest.fixture(scope="module")
def oidc(tmp_path_factory):
    provider = Provider(OIDC_USERS, tmp_path_factory.mktemp("oidc"))
    yield provider
    provider.stop()


@pytest.fixture(scope="module")
def oidc_hub(make_hub, oidc):
    config = (
        f"""
c.JupyterHub.authenticator_class = "uws-oidc"
c.WorkspaceOIDCAuthenticator.client_id = "uws-hub-test"
c.WorkspaceOIDCAuthenticator.client_secret = "uws-hub-secret"
c.WorkspaceOIDCAuthenticator.authorize_url = "{oidc.url}/oauth2/authorize"
c.WorkspaceOIDCAuthenticator.token_url = "{oidc.url}/oauth2/token"
c.WorkspaceOIDCAuthenticator.userdata_url = "{oidc.url}/userinfo"
# client credentials in an HTTP Basic header (the provider wants them so for refreshing)
c.WorkspaceOIDCAuthenticator.basic_auth = True
c.WorkspaceOIDCAuthenticator.allowed_domains = {{"uni.example"}}
c.WorkspaceOIDCAuthenticator.manage_groups = True
c.WorkspaceOIDCAuthenticator.auth_state_groups_key = "oauth_user.groups"
c.WorkspaceOIDCAuthenticator.allowed_groups = {{"physics"}}
c.WorkspaceOIDCAuthenticator.admin_groups = {{"hub-admins"}}
c.WorkspaceOIDCAuthenticator.pass_tokens_to_jobs = True
# the provider's tokens live an hour: refresh whatever expires within two
c.WorkspaceOIDCAuthenticator.token_refresh_margin_seconds = 7200
"""
        + READER
    )
    return make_hub(config, env={"JUPYTERHUB_CRYPT_KEY": secrets.token_hex(32)})


@pytest.mark.browser
def test_oidc_login_in_the_browser(oidc_hub, browser):
    from playwright.sync_api import expect

    page = browser.new_context().new_page()
    page.set_default_timeout(30_000)
    page.goto(oidc_hub.url + "/hub/workspaces")
    page.wait_for_url(re.compile(r".*/hub/login.*"))
    page.click("text=Sign in with OpenID Connect")
    # the provider's consent page: pick the user
    expect(page.locator("h1")).to_have_text("Authorize Client")
    page.click("button[value='u-alice']")
    page.wait_for_url(re.compile(r".*/hub/workspaces$"))
    expect(page.locator("h1")).to_have_text("My workspaces")
    expect(page.locator("#uws-user")).to_contain_text("Alice Oidc")
    expect(page.locator("#uws-user")).to_have_attribute("title", "alice@uni.example")

    # someone from another domain, in no allowed group, is turned away
    other = browser.new_context().new_page()
    other.goto(oidc_hub.url + "/hub/oauth_login")
    other.click("button[value='u-mallory']")
    expect(other.locator("body")).to_contain_text("not currently authorized")
    assert "/hub/workspaces" not in other.url


def test_oidc_identity_groups_and_admins(oidc_hub):
    r = oauth_login(oidc_hub, "u-alice")
    assert r.status_code == 302 and "/hub/" in r.headers["Location"], r.text
    me = whoami(oidc_hub, r.session)
    assert me["name"] == "oidcalice" and me["admin"] is False
    assert me["user_info"] == {
        "email": "alice@uni.example",
        "display_name": "Alice Oidc",
        "external_ids": {"oidc": "u-alice"},
    }
    # refused: other domain; the right domain but an unverified address
    assert oauth_login(oidc_hub, "u-mallory").status_code == 403
    assert oauth_login(oidc_hub, "u-unverified").status_code == 403
    # let in by a group from the provider's claims, which become JupyterHub groups
    r = oauth_login(oidc_hub, "u-gus")
    assert r.status_code == 302
    gus = whoami(oidc_hub, r.session)
    assert gus["name"] == "gus" and gus["groups"] == ["physics"]
    ada = whoami(oidc_hub, oauth_login(oidc_hub, "u-ada").session)
    assert ada["admin"] is True


def test_a_user_name_the_provider_gives_someone_else_stays_with_its_person(oidc_hub):
    """A provider's user names change hands (``preferred_username`` is the user's to
    change): a login of another person (another ``sub``) with the name of a hub user is
    refused, before that user is touched, and saying what to do; earlier versions made it
    that hub user, with their workspaces, jobs and tokens. The first person still logs in."""
    first = oauth_login(oidc_hub, "u-alice")
    assert first.status_code == 302, first.text
    token = oidc_hub.api("POST", "users/oidcalice/tokens", json={"note": "test"}, expect=201)["token"]
    ws = oidc_hub.api("POST", "workspaces", token, json={"name": "alice's own"}, expect=201)
    other = oauth_login(oidc_hub, "u-alice-2")
    assert other.status_code == 403, other.text
    assert "belongs to another person on this hub" in other.text
    assert whoami(oidc_hub, other.session) is None
    user = oidc_hub.api("GET", "users/oidcalice", expect=200)
    assert user["user_info"]["external_ids"] == {"oidc": "u-alice"}
    assert user["user_info"]["email"] == "alice@uni.example"
    assert "Login refused for oidcalice: their oidc id at the identity provider is u-alice-2" in oidc_hub.log_text()
    again = oauth_login(oidc_hub, "u-alice")
    assert again.status_code == 302
    assert whoami(oidc_hub, again.session)["name"] == "oidcalice"
    assert oidc_hub.api("GET", f"workspaces/{ws['id']}", token, expect=200)["name"] == "alice's own"


def test_a_look_alike_name_the_provider_gives_is_refused(oidc_hub):
    """``oidcаlice`` (a Cyrillic а) is another user than ``oidcalice``, whom nobody tells
    apart on a page or in a share dialog: a provider's claim of such a name makes no user
    (a 400 that says why; see tests/integration/test_auth_local.py for the other paths)."""
    r = oauth_login(oidc_hub, "u-lookalike")
    assert r.status_code == 400, r.text
    assert "it mixes the letters of scripts (cyrillic, latin)" in r.text
    assert oidc_hub.request("GET", "users/oidc\u0430lice", oidc_hub.admin_token).status_code == 404


def test_oidc_tokens_are_kept_refreshed_and_handed_to_jobs(oidc_hub, oidc):
    r = oauth_login(oidc_hub, "u-alice")
    assert r.status_code == 302
    state = oidc_hub.api("GET", "users/oidcalice", READER_TOKEN, expect=200)["auth_state"]
    first = state["access_token"]
    assert state["refresh_token"] and state["expires_at"] > time.time() + 3000
    assert oidc.token_works(first)

    token = oidc_hub.api("POST", "users/oidcalice/tokens", json={"note": "test"}, expect=201)["token"]
    env = job_env(oidc_hub, token)
    # refreshed before the job started (it expired within the margin): a new, working token
    handed = env["UWS_OAUTH_ACCESS_TOKEN"]
    assert handed != first
    assert oidc.token_works(handed)
    assert not oidc.token_works(first)
    assert int(env["UWS_OAUTH_ACCESS_TOKEN_EXPIRES_AT"]) > time.time() + 3000
    state = oidc_hub.api("GET", "users/oidcalice", READER_TOKEN, expect=200)["auth_state"]
    assert state["access_token"] == handed
    assert "Refreshing the access token of oidcalice" in oidc_hub.log_text()
    # no refresh token, no pickle in the job
    assert state["refresh_token"] not in json.dumps(env)
    assert "GLOBUS_DATA" not in env


def test_an_editors_job_gets_the_editors_tokens_never_the_owners(oidc_hub, oidc):
    """A job runs for its launcher: an editor's job in the owner's workspace is handed the
    editor's own provider tokens (refreshed for the editor), not the owner's."""
    oauth_login(oidc_hub, "u-alice")
    oauth_login(oidc_hub, "u-gus")
    alice = oidc_hub.api("POST", "users/oidcalice/tokens", json={"note": "test"}, expect=201)["token"]
    gus = oidc_hub.api("POST", "users/gus/tokens", json={"note": "test"}, expect=201)["token"]
    ws = oidc_hub.api("POST", "workspaces", alice, json={"name": "shared with gus"}, expect=201)
    oidc_hub.api("POST", f"workspaces/{ws['id']}/shares", alice, json={"user": "gus", "level": "editor"}, expect=201)

    job = oidc_hub.api("POST", f"workspaces/{ws['id']}/jobs", gus, json={"job_type": "printenv"}, expect=202)
    job = oidc_hub.wait_job(job["id"], gus, {"failed", "completed", "cancelled"})
    assert job["launcher"] == "gus"
    output = (oidc_hub.workdir / "uws-job-logs" / f"job-{job['id']}.log").read_text()
    env = json.loads(re.search(r"^ENV=(\{.*\})$", output, re.M).group(1))
    handed = env["UWS_OAUTH_ACCESS_TOKEN"]
    states = {
        name: oidc_hub.api("GET", f"users/{name}", READER_TOKEN, expect=200)["auth_state"]
        for name in ("gus", "oidcalice")
    }
    assert handed == states["gus"]["access_token"] and oidc.token_works(handed)
    assert states["oidcalice"]["access_token"] not in json.dumps(env)
    assert env["UWS_LAUNCHER"] == "gus"


# ---------------------------------------------------------------- Globus
@pytest.fixture(scope="module")
def globus(tmp_path_factory):
    provider = Provider(GLOBUS_USERS, tmp_path_factory.mktemp("globus"), globus=True)
    yield provider
    provider.stop()


@pytest.fixture(scope="module")
def globus_hub(make_hub, globus):
    return make_hub(globus_config(globus), env={"JUPYTERHUB_CRYPT_KEY": secrets.token_hex(32)})


def test_globus_login_maps_the_identity(globus_hub, globus):
    r = oauth_login(globus_hub, GLOBUS_USERS[0]["sub"])
    assert r.status_code == 302, r.text
    me = whoami(globus_hub, r.session)
    assert me["name"] == "gina" and me["admin"] is False
    assert me["user_info"] == {
        "email": "gina@uni.example",
        "display_name": "Gina Globus",
        "external_ids": {"globus": GLOBUS_USERS[0]["sub"]},
    }
    # the authorization request asked Globus for what it needs
    state = globus_hub.api("GET", "users/gina", READER_TOKEN, expect=200)["auth_state"]
    assert state["globus_groups"] == [GLOBUS_ALLOWED_GROUP]
    assert set(state["tokens"]) == {"transfer.api.globus.org"}
    assert state["tokens"]["transfer.api.globus.org"]["refresh_token"]


def test_globus_allow_rules(globus_hub):
    # in no allowed Globus group
    assert oauth_login(globus_hub, GLOBUS_USERS[1]["sub"]).status_code == 403
    # from another identity provider, with a clear message
    r = oauth_login(globus_hub, GLOBUS_USERS[2]["sub"])
    assert r.status_code == 403 and "restricted to globusid.org accounts" in r.text
    # the admin group makes admins
    root = oauth_login(globus_hub, GLOBUS_USERS[3]["sub"])
    assert root.status_code == 302 and whoami(globus_hub, root.session)["admin"] is True


def test_globus_transfer_tokens_reach_jobs_refreshed_as_json(globus_hub, globus):
    assert oauth_login(globus_hub, GLOBUS_USERS[0]["sub"]).status_code == 302
    state = globus_hub.api("GET", "users/gina", READER_TOKEN, expect=200)["auth_state"]
    first = state["tokens"]["transfer.api.globus.org"]["access_token"]
    token = globus_hub.api("POST", "users/gina/tokens", json={"note": "test"}, expect=201)["token"]
    env = job_env(globus_hub, token)

    tokens = json.loads(env["UWS_GLOBUS_TOKENS"])
    assert set(tokens) == {"transfer.api.globus.org"}
    transfer = tokens["transfer.api.globus.org"]
    assert set(transfer) == {"access_token", "expires_at", "scope", "token_type", "resource_server"}
    assert env["GLOBUS_TRANSFER_ACCESS_TOKEN"] == transfer["access_token"]
    assert env["GLOBUS_LOCAL_ENDPOINT"] == "endpoint-0001"
    assert "GLOBUS_DATA" not in env
    # refreshed before the job started, with its own refresh token: new and working
    assert transfer["access_token"] != first
    assert globus.token_works(transfer["access_token"])
    assert transfer["expires_at"] > time.time() + 3000
    assert "Refreshed the transfer.api.globus.org token of gina" in globus_hub.log_text()
    # refresh tokens stay in the hub
    state = globus_hub.api("GET", "users/gina", READER_TOKEN, expect=200)["auth_state"]
    assert state["tokens"]["transfer.api.globus.org"]["refresh_token"] not in json.dumps(env)
