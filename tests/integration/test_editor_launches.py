"""Jobs an editor launches run as the editor's own account, for real.

A shared workspace has a POSIX group, which the hub gives to the jobs of its owner
and editors there (no account is its member: an editor's own login does not reach
the workspace, and a revocation kills none of its processes); a job runs
as the system account of whoever launched it (``launcher``): the editor's
batch job reports the editor's name and the workspace's group, writes files
the owner's next job reads and changes, and the owner's jobs (and an admin's
launch) still run as the owner. In a live server only its launcher writes
and runs code: the owner gets the read-only view of the server an editor
launched (kernels and terminals 403, files readable), a viewer, a stranger, a
user admin and anonymous get no launch and no write, and no code in it. Revoking the editor (or
lowering them to viewer) stops their jobs there and not the owner's. A real
hub with system users, real processes, a real JupyterLab through the proxy.
"""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import expect

from .. import browserutil
from ..authutil import login
from ..helpers import GHOST, MINIMAL_CMD, few_descriptors, make_deep, refused_code_and_saving, start_code
from ..hubmaputil import ORIGIN, Portal
from ..hubutil import wait_for
from ..uwsclient import create, session

#: a process that names itself (its ``comm``) in bytes that are no UTF-8, then sleeps
RENAMED = 'import time; open("/proc/self/comm", "wb").write(b"\\xff\\xfe"); time.sleep(1000)'
OWNER, EDITOR, OTHER, ADMIN, USER_ADMIN = "uwsalice", "uwscarol", "uwsbob", "uwsadmin", "uwskeeper"
PASSWORD = "a long password for tests"
JOB_TYPES = {
    "jupyterlab": {"display_name": "JupyterLab", "default_url": "/lab", "env": {"PIP_NO_INDEX": "1"}},
    # who runs it, with which groups; what it finds in the workspace, and leaves there
    "who": {
        "interactive": False,
        "cmd": [
            "sh",
            "-c",
            'id -un; id -Gn; cat note.txt 2>/dev/null; echo "$(id -un) was here" >> note.txt && echo wrote',
        ],
    },
    "sleeper": {"interactive": False, "cmd": ["sleep", "600"]},
    # leaves a process behind that is in no group of the job's and has none of its environment
    "daemon": {
        "interactive": False,
        "cmd": [
            "sh",
            "-c",
            "setsid env -i /bin/sh -c 'touch up; exec /bin/sleep 600' </dev/null >/dev/null 2>&1 &"
            " while [ ! -e up ]; do sleep 0.05; done; echo left",
        ],
    },
    # a server that leaves a process behind, as `setsid env -i sleep inf &` typed in its terminal would
    "server-daemon": {
        "cmd": [
            "sh",
            "-c",
            "setsid env -i /bin/sleep 1000 </dev/null >/dev/null 2>&1 & exec " + " ".join(MINIMAL_CMD),
        ],
    },
    # the same, the process left behind looking ended (its first thread gone, a second on)
    "server-ghost": {
        "cmd": [
            "sh",
            "-c",
            f"setsid env -i /usr/bin/python3 -c '{GHOST}' </dev/null >/dev/null 2>&1 & exec " + " ".join(MINIMAL_CMD),
        ],
    },
    # the same, the process left behind naming itself in bytes no text is (its /proc status unreadable as UTF-8)
    "server-renamed": {
        "cmd": [
            "sh",
            "-c",
            f"setsid env -i /usr/bin/python3 -c '{RENAMED}' </dev/null >/dev/null 2>&1 & exec " + " ".join(MINIMAL_CMD),
        ],
    },
    # a server that reports its activity to the hub every second (JupyterHub's default: 5 minutes)
    "lab-reporting": {
        "display_name": "JupyterLab",
        "default_url": "/lab",
        "env": {"PIP_NO_INDEX": "1", "JUPYTERHUB_ACTIVITY_INTERVAL": "1"},
    },
}
ENDED = {"completed", "failed", "cancelled"}


def editor_hub(make_hub, group_prefix: str, last_activity_interval: int):
    hub = make_hub(f"""
c.UWSHub.system_users = True
c.UWSHub.job_reconcile_interval = 1
c.UWSHub.share_sync_interval_seconds = 1
c.JupyterHub.last_activity_interval = {last_activity_interval}
c.UWSHub.share_posix_group_prefix = {group_prefix!r}
c.Authenticator.admin_users = {{{ADMIN!r}}}
c.JupyterHub.load_roles.append({{"name": "user-keeper", "scopes": ["admin:users", "list:users", "read:users"],
                                "users": [{USER_ADMIN!r}]}})
c.UWSHub.job_types = {JOB_TYPES!r}
c.HubMAPCompat.enabled = True
c.HubMAPCompat.job_type_ids = {{"jupyter_lab": "jupyterlab"}}
c.HubMAPCompat.cors_origins = [{ORIGIN!r}]
""")
    hub.group_prefix = group_prefix
    for name in (OWNER, EDITOR, OTHER):
        hub.api("POST", "accounts", json={"username": name, "password": PASSWORD}, expect=201)
    hub.tokens = {name: hub.add_user(name, admin=name == ADMIN) for name in (OWNER, EDITOR, OTHER, ADMIN, USER_ADMIN)}
    return hub


@pytest.fixture(scope="module")
def ehub(make_hub, system_users, group_prefix):
    # JupyterHub's poll of the proxy's activity (every 5 minutes) takes any request through
    # the owner's servers' routes for the owner's activity: not during these tests, which
    # check what moves it
    return editor_hub(make_hub, group_prefix, 86400)


@pytest.fixture(scope="module")
def polling_hub(make_hub, system_users, group_prefix):
    """The same, polling the proxy's activity every second (its workspaces' groups apart)."""
    return editor_hub(make_hub, group_prefix + "p", 1)


