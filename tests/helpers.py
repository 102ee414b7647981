"""What the tests share: the test hubs' configuration, and helpers that act
through a hub's API as a client would (launching jobs, reading event streams).

The fixtures are in ``conftest.py``; the machinery that runs real things (a
hub, PostgreSQL, SLURM, LDAP, SMTP, an OpenID provider, a browser) is in the
``*util.py`` modules beside this one. Test modules import helpers from here
only, never from each other.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import resource
import socket
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import parse_qs, urlencode, urlparse

import requests
from jupyterhub import orm as hub_orm
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import StaticPool

from uws_hub import dbutil

from .hubutil import REPO, VENV_BIN, Hub, hub_env, record

USERS = ("uwsadmin", "uwsalice", "uwsbob", "uwscarol")
#: what a file outside every workspace holds (path-safety tests must never see it)
OUTSIDE = b"outside: never read, listed, written or copied"
ADMIN_PASSWORD = "admin-password-for-tests"

#: a job type's command for the minimal single-user server (tests/minimal_server.py)
MINIMAL_CMD = [sys.executable, str(REPO / "tests" / "minimal_server.py")]

#: seconds a reader of a download the hub cut off waits for the next piece (the proxy
#: leaves it waiting: a read timeout); data that still flows comes at once
READ_TIMEOUT_AFTER_A_CUT = 5
#: Python that ends its process's first thread while a second sleeps on: the process looks
#: ended (a zombie, to its ``/proc/<pid>/status``) and holds its groups all the same
GHOST = (
    "import ctypes, threading, time; threading.Thread(target=time.sleep, args=(600,)).start();"
    " ctypes.CDLL(None).pthread_exit(None)"
)

MULTIUSER_CONFIG = f"""
c.UWSHub.system_users = True
c.UWSHub.job_reconcile_interval = 2
c.Authenticator.admin_users = {{"uwsadmin"}}
c.UWSHub.job_types = {{
    "jupyterlab": {{"display_name": "JupyterLab", "default_url": "/lab"}},
    "broken": {{
        "display_name": "Broken on purpose",
        "cmd": ["python3", "-c", "import sys; print('boom: the server cannot start'); sys.exit(3)"],
    }},
    "minimal": {{"display_name": "Minimal test server", "cmd": {MINIMAL_CMD!r}}},
    "short": {{"display_name": "Minimal, 3 s limit", "cmd": {MINIMAL_CMD!r}, "time_limit_seconds": 3}},
    "echo": {{
        "display_name": "Echo (a batch job)", "interactive": False,
        "cmd": {[sys.executable, "-c", "import sys; print(sys.argv[1])"]!r} + ["{{text}}"],
        "parameters": {{"text": {{"type": "string", "default": "hello"}}}},
    }},
}}
"""


def launch(hub, token, ws=None, *, job_type="minimal", resource=None, resources=None, expect=202):
    """Launch a job in ``ws`` (a new workspace of the token's user if None).

    Returns the job, checked to answer ``expect``; with ``expect=None`` the response.
    """
    if ws is None:
        ws = hub.api("POST", "workspaces", token, json={"name": f"job {uuid.uuid4().hex[:8]}"}, expect=201)
    body: dict = {"job_type": job_type}
    if resource is not None:
        body["resource"] = resource
    if resources is not None:
        body["resources"] = resources
    r = hub.request("POST", f"workspaces/{ws['id']}/jobs", token, json=body)
    if expect is None:
        return r
    assert r.status_code == expect, f"launch: {r.status_code} {r.text}"
    return r.json()


def run_job(hub, token, ws, job_type="minimal"):
    job = hub.api("POST", f"workspaces/{ws['id']}/jobs", token, json={"job_type": job_type}, expect=202)
    assert hub.wait_job(job["id"], token, {"running", "failed"})["status"] == "running"
    hub.api("POST", f"jobs/{job['id']}/stop", token, expect=202)
    assert hub.wait_job(job["id"], token, {"completed"})["status"] == "completed"
    return job


class SSEReader:
    """Reads a server-sent-events stream in a thread, keeping every event."""

    def __init__(self, hub, token, query="", last_event_id=None):
        headers = {"Authorization": f"token {token}"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        self.response = requests.get(f"{hub.url}/hub/api/events{query}", headers=headers, stream=True, timeout=60)
        assert self.response.status_code == 200, self.response.text
        assert self.response.headers["Content-Type"].startswith("text/event-stream")
        self.events: list[dict] = []
        self.kinds: list[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        kind = None
        try:
            # chunk_size=None: each chunk as it arrives (the default waits for 512 bytes)
            for line in self.response.iter_lines(chunk_size=None, decode_unicode=True):
                if line.startswith("event:"):
                    kind = line.split(":", 1)[1].strip()
                elif line.startswith("data:"):
                    self.kinds.append(kind)
                    self.events.append(json.loads(line[5:]))
        except (requests.RequestException, AttributeError, ValueError):
            pass

    def job_statuses(self, job_id):
        return [e["status"] for e in self.events if e.get("kind") == "job" and e["job_id"] == job_id]

    def close(self):
        close_stream(self.response)


def close_stream(response: requests.Response) -> None:
    """Close a streamed response that a thread reads: its socket is shut down first, as
    ``Response.close()`` alone waits for the hub's next write (a keepalive, up to 15 s away)."""
    sock = getattr(getattr(response.raw, "connection", None), "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    response.close()


def sse_replay(hub, token, query: str, seconds: float = 1.5) -> list[dict]:
    """The events a stream replays (and sends live) within ``seconds``."""
    events = []
    try:
        with requests.get(
            f"{hub.url}/hub/api/events?{query}",
            headers={"Authorization": f"token {token}"},
            stream=True,
            timeout=(5, seconds),
        ) as r:
            assert r.status_code == 200, r.text
            for line in r.iter_lines(decode_unicode=True):
                if line.startswith("data:"):
                    events.append(json.loads(line[5:]))
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout):
        pass  # the read timeout ends the stream (or, with nothing to send, the wait for its headers)
    return events


def create_jupyterhub_tables(url: str, user: str | None = None) -> int | None:
    """JupyterHub's own tables at their newest revision (as JupyterHub makes them),
    with a user if asked; returns the user's id."""
    db = hub_orm.new_session_factory(url)()
    uid = None
    if user:
        orm_user = hub_orm.User(name=user)
        db.add(orm_user)
        db.commit()
        uid = orm_user.id
    db.close()
    db.get_bind().dispose()
    return uid


def memory_database() -> Engine:
    """An in-memory SQLite database with JupyterHub's tables and uws-hub's (made by
    uws-hub's migrations, as a hub makes them), for in-process tests."""
    engine = create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
    hub_orm.Base.metadata.create_all(engine)
    dbutil.prepare(engine, allow_upgrade=False, log=logging.getLogger("test"))
    return engine


OLD_TIME = datetime(2026, 1, 1)


def make_old_database(
    url: str, revision: str = "0001", directory: str = "/nonexistent/olduser/old-ws", usage_bytes: int = 5000000000
) -> int:
    """JupyterHub's tables at their head, uws-hub's at an older revision, with a user and
    a workspace of theirs; returns the user's id."""
    uid = create_jupyterhub_tables(url, user="olduser")
    engine = create_engine(url)
    dbutil.upgrade(engine, revision)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO uws_workspaces (owner_id, slug, name, description, status, directory,"
                " disk_usage_bytes, created_at, updated_at)"
                " VALUES (:uid, 'old-ws', 'Old workspace', 'from before', 'idle', :directory, :usage, :now, :now)"
            ),
            {"uid": uid, "directory": directory, "usage": usage_bytes, "now": OLD_TIME},
        )
    assert dbutil.current_revision(engine) == revision
    engine.dispose()
    return uid


