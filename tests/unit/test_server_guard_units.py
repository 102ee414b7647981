"""The guard of jobs' Jupyter servers (uws_hub/serverconfig/uws_server_auth.py)
on a bare tornado application: it covers routes added after it was installed
(an extension loaded later) and refuses routes whose target it cannot guard.
tests/test_server_access.py tries it in real servers through the proxy."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass

import pytest
from tornado import httpclient, httpserver, netutil, web
from tornado.routing import PathMatches, Rule

from uws_hub.serverconfig import uws_server_auth


@dataclass
class HubUser:
    username: str
    hub_user: dict


class IdentityProvider:
    """Stands in for JupyterHub's: the user named in a header, with the scopes
    the owner's server gives writers (or none)."""

    log = logging.getLogger("tests")

    async def get_user(self, handler):
        name = handler.request.headers.get("X-User")
        if not name:
            return None
        scopes = ["custom:uws:write:servers!server=alice/ws"] if name == "writer" else []
        return HubUser(name, {"kind": "user", "name": name, "scopes": scopes})


class Late(web.RequestHandler):
    def get(self):
        self.write("read")

    def post(self):
        self.write("written")


def answers(app: web.Application, requests: list[tuple[str, str, str | None]]) -> list[tuple[int, str]]:
    """(status, body) of each (method, path, user) request to ``app``."""

    async def run():
        sockets = netutil.bind_sockets(0, "127.0.0.1")
        server = httpserver.HTTPServer(app)
        server.add_sockets(sockets)
        port = sockets[0].getsockname()[1]
        client = httpclient.AsyncHTTPClient()
        out = []
        for method, path, user in requests:
            r = await client.fetch(
                f"http://127.0.0.1:{port}{path}",
                method=method,
                raise_error=False,
                headers={"X-User": user} if user else {},
                body=b"" if method in ("POST", "PUT", "PATCH") else None,
            )
            out.append((r.code, r.body.decode()))
        server.stop()
        return out

    return asyncio.run(run())


def test_routes_added_after_the_guard_are_guarded_and_unknown_targets_refused(monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_USER", "alice")
    monkeypatch.setenv("JUPYTERHUB_SERVER_NAME", "ws")
    monkeypatch.setenv("UWS_LAUNCHER", "writer")
    app = web.Application(identity_provider=IdentityProvider())
    uws_server_auth.guard_routing(app)
    # what an extension loaded later adds: a handler, and a rule to a target that is not one
    app.add_handlers(".*", [(r"/late", Late), Rule(PathMatches(r"/callable"), lambda request: None)])

    got = answers(
        app,
        [
            ("GET", "/late", "writer"),
            ("POST", "/late", "writer"),
            ("GET", "/late", "viewer"),
            ("POST", "/late", "viewer"),
            ("POST", "/late", None),
            ("GET", "/callable", "writer"),
        ],
    )
    assert got[:2] == [(200, "read"), (200, "written")]
    for status, body in got[2:4]:
        assert status == 403
        assert (
            json.loads(body)["message"].startswith("viewer may only read here: ")
            and "custom:uws:write:servers!server=alice/ws" in body
        )
    assert got[4][0] == 403 and "needs a login with custom:uws:write:servers" in got[4][1]
    assert got[5][0] == 403 and "cannot check this request" in got[5][1]


@pytest.mark.parametrize("method", ["PATCH", "DELETE"])
def test_a_method_the_handler_has_not_is_403_to_readers_and_405_to_writers(monkeypatch, method):
    monkeypatch.setenv("JUPYTERHUB_USER", "alice")
    monkeypatch.setenv("JUPYTERHUB_SERVER_NAME", "ws")
    monkeypatch.setenv("UWS_LAUNCHER", "writer")
    app = web.Application([(r"/late", Late)], identity_provider=IdentityProvider())
    uws_server_auth.guard_routing(app)
    assert [status for status, _ in answers(app, [(method, "/late", "viewer"), (method, "/late", "writer")])] == [
        403,
        405,
    ]


def test_only_the_launcher_writes_in_a_server(monkeypatch):
    """The server runs as its launcher's account: the write scope on it counts only for the
    launcher (an editor who launched it, not its owner); admin:servers always counts."""
    monkeypatch.setenv("JUPYTERHUB_USER", "alice")
    monkeypatch.setenv("JUPYTERHUB_SERVER_NAME", "ws")
    write = ["custom:uws:write:servers!server=alice/ws"]

    def may(name, scopes, kind="user"):
        return uws_server_auth.may_write({"kind": kind, "name": name, "scopes": scopes})

    monkeypatch.delenv("UWS_LAUNCHER", raising=False)  # a server from before: its owner's
    assert may("alice", write) and not may("carol", write)
    monkeypatch.setenv("UWS_LAUNCHER", "carol")
    assert may("carol", write)
    assert not may("alice", write) and not may("bob", write) and not may("carol", [])
    assert not may("carol", write, kind="service")
    assert may("root", ["admin:servers!server=alice/ws"]) and may("root", ["admin:servers"])


def test_the_web_app_keeps_its_own_headers_whatever_their_names_case():
    """A web app gets none of its visitor's credentials, but the headers its job type sets
    (``request_headers``: its own ``{token}``) it does, however their names are written
    (HTTP's are in any case). Failed before: ``authorization`` set by the job type was
    taken out as the visitor's ``Authorization``, and the app refused every request."""
    from tornado.httputil import HTTPHeaders

    class Proxy:
        """jupyter-server-proxy's handler: the visitor's headers, the job type's over them."""

        own: dict[str, str] = {}

        def get_request_headers_override(self):
            return self.own

        def proxy_request_headers(self):
            headers = HTTPHeaders({"Authorization": "token visitors", "Accept": "text/html"})
            headers.add("Cookie", "__Host-jupyterhub-user-alice-ws=visitors; theme=dark")
            headers.add("Cookie", "jupyterhub-session-id=visitors")
            headers.update(self.own)
            return headers

    app = uws_server_auth.without_credentials(Proxy)()
    headers = app.proxy_request_headers()
    assert "Authorization" not in headers and headers.get_list("Cookie") == ["theme=dark"]
    for name in ("Authorization", "authorization", "AUTHORIZATION"):
        app.own = {name: "token apps"}
        assert app.proxy_request_headers()["Authorization"] == "token apps", name
