"""Run a real uws-hub (with its real proxy) in a subprocess, and talk to it.

Tests use this instead of an in-process mock: the hub, configurable-http-proxy
and the single-user servers are the programs users run.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import requests

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
NODE_BIN = REPO / "node_modules" / ".bin"


_handed_out: set[int] = set()

#: (method, path, status) of every request to ``/hub/api/`` the tests sent in
#: this session (tests/test_status_coverage.py checks them against the docs)
SENT: set[tuple[str, str, int]] = set()

#: where each pytest session of a run split in several (``make test-databases``)
#: leaves its SENT when it ends, for the run's status coverage check to read them all
SENT_DIR = os.environ.get("UWS_SENT_DIR")


def record(method: str, url: str, status: int) -> None:
    """Note a request's method, path (without its query) and answer's status."""
    path = urlsplit(url).path
    if path.startswith("/hub/api/"):
        SENT.add((method.upper(), path, status))


def save_sent() -> None:
    """Leave this session's SENT in ``UWS_SENT_DIR`` (if set), one file per session."""
    if SENT_DIR and SENT:
        Path(SENT_DIR, f"sent-{os.getpid()}.json").write_text(json.dumps(sorted(SENT)))


def all_sent() -> set[tuple[str, str, int]]:
    """SENT of this session and of the run's sessions that ended before it (``save_sent``)."""
    sent = set(SENT)
    for file in Path(SENT_DIR).glob("sent-*.json") if SENT_DIR else ():
        sent.update((method, path, status) for method, path, status in json.loads(file.read_text()))
    return sent


def free_port() -> int:
    """A free port for a hub or proxy of the tests, below Linux's ephemeral range
    (32768-60999): single-user servers get their ports from the kernel (port 0),
    in that range, so they cannot take a port chosen here before its owner binds it."""
    for _ in range(1000):
        port = random.randrange(20000, 32768)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port in 20000-32767")


def hub_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment `make run` gives the hub: node CHP and the venv first on PATH."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(NODE_BIN), str(VENV_BIN), env.get("PATH", "")])
    # log lines reach the file as they are written (the log check reads it after each test)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def wait_for(predicate, timeout: float, interval: float = 0.2, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


#: ERROR lines a hub logs in normal work, each with why it is harmless. Any other
#: ERROR fails the test during which it was logged (conftest.py), unless the test
#: expects it (``@pytest.mark.expect_log_errors(pattern, ...)``).
BENIGN_ERRORS = {
    # JupyterHub logs a request body that is not JSON before the API answers 400
    r"\] Couldn't parse JSON$": "bad input is answered with a 400",
    # a local server that exits before it listens fails its start (and its job, with
    # the reason): JupyterHub logs the spawner's SpawnException, without a traceback
    r"\] Not starting \S+'s server \S+: 400 SpawnException\(reason=exited\): it (exited|was killed)": "its job says why",
}
_ERROR_LINE = re.compile(r"^\[E (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) ")


