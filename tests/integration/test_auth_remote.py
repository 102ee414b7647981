"""The remote-API authenticator on a real hub, against a small local HTTP
service: success, wrong credentials, the service down, slow, broken."""

from __future__ import annotations

import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ..authutil import login, whoami
from ..hubutil import free_port

USERS = {
    "ruth": {
        "password": "ruth-password",
        "user": {"login": "ruth", "id": 42, "email": "ruth@example.org", "full_name": "Ruth Ellis", "is_admin": False},
        "token": "remote-token-ruth",
    },
    "chief": {
        "password": "chief-password",
        "user": {"login": "chief", "id": 7, "email": "chief@example.org", "full_name": "The Chief", "is_admin": True},
        "token": "remote-token-chief",
    },
}


class RemoteAccounts:
    """A login API: POST /login {"username", "password"} -> 200 {"user": ..., "token": ...} or 401.

    Special users: ``slowpoke`` answers after 3 s, ``broken`` gets a 500,
    ``garbled`` gets HTML.
    """

    def __init__(self):
        self.port = free_port()
        self.requests: list[dict] = []
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        accounts = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                data = json.loads(raw)
                accounts.requests.append({"headers": dict(self.headers), "body": data})
                name = data.get("username")
                if name == "slowpoke":
                    time.sleep(3)
                    return self.reply(200, json.dumps({"user": {"login": "slowpoke"}}).encode())
                if name == "broken":
                    return self.reply(500, b'{"error": "database is on fire"}')
                if name == "garbled":
                    return self.reply(200, b"<html>maintenance</html>", "text/html")
                user = USERS.get(name)
                if user is None or data.get("password") != user["password"]:
                    return self.reply(401, b'{"detail": "Invalid credentials"}')
                return self.reply(200, json.dumps({"user": user["user"], "token": user["token"]}).encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@pytest.fixture(scope="module")
def remote():
    service = RemoteAccounts()
    service.start()
    yield service
    service.stop()


READER_TOKEN = secrets.token_hex(16)


@pytest.fixture(scope="module")
def remote_hub(make_hub, remote):
    config = f"""
c.JupyterHub.authenticator_class = "uws-remote-api"
c.WorkspaceRemoteAPIAuthenticator.remote_url = "http://127.0.0.1:{remote.port}/login"
c.WorkspaceRemoteAPIAuthenticator.request_headers = {{"X-Api-Key": "hub-key"}}
c.WorkspaceRemoteAPIAuthenticator.request_timeout_seconds = 1.5
c.WorkspaceRemoteAPIAuthenticator.username_key = "user.login"
c.WorkspaceRemoteAPIAuthenticator.id_key = "user.id"
c.WorkspaceRemoteAPIAuthenticator.email_key = "user.email"
c.WorkspaceRemoteAPIAuthenticator.display_name_key = "user.full_name"
c.WorkspaceRemoteAPIAuthenticator.admin_key = "user.is_admin"
c.WorkspaceRemoteAPIAuthenticator.auth_state_keys = ["token"]
c.Authenticator.enable_auth_state = True
c.JupyterHub.services.append({{"name": "auth-state-reader", "api_token": "{READER_TOKEN}"}})
c.JupyterHub.load_roles.append({{"name": "auth-state-reader", "scopes": ["admin:auth_state", "read:users"],
                                 "services": ["auth-state-reader"]}})
"""
    return make_hub(config, env={"JUPYTERHUB_CRYPT_KEY": secrets.token_hex(32)})


def test_success_maps_the_reply_to_a_user(remote_hub, remote):
    result = login(remote_hub, "ruth", "ruth-password")
    assert result.ok, result
    sent = remote.requests[-1]
    assert sent["body"] == {"username": "ruth", "password": "ruth-password"}
    assert sent["headers"]["Content-Type"] == "application/json"
    assert sent["headers"]["X-Api-Key"] == "hub-key"
    me = whoami(remote_hub, result.session)
    assert me["name"] == "ruth" and me["admin"] is False
    assert me["user_info"] == {
        "email": "ruth@example.org",
        "display_name": "Ruth Ellis",
        "external_ids": {"remote": "42"},
    }
    # the service's token is kept, encrypted, in auth_state
    user = remote_hub.api("GET", "users/ruth", READER_TOKEN, expect=200)
    assert user["auth_state"] == {"remote": {"token": "remote-token-ruth"}}
    # the reply can make an admin
    chief = login(remote_hub, "chief", "chief-password")
    assert whoami(remote_hub, chief.session)["admin"] is True


def test_wrong_credentials(remote_hub):
    for name, password in [("ruth", "not-it"), ("nobody", "whatever")]:
        result = login(remote_hub, name, password)
        assert not result.ok and result.response.status_code == 403
        assert result.error == "Invalid username or password"
    assert "Login service rejected the credentials of nobody (HTTP 401)" in remote_hub.log_text()


@pytest.mark.expect_log_errors("Login service \\S+ is unreachable", "\\] 503 POST /hub/login")
def test_service_down_fails_closed_and_the_hub_keeps_running(remote_hub, remote):
    remote.stop()
    try:
        result = login(remote_hub, "ruth", "ruth-password")
        assert not result.ok and result.response.status_code == 503
        assert result.error == (
            f"The login service (127.0.0.1:{remote.port}) is not available right now. Please try again later."
        )
        assert whoami(remote_hub, result.session) is None
        assert remote_hub.request("GET", "/hub/health").status_code == 200
        assert f"Login service http://127.0.0.1:{remote.port}/login is unreachable" in remote_hub.log_text()
    finally:
        # back up on the same port
        remote.start()
    assert login(remote_hub, "ruth", "ruth-password").ok


@pytest.mark.expect_log_errors("Login service \\S+ failed for slowpoke: Timeout", "\\] 503 POST /hub/login")
def test_slow_service_times_out(remote_hub):
    start = time.monotonic()
    result = login(remote_hub, "slowpoke", "whatever")
    elapsed = time.monotonic() - start
    assert not result.ok and result.response.status_code == 503
    assert "did not answer in time" in result.error
    assert elapsed < 2.9, elapsed
    assert remote_hub.request("GET", "/hub/health").status_code == 200


@pytest.mark.expect_log_errors(
    "Login service \\S+ answered HTTP 500 for broken",
    "answered with something other than a JSON object",
    "\\] 50[23] POST /hub/login",
)
def test_broken_service(remote_hub):
    result = login(remote_hub, "broken", "whatever")
    assert result.response.status_code == 503 and "(HTTP 500)" in result.error
    result = login(remote_hub, "garbled", "whatever")
    assert result.response.status_code == 502 and "cannot read" in result.error
    assert "answered HTTP 500 for broken" in remote_hub.log_text()


def test_local_accounts_api_says_it_is_not_in_use(remote_hub):
    r = remote_hub.request("GET", "accounts", remote_hub.admin_token)
    assert r.status_code == 404
    assert "logs in with WorkspaceRemoteAPIAuthenticator" in r.json()["message"]
    r = remote_hub.request(
        "POST", "accounts", remote_hub.admin_token, json={"username": "x", "password": "long-enough"}
    )
    assert r.status_code == 404 and "not in use" in r.json()["message"]
    assert remote_hub.request("GET", "/hub/admin/accounts").status_code in (302, 403, 404)