def shared_workspace(hub, viewer: str | None = None) -> dict:
    """A workspace of alice's shared with carol as editor (and ``viewer`` as viewer), with the
    editor's share's id in ``share_id``."""
    alice = hub.tokens[OWNER]
    ws = hub.api("POST", "workspaces", alice, expect=201, json={"name": f"shared {uuid.uuid4().hex[:6]}"})
    share = hub.api(
        "POST", f"workspaces/{ws['id']}/shares", alice, json={"user": EDITOR, "level": "editor"}, expect=201
    )
    if viewer is not None:
        hub.api("POST", f"workspaces/{ws['id']}/shares", alice, json={"user": viewer, "level": "viewer"}, expect=201)
    ws["share_id"] = share["id"]
    ws["group"] = f"{hub.group_prefix}{ws['id']}"
    return ws


def run(hub, ws: dict, who: str, job_type: str = "who") -> dict:
    r = hub.request("POST", f"workspaces/{ws['id']}/jobs", hub.tokens[who], json={"job_type": job_type})
    assert r.status_code == 202, r.text
    return r.json()


def finished(hub, job: dict) -> tuple[dict, list[str]]:
    """The ended job and its output's lines (read by the owner)."""
    job = hub.wait_job(job["id"], hub.tokens[OWNER], ENDED, timeout=90)
    log = hub.request("GET", f"jobs/{job['id']}/log", hub.tokens[OWNER])
    assert log.status_code == 200, log.text
    return job, log.text.strip().splitlines()


def test_an_editors_batch_job_runs_as_the_editor_with_the_workspace_group(ehub):
    ws = shared_workspace(ehub)
    carols = run(ehub, ws, EDITOR)
    assert (carols["owner"], carols["launcher"]) == (OWNER, EDITOR)
    job, lines = finished(ehub, carols)
    assert job["status"] == "completed", (job["reason"], lines)
    assert lines[0] == EDITOR, lines
    assert ws["group"] in lines[1].split() and OWNER not in lines[1].split(), lines
    assert lines[2:] == ["wrote"], lines
    # its output is the editor's to read too (the owner's jobs' output stays the owner's)
    r = ehub.request("GET", f"jobs/{job['id']}/log", ehub.tokens[EDITOR])
    assert r.status_code == 200 and r.text.startswith(EDITOR), r.text
    page = login(ehub, OWNER, PASSWORD).session.get(f"{ehub.url}/hub/jobs/{job['id']}", timeout=30)
    assert page.status_code == 200 and f'<strong id="job-launcher">{EDITOR}</strong>' in page.text
    # what it wrote is the editor's, in the workspace's group, group-writable
    directory = ehub.workspaces_root / OWNER / ws["slug"]
    note = os.stat(os.path.join(directory, "note.txt"))
    assert (pwd.getpwuid(note.st_uid).pw_name, grp.getgrgid(note.st_gid).gr_name) == (EDITOR, ws["group"])
    results = os.stat(os.path.join(directory, "results", str(job["id"])))
    assert (pwd.getpwuid(results.st_uid).pw_name, grp.getgrgid(results.st_gid).gr_name) == (EDITOR, ws["group"])

    # the owner's next job runs as the owner, reads the editor's file and adds to it
    alices = run(ehub, ws, OWNER)
    assert alices["launcher"] == OWNER
    job, lines = finished(ehub, alices)
    assert job["status"] == "completed", (job["reason"], lines)
    assert lines[0] == OWNER and lines[2:] == [f"{EDITOR} was here", "wrote"], lines
    assert ehub.request("GET", f"jobs/{job['id']}/log", ehub.tokens[EDITOR]).status_code == 403
    # an admin's launch in alice's workspace runs as alice (JupyterHub's semantics for admins)
    admins = run(ehub, ws, ADMIN)
    assert admins["launcher"] == OWNER
    job, lines = finished(ehub, admins)
    assert lines[0] == OWNER and lines[2:4] == [f"{EDITOR} was here", f"{OWNER} was here"], lines


def proc_ids(pid: str) -> tuple[str, set[int]]:
    """The user name and the supplementary group ids of a running process: ids, not
    names, since a group it got may be gone by now (another test's workspace, deleted
    meanwhile), and a gone group's id has no name."""
    status = open(f"/proc/{pid}/status", errors="replace").read()  # (its name may be no UTF-8)
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    uid = int(fields["Uid"].split()[1])
    return pwd.getpwuid(uid).pw_name, {int(g) for g in fields["Groups"].split()}