def upgrade_db(hub: Hub) -> None:
    """``uws-hub upgrade-db`` with the hub's configuration, which leaves the tables at the newest revision."""
    r = subprocess.run(
        [str(VENV_BIN / "uws-hub"), "upgrade-db", "-f", str(hub.config_file)],
        cwd=hub.workdir,
        env=hub_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    engine = create_engine(hub.db_url)
    assert dbutil.current_revision(engine) == dbutil.head_revision()
    engine.dispose()


def _read_log_events(response, events: list) -> None:
    kind, data, last_id = None, [], None
    try:
        for line in response.iter_lines(chunk_size=None, decode_unicode=True):
            if line.startswith("id:"):
                last_id = line[3:].strip()
            elif line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[6:] if line.startswith("data: ") else line[5:])
            elif line == "" and kind:
                events.append((kind, "\n".join(data), last_id, time.monotonic()))
                kind, data = None, []
    except requests.exceptions.ChunkedEncodingError as e:
        events.append(("cut", str(e), last_id, time.monotonic()))  # the connection broke mid-stream


def follow_log(hub, token, job, headers=None) -> tuple[list, threading.Thread]:
    """Follow a batch job's log live (``GET /jobs/{id}/log/stream``) in a thread: its events
    as (kind, data, id, when received; kind "cut" if the connection broke), and the
    thread, which ends with the stream."""
    r = requests.get(
        f"{hub.url}/hub/api/jobs/{job['id']}/log/stream",
        stream=True,
        timeout=90,
        headers={"Authorization": f"token {token}", **(headers or {})},
    )
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/event-stream"), r.text
    events: list = []
    thread = threading.Thread(target=_read_log_events, args=(r, events), daemon=True)
    thread.start()
    return events, thread


