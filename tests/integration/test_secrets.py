"""Secrets stay secret: a job's output and its tokens, and tokens in URLs.

- a job whose server prints its environment (its API token among it) fails:
  a viewer of the shared workspace sees a readable reason, no output, and no
  token in the events; the owner reads the output with the tokens redacted;
- every end of a job (exit with an error, crash, stop on request, stop through
  JupyterHub's server API, time limit) revokes the server's API token, and the
  OAuth tokens a grantee got for the server end with the job and with the share;
- hub restarts: without cleanup_servers a running job keeps its token and
  tokens of servers that are gone are revoked; with it, the job's token ends;
- the workspace page shows the output under a failure to the owner only;
- a request with ``?token=<a real token>`` leaves no trace of the token in the
  hub's log, with debug logging on.

The hub runs with debug logging, so that whatever JupyterHub, tornado or
uws-hub log at any level is checked for the tokens too.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import uuid
from urllib.parse import urlencode

import pytest
import websocket

from .. import browserutil
from ..authutil import login
from ..helpers import (
    MINIMAL_CMD,
    MULTIUSER_CONFIG,
    launch,
    oauth_authorize,
    oauth_exchange,
    oauth_token,
    server_token,
    sse_replay,
)
from ..hubutil import wait_for

TERMINAL = {"completed", "failed", "cancelled"}
PASSWORD = "a long password for tests"

#: prints the job's environment in the forms it takes in logs, then fails
LEAK_SCRIPT = r"""
import os, sys
t = os.environ["JUPYTERHUB_API_TOKEN"]
print("JUPYTERHUB_API_TOKEN=" + t)
print(dict(os.environ))
print("curl -H 'Authorization: token " + t + "' http://127.0.0.1/hub/api/user")
print("open http://127.0.0.1/user/x/?token=" + t + "&x=1")
print("the token is " + t)
print("MY_SECRET=hunter2 PASSWORD=swordfish")
print("boom: leaking on purpose", flush=True)
sys.exit(4)
"""

#: prints the environment, then runs the minimal server (a job that ran, then crashes)
LEAK_THEN_SERVE = (
    "import os, runpy, sys; print(os.environ, flush=True); "
    f"sys.argv = [{MINIMAL_CMD[1]!r}]; runpy.run_path({MINIMAL_CMD[1]!r}, run_name='__main__')"
)

CONFIG = (
    MULTIUSER_CONFIG
    + f"""
c.JupyterHub.log_level = "DEBUG"
c.UWSHub.job_types["leaky"] = {{"display_name": "Prints its token, fails", "cmd": ["python3", "-c", {LEAK_SCRIPT!r}]}}
c.UWSHub.job_types["leaky-server"] = {{
    "display_name": "Prints its token, serves",
    "cmd": [{MINIMAL_CMD[0]!r}, "-c", {LEAK_THEN_SERVE!r}],
}}
"""
)


@pytest.fixture(scope="module")
def shub(make_hub, system_users):
    hub = make_hub(CONFIG)
    for name in ("uwsalice", "uwsbob"):
        hub.api("POST", "accounts", json={"username": name, "password": PASSWORD}, expect=201)
    hub.alice = hub.add_user("uwsalice")
    hub.bob = hub.add_user("uwsbob")
    return hub


def shared_workspace(hub):
    """A new workspace of alice's, shared with bob as a viewer."""
    ws = hub.api("POST", "workspaces", hub.alice, json={"name": f"sec {uuid.uuid4().hex[:8]}"}, expect=201)
    hub.api("POST", f"workspaces/{ws['id']}/shares", hub.alice, json={"user": "uwsbob", "level": "viewer"}, expect=201)
    return ws


def run(hub, ws, job_type="minimal"):
    job = hub.wait_job(launch(hub, hub.alice, ws, job_type=job_type)["id"], hub.alice, {"running"} | TERMINAL)
    assert job["status"] == "running", job["reason"]
    return job


def works(hub, token) -> bool:
    r = hub.request("GET", "user", token)
    assert r.status_code in (200, 403), r.text
    return r.status_code == 200


