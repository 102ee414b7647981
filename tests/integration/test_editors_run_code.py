"""``UWSHub.editors_run_code``: whether an editor may launch jobs, which run as the editor, for real.

A job runs as the account of whoever launched it, and only that account
writes and runs code in a live server. Either way an editor gets a viewer's
read-only view of the owner's running JupyterLab (kernels and terminals
refused by the server's guard): an editor never runs code as the owner. With
the default (True) an editor launches jobs, and they run as the editor: a
batch job the editor launches reports the editor's uid, not the owner's. With
False every launch of an editor's is a 403 saying why, while the owner and an
admin still launch and use the server, and the editor still reads files and
stops jobs. Each setting runs its own hub, with real system users and a real
JupyterLab through the proxy (tests/integration/test_editor_launches.py has
the rest: groups, files, revocation).
"""

from __future__ import annotations

import pwd

import pytest

from ..authutil import login
from ..helpers import refused_code_and_saving, start_code
from ..helpers import shared_workspace as new_shared_workspace
from ..hubmaputil import ORIGIN, Portal
from ..uwsclient import create, jobs_url, session

OWNER, EDITOR, ADMIN = "uwsalice", "uwscarol", "uwsadmin"
JOB_TYPES = {
    "jupyterlab": {"display_name": "JupyterLab", "default_url": "/lab", "env": {"PIP_NO_INDEX": "1"}},
    "whoami": {"interactive": False, "cmd": ["id", "-u"]},
}
PASSWORD = "a long password for tests"
REFUSAL = "Editors may not launch jobs in uwsalice's workspace"


@pytest.fixture(scope="module", params=[False, True], ids=["editors_run_code=False", "editors_run_code=True"])
def ehub(request, make_hub, system_users, group_prefix):
    hub = make_hub(
        f"""
c.UWSHub.system_users = True
c.UWSHub.job_reconcile_interval = 1
c.UWSHub.share_posix_group_prefix = {group_prefix!r}
c.Authenticator.admin_users = {{{ADMIN!r}}}
c.UWSHub.job_types = {JOB_TYPES!r}
c.HubMAPCompat.enabled = True
c.HubMAPCompat.job_type_ids = {{"jupyter_lab": "jupyterlab"}}
c.HubMAPCompat.cors_origins = [{ORIGIN!r}]
"""
        + ("" if request.param else "c.UWSHub.editors_run_code = False\n")
    )
    hub.editors_run_code = request.param
    for name in (OWNER, EDITOR):
        hub.api("POST", "accounts", json={"username": name, "password": PASSWORD}, expect=201)
    hub.tokens = {name: hub.add_user(name, admin=name == ADMIN) for name in (OWNER, EDITOR, ADMIN)}
    return hub


def page(hub, who: str, path: str) -> str:
    """A hub page as ``who`` sees it, logged in with the login form."""
    session = login(hub, who, PASSWORD).session
    r = session.get(hub.url + path, timeout=30)
    assert r.status_code == 200, r.status_code
    return r.text


def shared_workspace(hub) -> dict:
    """A workspace of alice's with a file, shared with carol as editor."""
    return new_shared_workspace(hub, hub.tokens[OWNER], {EDITOR: "editor"})


@pytest.fixture(scope="module")
def live(ehub):
    """alice's running JupyterLab, shared with carol as editor: (workspace, job, server path)."""
    alice = ehub.tokens[OWNER]
    ws = shared_workspace(ehub)
    job = ehub.api("POST", f"workspaces/{ws['id']}/jobs", alice, json={"job_type": "jupyterlab"}, expect=202)
    job = ehub.wait_job(job["id"], alice, {"running", "failed"}, timeout=90)
    assert job["status"] == "running", job["reason"]
    yield ws, job, f"/user/{OWNER}/{ws['slug']}/"
    ehub.api("POST", f"jobs/{job['id']}/stop", alice)
    ehub.wait_job(job["id"], alice, {"completed", "cancelled", "failed"})