@dataclass
class RawResponse:
    status_code: int
    headers: dict
    text: str

    def json(self):
        return json.loads(self.text)


def declaring_length(hub, method: str, path: str, token: str | None, length: int) -> RawResponse:
    """A request that announces a body of ``length`` bytes but sends only a few (HTTP
    libraries cannot), for a refusal from ``Content-Length`` before the body is read.

    Sent to the hub's own port: the hub answers 413 and closes the connection
    without reading the body, and node configurable-http-proxy, still writing
    the body, then often answers 503 (``write ECONNRESET``) instead of passing
    the 413 on. ``token`` None: an anonymous request.
    """
    conn = http.client.HTTPConnection("127.0.0.1", hub.hub_port, timeout=30)
    try:
        conn.putrequest(method, path)
        if token is not None:  # None: anonymous
            conn.putheader("Authorization", f"token {token}")
        conn.putheader("Content-Length", str(length))
        conn.endheaders()
        conn.send(b"x" * 1024)
        r = conn.getresponse()
        record(method, path, r.status)
        return RawResponse(r.status, dict(r.getheaders()), r.read().decode())
    finally:
        conn.close()


def session_nice(pid: int) -> int | None:
    """The CPU priority of the session ``pid`` is in where the kernel schedules sessions as
    groups (``/proc/<pid>/autogroup``: ``/autogroup-N nice X``); None without autogroups,
    or where this process may not be sure to have set it (not root: the kernel sets it
    at most 10 times a second for others, see ``wrapper.set_session_nice``)."""
    if os.geteuid() != 0:
        return None
    try:
        with open(f"/proc/{pid}/autogroup") as f:
            return int(f.read().split()[-1])
    except FileNotFoundError:
        return None


def processes_of_job(job_id: int, directory: str) -> list[int]:
    """The pids of processes running job ``job_id`` in the workspace at ``directory``
    (their environment says so; other hubs' jobs may have the same id)."""
    found = []
    wanted = {f"UWS_JOB_ID={job_id}".encode(), f"UWS_WORKSPACE_DIR={directory}".encode()}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if wanted <= set(f.read().split(b"\0")):
                    found.append(int(pid))
        except OSError:
            continue
    return found


@contextmanager
def few_descriptors(hub, soft: int = 1024):
    """The hub's process may open ``soft`` descriptors (a common default), during the block."""
    before = resource.prlimit(hub.proc.pid, resource.RLIMIT_NOFILE)
    resource.prlimit(hub.proc.pid, resource.RLIMIT_NOFILE, (soft, before[1]))
    try:
        yield
    finally:
        resource.prlimit(hub.proc.pid, resource.RLIMIT_NOFILE, before)


