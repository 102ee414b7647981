"""Who may do what in a workspace's live JupyterLab, through the proxy, for real.

The owner's server runs as the owner (who launched it), so access to it is
default-deny: the owner uses it fully (kernels, terminals, saving); an editor
and a viewer reach
only a short read-only list (GET and HEAD of the page, its static files,
files and directories, settings, ...: ``READ_ONLY`` below), never a websocket;
anyone else is refused by JupyterHub's own check.

The sweep asks a replica of the running job's server (tests/server_routes.py,
run with the job's own arguments, environment, account and directory) for
every route it registers (jupyter_server, JupyterLab, every server extension
installed in the job's environment), then sends each route every method that
is not GET or HEAD, a websocket upgrade and a GET, as a viewer, a stranger, a
user admin and anonymously, and checks that the owner's server did not change.
"""

from __future__ import annotations

import base64
import importlib.metadata
import json
import os
import pwd
import secrets
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
import websocket

from ..hubutil import REPO, free_port

#: the handlers a viewer may GET (or HEAD), by class: this test's own copy of
#: the read-only list, so that widening the list has to change the test too
READ_ONLY = {
    "jupyterlab_server.handlers.LabHandler",
    "jupyter_server.base.handlers.FileFindHandler",
    "jupyterlab_server.themes_handler.ThemesHandler",
    "jupyterlab_server.settings_handler.SettingsHandler",
    "jupyterlab_server.translations_handler.TranslationsHandler",
    "jupyter_server.services.contents.handlers.ContentsHandler",
    "jupyter_server.base.handlers.AuthenticatedFileHandler",
    "jupyter_server.services.api.handlers.IdentityHandler",
    "jupyter_server.services.kernelspecs.handlers.MainKernelSpecHandler",
    "jupyter_server.services.kernelspecs.handlers.KernelSpecHandler",
    "jupyter_server.kernelspecs.handlers.KernelSpecResourceHandler",
    "jupyterhub.singleuser.extension.JupyterHubOAuthCallbackHandler",
    "jupyterhub.singleuser.extension.JupyterHubLogoutHandler",
    "jupyter_server.base.handlers.RedirectWithParams",
}
#: methods that are not GET or HEAD
CHANGING = ("POST", "PUT", "PATCH", "DELETE", "OPTIONS")
#: a name no package index has (and the jobs' pip has no index: PIP_NO_INDEX)
NO_SUCH_PACKAGE = "uws-hub-tests-no-such-extension"
OWNER, VIEWER, EDITOR, STRANGER, USER_ADMIN = "uwsalice", "uwsbob", "uwscarol", "uwsnoshare", "uwsuseradmin"


@pytest.fixture(scope="module")
def ahub(make_hub, system_users, group_prefix):
    hub = make_hub(f"""
c.UWSHub.system_users = True
c.UWSHub.job_reconcile_interval = 2
c.UWSHub.share_posix_group_prefix = {group_prefix!r}
c.Authenticator.admin_users = {{"uwsadmin"}}
c.UWSHub.job_types = {{
    "jupyterlab": {{"display_name": "JupyterLab", "default_url": "/lab", "env": {{"PIP_NO_INDEX": "1"}}}},
    # Jupyter Server alone: no other server extension found (so no JupyterLab)
    "core": {{"display_name": "Jupyter Server only", "default_url": "/api/status",
              "env": {{"JUPYTERHUB_SINGLEUSER_LOAD_OTHER_EXTENSIONS": "0"}}}},
    # a command line that sets the server extensions outright, dropping uws-hub's
    "no-guard": {{"display_name": "Without the guard",
                  "cmd": ["jupyterhub-singleuser", "--ServerApp.jpserver_extensions=jupyterlab=True"]}},
}}
# a user admin: JupyterHub's admin:users, nothing else
c.JupyterHub.load_roles.append({{"name": "user-admins", "scopes": ["admin:users"], "users": [{USER_ADMIN!r}]}})
""")
    hub.tokens = {name: hub.add_user(name) for name in (OWNER, VIEWER, EDITOR, STRANGER, USER_ADMIN)}
    return hub