class Hub:
    """A uws-hub process in its own directory, on free ports."""

    #: every hub the tests started (the log check reads them all)
    instances: list[Hub] = []

    def __init__(
        self, workdir: Path, config: str, db_url: str, env: dict[str, str] | None = None, base_config: bool = True
    ):
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.api_port = free_port()
        self.hub_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_token = secrets.token_hex(16)
        self.db_url = db_url
        self.config_file = workdir / "jupyterhub_config.py"
        self.base_config = base_config
        base = self._base_config() if base_config else ""
        self.config_file.write_text(base + textwrap.dedent(config))
        self.env = hub_env(env)
        self.proc: subprocess.Popen | None = None
        self.log_file = workdir / "hub.log"
        #: how much of the log the ERROR check has read
        self._errors_read = 0
        Hub.instances.append(self)

    def _base_config(self) -> str:
        return textwrap.dedent(
            f"""
            c = get_config()  # noqa
            c.JupyterHub.bind_url = "{self.url}"
            c.JupyterHub.hub_port = {self.hub_port}
            c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{self.api_port}"
            c.JupyterHub.db_url = "{self.db_url}"
            c.JupyterHub.cleanup_servers = True
            # a JupyterLab on a loaded 2-core machine may take over JupyterHub's 30 s to
            # listen (seen in a CI rehearsal beside other work); the tests wait longer
            c.Spawner.http_timeout = 90
            # bcrypt's cheapest cost for the admin account every hub creates and the
            # tests' logins (cost 12, the default, is 0.24 s of CPU a hash); the tests
            # of the cost itself set it again (tests/integration/test_auth_local.py)
            c.WorkspaceLocalAuthenticator.bcrypt_rounds = 4
            # a service with admin rights over users, servers and tokens, for the tests
            c.JupyterHub.services = [{{"name": "test-admin", "api_token": "{self.admin_token}"}}]
            c.JupyterHub.load_roles = [{{
                "name": "test-admin",
                "scopes": ["admin:users", "admin:servers", "tokens", "admin:groups", "list:users", "read:users", "proxy"],
                "services": ["test-admin"],
            }}]
            """
        )

    # ---------------------------------------------------------------- process
    def start(self, timeout: float = 60) -> Hub:
        log = open(self.log_file, "ab")
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "uws-hub"), "-f", str(self.config_file)],
            cwd=self.workdir,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"uws-hub exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if not self.base_config:
                    return requests.get(self.url + "/hub/health", timeout=2).status_code == 200
                # our own admin token proves it is this hub on that port, not another
                # test's hub that took the same free port in the meantime
                r = requests.get(
                    self.url + "/hub/api/user", timeout=2, headers={"Authorization": f"token {self.admin_token}"}
                )
                return r.status_code == 200
            except requests.RequestException:
                return False

        wait_for(up, timeout, what="the hub to answer through the proxy")
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return ""

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace")

    #: log lines a failed test's report leaves out: its polls of a job or a server
    _POLLS = re.compile(r" (200 GET /hub/api/jobs/\d+ |200 GET /hub/api/workspaces/\d+ |Polling )")

    def log_digest(self, n: int = 60) -> str:
        """The last ``n`` lines of the log but polls: what the hub did while a test waited."""
        try:
            lines = self.log_text().splitlines()
        except FileNotFoundError:
            return ""
        return "\n".join([line for line in lines if not self._POLLS.search(line)][-n:])

    def new_error_lines(self) -> list[tuple[datetime, str]]:
        """The ERROR lines the hub logged since the last call, with their times."""
        try:
            with open(self.log_file, "rb") as f:
                f.seek(self._errors_read)
                data = f.read()
        except FileNotFoundError:
            return []
        # up to the last complete line: the rest is read next time
        data = data[: data.rfind(b"\n") + 1]
        self._errors_read += len(data)
        found = []
        for line in data.decode(errors="replace").splitlines():
            match = _ERROR_LINE.match(line)
            if match:
                found.append((datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S.%f"), line))
        return found

    # ---------------------------------------------------------------- HTTP
    def request(self, method: str, path: str, token: str | None = None, **kw) -> requests.Response:
        """A request to ``/hub/api/<path>`` (or to an absolute path) through the proxy."""
        headers = kw.pop("headers", {})
        if token:
            headers["Authorization"] = f"token {token}"
        url = path if path.startswith("http") else self.url + (path if path.startswith("/") else "/hub/api/" + path)
        kw.setdefault("timeout", 30)
        kw.setdefault("allow_redirects", False)
        r = requests.request(method, url, headers=headers, **kw)
        record(method, url, r.status_code)
        return r

    def raw_request(
        self, method: str, path: str, token: str, body: bytes | None = None, direct: bool = False
    ) -> tuple[int, str]:
        """A request whose path is sent byte for byte (no dot-segment clean-up,
        which HTTP client libraries do), to test what a hostile client can send.
        ``direct`` sends it to the hub's own port, past the proxy (which cleans
        up dot segments itself)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.hub_port if direct else self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers={"Authorization": f"token {token}"})
            resp = conn.getresponse()
            record(method, path, resp.status)
            return resp.status, resp.read().decode(errors="replace")
        finally:
            conn.close()

    def api(self, method: str, path: str, token: str | None = None, expect: int | None = None, **kw):
        r = self.request(method, path, token or self.admin_token, **kw)
        if expect is not None:
            assert r.status_code == expect, f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content and r.headers.get("Content-Type", "").startswith("application/json") else r

    # ---------------------------------------------------------------- users
    def add_user(self, name: str, admin: bool = False) -> str:
        """Create a user through JupyterHub's own REST API and return a token of theirs."""
        r = self.request("GET", f"users/{name}", self.admin_token)
        if r.status_code == 404:
            self.api("POST", f"users/{name}", json={"admin": admin}, expect=201)
        token = self.api("POST", f"users/{name}/tokens", json={"note": "tests"}, expect=201)
        return token["token"]

    def wait_job(self, job_id: int, token: str, statuses: set[str], timeout: float = 60) -> dict:
        seen: dict = {}

        def done():
            job = seen["job"] = self.api("GET", f"jobs/{job_id}", token, expect=200)
            return job if job["status"] in statuses else None

        try:
            return wait_for(done, timeout, interval=0.25, what=f"job {job_id} to reach {statuses}")
        except AssertionError as e:
            # where the job stuck (the hub's log is in the failed test's report: conftest.py)
            job = seen.get("job") or {}
            raise AssertionError(
                f"{e}: it stayed {job.get('status')!r} (reason {job.get('reason')!r},"
                f" stopping_at {job.get('stopping_at')!r})"
            ) from None