def make_deep(top, depth: int, leaf: bytes) -> None:
    """``depth`` folders ``d`` in one another below ``top``, a file at the bottom, made one folder
    at a time relative to the last (as a job can, whatever the depth)."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            sub = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = sub
        leaf_fd = os.open("leaf.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        with os.fdopen(leaf_fd, "wb") as f:
            f.write(leaf)
    finally:
        os.close(fd)


def start_code(hub, server: str, token: str | None) -> list[int]:
    """Start a terminal and a kernel in the server (deleting what started): the two statuses."""
    statuses = []
    for what, body in (("terminals", None), ("kernels", {"name": "python3"})):
        r = hub.request("POST", server + f"api/{what}", token, json=body, allow_redirects=False)
        statuses.append(r.status_code)
        if r.status_code in (200, 201):
            name = r.json().get("name") if what == "terminals" else r.json()["id"]
            hub.request("DELETE", server + f"api/{what}/{name}", token)
    return statuses


def refused_code_and_saving(hub, server: str, token: str, launcher: str) -> None:
    """``token`` runs no code in the server (kernels and terminals are 403, saying whose
    account the server runs as) and saves nothing there."""
    assert start_code(hub, server, token) == [403, 403]
    r = hub.request("POST", server + "api/kernels", token, json={"name": "python3"})
    assert f"runs as {launcher}'s account" in r.json()["message"], r.text
    r = hub.request(
        "PUT", server + "api/contents/refused.txt", token, json={"type": "file", "format": "text", "content": "x"}
    )
    assert r.status_code == 403, r.text


def server_token(job: dict) -> str:
    """A running job's server's API token (also its OAuth client's secret), from its
    process's environment (the tests run as root)."""
    env = open(f"/proc/{job['resource_id']}/environ", "rb").read().split(b"\0")
    [token] = [v.split(b"=", 1)[1].decode() for v in env if v.startswith(b"JUPYTERHUB_API_TOKEN=")]
    return token


def oauth_token(hub, session: requests.Session, job: dict, client_secret: str) -> str:
    """An OAuth token of ``session``'s user for the job's server, as a login into it gets one:
    authorize (confirming on the page), then exchange the code as the server does."""
    r = oauth_exchange(hub, session, job, client_secret)
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def oauth_authorize(hub, session: requests.Session, job: dict) -> requests.Response:
    """``session``'s user authorizing the job's server's OAuth client, as a browser logging
    into the server does (confirming on the page if asked): JupyterHub's last answer."""
    server = f"{job['owner']}/{job['server_name']}"
    query = {
        "client_id": f"jupyterhub-user-{server.replace('/', '-')}",
        "redirect_uri": f"/user/{server}/oauth_callback",
        "response_type": "code",
        "state": "test-state",
    }
    url = hub.url + "/hub/api/oauth2/authorize?" + urlencode(query)
    r = session.get(url, allow_redirects=False, timeout=30)
    if r.status_code == 200:  # the confirmation page: confirm, with its scopes
        form = {
            "scopes": re.findall(r'name="scopes" value="([^"]*)"', r.text),
            "_xsrf": re.search(r'name="_xsrf" value="([^"]*)"', r.text).group(1),
        }
        r = session.post(url, data=form, allow_redirects=False, timeout=30)
    return r


def oauth_exchange(hub, session: requests.Session, job: dict, client_secret: str) -> requests.Response:
    """Authorize the job's server's client as ``session``'s user and exchange the code with
    ``client_secret``: JupyterHub's answer to the exchange."""
    r = oauth_authorize(hub, session, job)
    assert r.status_code == 302, (r.status_code, r.text)
    server = f"{job['owner']}/{job['server_name']}"
    code = parse_qs(urlparse(r.headers["Location"]).query)["code"][0]
    return hub.request(
        "POST",
        "/hub/api/oauth2/token",
        data={
            "client_id": f"jupyterhub-user-{server.replace('/', '-')}",
            "client_secret": client_secret,
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": f"/user/{server}/oauth_callback",
        },
    )


def shared_workspace(hub, token: str, shares: dict[str, str], name: str = "shared") -> dict:
    """A new workspace of ``token``'s user holding ``data.txt`` ("data\\n"), shared with
    each user of ``shares`` at its level."""
    ws = hub.api(
        "POST",
        "workspaces",
        token,
        expect=201,
        json={"name": f"{name} {uuid.uuid4().hex[:6]}", "files": [{"path": "data.txt", "content": "data\n"}]},
    )
    for user, level in shares.items():
        hub.api("POST", f"workspaces/{ws['id']}/shares", token, json={"user": user, "level": level}, expect=201)
    return ws


def folder_made_first_by_nobody(tmp_path, name: str = "uws-job-logs"):
    """A folder ``name`` that ``nobody`` (uid 65534) made first (0755) in a sticky folder
    every account may write in (``/tmp``): the folder, a ``Path``."""
    shared = tmp_path / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    folder = shared / name
    folder.mkdir(mode=0o755)
    os.chown(folder, 65534, 65534)
    return folder