def test_only_the_launcher_runs_code_in_a_server_an_editor_launched(ehub, browser):
    ws = shared_workspace(ehub, viewer=OTHER)
    alice, carol = ehub.tokens[OWNER], ehub.tokens[EDITOR]
    job = ehub.wait_job(run(ehub, ws, EDITOR, "jupyterlab")["id"], carol, {"running", "failed"}, timeout=120)
    assert job["status"] == "running", job["reason"]
    assert job["launcher"] == EDITOR
    # the server's process is the editor's, with the workspace's group
    user, gids = proc_ids(job["resource_id"])
    assert user == EDITOR and grp.getgrnam(ws["group"]).gr_gid in gids, (user, gids)
    server = f"/user/{OWNER}/{ws['slug']}/"
    # the editor who launched it uses it fully; an admin too (admin:servers)
    assert start_code(ehub, server, carol) == [200, 201]
    assert start_code(ehub, server, ehub.tokens[ADMIN]) == [200, 201]
    # the owner reads it, and may not run code in it, nor write: it runs as carol
    r = ehub.request("GET", server + "api/contents", alice)
    assert r.status_code == 200, r.text
    refused_code_and_saving(ehub, server, alice, EDITOR)
    # a viewer, a user admin (admin:users, no admin:servers), a stranger's and nobody's requests: no
    # code in it, no launch, no write
    for who in (OTHER, USER_ADMIN, None):
        token = ehub.tokens[who] if who else None
        assert set(start_code(ehub, server, token)) <= {302, 403, 404}, who
        r = ehub.request("POST", f"workspaces/{ws['id']}/jobs", token, json={"job_type": "who"})
        assert r.status_code in ({403} if who != USER_ADMIN else {403, 404}), (who, r.status_code, r.text)
        r = ehub.request("POST", f"users/{OWNER}/servers/{ws['slug']}", token)
        assert r.status_code in (403, 404), (who, r.text)
        r = ehub.request("PUT", f"workspaces/{ws['id']}/files/x.txt", token, data=b"x")
        assert r.status_code in (403, 404), (who, r.text)
    lone = ehub.api("POST", "workspaces", alice, expect=201, json={"name": f"lone {uuid.uuid4().hex[:6]}"})
    r = ehub.request("POST", f"workspaces/{lone['id']}/jobs", ehub.tokens[OTHER], json={"job_type": "who"})
    assert r.status_code == 404, r.text
    # the workspace's page says whose server it is; the owner may stop it, then launch their own
    context, page = browserutil.login(ehub, browser, OWNER, PASSWORD)
    try:
        page.goto(f"{ehub.url}/hub/workspaces/{ws['id']}")
        expect(page.locator("#job-launcher-line")).to_have_text(
            f"Running as {EDITOR}: only {EDITOR} writes and runs code in it; you can open it read-only, stop it,"
            " and launch your own once it stopped"
        )
        expect(page.locator("#stop-job")).to_be_visible()
    finally:
        context.close()
    r = ehub.request("POST", f"workspaces/{ws['id']}/jobs", alice, json={"job_type": "jupyterlab"})
    assert r.status_code == 409, r.text
    ehub.api("POST", f"jobs/{job['id']}/stop", alice, expect=202)
    assert ehub.wait_job(job["id"], alice, ENDED)["status"] != "failed"
    job = ehub.wait_job(run(ehub, ws, OWNER, "jupyterlab")["id"], alice, {"running", "failed"}, timeout=120)
    assert job["status"] == "running" and job["launcher"] == OWNER, job["reason"]
    assert proc_ids(job["resource_id"])[0] == OWNER
    # in the owner's server, the editor reads only
    assert ehub.request("GET", server + "api/contents", carol).status_code == 200
    refused_code_and_saving(ehub, server, carol, OWNER)
    assert start_code(ehub, server, alice) == [200, 201]
    ehub.api("POST", f"jobs/{job['id']}/stop", carol, expect=202)
    ehub.wait_job(job["id"], alice, ENDED)


def test_every_launch_path_records_the_editor_and_a_held_job_runs_only_as_its_launcher(ehub):
    ws = shared_workspace(ehub)
    alice, carol = ehub.tokens[OWNER], ehub.tokens[EDITOR]
    # JupyterHub's server start API needs start:servers, which a share lacks; HuBMAP's interface launches
    r = Portal(ehub, carol).start(ws["id"], "jupyter_lab", {})
    assert r.status_code == 200, r.text
    [job] = ehub.api("GET", f"jobs?workspace={ws['id']}", alice, expect=200)["items"]
    assert job["launcher"] == EDITOR
    ehub.api("POST", f"jobs/{job['id']}/stop", carol, expect=202)
    ehub.wait_job(job["id"], carol, ENDED, timeout=90)
    # the UWS interface: a held job of carol's runs as carol; alice may not set it off, nor carol alice's
    carols, alices = session(EDITOR, carol), session(OWNER, alice)
    held = create(carols, ehub, "who", WORKSPACE=str(ws["id"]))
    job_id = int(held.rstrip("/").rsplit("/", 1)[1])
    assert ehub.api("GET", f"jobs/{job_id}", alice, expect=200)["launcher"] == EDITOR
    r = alices.post(held + "/phase", data={"PHASE": "RUN"}, allow_redirects=False, timeout=30)
    assert r.status_code == 403 and f"runs as {EDITOR}'s account" in r.text, r.text
    r = alices.post(held + "/parameters", data={"x": "1"}, allow_redirects=False, timeout=30)
    assert r.status_code in (400, 403), r.text
    owners_held = create(alices, ehub, "who", WORKSPACE=str(ws["id"]))
    r = carols.post(owners_held + "/phase", data={"PHASE": "RUN"}, allow_redirects=False, timeout=30)
    assert r.status_code == 403 and f"runs as {OWNER}'s account" in r.text, r.text
    r = carols.post(held + "/phase", data={"PHASE": "RUN"}, allow_redirects=False, timeout=30)
    assert r.status_code == 303, r.text
    _, lines = finished(ehub, {"id": job_id})
    assert lines[0] == EDITOR, lines


def server_token(job: dict) -> str:
    """The API token JupyterHub gave a running server (``JUPYTERHUB_API_TOKEN`` in its
    environment: what code in it reads)."""
    with open(f"/proc/{job['resource_id']}/environ", "rb") as f:
        env = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
    return env[b"JUPYTERHUB_API_TOKEN"].decode()


def activity(hub) -> tuple[str, dict[str, str]]:
    """The owner's ``last_activity`` and their servers' (as an admin reads them)."""
    model = hub.api("GET", f"users/{OWNER}", expect=200)
    return model["last_activity"], {name: s["last_activity"] for name, s in model["servers"].items()}