@dataclass
class Live:
    """A running server of alice's, shared with bob (viewer) and carol (editor)."""

    workspace: dict
    job: dict
    server: str  # the server's URL prefix, /user/uwsalice/<slug>/
    directory: Path
    kernel_id: str
    session_id: str
    terminal: str | None


def start_live(hub, job_type: str):
    """alice's workspace running ``job_type``, with alice's kernel (it holds
    x = 42), a notebook session on it and, where there are terminals, a terminal."""
    alice = hub.tokens[OWNER]
    ws = hub.api(
        "POST",
        "workspaces",
        alice,
        expect=201,
        json={
            "name": f"live {uuid.uuid4().hex[:6]}",
            "files": [
                {"path": "data.txt", "content": "data\n"},
                {
                    "path": "notes.ipynb",
                    "content": json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}),
                },
            ],
        },
    )
    shares = f"workspaces/{ws['id']}/shares"
    hub.api("POST", shares, alice, json={"user": VIEWER, "level": "viewer"}, expect=201)
    hub.api("POST", shares, alice, json={"user": EDITOR, "level": "editor"}, expect=201)
    job = hub.api("POST", f"workspaces/{ws['id']}/jobs", alice, json={"job_type": job_type}, expect=202)
    job = hub.wait_job(job["id"], alice, {"running", "failed"}, timeout=90)
    assert job["status"] == "running", job["reason"]
    server = f"/user/{OWNER}/{ws['slug']}/"
    session = hub.api(
        "POST",
        server + "api/sessions",
        alice,
        expect=201,
        json={"path": "notes.ipynb", "type": "notebook", "name": "notes.ipynb", "kernel": {"name": "python3"}},
    )
    kernel_id = session["kernel"]["id"]
    assert run_code(hub, server, alice, kernel_id, "x = 42\nprint('set')") == "set\n"
    r = hub.request("POST", server + "api/terminals", alice)
    terminal = r.json()["name"] if r.status_code == 200 else None
    return Live(ws, job, server, hub.workspaces_root / OWNER / ws["slug"], kernel_id, session["id"], terminal)


def stop_live(hub, live: Live) -> None:
    hub.api("POST", f"jobs/{live.job['id']}/stop", hub.tokens[OWNER])
    hub.wait_job(live.job["id"], hub.tokens[OWNER], {"completed", "cancelled", "failed"})


@pytest.fixture(scope="module")
def live(ahub):
    """alice's running JupyterLab."""
    running = start_live(ahub, "jupyterlab")
    assert running.terminal is not None
    yield running
    stop_live(ahub, running)


# ---------------------------------------------------------------- helpers
def ws_url(hub, path: str) -> str:
    return hub.url.replace("http", "ws", 1) + path


def connect(hub, path: str, token: str | None) -> websocket.WebSocket | int:
    """A websocket to ``path``, or the HTTP status that refused it."""
    try:
        return websocket.create_connection(
            ws_url(hub, path), timeout=30, header=[f"Authorization: token {token}"] if token else []
        )
    except websocket.WebSocketBadStatusException as e:
        return e.status_code