def test_an_editor_reads_only_in_the_owners_server_either_way(ehub, live):
    _, _, server = live
    carol = ehub.tokens[EDITOR]
    r = ehub.request("GET", server + "api/contents/data.txt", carol)
    assert r.status_code == 200, r.text
    assert r.json()["content"] == "data\n"
    # the server runs as alice, who launched it: nobody else runs code in it, whatever the setting
    # saving a file in the server is writing as the owner too: refused; the hub's files API is the way
    refused_code_and_saving(ehub, server, carol, OWNER)
    ws, _, _ = live
    r = ehub.request("PUT", f"workspaces/{ws['id']}/files/from-carol.txt", carol, data=b"carol was here")
    assert r.status_code == 201, r.text
    # the owner and an admin use the server fully
    for who in (OWNER, ADMIN):
        assert start_code(ehub, server, ehub.tokens[who]) == [200, 201], who


def test_an_editors_launch_needs_the_hub_to_let_editors_run_code(ehub):
    carol, alice, admin = ehub.tokens[EDITOR], ehub.tokens[OWNER], ehub.tokens[ADMIN]
    ws = shared_workspace(ehub)
    r = ehub.request("POST", f"workspaces/{ws['id']}/jobs", carol, json={"job_type": "whoami"})
    if ehub.editors_run_code:
        # the editor's job runs as the editor's own account: it reports carol's uid, not alice's
        assert r.status_code == 202, r.text
        assert r.json()["launcher"] == EDITOR
        job = ehub.wait_job(r.json()["id"], carol, {"completed", "failed"})
        assert job["status"] == "completed", job["reason"]
        log = ehub.request("GET", f"jobs/{job['id']}/log", alice)
        assert log.status_code == 200, log.text
        assert log.text.strip() == str(pwd.getpwnam(EDITOR).pw_uid) != str(pwd.getpwnam(OWNER).pw_uid)
        # the workspace page offers the editor a launch, and the share dialog warns the owner
        assert 'id="launch-form"' in page(ehub, EDITOR, f"/hub/workspaces/{ws['id']}")
        assert "Editors run code as themselves." in page(ehub, OWNER, f"/hub/workspaces/{ws['id']}")
        return
    assert r.status_code == 403, r.text
    assert REFUSAL in r.json()["message"] and "stop its jobs" in r.json()["message"], r.text
    # JupyterHub's server start API (which also needs start:servers, an editor's share lacks)
    r = ehub.request("POST", f"users/{OWNER}/servers/{ws['slug']}", carol)
    assert r.status_code in (403, 404), r.text
    # HuBMAP's interface
    r = Portal(ehub, carol).start(ws["id"], "jupyter_lab", {})
    assert r.status_code == 403 and REFUSAL in r.json()["message"], r.text
    # the UWS interface: neither a new job, nor a RUN of the owner's held one
    carols = session(EDITOR, carol)
    r = carols.post(jobs_url(ehub, "whoami"), data={"WORKSPACE": str(ws["id"])}, allow_redirects=False, timeout=30)
    assert r.status_code == 403 and REFUSAL in r.text, r.text
    held = create(session(OWNER, alice), ehub, "whoami", WORKSPACE=str(ws["id"]))
    r = carols.post(held + "/phase", data={"PHASE": "RUN"}, allow_redirects=False, timeout=30)
    assert r.status_code == 403 and REFUSAL in r.text, r.text
    r = carols.post(held + "/phase", data={"PHASE": "ABORT"}, allow_redirects=False, timeout=30)
    assert r.status_code == 303, r.text
    # the workspace page offers the editor no launch, and says why
    editors_page = page(ehub, EDITOR, f"/hub/workspaces/{ws['id']}")
    assert 'id="launch-form"' not in editors_page and 'id="launch-refused"' in editors_page
    assert 'id="stop-job"' in editors_page
    # the owner and an admin launch; the editor still stops the job and changes files through the hub
    for who in (alice, admin):
        job = ehub.api("POST", f"workspaces/{ws['id']}/jobs", who, json={"job_type": "whoami"}, expect=202)
        assert ehub.wait_job(job["id"], who, {"completed", "failed"})["status"] == "completed"
    owners_page = page(ehub, OWNER, f"/hub/workspaces/{ws['id']}")
    assert 'id="launch-form"' in owners_page and 'id="launch-refused"' not in owners_page
    assert "Editors run code as themselves." not in owners_page
    job = ehub.api("POST", f"workspaces/{ws['id']}/jobs", alice, json={"job_type": "jupyterlab"}, expect=202)
    ehub.api("POST", f"jobs/{job['id']}/stop", carol, expect=202)
    assert ehub.wait_job(job["id"], carol, {"completed", "cancelled", "failed"})["status"] != "failed"
