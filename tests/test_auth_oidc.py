"""OpenID Connect and Globus logins on real hubs against a local OpenID provider
that speaks the real protocol (``oidc-provider-mock``, see tests/oidcmock.py):
end to end in Chromium, and the authorization-code flow driven over HTTP."""

from __future__ import annotations

import importlib.util
import json
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from .authutil import PRINTENV_JOB_TYPE, job_env, whoami
from .hubutil import REPO, free_port, wait_for

pytest.importorskip("oauthenticator")
if importlib.util.find_spec("oidc_provider_mock") is None:  # runs in a subprocess: not imported here
    pytest.skip("oidc-provider-mock is not installed (pip install -e '.[test]')", allow_module_level=True)

GLOBUS_ALLOWED_GROUP = "6e8f0a1c-0000-4000-8000-00000000a110"
GLOBUS_ADMIN_GROUP = "6e8f0a1c-0000-4000-8000-0000000ad317"

OIDC_USERS = [
    {"sub": "u-alice", "preferred_username": "oidcalice", "email": "alice@uni.example", "email_verified": True,
     "name": "Alice Oidc"},
    {"sub": "u-mallory", "preferred_username": "mallory", "email": "mallory@elsewhere.example", "name": "Mallory"},
    {"sub": "u-unverified", "preferred_username": "sneaky", "email": "sneaky@uni.example", "email_verified": False},
    {"sub": "u-gus", "preferred_username": "gus", "email": "gus@elsewhere.example", "groups": ["physics"]},
    {"sub": "u-ada", "preferred_username": "ada", "email": "ada@elsewhere.example", "groups": ["hub-admins"]},
]

GLOBUS_USERS = [
    {"sub": "b1f0c5a2-0000-4000-8000-000000000001", "preferred_username": "gina@globusid.org",
     "email": "gina@uni.example", "name": "Gina Globus", "globus_groups": [GLOBUS_ALLOWED_GROUP]},
    {"sub": "b1f0c5a2-0000-4000-8000-000000000002", "preferred_username": "henry@globusid.org",
     "email": "henry@uni.example", "name": "Henry", "globus_groups": []},
    {"sub": "b1f0c5a2-0000-4000-8000-000000000003", "preferred_username": "ivan@other.org",
     "email": "ivan@other.org", "name": "Ivan", "globus_groups": [GLOBUS_ALLOWED_GROUP]},
    {"sub": "b1f0c5a2-0000-4000-8000-000000000004", "preferred_username": "root@globusid.org",
     "email": "root@uni.example", "name": "Root", "globus_groups": [GLOBUS_ADMIN_GROUP]},
]


class Provider:
    """tests/oidcmock.py in a subprocess, on a free port."""

    def __init__(self, users: list[dict], workdir: Path, globus: bool = False):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, str(REPO / "tests" / "oidcmock.py"), "--port", str(self.port),
               "--users", json.dumps(users)]
        if globus:
            cmd.append("--globus")
        self.log = workdir / "oidc-provider.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

        def up():
            assert self.proc.poll() is None, self.log.read_text()
            try:
                return requests.get(self.url + "/.well-known/openid-configuration", timeout=2).ok
            except requests.RequestException:
                return False

        wait_for(up, 30, what="the OIDC provider")

    def token_works(self, access_token: str) -> bool:
        r = requests.get(self.url + "/userinfo", headers={"Authorization": f"Bearer {access_token}"}, timeout=10)
        return r.status_code == 200

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


READER_TOKEN = secrets.token_hex(16)
READER = f"""
c.JupyterHub.services.append({{"name": "auth-state-reader", "api_token": "{READER_TOKEN}"}})
c.JupyterHub.load_roles.append({{"name": "auth-state-reader", "scopes": ["admin:auth_state", "read:users"],
                                 "services": ["auth-state-reader"]}})
c.Authenticator.enable_auth_state = True
c.UWSHub.job_types = {{"printenv": {PRINTENV_JOB_TYPE!r}}}
"""


def oauth_login(hub, sub: str, session: requests.Session | None = None) -> requests.Response:
    """The authorization-code flow over HTTP, as a browser follows it: the hub's
    /hub/oauth_login, the provider's consent form (choosing ``sub``), the hub's callback."""
    s = session or requests.Session()
    r = s.get(hub.url + "/hub/oauth_login", allow_redirects=False, timeout=30)
    assert r.status_code == 302, r.text
    authorize = r.headers["Location"]
    r = s.post(authorize, data={"sub": sub}, allow_redirects=False, timeout=30)
    assert r.status_code == 302, r.text
    callback = r.headers["Location"]
    assert callback.startswith(hub.url + "/hub/oauth_callback?"), callback
    r = s.get(callback, allow_redirects=False, timeout=60)
    r.session = s
    return r


# ---------------------------------------------------------------- generic OIDC
@pytest.fixture(scope="module")
def oidc(tmp_path_factory):
    provider = Provider(OIDC_USERS, tmp_path_factory.mktemp("oidc"))
    yield provider
    provider.stop()


@pytest.fixture(scope="module")
def oidc_hub(make_hub, oidc):
    config = f"""
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
""" + READER
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


# ---------------------------------------------------------------- Globus
@pytest.fixture(scope="module")
def globus(tmp_path_factory):
    provider = Provider(GLOBUS_USERS, tmp_path_factory.mktemp("globus"), globus=True)
    yield provider
    provider.stop()


def globus_config(globus: Provider) -> str:
    """A hub that logs in with Globus at the stand-in provider (also tests/test_hubmap_globus.py's)."""
    return f"""
c.JupyterHub.authenticator_class = "uws-globus"
c.WorkspaceGlobusAuthenticator.client_id = "uws-hub-test"
c.WorkspaceGlobusAuthenticator.client_secret = "uws-hub-secret"
c.WorkspaceGlobusAuthenticator.authorize_url = "{globus.url}/oauth2/authorize"
c.WorkspaceGlobusAuthenticator.token_url = "{globus.url}/oauth2/token"
c.WorkspaceGlobusAuthenticator.userdata_url = "{globus.url}/userinfo"
c.WorkspaceGlobusAuthenticator.basic_auth = True
c.WorkspaceGlobusAuthenticator.globus_groups_url = "{globus.url}/v2/groups/my_groups"
c.WorkspaceGlobusAuthenticator.revocation_url = "{globus.url}/oauth2/revoke"
c.WorkspaceGlobusAuthenticator.identity_provider = "globusid.org"
c.WorkspaceGlobusAuthenticator.allowed_globus_groups = {{"{GLOBUS_ALLOWED_GROUP}"}}
c.WorkspaceGlobusAuthenticator.admin_globus_groups = {{"{GLOBUS_ADMIN_GROUP}"}}
c.WorkspaceGlobusAuthenticator.globus_local_endpoint = "endpoint-0001"
c.WorkspaceGlobusAuthenticator.pass_tokens_to_jobs = True
c.WorkspaceGlobusAuthenticator.token_refresh_margin_seconds = 7200
c.WorkspaceGlobusAuthenticator.introspect_url = "{globus.url}/v2/oauth2/token/introspect"
""" + READER


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