def test_an_editors_server_token_reports_its_own_servers_activity_and_nothing_else(ehub):
    """The token JupyterHub gives a server is its *owner's* (with ``users:activity!user``)
    while an editor's code runs in it: it must move that server's activity only, not the
    owner's (what an idle culler and core-hours go by) nor the owner's other servers'."""
    ws = shared_workspace(ehub, viewer=OTHER)
    alice, carol = ehub.tokens[OWNER], ehub.tokens[EDITOR]
    stranger = ehub.add_user("uwsstranger")
    # an idle server of the owner's, in another workspace
    own = ehub.api("POST", "workspaces", alice, expect=201, json={"name": f"own {uuid.uuid4().hex[:6]}"})
    owners = ehub.wait_job(run(ehub, own, OWNER, "jupyterlab")["id"], alice, {"running", "failed"}, timeout=120)
    assert owners["status"] == "running", owners["reason"]
    carols = ehub.wait_job(run(ehub, ws, EDITOR, "lab-reporting")["id"], carol, {"running", "failed"}, timeout=120)
    assert carols["status"] == "running", carols["reason"]
    token = server_token(carols)
    server = f"/user/{OWNER}/{ws['slug']}/"

    # the server's own reports (jupyterhub-singleuser's: the user's and the server's
    # last_activity in one body) are taken, for the server only
    user_before, servers_before = activity(ehub)
    assert ehub.request("GET", server + "api/contents", carol).status_code == 200
    user_now, servers_now = wait_for(
        lambda: (now := activity(ehub))[1][ws["slug"]] != servers_before[ws["slug"]] and now,
        30,
        interval=0.5,
        what="the server's report of its activity",
    )
    assert (user_now, servers_now[own["slug"]]) == (user_before, servers_before[own["slug"]])
    log = (ehub.workdir / "uws-job-logs" / f"job-{carols['id']}.log").read_text()
    assert "Error notifying Hub of activity" not in log, log

    # what code in the server could post with the token: the server's own entry only
    def post(body: dict, who: str | None = token) -> int:
        return ehub.request("POST", f"users/{OWNER}/activity", who, json=body).status_code

    soon = (datetime.now(UTC) + timedelta(minutes=30)).isoformat()
    user_before, servers_before = activity(ehub)
    assert post({"last_activity": soon}) == 200
    assert activity(ehub) == (user_before, servers_before)
    for other in (own["slug"], "no-such-server"):
        assert post({"servers": {other: {"last_activity": soon}}}) == 403
        assert (
            post(
                {
                    "last_activity": soon,
                    "servers": {ws["slug"]: {"last_activity": soon}, other: {"last_activity": soon}},
                }
            )
            == 403
        )
        assert activity(ehub) == (user_before, servers_before)
    assert post({"last_activity": soon, "servers": {ws["slug"]: {"last_activity": soon}}}) == 200
    user_now, servers_now = activity(ehub)
    assert (user_now, servers_now[own["slug"]]) == (user_before, servers_before[own["slug"]])
    assert servers_now[ws["slug"]] != servers_before[ws["slug"]]

    # nothing else of the owner's: to the hub's API it is a token with no scope of uws-hub's,
    # and it learns who the owner is, no more (not their groups, e-mail address or activity)
    me = ehub.api("GET", "user", token, expect=200)
    assert {k: v for k, v in me.items() if k not in ("scopes", "token_id", "session_id")} == {
        "kind": "user",
        "name": OWNER,
    }, me
    assert ehub.api("GET", f"users/{OWNER}", token, expect=200) == {"kind": "user", "name": OWNER}
    for method, path in [
        ("GET", "users"),
        ("GET", f"users/{OWNER}/tokens"),
        ("POST", f"users/{OWNER}/tokens"),
        ("DELETE", f"users/{OWNER}/servers/{own['slug']}"),
        ("POST", f"users/{OWNER}/servers/{own['slug']}"),
        ("DELETE", f"users/{OWNER}/servers/{ws['slug']}"),
        ("GET", "workspaces"),
        ("GET", f"workspaces/{ws['id']}"),
        ("GET", f"workspaces/{own['id']}"),
        ("GET", f"workspaces/{own['id']}/files"),
        ("PUT", f"workspaces/{own['id']}/files/x.txt"),
        ("POST", f"workspaces/{own['id']}/jobs"),
        ("GET", "jobs"),
        ("GET", f"jobs/{owners['id']}"),
        ("POST", f"jobs/{owners['id']}/stop"),
        ("GET", f"jobs/{carols['id']}/log"),
        ("GET", "job-types"),
        ("GET", "events"),
        ("GET", "notifications"),
        ("GET", "shares"),
        ("GET", f"workspaces/{own['id']}/shares"),
        ("GET", f"quotas/{OWNER}"),
        ("GET", "usage"),
        ("GET", "accounts"),
        ("GET", "hubmap/workspaces"),
        ("GET", "hubmap/jobs"),
        ("GET", "uws/who"),
    ]:
        r = ehub.request(method, path, token, json={} if method in ("POST", "PUT") else None)
        assert r.status_code in (403, 404), (method, path, r.status_code, r.text)
    # nor a token for the owner from HuBMAP's exchange, where a client's token vouches for a user
    r = ehub.request(
        "POST", "hubmap/tokens", json={"client_token": token, "user_info": {"username": OWNER, "email": ""}}
    )
    assert r.status_code == 401, r.text
    # nor the owner's other server (its own: read-only, it is no launcher)
    r = ehub.request("GET", f"/user/{OWNER}/{own['slug']}/api/contents", token)
    assert r.status_code in (302, 403, 404), r.text
    refused_code_and_saving(ehub, server, token, EDITOR)
    assert ehub.request("GET", server + "api/contents", token).status_code == 200

    # JupyterHub's own answers, unchanged: other people's tokens may not report the owner's
    # activity; a user admin (admin:users holds users:activity) and the owner may
    statuses = {
        who: post({"last_activity": soon}, token)
        for who, token in (
            ("stranger", stranger),
            ("editor", carol),
            ("viewer", ehub.tokens[OTHER]),
            ("anonymous", None),
        )
    }
    assert statuses == {"stranger": 404, "editor": 404, "viewer": 404, "anonymous": 403}
    assert activity(ehub) == (user_before, servers_now)
    assert post({"servers": {own["slug"]: {"last_activity": soon}}}, ehub.tokens[USER_ADMIN]) == 200
    # the owner's own server's token: JupyterHub's, the owner's activity and model included
    owners_token = server_token(owners)
    assert "last_activity" in ehub.api("GET", "user", owners_token, expect=200)
    assert post({"last_activity": soon}, owners_token) == 200
    user_now, servers_later = activity(ehub)
    assert user_now != user_before and servers_later[own["slug"]] != servers_now[own["slug"]]
    for job in (owners, carols):
        ehub.api("POST", f"jobs/{job['id']}/stop", alice, expect=202)
        ehub.wait_job(job["id"], alice, ENDED)