# ---------------------------------------------------------------- output
def test_failed_job_shows_viewers_a_reason_and_its_owner_the_redacted_output(shub):
    ws = shared_workspace(shub)
    job = shub.wait_job(launch(shub, shub.alice, ws, job_type="leaky")["id"], shub.alice, TERMINAL, timeout=30)
    assert job["status"] == "failed"
    log = (shub.workdir / "uws-job-logs" / f"job-{job['id']}.log").read_text()
    token = re.search(r"^JUPYTERHUB_API_TOKEN=(\w+)$", log, re.M).group(1)

    # the viewer: a readable reason, no output, no token anywhere
    seen = shub.api("GET", f"jobs/{job['id']}", shub.bob, expect=200)
    assert seen["reason"] == "The server failed to start: it exited with status 4 before it answered"
    assert "output" not in seen
    r = shub.request("GET", f"jobs/{job['id']}/output", shub.bob)
    assert r.status_code == 403 and "owner" in r.json()["message"]
    listed = shub.api("GET", f"jobs?workspace={ws['id']}", shub.bob, expect=200)
    assert token not in json.dumps(listed) and "boom" not in json.dumps(listed)
    events = sse_replay(shub, shub.bob, f"job={job['id']}&last_event_id=0")
    assert "failed" in [e["status"] for e in events]
    assert token not in json.dumps(events) and "boom" not in json.dumps(events)
    assert token not in json.dumps(shub.api("GET", f"workspaces/{ws['id']}", shub.bob, expect=200))

    # the owner: the output, with every form of the token redacted
    out = shub.api("GET", f"jobs/{job['id']}/output", shub.alice, expect=200)
    assert out["job_id"] == job["id"]
    text = out["output"]
    assert "boom: leaking on purpose" in text
    assert token not in text
    assert "JUPYTERHUB_API_TOKEN=[redacted]" in text
    assert "'JUPYTERHUB_API_TOKEN': '[redacted]'" in text
    assert "Authorization: token [redacted]" in text
    assert "?token=[redacted]&x=1" in text
    assert "MY_SECRET=[redacted] PASSWORD=[redacted]" in text
    # admins too
    admin = shub.add_user("uwsadmin", admin=True)
    assert shub.api("GET", f"jobs/{job['id']}/output", admin, expect=200)["output"] == text

    # and the token died with the job
    assert not works(shub, token)
    assert shub.request("GET", "jobs/999999/output", shub.alice).status_code == 404
    assert shub.request("GET", "jobs/nope/output", shub.alice).status_code == 404


@pytest.mark.browser
def test_the_workspace_page_shows_the_output_to_its_owner_only(shub, browser):
    from playwright.sync_api import expect

    ws = shared_workspace(shub)
    context, page = browserutil.login(shub, browser, "uwsalice", PASSWORD)
    try:
        page.goto(f"{shub.url}/hub/workspaces/{ws['id']}")
        page.select_option("#job-type-select", "leaky")
        page.click("#launch-job")
        failure = page.locator("#last-failure")
        expect(failure).to_contain_text("exited with status 4 before it answered")
        # the output is behind "Show log"
        expect(page.locator("#failure-output")).not_to_be_visible()
        page.click("#failure-log summary")
        expect(failure).to_contain_text("boom: leaking on purpose")
        expect(failure).to_contain_text("JUPYTERHUB_API_TOKEN=[redacted]")
    finally:
        context.close()
    [job] = shub.api("GET", f"jobs?workspace={ws['id']}", shub.alice)["items"]
    context, page = browserutil.login(shub, browser, "uwsbob", PASSWORD)
    try:
        page.goto(f"{shub.url}/hub/workspaces/{ws['id']}")
        row = page.locator(f"#jobs tr[data-job-id='{job['id']}']")
        expect(row).to_contain_text("exited with status 4 before it answered")
        expect(page.locator("#last-failure")).to_contain_text("exited with status 4 before it answered")
        assert page.locator("#failure-log").count() == 0
        assert "boom" not in page.content()
    finally:
        context.close()


def test_crashed_job_that_printed_its_token(shub):
    """A server that ran, printed its environment, then was killed: its token is revoked too
    (JupyterHub's poll forgets the token of a process that is gone, before the stop)."""
    ws = shared_workspace(shub)
    job = run(shub, ws, "leaky-server")
    token = server_token(job)
    assert works(shub, token)
    os.kill(int(job["resource_id"]), signal.SIGKILL)
    job = shub.wait_job(job["id"], shub.alice, TERMINAL, timeout=20)
    assert job["status"] == "failed"
    assert "\n" not in job["reason"] and token not in job["reason"]
    assert not works(shub, token)
    out = shub.api("GET", f"jobs/{job['id']}/output", shub.alice, expect=200)["output"]
    assert "'JUPYTERHUB_API_TOKEN': '[redacted]'" in out and token not in out