def run_code(hub, server: str, token: str, kernel_id: str, code: str) -> str:
    """Execute ``code`` in a kernel through its channels websocket; its output."""
    ws = connect(hub, f"{server}api/kernels/{kernel_id}/channels", token)
    assert not isinstance(ws, int), f"the kernel's websocket was refused: {ws}"
    msg_id = uuid.uuid4().hex
    ws.send(
        json.dumps(
            {
                "header": {
                    "msg_id": msg_id,
                    "msg_type": "execute_request",
                    "username": "tests",
                    "session": uuid.uuid4().hex,
                    "version": "5.3",
                    "date": "",
                },
                "parent_header": {},
                "metadata": {},
                "channel": "shell",
                "buffers": [],
                "content": {
                    "code": code,
                    "silent": False,
                    "store_history": False,
                    "user_expressions": {},
                    "allow_stdin": False,
                    "stop_on_error": True,
                },
            }
        )
    )
    out = []
    try:
        while True:
            msg = json.loads(ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                out.append(f"{msg['content']['ename']}: {msg['content']['evalue']}")
            elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                return "".join(out)
    finally:
        ws.close()


def run_in_terminal(hub, server: str, token: str, terminal: str) -> str:
    """Type a command into a terminal through its websocket; what it printed."""
    ws = connect(hub, f"{server}terminals/websocket/{terminal}", token)
    assert not isinstance(ws, int), f"the terminal's websocket was refused: {ws}"
    try:
        ws.send(json.dumps(["stdin", "echo term-$((6 * 7))\r"]))
        seen = ""
        while "term-42" not in seen:
            kind, *data = json.loads(ws.recv())
            if kind == "stdout":
                seen += data[0]
        return seen
    finally:
        ws.close()


def server_routes(hub, live: Live) -> list[dict]:
    """Every route of alice's server, each with a URL under its prefix (see tests/server_routes.py).

    The replica runs as the running server does: its arguments, environment,
    account and directory, read from /proc; only the port differs."""
    pid = int(live.job["resource_id"])
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
    assert cmdline[1].endswith(b"uws-singleuser"), cmdline
    env = dict(line.split(b"=", 1) for line in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if line)
    env = {k.decode(): v.decode() for k, v in env.items()}
    service = urlsplit(env["JUPYTERHUB_SERVICE_URL"])
    env["JUPYTERHUB_SERVICE_URL"] = service._replace(netloc=f"{service.hostname}:{free_port()}").geturl()
    env["JUPYTERHUB_ACTIVITY_URL"] = ""  # the replica is not the job: it tells the hub nothing
    env["UWS_TEST_SAMPLES"] = json.dumps(
        {
            "prefix": live.server,
            "named": {
                "kernel_id": [live.kernel_id],
                "session_id": [live.session_id],
                "path": ["logo-64x64.png", "/data.txt"],
                "kernel_name": ["python3"],
                "schema_name": ["@jupyterlab/apputils-extension:themes"],
                "space_name": ["default"],
                "locale": ["en"],
                "section_name": ["notebook"],
                "format": ["html"],
                "language_server": ["pylsp"],
            },
            "unnamed": [live.terminal or "1", "data.txt", live.server + "no/such/page"],
        }
    )
    account = pwd.getpwnam(OWNER)
    result = subprocess.run(
        [
            cmdline[0].decode(),
            "-c",
            (REPO / "tests" / "server_routes.py").read_text(),
            *(a.decode() for a in cmdline[2:]),
        ],
        env=env,
        cwd=os.readlink(f"/proc/{pid}/cwd"),
        user=account.pw_uid,
        group=account.pw_gid,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("ROUTES ")]
    assert lines, result.stderr[-3000:]
    routes = json.loads(lines[0][len("ROUTES ") :])
    unreachable = [r for r in routes if r["url"] is None]
    assert not unreachable, f"no URL reaches these routes: {unreachable}"
    # robots.txt and favicon.ico at the root belong to the hub, not to this server
    outside = [r for r in routes if not r["url"].startswith(live.server)]
    assert all(not r["pattern"].startswith(live.server) for r in outside), outside
    return [r for r in routes if r["url"].startswith(live.server)]


@pytest.fixture(scope="module")
def routes(ahub, live):
    found = server_routes(ahub, live)
    handlers = {r["handler"] for r in found}
    # the sweep covers JupyterLab, the terminals and the language servers, not only jupyter_server
    for module in ("jupyterlab.handlers.", "jupyterlab_server.", "jupyter_server_terminals.", "jupyter_lsp."):
        assert any(h.startswith(module) for h in handlers), (module, sorted(handlers))
    return found


#: routes Jupyter Server registers but cannot serve: it gives the handler no
#: ``path`` (``/robots.txt`` under the server's prefix), so every request
#: fails as the handler is made, before any of it runs, and the proxy answers 503
BROKEN = {"jupyter_server.base.handlers.PublicStaticFileHandler"}
UPGRADE = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13"}


def sweep(hub, token: str | None, routes: list[dict], refused) -> list[str]:
    """Send every route each changing method, a websocket upgrade and a GET;
    return those whose answer ``refused(request, route, response)`` does not
    accept (or, on a BROKEN route, that the server answered)."""
    headers = {"Authorization": f"token {token}"} if token else {}
    let_through = []
    with requests.Session() as session:
        for route in routes:
            url = hub.url + route["url"]
            tries = [(method, {}) for method in CHANGING] + [
                ("websocket", {**UPGRADE, "Sec-WebSocket-Key": base64.b64encode(secrets.token_bytes(16)).decode()}),
                ("GET", {}),
            ]
            for what, extra in tries:
                method = "GET" if what == "websocket" else what
                # an upgrade on a connection of its own: the proxy closes it after a refusal
                send = requests.request if what == "websocket" else session.request
                try:
                    r = send(
                        method,
                        url,
                        headers={**headers, **extra},
                        json={} if method in CHANGING else None,
                        timeout=30,
                        allow_redirects=False,
                    )
                except requests.RequestException as e:  # no answer is no refusal
                    let_through.append(f"{what} {route['url']} ({route['handler']}): {e!r}")
                    continue
                if route["handler"] in BROKEN:
                    answered = r.status_code == 503
                else:
                    answered = refused(what, route, r)
                if not answered:
                    let_through.append(f"{what} {route['url']} ({route['handler']}): {r.status_code} {r.text[:200]!r}")
    return let_through


def said_read_only(r: requests.Response) -> bool:
    """The guard's refusal: a 403 whose message names the write scope."""
    return r.status_code == 403 and "custom:uws:write:servers" in r.text


def owners_state(hub, live: Live) -> dict:
    """What bob must not change: alice's files, settings, layouts, kernels,
    sessions and terminals, and the kernel's memory."""
    alice, server = hub.tokens[OWNER], live.server

    def get(path):
        return hub.api("GET", server + path, alice, expect=200)

    return {
        "files": {
            str(p.relative_to(live.directory)): p.read_bytes() if p.is_file() else None
            for p in sorted(live.directory.rglob("*"))
        },
        "settings": {s["id"]: s["raw"] for s in get("lab/api/settings")["settings"]},
        "layouts": get("lab/api/workspaces"),
        "kernels": sorted(k["id"] for k in get("api/kernels")),
        "sessions": sorted(s["id"] for s in get("api/sessions")),
        "terminals": sorted(t["name"] for t in get("api/terminals")),
        "kernel memory": run_code(hub, server, alice, live.kernel_id, "print(x)"),
    }


# ---------------------------------------------------------------- tests
def test_the_findings_requests_are_refused_to_a_viewer(ahub, live):
    """Issue 11, finding 1: a viewer installed extensions (pip ran in the owner's
    server), and changed the owner's settings and layouts."""
    bob, server = ahub.tokens[VIEWER], live.server
    before = owners_state(ahub, live)
    answers = {
        "extension install": ahub.request(
            "POST", server + "lab/api/extensions", bob, json={"cmd": "install", "extension_name": NO_SUCH_PACKAGE}
        ),
        "settings PUT": ahub.request(
            "PUT",
            server + "lab/api/settings/@jupyterlab/apputils-extension:themes",
            bob,
            json={"raw": '{"theme": "JupyterLab Dark"}'},
        ),
        "workspaces PUT": ahub.request(
            "PUT", server + "lab/api/workspaces/x", bob, json={"data": {}, "metadata": {"id": "x"}}
        ),
    }
    got = {what: (r.status_code, r.text[:300]) for what, r in answers.items()}
    assert all(said_read_only(r) for r in answers.values()), got
    assert f"{VIEWER} may only read here" in answers["settings PUT"].json()["message"]
    assert owners_state(ahub, live) == before
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.distribution(NO_SUCH_PACKAGE)


def test_a_viewer_reaches_only_the_read_only_list(ahub, live, routes):
    """Every route: each changing method and a websocket refused with the guard's
    403, a GET too unless the route is on the read-only list; alice's server
    unchanged."""
    bob = ahub.tokens[VIEWER]
    before = owners_state(ahub, live)

    def refused(what, route, r):
        if what == "GET" and route["handler"] in READ_ONLY:
            return r.status_code != 403  # read: let through (200, a redirect, or 404 for a made-up name)
        return said_read_only(r)

    let_through = sweep(ahub, bob, routes, refused)
    assert let_through == [], "\n".join(let_through)
    # with a real websocket client: alice's kernel, her terminal, the event
    # stream and the language servers; and collaboration's, when installed
    sockets = [
        f"api/kernels/{live.kernel_id}/channels",
        f"terminals/websocket/{live.terminal}",
        "api/events/subscribe",
        "lsp/ws/pylsp",
    ]
    sockets += [
        r["url"][len(live.server) :]
        for r in routes
        if r["handler"].startswith(("jupyter_server_ydoc.", "jupyter_collaboration."))
    ]
    assert {path: connect(ahub, live.server + path, bob) for path in sockets} == {path: 403 for path in sockets}
    assert owners_state(ahub, live) == before


#: what Jupyter Server gives anyone, logged in or not: the installed packages'
#: static files, the redirect from / to /lab, and the OAuth steps that log
#: someone in or out
PUBLIC = {
    "jupyter_server.base.handlers.FileFindHandler",
    "jupyterlab_server.themes_handler.ThemesHandler",
    "jupyter_server.base.handlers.RedirectWithParams",
    "jupyterhub.singleuser.extension.JupyterHubOAuthCallbackHandler",
    "jupyterhub.singleuser.extension.JupyterHubLogoutHandler",
}


@pytest.mark.parametrize("who", [STRANGER, USER_ADMIN, None], ids=["stranger", "user admin", "anonymous"])
def test_no_one_else_reaches_the_server(ahub, live, routes, who):
    """JupyterHub's own check refuses them (no access:servers on this server),
    and the guard refuses what is not on the read-only list."""
    token = ahub.tokens[who] if who else None

    def refused(what, route, r):
        if what == "GET" and route["handler"] in PUBLIC:
            return True
        if what == "GET" and route["handler"] in READ_ONLY and who is None:
            # JupyterHub's check: pages send them to log in at the hub, the API says 403
            login = r.status_code == 302 and "/hub/api/oauth2/authorize" in r.headers["Location"]
            return r.status_code == 403 or login
        return r.status_code == 403

    let_through = sweep(ahub, token, routes, refused)
    assert let_through == [], "\n".join(let_through)
    assert connect(ahub, f"{live.server}api/kernels/{live.kernel_id}/channels", token) == 403


def test_a_viewer_opens_jupyterlab_read_only(ahub, live):
    bob, server = ahub.tokens[VIEWER], live.server
    r = ahub.request("GET", server + "lab", bob)
    assert r.status_code == 200 and "jupyter-config-data" in r.text
    model = ahub.api("GET", server + "api/contents/data.txt?content=1", bob, expect=200)
    assert model["content"] == "data\n"
    listing = ahub.api("GET", server + "api/contents", bob, expect=200)
    assert {"data.txt", "notes.ipynb"} <= {item["name"] for item in listing["content"]}
    assert ahub.request("GET", server + "files/data.txt", bob).content == b"data\n"
    assert ahub.api("GET", server + "api/me", bob, expect=200)["identity"]["username"] == VIEWER
    assert ahub.api("GET", server + "lab/api/settings", bob, expect=200)["settings"]
    assert "python3" in ahub.api("GET", server + "api/kernelspecs", bob, expect=200)["kernelspecs"]
    # and saving is refused, with the reason
    r = ahub.request(
        "PUT",
        server + "api/contents/from-bob.txt",
        bob,
        json={"type": "file", "format": "text", "content": "bob was here"},
    )
    assert said_read_only(r), r.text
    assert not (live.directory / "from-bob.txt").exists()


def test_an_editor_reads_only_in_the_owners_server(ahub, live):
    """The server runs as its launcher (alice): an editor of the workspace runs no code in it
    and saves nothing there (they write through the hub, and launch servers of their own)."""
    carol, server = ahub.tokens[EDITOR], live.server
    assert ahub.api("GET", server + "api/contents/data.txt?content=1", carol, expect=200)["content"] == "data\n"
    assert said_read_only(ahub.request("POST", server + "api/kernels", carol, json={"name": "python3"}))
    assert said_read_only(ahub.request("POST", server + "api/terminals", carol))
    r = ahub.request(
        "PUT", server + "api/contents/from-carol.txt", carol, json={"type": "file", "format": "text", "content": "x"}
    )
    assert said_read_only(r), r.text
    assert connect(ahub, f"{server}api/kernels/{live.kernel_id}/channels", carol) == 403
    assert not (live.directory / "from-carol.txt").exists()


@pytest.mark.parametrize("who", [OWNER])
def test_the_owner_uses_the_server_fully(ahub, live, who):
    token, server = ahub.tokens[who], live.server
    kernel = ahub.api("POST", server + "api/kernels", token, json={"name": "python3"}, expect=201)
    try:
        assert run_code(ahub, server, token, kernel["id"], "print(6 * 7)") == "42\n"
    finally:
        ahub.api("DELETE", server + f"api/kernels/{kernel['id']}", token, expect=204)
    ahub.api(
        "PUT",
        server + f"api/contents/from-{who}.txt",
        token,
        expect=201,
        json={"type": "file", "format": "text", "content": f"saved by {who}"},
    )
    assert (live.directory / f"from-{who}.txt").read_text() == f"saved by {who}"
    assert "term-42" in run_in_terminal(ahub, server, token, live.terminal)
    # a BROKEN route is broken for them too
    assert ahub.request("GET", server + "robots.txt", token).status_code == 503
    # JupyterLab's own handlers too (they check only that someone is logged in)
    layout = {"data": {}, "metadata": {"id": f"layout-{who}"}}
    ahub.api("PUT", server + f"lab/api/workspaces/layout-{who}", token, json=layout, expect=204)
    ahub.api("DELETE", server + f"lab/api/workspaces/layout-{who}", token, expect=204)


def test_a_server_of_jupyter_server_alone_is_guarded_too(ahub):
    """A job type that loads no other server extension
    (``JUPYTERHUB_SINGLEUSER_LOAD_OTHER_EXTENSIONS=0``: no JupyterLab) still
    loads the guard: it is enabled by uws-hub's config file, not found."""
    core = start_live(ahub, "core")
    try:
        bob = ahub.tokens[VIEWER]
        assert said_read_only(ahub.request("POST", core.server + "api/kernels", bob, json={}))
        assert said_read_only(
            ahub.request(
                "PUT",
                core.server + "api/contents/from-bob.txt",
                bob,
                json={"type": "file", "format": "text", "content": "x"},
            )
        )
        assert connect(ahub, f"{core.server}api/kernels/{core.kernel_id}/channels", bob) == 403
        assert ahub.api("GET", core.server + "api/contents/data.txt?content=1", bob, expect=200)["content"] == "data\n"
    finally:
        stop_live(ahub, core)


def test_a_server_whose_config_drops_the_guard_does_not_start(ahub):
    """Config of higher priority than uws-hub's (here the job type's command
    line) that sets ServerApp.jpserver_extensions outright drops the guard:
    the server stops rather than run without it. (Config files cannot: uws-hub's
    comes first on JUPYTER_CONFIG_PATH and adds to theirs.)"""
    alice = ahub.tokens[OWNER]
    ws = ahub.api("POST", "workspaces", alice, json={"name": f"no guard {uuid.uuid4().hex[:6]}"}, expect=201)
    job = ahub.api("POST", f"workspaces/{ws['id']}/jobs", alice, json={"job_type": "no-guard"}, expect=202)
    job = ahub.wait_job(job["id"], alice, {"running", "failed"}, timeout=90)
    assert job["status"] == "failed"
    # the reason is one line; what the server said is the output, for its owner
    output = ahub.api("GET", f"jobs/{job['id']}/output", alice, expect=200)["output"]
    assert "uws_server_auth, which keeps viewers to reading, is not enabled" in output, (job["reason"], output)