def test_requests_through_an_editors_server_move_its_activity_not_the_owners(polling_hub):
    """JupyterHub's poll of the proxy takes the last request through a server's route for
    the server's activity and its owner's: through a server an editor launched (the
    editor's, or its own code's), the server's only."""
    hub = polling_hub
    alice, carol = hub.tokens[OWNER], hub.tokens[EDITOR]
    ws = shared_workspace(hub)
    carols = hub.wait_job(run(hub, ws, EDITOR, "jupyterlab")["id"], carol, {"running", "failed"}, timeout=120)
    assert carols["status"] == "running", carols["reason"]
    user_before, servers_before = activity(hub)
    assert hub.request("GET", f"/user/{OWNER}/{ws['slug']}/api/contents", carol).status_code == 200
    wait_for(lambda: activity(hub)[1][ws["slug"]] != servers_before[ws["slug"]], 30, what="the proxy's poll")
    assert activity(hub)[0] == user_before
    # through the owner's own server: the owner's activity, as in JupyterHub
    own = hub.api("POST", "workspaces", alice, expect=201, json={"name": f"own {uuid.uuid4().hex[:6]}"})
    owners = hub.wait_job(run(hub, own, OWNER, "jupyterlab")["id"], alice, {"running", "failed"}, timeout=120)
    assert owners["status"] == "running", owners["reason"]
    user_before = activity(hub)[0]
    assert hub.request("GET", f"/user/{OWNER}/{own['slug']}/api/contents", alice).status_code == 200
    wait_for(lambda: activity(hub)[0] != user_before, 30, what="the proxy's poll")
    for job in (owners, carols):
        hub.api("POST", f"jobs/{job['id']}/stop", alice, expect=202)
        hub.wait_job(job["id"], alice, ENDED)


def editor_and_owner_jobs(ehub) -> tuple[dict, list[dict], dict]:
    """A shared workspace where carol has a running job and one waiting for a slot (the
    hub runs two batch jobs at once), and alice a running one: (workspace, carol's, alice's)."""
    ws = shared_workspace(ehub)
    alice = ehub.tokens[OWNER]
    carols = [run(ehub, ws, EDITOR, "sleeper")]
    alices = run(ehub, ws, OWNER, "sleeper")
    for job in (*carols, alices):
        assert ehub.wait_job(job["id"], alice, {"running"} | ENDED, timeout=60)["status"] == "running"
    carols.append(run(ehub, ws, EDITOR, "sleeper"))
    assert ehub.api("GET", f"jobs/{carols[-1]['id']}", alice, expect=200)["status"] in ("pending", "queued")
    return ws, carols, alices


def test_revoking_an_editor_stops_their_jobs_and_not_the_owners(ehub):
    ws, carols, alices = editor_and_owner_jobs(ehub)
    alice = ehub.tokens[OWNER]
    # lowered to viewer: an editor no more; her running and waiting jobs end
    ehub.api("POST", f"workspaces/{ws['id']}/shares", alice, json={"user": EDITOR, "level": "viewer"}, expect=200)
    for job in carols:
        job = ehub.wait_job(job["id"], alice, ENDED, timeout=60)
        assert job["status"] == "cancelled", job
        assert job["reason"] == f"stopped: {EDITOR}'s editor access to this workspace was revoked"
    assert ehub.api("GET", f"jobs/{alices['id']}", alice, expect=200)["status"] == "running"
    # an editor again, then revoked outright: their new job stops, alice's still runs
    ehub.api("POST", f"workspaces/{ws['id']}/shares", alice, json={"user": EDITOR, "level": "editor"}, expect=200)
    again = run(ehub, ws, EDITOR, "sleeper")
    assert ehub.wait_job(again["id"], alice, {"running"} | ENDED, timeout=60)["status"] == "running"
    ehub.api("DELETE", f"workspaces/{ws['id']}/shares/{ws['share_id']}", alice, expect=200)
    job = ehub.wait_job(again["id"], alice, ENDED, timeout=60)
    assert job["reason"] == f"stopped: {EDITOR}'s editor access to this workspace was revoked", job
    assert ehub.api("GET", f"jobs/{alices['id']}", alice, expect=200)["status"] == "running"
    ehub.api("POST", f"jobs/{alices['id']}/stop", alice, expect=202)
    ehub.wait_job(alices["id"], alice, ENDED, timeout=60)