# ---------------------------------------------------------------- token revocation
def stop_on_request(hub, job):
    hub.api("POST", f"jobs/{job['id']}/stop", hub.alice, expect=202)


def stop_through_jupyterhub(hub, job):
    r = hub.request("DELETE", f"users/uwsalice/servers/{job['server_name']}", hub.admin_token)
    assert r.status_code in (202, 204), r.text


def kill(hub, job):
    os.kill(int(job["resource_id"]), signal.SIGKILL)


def time_limit(hub, job):
    pass  # the "short" job type stops after 3 s


@pytest.mark.parametrize(
    "job_type, end, outcome",
    [
        ("minimal", stop_on_request, "completed"),
        ("minimal", stop_through_jupyterhub, "completed"),
        ("minimal", kill, "failed"),
        ("short", time_limit, "failed"),
    ],
    ids=["stop", "jupyterhub-api", "crash", "time-limit"],
)
def test_every_end_of_a_job_revokes_its_server_token(shub, job_type, end, outcome):
    ws = shared_workspace(shub)
    job = run(shub, ws, job_type)
    token = server_token(job)
    assert works(shub, token)
    end(shub, job)
    job = shub.wait_job(job["id"], shub.alice, TERMINAL, timeout=30)
    assert job["status"] == outcome, job["reason"]
    assert not works(shub, token)


def _server_credentials(hub, job) -> dict[str, int]:
    """What the hub's database holds of the job's server's credentials: its API tokens,
    the OAuth tokens and codes issued to its OAuth client, the client, and the server
    rows that name the client."""
    from sqlalchemy import create_engine, text

    client = f"jupyterhub-user-{job['owner']}-{job['server_name']}"
    note = f"Server at /user/{job['owner']}/{job['server_name']}/"
    counts = {
        "api_tokens": "SELECT count(*) FROM api_tokens WHERE note = :note",
        "oauth_tokens": "SELECT count(*) FROM api_tokens WHERE client_id = :client",
        "oauth_codes": "SELECT count(*) FROM oauth_codes WHERE client_id = :client",
        "oauth_clients": "SELECT count(*) FROM oauth_clients WHERE identifier = :client",
        "servers_naming_it": "SELECT count(*) FROM spawners WHERE oauth_client_id = :client",
    }
    engine = create_engine(hub.db_url)
    try:
        with engine.connect() as db:
            return {
                name: db.execute(text(query), {"note": note, "client": client}).scalar_one()
                for name, query in counts.items()
            }
    finally:
        engine.dispose()


def _server_credentials_left(hub, job) -> tuple[int, int]:
    """How many API tokens and OAuth clients of the job's server the hub's database holds."""
    credentials = _server_credentials(hub, job)
    return credentials["api_tokens"], credentials["oauth_clients"]


def test_a_stopped_job_is_reported_ended_with_its_servers_credentials_gone(shub):
    """A stop records the job's end as soon as its process has exited, before JupyterHub's
    own cleanup of the server (which deletes the same token and OAuth client): whoever sees
    the job ended finds its server's API token refused, its OAuth client and every
    visitor's OAuth token gone. The workspace then starts a job again and is deleted
    right away (the server's cleanup may still be under way then)."""
    ws = shared_workspace(shub)
    bob = login(shub, "uwsbob", PASSWORD)
    assert bob.ok, bob
    job = run(shub, ws, "minimal")
    token = server_token(job)
    bobs = oauth_token(shub, bob.session, job, token)
    assert works(shub, token) and works(shub, bobs)
    assert _server_credentials_left(shub, job) == (1, 1)
    stop_on_request(shub, job)
    ended = shub.wait_job(job["id"], shub.alice, TERMINAL, timeout=30)
    assert ended["status"] == "completed", ended["reason"]
    assert ended["reason"] is None or "\n" not in ended["reason"]  # no output in a stop's reason
    assert _server_credentials_left(shub, job) == (0, 0)
    assert not works(shub, token) and not works(shub, bobs)
    # at once: a new job of the workspace, stopped, and the workspace deleted
    again = run(shub, ws, "minimal")
    stop_on_request(shub, again)
    assert shub.wait_job(again["id"], shub.alice, TERMINAL, timeout=30)["status"] == "completed"
    assert shub.api("DELETE", f"workspaces/{ws['id']}", shub.alice, expect=202)["status"] == "deleting"

    def delete_ended() -> str | None:
        """'deleted', or the workspace once it is no longer deleting (its delete failed)."""
        r = shub.request("GET", f"workspaces/{ws['id']}", shub.alice)
        if r.status_code == 404:
            return "deleted"
        return None if r.json()["status"] == "deleting" else r.text

    assert wait_for(delete_ended, 30, what="the workspace's delete") == "deleted"


