"""A port squatter: another account's process that listens on the port the hub chose for
a server before the server binds it. The server cannot bind and exits; the hub must not
take the squatter for the server (JupyterHub's own check would: any HTTP answer will do),
or it would route the server's URL, on the hub's origin, to the squatter's pages."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import uuid
from pathlib import Path

import pytest
import requests

from ..helpers import MINIMAL_CMD, launch
from ..hubutil import free_port, wait_for

SQUATTER = textwrap.dedent(
    """
    import http.server, sys
    port, log = int(sys.argv[1]), sys.argv[2]

    class Answer(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            with open(log, "a") as f:
                f.write(self.path + "\\n")
            body = b"<h1>JupyterLab</h1>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    http.server.HTTPServer(("127.0.0.1", port), Answer).serve_forever()
    """
)


@pytest.fixture(scope="module")
def squatted(make_hub, system_users):
    """A hub whose servers all get one port, held by a process of uwsbob's."""
    port = free_port()
    # where uwsbob may write (pytest's own folders are root's only)
    log = Path(tempfile.mkdtemp(prefix="uws-squatter-")) / "requests.log"
    log.parent.chmod(0o777)
    bob = pwd.getpwnam("uwsbob")
    squatter = subprocess.Popen(
        [sys.executable, "-c", SQUATTER, str(port), str(log)], user=bob.pw_uid, group=bob.pw_gid, extra_groups=[]
    )
    try:
        wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, 15, what="the squatter to listen")
        hub = make_hub(f"c.UWSHub.system_users = True\nc.WorkspaceLocalProcessSpawner.port = {port}\n")
        yield hub, log
    finally:
        squatter.kill()
        squatter.wait()
        shutil.rmtree(log.parent)


def test_a_server_whose_port_another_account_holds_fails_and_is_never_routed_to_it(squatted):
    hub, log = squatted
    alice = hub.add_user("uwsalice")
    ws = hub.api("POST", "workspaces", alice, json={"name": "squatted"}, expect=201)
    job = hub.api("POST", f"workspaces/{ws['id']}/jobs", alice, json={"job_type": "jupyterlab"}, expect=202)
    job = hub.wait_job(job["id"], alice, {"running", "failed"})
    # the server could not bind its port: its job fails, saying so
    assert job["status"] == "failed"
    assert job["reason"] == "The server failed to start: it exited with status 1 before it answered", job["reason"]
    assert "is already in use" in hub.api("GET", f"jobs/{job['id']}/output", alice)["output"]
    # and nothing of alice's reached the squatter: not the hub's check, not her browser
    r = hub.request("GET", "/user/uwsalice/squatted/lab", alice, allow_redirects=False)
    assert "<h1>JupyterLab</h1>" not in r.text
    assert not log.exists() or log.read_text() == "", log.read_text()


def _hub_with_routes(make_hub, config: str):
    """A single-account hub whose polls of servers and reconcile scans are an hour apart,
    and a function that lists its proxy's routes."""
    token = "proxy-" + uuid.uuid4().hex
    hub = make_hub(
        "c.UWSHub.system_users = False\nc.UWSHub.job_reconcile_interval = 3600\n"
        "c.Spawner.poll_interval = 3600\n"
        f"c.UWSHub.job_types = {{'minimal': {{'cmd': {MINIMAL_CMD!r}}}}}\n" + config,
        env={"CONFIGPROXY_AUTH_TOKEN": token},
    )

    def routes() -> set[str]:
        r = requests.get(f"http://127.0.0.1:{hub.api_port}/api/routes", headers={"Authorization": f"token {token}"})
        return {spec.rstrip("/") for spec in r.json()}

    return hub, routes


def test_a_server_that_dies_loses_its_route_at_once_not_at_the_next_poll(make_hub):
    """review5: a running server's port is free again the moment it dies, and another
    account's process that binds it got the server's requests (on the hub's origin) until
    the hub's next poll or reconcile scan (10 s, JupyterHub's own 30 s). Its exit is now
    watched: the route goes, and the job fails, at once. Failed before: with both of
    them an hour apart, the job stayed running."""
    hub, routes = _hub_with_routes(make_hub, "")
    user = hub.add_user("sqdies")
    job = hub.wait_job(launch(hub, user)["id"], user, {"running", "failed"})
    assert job["status"] == "running", job["reason"]
    route = f"/user/sqdies/{job['server_name']}"
    assert route in routes()
    os.kill(int(job["resource_id"]), signal.SIGKILL)
    job = hub.wait_job(job["id"], user, {"failed"}, timeout=30)
    assert job["reason"].startswith("The server was killed by signal 9 (SIGKILL)"), job["reason"]
    assert route not in routes()


def test_a_server_the_hub_found_again_at_its_start_loses_its_route_at_once_when_it_dies(make_hub):
    """review5: as above, for a server that outlived a restart of the hub (its exit is
    watched from JupyterHub's restore of it on; JupyterHub's own callback takes the route
    out). Failed before: the route stayed."""
    hub, routes = _hub_with_routes(make_hub, "c.JupyterHub.cleanup_servers = False\n")
    user = hub.add_user("sqrestart")
    job = hub.wait_job(launch(hub, user)["id"], user, {"running", "failed"})
    assert job["status"] == "running", job["reason"]
    route = f"/user/sqrestart/{job['server_name']}"
    pid = int(job["resource_id"])
    try:
        hub.stop()
        hub.start()
        wait_for(lambda: route in routes(), 15, what="the hub to find the server again")
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: route not in routes(), 30, what="the dead server's route to go")
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