def test_an_editors_jobs_elsewhere_run_without_the_workspaces_group(ehub):
    """Revoking an editor stops their jobs in the workspace. Their jobs in a workspace of
    their own ran with every group of their account, the shared workspace's too, and so
    kept write access to it after the revocation for as long as they ran (a JupyterLab,
    days): a job runs with its own workspace's group only."""
    ws = shared_workspace(ehub)
    carol = ehub.tokens[EDITOR]
    own = ehub.api("POST", "workspaces", carol, expect=201, json={"name": f"own {uuid.uuid4().hex[:6]}"})
    job = ehub.wait_job(run(ehub, own, EDITOR)["id"], carol, ENDED, timeout=90)
    lines = ehub.request("GET", f"jobs/{job['id']}/log", carol).text.strip().splitlines()
    assert job["status"] == "completed", (job["reason"], lines)
    assert lines[0] == EDITOR and ws["group"] not in lines[1].split(), lines
    # in the shared workspace, her job has its group
    job, lines = finished(ehub, run(ehub, ws, EDITOR))
    assert ws["group"] in lines[1].split(), lines


def processes_in_group(gid: int) -> list[int]:
    """The live processes holding group ``gid`` (as a supplementary group)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status", errors="replace") as f:  # (its name may be no UTF-8)
                status = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        # a zombie whose other threads run on is no zombie
        ended = status.get("State", "").split()[:1] == ["Z"] and int(status.get("Threads", "1")) <= 1
        if str(gid) in status.get("Groups", "").split() and not ended:
            found.append(int(entry))
    return found


def clean_up(*gids: int) -> None:
    """Kill what a failed test left holding these groups: its editor's and stranger's
    processes only. A gid freed by a deleted group is the next new group's, maybe another
    hub's (whose owner's jobs run as the same account), so nothing else is touched."""
    for gid in gids:
        for pid in processes_in_group(gid):
            try:
                if proc_ids(str(pid))[0] in (EDITOR, OTHER):
                    os.kill(pid, 9)
            except (OSError, KeyError):
                pass


def test_a_revoked_editor_keeps_no_process_with_the_workspace_group(ehub):
    """An editor's batch job that leaves a process behind in a session of its own, with
    an empty environment (out of its process group, unknown to the orphan sweep): the
    process ends with the job, so that revoking the editor leaves them nothing that holds
    the workspace's group (write access to its files)."""
    ws = shared_workspace(ehub)
    gid = grp.getgrnam(ws["group"]).gr_gid
    job = run(ehub, ws, EDITOR, "daemon")
    try:
        job, lines = finished(ehub, job)
        assert (job["status"], lines) == ("completed", ["left"]), job
        ehub.api("DELETE", f"workspaces/{ws['id']}/shares/{ws['share_id']}", ehub.tokens[OWNER], expect=200)
        assert processes_in_group(gid) == []
    finally:
        clean_up(gid)


def editors_daemon(ehub, ws: dict, job_type: str = "server-daemon", argv=("/bin/sleep", "1000")) -> tuple[dict, int]:
    """Carol's server in ``ws``, running, and the pid of the process it left (``argv``), which
    holds the workspace's group."""
    gid = grp.getgrnam(ws["group"]).gr_gid
    job = ehub.wait_job(run(ehub, ws, EDITOR, job_type)["id"], ehub.tokens[EDITOR], {"running"} | ENDED)
    assert job["status"] == "running", job["reason"]
    wait_for(lambda: [p for p in processes_in_group(gid) if p != int(job["resource_id"])], 30, what="the daemon")
    (pid,) = [p for p in processes_in_group(gid) if proc_ids(str(p))[0] == EDITOR and p != int(job["resource_id"])]
    # (read from each of its threads: a first thread that ended has none)
    cmdlines = [open(f"/proc/{pid}/task/{tid}/cmdline").read() for tid in os.listdir(f"/proc/{pid}/task")]
    assert list(argv) in [c.split("\0")[: len(argv)] for c in cmdlines], cmdlines
    return job, pid


def test_a_revoked_editors_leftover_process_from_a_server_is_killed(ehub):
    """A process an editor's server leaves behind (in a session of its own, with an empty
    environment: out of reach of the server's stop and the orphan sweep) kept the
    workspace's group, its write access, after the editor's access ended: revoked, or
    lowered to viewer. It is killed then, the owner's jobs run on; a workspace deleted
    takes every process holding its group (its gid may be another workspace's next)."""
    alice = ehub.tokens[OWNER]
    # deleted last, and made first: SQLite gives the highest ids of deleted rows again
    doomed = shared_workspace(ehub)
    ws = shared_workspace(ehub)
    gids = [grp.getgrnam(w["group"]).gr_gid for w in (doomed, ws)]
    gid = gids[1]
    try:
        carols, doomed_pid = editors_daemon(ehub, doomed)
        ehub.api("POST", f"jobs/{carols['id']}/stop", alice, expect=202)
        ehub.wait_job(carols["id"], alice, ENDED)
        alices = run(ehub, ws, OWNER, "sleeper")
        assert ehub.wait_job(alices["id"], alice, {"running"} | ENDED)["status"] == "running"
        # a process of an account that is no member, which the hub did not see lose the group
        # (the hub stopped between the two): the share sync's scan kills it
        bobs = subprocess.Popen(["sleep", "1000"], user=OTHER, extra_groups=[gid])
        assert bobs.wait(timeout=60) == -9
        _, pid = editors_daemon(ehub, ws)
        ehub.api("DELETE", f"workspaces/{ws['id']}/shares/{ws['share_id']}", alice, expect=200)
        wait_for(lambda: pid not in processes_in_group(gid), 30, what="the daemon's end")
        # lowered to viewer
        ehub.api("POST", f"workspaces/{ws['id']}/shares", alice, json={"user": EDITOR, "level": "editor"})
        _, pid = editors_daemon(ehub, ws)
        ehub.api("POST", f"workspaces/{ws['id']}/shares", alice, json={"user": EDITOR, "level": "viewer"}, expect=200)
        wait_for(lambda: pid not in processes_in_group(gid), 30, what="the daemon's end")
        assert {proc_ids(str(p))[0] for p in processes_in_group(gid)} == {OWNER}
        assert ehub.api("GET", f"jobs/{alices['id']}", alice, expect=200)["status"] == "running"
        ehub.api("POST", f"jobs/{alices['id']}/stop", alice, expect=202)
        ehub.wait_job(alices["id"], alice, ENDED)
        # the workspace deleted (its jobs stopped), its editor's daemon goes with its group
        assert doomed_pid in processes_in_group(gids[0])
        ehub.api("DELETE", f"workspaces/{doomed['id']}", alice, expect=202)
        wait_for(lambda: not processes_in_group(gids[0]), 60, what="the group's processes' end")
    finally:
        clean_up(*gids)