def test_a_stop_deletes_its_servers_tokens_and_oauth_codes_and_nothing_else(shub):
    """The end of a job deletes its server's API token, its OAuth client and whatever was
    issued to that client (a visitor's OAuth token, the code of a login left half-way),
    and nothing of another server's, nor the users' own tokens: all still work."""
    ws, other_ws = shared_workspace(shub), shared_workspace(shub)
    bob = login(shub, "uwsbob", PASSWORD)
    assert bob.ok, bob
    job, other = run(shub, ws), run(shub, other_ws)
    token, others = server_token(job), server_token(other)
    bobs, bobs_other = oauth_token(shub, bob.session, job, token), oauth_token(shub, bob.session, other, others)
    for server in (job, other):  # a login into each server, its code not exchanged (yet)
        assert oauth_authorize(shub, bob.session, server).status_code == 302
    held = {"api_tokens": 1, "oauth_tokens": 1, "oauth_codes": 1, "oauth_clients": 1, "servers_naming_it": 1}
    assert _server_credentials(shub, job) == _server_credentials(shub, other) == held
    stop_on_request(shub, job)
    ended = shub.wait_job(job["id"], shub.alice, TERMINAL, timeout=30)
    assert ended["status"] == "completed", ended["reason"]
    assert _server_credentials(shub, job) == dict.fromkeys(held, 0)
    assert _server_credentials(shub, other) == held
    assert not works(shub, token) and not works(shub, bobs)
    assert all(works(shub, t) for t in (others, bobs_other, shub.alice, shub.bob))
    stop_on_request(shub, other)
    assert shub.wait_job(other["id"], shub.alice, TERMINAL, timeout=30)["status"] == "completed"
    assert _server_credentials(shub, other) == dict.fromkeys(held, 0)
    assert all(works(shub, t) for t in (shub.alice, shub.bob))


def test_a_servers_oauth_client_secret_is_its_token_hashed_as_the_token_is(shub):
    """The server's OAuth client secret is its API token (JupyterHub generates it): stored
    with the token's 1 round of SHA-512, not 16,384 (uws_hub.oauthclients); JupyterHub's
    code exchange takes that secret, and refuses any other."""
    from sqlalchemy import create_engine, text

    ws = shared_workspace(shub)
    bob = login(shub, "uwsbob", PASSWORD)
    assert bob.ok, bob
    job = run(shub, ws, "minimal")
    token = server_token(job)
    engine = create_engine(shub.db_url)
    try:
        with engine.connect() as db:
            secret, hashed = db.execute(
                text(
                    "SELECT c.secret, t.hashed FROM oauth_clients c JOIN api_tokens t ON t.note = :note"
                    " WHERE c.identifier = :client"
                ),
                {
                    "note": f"Server at /user/uwsalice/{job['server_name']}/",
                    "client": f"jupyterhub-user-uwsalice-{job['server_name']}",
                },
            ).one()
    finally:
        engine.dispose()
    assert secret.startswith("sha512:1:") and hashed.startswith("sha512:1:") and secret != hashed
    wrong = token[:-1] + ("0" if token[-1] != "0" else "1")
    r = oauth_exchange(shub, bob.session, job, wrong)
    assert r.status_code in (400, 401, 403) and "access_token" not in r.text, (r.status_code, r.text)
    bobs = oauth_token(shub, bob.session, job, token)
    assert shub.api("GET", "user", bobs, expect=200)["name"] == "uwsbob"
    stop_on_request(shub, job)
    shub.wait_job(job["id"], shub.alice, TERMINAL)


