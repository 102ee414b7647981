"""The OpenID provider stand-in (tests/oidcmock.py, real protocol) and what tests that log
in through it share: its users, a generic OIDC or Globus hub's configuration, the
authorization-code flow over HTTP."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

import requests

from .authutil import PRINTENV_JOB_TYPE
from .hubutil import REPO, free_port, wait_for

GLOBUS_ALLOWED_GROUP = "6e8f0a1c-0000-4000-8000-00000000a110"
GLOBUS_ADMIN_GROUP = "6e8f0a1c-0000-4000-8000-0000000ad317"

OIDC_USERS = [
    {
        "sub": "u-alice",
        "preferred_username": "oidcalice",
        "email": "alice@uni.example",
        "email_verified": True,
        "name": "Alice Oidc",
    },
    # another person, whom the provider now names as it named alice (she renamed herself)
    {
        "sub": "u-alice-2",
        "preferred_username": "oidcalice",
        "email": "alice.two@uni.example",
        "email_verified": True,
        "name": "Another Alice",
    },
    {"sub": "u-mallory", "preferred_username": "mallory", "email": "mallory@elsewhere.example", "name": "Mallory"},
    {"sub": "u-unverified", "preferred_username": "sneaky", "email": "sneaky@uni.example", "email_verified": False},
    {"sub": "u-gus", "preferred_username": "gus", "email": "gus@elsewhere.example", "groups": ["physics"]},
    {"sub": "u-ada", "preferred_username": "ada", "email": "ada@elsewhere.example", "groups": ["hub-admins"]},
    # a look-alike of oidcalice (a Cyrillic а), whom the group rule would let in
    {
        "sub": "u-lookalike",
        "preferred_username": "oidc\u0430lice",
        "email": "x@elsewhere.example",
        "groups": ["physics"],
    },
]

GLOBUS_USERS = [
    {
        "sub": "b1f0c5a2-0000-4000-8000-000000000001",
        "preferred_username": "gina@globusid.org",
        "email": "gina@uni.example",
        "name": "Gina Globus",
        "globus_groups": [GLOBUS_ALLOWED_GROUP],
    },
    {
        "sub": "b1f0c5a2-0000-4000-8000-000000000002",
        "preferred_username": "henry@globusid.org",
        "email": "henry@uni.example",
        "name": "Henry",
        "globus_groups": [],
    },
    {
        "sub": "b1f0c5a2-0000-4000-8000-000000000003",
        "preferred_username": "ivan@other.org",
        "email": "ivan@other.org",
        "name": "Ivan",
        "globus_groups": [GLOBUS_ALLOWED_GROUP],
    },
    {
        "sub": "b1f0c5a2-0000-4000-8000-000000000004",
        "preferred_username": "root@globusid.org",
        "email": "root@uni.example",
        "name": "Root",
        "globus_groups": [GLOBUS_ADMIN_GROUP],
    },
    # another person, whom Globus names as it named gina (the same name at another provider)
    {
        "sub": "b1f0c5a2-0000-4000-8000-000000000005",
        "preferred_username": "gina@globusid.org",
        "email": "gina.two@uni.example",
        "name": "Another Gina",
        "globus_groups": [GLOBUS_ALLOWED_GROUP],
    },
]


class Provider:
    """tests/oidcmock.py in a subprocess, on a free port."""

    def __init__(self, users: list[dict], workdir: Path, globus: bool = False):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [
            sys.executable,
            str(REPO / "tests" / "oidcmock.py"),
            "--port",
            str(self.port),
            "--users",
            json.dumps(users),
        ]
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


def globus_config(globus: Provider) -> str:
    """A hub that logs in with Globus at the stand-in provider (also the HuBMAP Globus tests')."""
    return (
        f"""
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
"""
        + READER
    )