def as_login(name: str, argv: list[str], **kwargs) -> subprocess.Popen:
    """``argv`` run as account ``name`` with its groups, as an ssh login or cron would."""
    account = pwd.getpwnam(name)
    groups = os.getgrouplist(name, account.pw_gid)
    return subprocess.Popen(argv, user=account.pw_uid, group=account.pw_gid, extra_groups=groups, **kwargs)


def test_an_editors_own_processes_never_hold_the_workspaces_group_and_outlive_the_revocation(ehub):
    """Sharing a workspace as editor made the editor's account a member of its group, so
    everything the editor started outside the hub afterwards (an ssh login, cron, a SLURM
    job of their own) held it, and revoking the share (or lowering it, or deleting the
    workspace) SIGKILLed those processes: a login session was killed. The group is the
    hub's jobs' only: the editor's login neither holds it nor writes in the workspace, and
    outlives the revocation, while what the editor's job left behind goes with it; the
    owner's login changes what the editor's job wrote."""
    alice = ehub.tokens[OWNER]
    ws = shared_workspace(ehub)
    gid = grp.getgrnam(ws["group"]).gr_gid
    directory = ehub.workspaces_root / OWNER / ws["slug"]
    login = as_login(EDITOR, ["sleep", "1000"])
    try:
        assert grp.getgrgid(gid).gr_mem == []
        assert gid not in proc_ids(str(login.pid))[1]
        denied = as_login(EDITOR, ["sh", "-c", f"echo x > {directory}/login.txt"], stderr=subprocess.PIPE, text=True)
        assert denied.wait(timeout=30) != 0 and "Permission denied" in denied.stderr.read()
        # her job there has the group: it writes, group-writable, and the owner's login changes it
        job, lines = finished(ehub, run(ehub, ws, EDITOR))
        assert job["status"] == "completed" and ws["group"] in lines[1].split(), lines
        note = directory / "note.txt"
        assert (os.stat(note).st_gid, os.stat(note).st_mode & 0o060) == (gid, 0o060)
        assert as_login(OWNER, ["sh", "-c", f"echo by alice >> {note}"]).wait(timeout=30) == 0
        assert note.read_text() == f"{EDITOR} was here\nby alice\n"
        # revoked: the process her server left goes, her login stays
        _, daemon = editors_daemon(ehub, ws)
        ehub.api("DELETE", f"workspaces/{ws['id']}/shares/{ws['share_id']}", alice, expect=200)
        wait_for(lambda: daemon not in processes_in_group(gid), 30, what="the daemon's end")
        assert login.poll() is None
        # shared no more, its group stays (the owner's jobs get it): with a member, as a
        # hub before this one left it, until the next share sync. An account of this test's
        # own: any other account's processes started meanwhile, by another hub of a run
        # beside this one, would hold the group, and be killed with the workspace below
        member = f"uwsm{uuid.uuid4().hex[:6]}"
        subprocess.run(["useradd", "--no-create-home", member], check=True)
        try:
            subprocess.run(["gpasswd", "-M", member, ws["group"]], check=True, capture_output=True)
            wait_for(lambda: grp.getgrgid(gid).gr_mem == [], 30, what="the group's members to go")
        finally:
            subprocess.run(["userdel", member], check=False)
        # the workspace deleted: every process with its group goes, and still not her login
        ehub.api("DELETE", f"workspaces/{ws['id']}", alice, expect=202)
        wait_for(lambda: ws["group"] not in {g.gr_name for g in grp.getgrall()}, 60, what="the group's end")
        assert login.poll() is None
    finally:
        login.kill()
        login.wait()
        clean_up(gid)


def test_a_revoked_editors_leftover_process_that_looks_ended_is_killed(ehub):
    """A process left by an editor's server whose first thread ended while another runs on
    reads as a zombie in ``/proc`` (a process that ended and waits for its parent), and so
    was spared by the kill of revoked editors' processes: it kept the workspace's group,
    its write access, for as long as its other thread ran."""
    ws = shared_workspace(ehub)
    gid = grp.getgrnam(ws["group"]).gr_gid
    try:
        _, pid = editors_daemon(ehub, ws, "server-ghost", ("/usr/bin/python3", "-c", GHOST))
        wait_for(lambda: "zombie" in open(f"/proc/{pid}/status").read(), 30, what="its first thread's end")
        ehub.api("DELETE", f"workspaces/{ws['id']}/shares/{ws['share_id']}", ehub.tokens[OWNER], expect=200)
        wait_for(lambda: pid not in processes_in_group(gid), 30, what="the process's end")
        assert {proc_ids(str(p))[0] for p in processes_in_group(gid)} <= {OWNER}
    finally:
        clean_up(gid)