def test_grantee_oauth_tokens_end_with_the_job_and_with_the_share(shub):
    ws = shared_workspace(shub)
    bob = login(shub, "uwsbob", PASSWORD)
    assert bob.ok, bob
    job = run(shub, ws, "minimal")
    bobs = oauth_token(shub, bob.session, job, server_token(job))
    assert shub.api("GET", "user", bobs, expect=200)["name"] == "uwsbob"
    stop_on_request(shub, job)
    shub.wait_job(job["id"], shub.alice, TERMINAL)
    assert not works(shub, bobs)

    job = run(shub, ws, "minimal")
    bobs = oauth_token(shub, bob.session, job, server_token(job))
    assert works(shub, bobs)
    [share] = shub.api("GET", f"workspaces/{ws['id']}/shares", shub.alice, expect=200)["items"]
    r = shub.request("DELETE", f"workspaces/{ws['id']}/shares/{share['id']}", shub.alice)
    assert r.status_code in (200, 204), r.text
    assert not works(shub, bobs)
    stop_on_request(shub, job)
    shub.wait_job(job["id"], shub.alice, TERMINAL)


# ---------------------------------------------------------------- logs
def send(hub, method, path, token=None):
    """A request whose answer is not read (an event stream would never end)."""
    hub.request(method, path, token, stream=True, timeout=10).close()


def test_tokens_in_urls_leave_no_trace_in_the_hub_log(shub):
    token = shub.add_user("uwsalice")
    ws = shub.api("POST", "workspaces", token, json={"name": f"log {uuid.uuid4().hex[:8]}"}, expect=201)
    paths = [
        "/hub/api/workspaces",
        "/hub/api/user",
        "/hub/workspaces",
        "/hub/api/events",
        "/hub/api/jobs/1",
        f"/hub/api/workspaces/{ws['id']}/files/x",
        "/hub/api/users/uwsbob",
        "/hub/",
        "/hub/home",
        "/hub/token",
        "/hub/spawn/uwsalice/x",
        "/user/uwsalice/x/lab",
        "/hub/api/nothing",
        "/hub/nothing",
        "/hub/api/oauth2/authorize",
    ]
    for path in paths:
        for method in ("GET", "POST", "DELETE"):
            send(shub, method, f"{path}?token={token}&x=1")
            send(shub, method, f"{path}?x=1&" + urlencode({"next": f"/hub/home?token={token}"}), token)
    with pytest.raises(websocket.WebSocketBadStatusException):
        websocket.create_connection(shub.url.replace("http", "ws") + f"/hub/api/events/ws?token={token}", timeout=10)
    # a bad token in the header is logged by no one either
    shub.request("GET", "workspaces", token[::-1])
    # the token works (it is a real one), and the hub has logged all of the above
    assert shub.request("GET", "workspaces", token).status_code == 200
    wait_for(lambda: "/hub/api/events/ws" in shub.log_text(), 10, what="the hub to log the requests")
    log = shub.log_text()
    assert "/hub/api/oauth2/authorize" in log
    assert token not in log
    assert token[::-1] not in log


def test_hub_restarts_keep_running_servers_tokens_and_revoke_the_rest(make_hub, system_users):
    """A restart without cleanup_servers keeps a running job (and its token) and revokes
    server tokens left behind by servers that are gone (as every end of a job left them
    before it revoked them); a restart with cleanup_servers ends the job and its token."""
    hub = make_hub(MULTIUSER_CONFIG + "c.JupyterHub.cleanup_servers = False\n")
    hub.alice = alice = hub.add_user("uwsalice")
    ws = hub.api("POST", "workspaces", alice, json={"name": f"restart {uuid.uuid4().hex[:8]}"}, expect=201)
    job = run(hub, ws, "minimal")
    try:
        token = server_token(job)
        stale = [
            hub.api("POST", "users/uwsalice/tokens", json={"note": note}, expect=201)["token"]
            for note in ("Server at /user/uwsalice/gone/", "retrieved from spawner gone")
        ]
        assert all(works(hub, t) for t in stale)

        hub.stop()
        hub.start()
        assert not any(works(hub, t) for t in stale)
        assert works(hub, alice)
        assert hub.api("GET", f"jobs/{job['id']}", alice)["status"] == "running"
        assert works(hub, token)

        hub.config_file.write_text(hub.config_file.read_text() + "c.JupyterHub.cleanup_servers = True\n")
        hub.stop()
        hub.start()  # with cleanup_servers, for the next stop
        assert works(hub, token)
        hub.stop()
        hub.start()
        ended = hub.api("GET", f"jobs/{job['id']}", alice)
        assert (ended["status"], ended["reason"]) == ("cancelled", "The hub shut down and stopped its servers")
        assert not works(hub, token)
    finally:
        # without cleanup_servers, a failure above would leave the job running past its hub
        with contextlib.suppress(ProcessLookupError):
            os.killpg(int(job["resource_id"]), signal.SIGKILL)