def test_a_revoked_editors_leftover_process_named_in_no_text_is_killed(ehub):
    """A process names itself as it likes (``/proc/self/comm``), in bytes that are no UTF-8
    too: the kill of revoked editors' processes read its ``/proc/<pid>/status`` as text,
    failed, and passed it by: it kept the workspace's group, its write access."""
    ws = shared_workspace(ehub)
    gid = grp.getgrnam(ws["group"]).gr_gid
    try:
        _, pid = editors_daemon(ehub, ws, "server-renamed", ("/usr/bin/python3", "-c", RENAMED))
        wait_for(lambda: open(f"/proc/{pid}/comm", "rb").read() == b"\xff\xfe\n", 30, what="its new name")
        ehub.api("DELETE", f"workspaces/{ws['id']}/shares/{ws['share_id']}", ehub.tokens[OWNER], expect=200)
        wait_for(lambda: pid not in processes_in_group(gid), 30, what="the process's end")
        assert {proc_ids(str(p))[0] for p in processes_in_group(gid)} <= {OWNER}
    finally:
        clean_up(gid)


def test_a_tree_thousands_of_folders_deep_is_shared_with_few_descriptors(ehub):
    """A job can make a tree of any depth. Sharing the workspace with an editor hands its
    tree to the workspace's group, as root, one open folder per level: a 1500-deep tree took
    more descriptors than the hub had (a 500, and everyone's requests failed meanwhile). The
    share goes MAX_DEPTH (256) folders deep, as zips, copies and listings do."""
    alice = ehub.tokens[OWNER]
    ws = ehub.api("POST", "workspaces", alice, expect=201, json={"name": f"deep {uuid.uuid4().hex[:6]}"})
    directory = ehub.workspaces_root / OWNER / ws["slug"]
    make_deep(directory, 1500, b"at the bottom")
    try:
        with few_descriptors(ehub):
            r = ehub.request("POST", f"workspaces/{ws['id']}/shares", alice, json={"user": EDITOR, "level": "editor"})
            assert r.status_code == 201, r.text[:300]
            assert ehub.request("GET", f"workspaces/{ws['id']}/files", alice).status_code == 200
        gid = grp.getgrnam(f"{ehub.group_prefix}{ws['id']}").gr_gid
        shared = os.path.join(directory, *["d"] * 256)
        assert (os.stat(shared).st_gid, os.stat(os.path.join(shared, "d")).st_gid) == (gid, os.getgid())
    finally:
        # Python's recursive walks (rmtree) cannot remove a tree this deep: rm can
        subprocess.run(["rm", "-rf", str(directory / "d")], check=False)


def test_an_editor_who_leaves_the_editing_group_has_their_jobs_stopped(ehub):
    """A share with a hub group makes its members editors; who leaves the group (through
    JupyterHub's API, behind uws-hub's back) is no editor any more: the hub's share sync
    stops their jobs there."""
    alice = ehub.tokens[OWNER]
    group = f"editors-{uuid.uuid4().hex[:6]}"
    ehub.api("POST", f"groups/{group}", json={"users": [EDITOR]}, expect=201)
    ws = ehub.api("POST", "workspaces", alice, expect=201, json={"name": f"group {uuid.uuid4().hex[:6]}"})
    ehub.api("POST", f"workspaces/{ws['id']}/shares", alice, json={"group": group, "level": "editor"}, expect=201)
    job = run(ehub, ws, EDITOR, "sleeper")
    assert job["launcher"] == EDITOR
    assert ehub.wait_job(job["id"], alice, {"running"} | ENDED, timeout=60)["status"] == "running"
    ehub.api("DELETE", f"groups/{group}/users", json={"users": [EDITOR]}, expect=200)
    job = ehub.wait_job(job["id"], alice, ENDED, timeout=60)
    assert (job["status"], job["reason"]) == (
        "cancelled",
        f"stopped: {EDITOR}'s editor access to this workspace was revoked",
    ), job


def test_an_editor_with_jobs_under_way_is_not_deleted_and_their_held_ones_are_cancelled(ehub):
    """An editor's jobs in another's workspace run as their account: while one is under way
    (running, or waiting for a slot) deleting the editor is refused (409) and changes
    nothing. Once they ended it is done; a held UWS job of theirs there (never asked to run)
    loses its launcher (``ON DELETE SET NULL``: then it counts as the owner's), so it is
    cancelled in the same commit, never started as the owner. The owner's job runs on.
    (Last: the editor is gone afterwards.)"""
    ws, carols, alices = editor_and_owner_jobs(ehub)
    alice = ehub.tokens[OWNER]
    held = create(session(EDITOR, ehub.tokens[EDITOR]), ehub, "who", WORKSPACE=str(ws["id"])).rsplit("/", 1)[1]
    r = ehub.request("DELETE", f"users/{EDITOR}", ehub.admin_token)
    assert r.status_code == 409, r.text
    assert r.json()["message"] == (
        f"{EDITOR}'s jobs that have not ended: 2 (ids {carols[0]['id']}, {carols[1]['id']});"
        " stop or cancel them first, then delete the user."
    )
    assert ehub.api("GET", f"jobs/{carols[0]['id']}", alice, expect=200)["status"] == "running"
    assert ehub.api("GET", f"jobs/{held}", alice, expect=200)["status"] == "pending"
    for job in carols:
        ehub.api("POST", f"jobs/{job['id']}/stop", ehub.tokens[EDITOR], expect=202)
        ehub.wait_job(job["id"], alice, ENDED, timeout=60)
    ehub.api("DELETE", f"users/{EDITOR}", expect=204)
    job = ehub.wait_job(held, alice, ENDED, timeout=60)
    assert (job["status"], job["reason"]) == ("cancelled", f"stopped: {EDITOR}'s account was deleted"), job
    assert job["running_at"] is None, job
    assert ehub.api("GET", f"jobs/{alices['id']}", alice, expect=200)["status"] == "running"
    ehub.api("POST", f"jobs/{alices['id']}/stop", alice, expect=202)
    ehub.wait_job(alices["id"], alice, ENDED, timeout=60)
