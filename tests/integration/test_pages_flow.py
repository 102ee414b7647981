"""The pages as researchers use them (issue 18, items 2-5), on a real hub, through the
API and in a real Chromium: failures people can read, no dead ends in JupyterHub's
own pages, lists that scale, sharing you can see."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import uuid

import pytest

from .. import browserutil
from ..helpers import ADMIN_PASSWORD, MINIMAL_CMD, launch
from ..hubutil import wait_for

PASSWORD = "a long password for tests"
TERMINAL = {"completed", "failed", "cancelled"}

#: a server the kernel kills before it answers (as the out-of-memory killer would)
KILLED_CMD = [sys.executable, "-c", "import os, signal; print('eating memory'); os.kill(os.getpid(), signal.SIGKILL)"]
#: a server that runs but never answers the hub
SILENT_CMD = [sys.executable, "-c", "import time; print('thinking', flush=True); time.sleep(600)"]
BROKEN_CMD = [sys.executable, "-c", "import sys; print('boom: the server cannot start'); sys.exit(3)"]


@pytest.fixture(scope="module")
def fhub(make_hub):
    hub = make_hub(f"""
c.Authenticator.admin_users = {{"flowadmin"}}
c.UWSHub.job_reconcile_interval = 1
c.UWSHub.job_types = {{
    "minimal": {{"display_name": "Minimal test server", "cmd": {MINIMAL_CMD!r}}},
    "broken": {{"display_name": "Broken on purpose", "cmd": {BROKEN_CMD!r}}},
    "killed": {{"display_name": "Killed on start", "cmd": {KILLED_CMD!r}}},
    "silent": {{"display_name": "Never answers", "cmd": {SILENT_CMD!r}}},
    "limited": {{"display_name": "Minimal, 2 h limit", "cmd": {MINIMAL_CMD!r}, "time_limit_seconds": 7200}},
    "jupyterlab": {{"display_name": "JupyterLab", "default_url": "/lab", "args_as_root": ["--allow-root"],
                    "env": {{"PIP_NO_INDEX": "1"}}}},
}}
""")
    hub.tokens = {}
    return hub


def person(hub, prefix: str = "fl") -> tuple[str, str]:
    """A new user with a password (a local account) and an API token."""
    name = f"{prefix}{uuid.uuid4().hex[:6]}"
    hub.api("POST", "accounts", json={"username": name, "password": PASSWORD, "display_name": name.upper()}, expect=201)
    return name, hub.add_user(name)


def new_workspace(hub, token, name=None) -> dict:
    return hub.api("POST", "workspaces", token, json={"name": name or f"ws {uuid.uuid4().hex[:6]}"}, expect=201)


def stop(hub, token, job) -> None:
    hub.api("POST", f"jobs/{job['id']}/stop", token)
    hub.wait_job(job["id"], token, TERMINAL)


# ---------------------------------------------------------------- 2. failures people can read
def test_reasons_say_how_a_server_ended_in_one_line(fhub):
    name, token = person(fhub)
    ws = new_workspace(fhub, token)
    # killed (as by the out-of-memory killer) before it answered
    job = fhub.wait_job(launch(fhub, token, ws, job_type="killed")["id"], token, TERMINAL, timeout=30)
    assert (job["status"], job["reason"]) == (
        "failed",
        "The server failed to start: it was killed by signal 9 (SIGKILL) before it answered — out of memory?",
    )
    # the workspace says its last job failed, and why
    model = fhub.api("GET", f"workspaces/{ws['id']}", token, expect=200)
    assert model["active_job"] is None and model["last_job"]["id"] == job["id"]
    assert model["last_job"]["status"] == "failed" and model["last_used_at"] == job["created_at"]
    # killed while it ran
    job = launch(fhub, token, ws)
    job = fhub.wait_job(job["id"], token, {"running", "failed"})
    assert job["status"] == "running", job["reason"]
    os.killpg(int(job["resource_id"]), signal.SIGKILL)
    job = fhub.wait_job(job["id"], token, TERMINAL, timeout=60)
    assert (job["status"], job["reason"]) == ("failed", "The server was killed by signal 9 (SIGKILL) — out of memory?")
    # a new workspace was last used when it was made
    fresh = new_workspace(fhub, token)
    assert fresh["last_job"] is None and fresh["last_used_at"] == fresh["created_at"]


def test_a_server_that_never_answers_fails_saying_so_and_the_next_start_works(make_hub):
    hub = make_hub(f"""
c.Authenticator.admin_users = set()
c.UWSHub.job_reconcile_interval = 1
c.Spawner.http_timeout = 5
c.UWSHub.job_types = {{
    "silent": {{"display_name": "Never answers", "cmd": {SILENT_CMD!r}}},
    "limited": {{"display_name": "Minimal, 2 h limit", "cmd": {MINIMAL_CMD!r}, "time_limit_seconds": 7200}},
    "minimal": {{"display_name": "Minimal test server", "cmd": {MINIMAL_CMD!r}}},
}}
""")
    token = hub.add_user("silentuser")
    ws = new_workspace(hub, token)
    # running, but never answering the hub (JupyterHub stops it after Spawner.http_timeout)
    job = hub.wait_job(launch(hub, token, ws, job_type="silent")["id"], token, TERMINAL, timeout=60)
    assert (job["status"], job["reason"]) == ("failed", "The server failed to start: it did not answer within 5 s")
    # what it printed is its output, not its reason
    assert "thinking" in hub.api("GET", f"jobs/{job['id']}/output", token, expect=200)["output"]
    # the next start in the workspace works (JupyterHub replaced the failed start's spawner)
    job = hub.wait_job(launch(hub, token, ws)["id"], token, {"running", "failed"})
    assert job["status"] == "running", job["reason"]
    stop(hub, token, job)


@pytest.mark.browser
def test_a_failure_stays_on_the_page_with_its_log_for_the_owner_only(fhub, browser):
    from playwright.sync_api import expect

    owner, token = person(fhub)
    viewer, _ = person(fhub)
    ws = new_workspace(fhub, token, "Failing analysis")
    fhub.api("POST", f"workspaces/{ws['id']}/shares", token, json={"user": viewer, "level": "viewer"}, expect=201)
    context, page = browserutil.login(fhub, browser, owner, PASSWORD)
    try:
        page.goto(f"{fhub.url}/hub/workspaces/{ws['id']}")
        # the launch form and the job panel name job types as people know them
        expect(page.locator("#job-type-select option[value=broken]")).to_have_text("Broken on purpose")
        page.select_option("#job-type-select", "minimal")
        page.click("#launch-job")
        expect(page.locator("#job-type")).to_have_text("Minimal test server")
        expect(page.locator("#job-status")).to_have_text("running", timeout=30_000)
        page.click("#stop-job")
        expect(page.locator("#no-job")).to_be_visible(timeout=30_000)
        expect(page.locator("#last-failure")).to_be_hidden()

        page.select_option("#job-type-select", "broken")
        page.click("#launch-job")
        failure = page.locator("#last-failure")
        reason = "The server failed to start: it exited with status 3 before it answered"
        expect(failure).to_contain_text("Broken on purpose job")
        expect(failure).to_contain_text(reason)
        # one line; what the server printed is behind "Show log"
        expect(page.locator("#failure-output")).to_be_hidden()
        assert "boom" not in failure.inner_text()
        # after a reload the failure is still there
        page.reload()
        expect(failure).to_contain_text(reason)
        page.click("#failure-log summary")
        expect(page.locator("#failure-output")).to_contain_text("boom: the server cannot start")
        row = page.locator("#jobs tbody tr").first
        expect(row).to_contain_text("Broken on purpose")
        expect(row).to_contain_text(reason)
        # the list of workspaces marks it, with the reason on hover
        page.goto(f"{fhub.url}/hub/workspaces")
        mark = page.locator(f"tr[data-workspace-id='{ws['id']}'] .ws-failed")
        expect(mark).to_have_text("last job failed")
        assert mark.get_attribute("title") == reason
        # a new job clears the failure
        page.goto(f"{fhub.url}/hub/workspaces/{ws['id']}")
        page.select_option("#job-type-select", "minimal")
        page.click("#launch-job")
        expect(page.locator("#job-status")).to_have_text("running", timeout=30_000)
        expect(failure).to_be_hidden()
        page.click("#stop-job")
        expect(page.locator("#no-job")).to_be_visible(timeout=30_000)
        expect(failure).to_be_hidden()
    finally:
        context.close()
    # the viewer reads the reason of a failure, never the log
    job = launch(fhub, token, ws, job_type="broken")
    fhub.wait_job(job["id"], token, TERMINAL, timeout=30)
    context, page = browserutil.login(fhub, browser, viewer, PASSWORD)
    try:
        page.goto(f"{fhub.url}/hub/workspaces/{ws['id']}")
        expect(page.locator("#last-failure")).to_contain_text("exited with status 3 before it answered")
        assert page.locator("#failure-log").count() == 0
        assert "boom" not in page.content()
    finally:
        context.close()


@pytest.mark.browser
def test_recent_jobs_follow_every_job_live(fhub, browser):
    """The workspace page's Recent jobs shows a job as soon as it is launched (from the page
    or by a program) and follows its status, without a reload: the page says it updates live."""
    from playwright.sync_api import expect

    owner, token = person(fhub)
    ws = new_workspace(fhub, token, "Live list")
    context, page = browserutil.login(fhub, browser, owner, PASSWORD)
    try:
        page.goto(f"{fhub.url}/hub/workspaces/{ws['id']}")
        # none yet: said in words, not an empty table
        expect(page.locator("#jobs-none")).to_have_text("No jobs yet.")
        expect(page.locator("#jobs")).to_be_hidden()
        page.select_option("#job-type-select", "minimal")
        page.click("#launch-job")
        expect(page.locator("#job-status")).to_have_text("running", timeout=30_000)
        job_id = page.locator("#job-id").inner_text()
        row = page.locator(f"#jobs tr[data-job-id='{job_id}']")
        expect(row.locator(".job-status")).to_have_text("running")
        expect(page.locator("#jobs-none")).to_be_hidden()
        expect(row).to_contain_text("Minimal test server")
        page.click("#stop-job")
        expect(row.locator(".job-status")).to_have_text("completed", timeout=30_000)
        # a job a program launches appears too, and its end
        job = launch(fhub, token, ws, job_type="minimal")
        fhub.wait_job(job["id"], token, {"running"})
        row = page.locator(f"#jobs tr[data-job-id='{job['id']}']")
        expect(row.locator(".job-status")).to_have_text("running")
        stop(fhub, token, job)
        expect(row.locator(".job-status")).to_have_text("completed", timeout=30_000)
        expect(page.locator("#jobs tbody tr")).to_have_count(2)
    finally:
        context.close()


# ---------------------------------------------------------------- 3. no dead ends in JupyterHub's pages
def last_activity(hub, name: str) -> str | None:
    return hub.api("GET", f"users/{name}", expect=200)["last_activity"]


def test_jupyterhub_server_api_starts_a_workspace_job_or_says_what_to_do(fhub):
    owner, token = person(fhub)
    ws = new_workspace(fhub, token)
    before = last_activity(fhub, owner)
    # the default server (the admin panel's Start All): refused at once, naming what to do, not touching activity
    r = fhub.request("POST", f"users/{owner}/server", fhub.admin_token)
    assert r.status_code == 400, r.text
    assert r.json()["message"] == (
        f"{owner} has no default server to start: every server here is a workspace's"
        " job. Launch one in a workspace (its page, or POST /hub/api/workspaces/{id}/jobs)."
    )
    r = fhub.request("POST", f"users/{owner}/servers/no-such-workspace", fhub.admin_token)
    assert r.status_code == 400 and "has no server 'no-such-workspace' to start" in r.json()["message"]
    assert last_activity(fhub, owner) == before
    # a workspace's server (the admin panel's Start on its row): its job, launched like any
    r = fhub.request("POST", f"users/{owner}/servers/{ws['slug']}", fhub.admin_token)
    assert r.status_code == 202, r.text
    job = fhub.wait_job(r.json()["id"], fhub.admin_token, {"running", "failed"})
    assert job["status"] == "running" and job["job_type"] == "minimal", job
    assert fhub.request("POST", f"users/{owner}/servers/{ws['slug']}", fhub.admin_token).status_code == 400
    # the admin's start was not the owner's activity
    assert last_activity(fhub, owner) == before
    # JupyterHub's stop stays JupyterHub's: the job ends as stopped outside uws-hub
    r = fhub.request("DELETE", f"users/{owner}/servers/{ws['slug']}", fhub.admin_token)
    assert r.status_code in (202, 204), r.text
    job = fhub.wait_job(job["id"], fhub.admin_token, TERMINAL)
    assert job["reason"].startswith("Stopped outside uws-hub")
    # nor is a stop through the jobs API (by the hub's own machinery)
    job = launch(fhub, fhub.admin_token, ws)
    fhub.wait_job(job["id"], fhub.admin_token, {"running"})
    before = last_activity(fhub, owner)
    stop(fhub, fhub.admin_token, job)
    assert last_activity(fhub, owner) == before
    # the owner too (their token holds JupyterHub's servers scope), in a workspace whose last job was "broken"
    other = new_workspace(fhub, token)
    fhub.wait_job(launch(fhub, token, other, job_type="broken")["id"], token, TERMINAL, timeout=30)
    r = fhub.request("POST", f"users/{owner}/servers/{other['slug']}", token)
    assert r.status_code == 202 and r.json()["job_type"] == "broken", r.text
    fhub.wait_job(r.json()["id"], token, TERMINAL, timeout=30)
    # a stranger may not, nor a viewer of the workspace, nor anyone anonymous
    _, stranger = person(fhub)
    assert fhub.request("POST", f"users/{owner}/servers/{ws['slug']}", stranger).status_code in (403, 404)
    viewer, viewer_token = person(fhub)
    fhub.api("POST", f"workspaces/{ws['id']}/shares", token, json={"user": viewer, "level": "viewer"}, expect=201)
    assert fhub.request("POST", f"users/{owner}/servers/{ws['slug']}", viewer_token).status_code in (403, 404)
    assert fhub.request("POST", f"users/{owner}/servers/{ws['slug']}").status_code == 403
    # a client of the stopped server's API still gets JupyterHub's 424
    r = fhub.request("GET", f"/user/{owner}/{ws['slug']}/api/contents", token, allow_redirects=True)
    assert r.status_code == 424, (r.status_code, r.text)


@pytest.mark.browser
def test_bookmarks_and_restart_lead_to_the_workspace_and_its_launch(fhub, browser):
    from playwright.sync_api import expect

    owner, token = person(fhub)
    viewer, _ = person(fhub)
    stranger, _ = person(fhub)
    ws = new_workspace(fhub, token, "Bookmarked")
    fhub.api("POST", f"workspaces/{ws['id']}/shares", token, json={"user": viewer, "level": "viewer"}, expect=201)
    job = launch(fhub, token, ws)
    fhub.wait_job(job["id"], token, {"running"})
    stop(fhub, token, job)
    address = f"/user/{owner}/{ws['slug']}/lab/tree/notes.txt"
    before = last_activity(fhub, owner)

    # the viewer's bookmark: the workspace's page, saying it is not running and who can launch it
    context, page = browserutil.login(fhub, browser, viewer, PASSWORD)
    try:
        page.goto(fhub.url + address)
        page.wait_for_url(re.compile(rf".*/hub/workspaces/{ws['id']}\?next=.*"))
        expect(page.locator("#not-running")).to_contain_text(f"{address} is not running")
        expect(page.locator("#not-running")).to_contain_text(f"Ask {owner}")
        assert page.locator("#launch-and-open").count() == 0
    finally:
        context.close()
    # a stranger: JupyterHub's 404, nothing about the workspace
    context, page = browserutil.login(fhub, browser, stranger, PASSWORD)
    try:
        response = page.goto(fhub.url + address)
        assert response.status == 404
        assert "Bookmarked" not in page.content()
        response = page.goto(f"{fhub.url}/hub/spawn/{owner}/{ws['slug']}")
        assert response.status == 404
    finally:
        context.close()
    # nobody's visit was the owner's activity
    assert last_activity(fhub, owner) == before

    context, page = browserutil.login(fhub, browser, owner, PASSWORD)
    try:
        # the owner's bookmark: Launch and open, then the address itself once the job runs
        page.goto(fhub.url + address)
        page.wait_for_url(re.compile(rf".*/hub/workspaces/{ws['id']}\?next=.*"))
        expect(page.locator("#not-running")).to_contain_text(f"{address} is not running")
        page.click("#launch-and-open")
        page.wait_for_url(re.compile(rf".*{re.escape(address)}$"), timeout=60_000)
        # (the test server answers every address with its path)
        expect(page.locator("body")).to_contain_text(address)
        [running] = fhub.api("GET", f"jobs?workspace={ws['id']}&status=running", token)["items"]
        stop(fhub, token, running)
        # JupyterLab's "Restart Server" (and its "server unreachable" dialog) opens the spawn page
        page.goto(f"{fhub.url}/hub/spawn/{owner}/{ws['slug']}")
        page.wait_for_url(re.compile(rf".*/hub/workspaces/{ws['id']}\?next=.*"))
        expect(page.locator("#not-running")).to_contain_text(f"/user/{owner}/{ws['slug']}/ is not running")
        expect(page.locator("#launch-and-open")).to_be_visible()
        # a next that leads elsewhere is not followed: the server's own address stands instead
        page.goto(f"{fhub.url}/hub/workspaces/{ws['id']}?next=https://example.org/")
        expect(page.locator("#not-running")).to_contain_text(f"/user/{owner}/{ws['slug']}/ is not running")
        # the default server's spawn page (JupyterHub's "Start My Server"): the list of workspaces
        page.goto(f"{fhub.url}/hub/spawn")
        page.wait_for_url(re.compile(r".*/hub/workspaces$"))
        # a failed start's progress page leads to the workspace too
        job = fhub.wait_job(launch(fhub, token, ws, job_type="broken")["id"], token, TERMINAL, timeout=30)
        page.goto(f"{fhub.url}/hub/spawn-pending/{owner}/{ws['slug']}")
        page.wait_for_url(re.compile(rf".*/hub/workspaces/{ws['id']}$"))
        expect(page.locator("#last-failure")).to_contain_text("exited with status 3")
    finally:
        context.close()


@pytest.mark.browser
def test_admin_panel_offers_only_the_starts_that_work(fhub, browser):
    from playwright.sync_api import expect

    owner, token = person(fhub)
    ws = new_workspace(fhub, token)
    job = launch(fhub, token, ws)
    fhub.wait_job(job["id"], token, {"running"})
    stop(fhub, token, job)  # the workspace's server now exists, stopped
    # the first admin's account, made by the hub with UWS_ADMIN_PASSWORD
    context, page = browserutil.login(fhub, browser, "flowadmin", ADMIN_PASSWORD)
    # what the panel's scripts throw (React unmounts the whole panel on an error of its own)
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(f"{fhub.url}/hub/admin")
        # a large script that renders once it has the users: slow on a loaded machine
        expect(page.locator("[data-testid=stop-all]")).to_be_visible(timeout=30_000)
        expect(page.locator("[data-testid=start-all]")).to_be_hidden()
        page.fill("input[name=user_search]", owner)
        rows = page.locator("tbody tr", has=page.locator(f"[data-testid=user-name-div-{owner}]"))
        expect(rows.first).to_be_visible()
        default_row = page.locator("tr", has=page.locator("td[data-testid=user-row-server] > p:text-is('')"))
        expect(default_row.locator(".start-button").first).to_be_hidden()
        named_row = page.locator("tr", has=page.locator(f"td[data-testid=user-row-server] > p:text-is('{ws['slug']}')"))
        start = named_row.locator(".start-button")
        expect(start).to_be_visible()
        # the row's details: React renders tables in it, which the pages' script that lets
        # wide tables scroll moved into boxes of its own, and React then failed to remove
        # ("removeChild ... not a child of this node"), taking the whole panel down
        named_row.locator("[data-testid$='-collapse-button']").click()
        details = page.locator(f"[id='{owner}-{ws['slug']}-card-group']")
        expect(details).to_be_visible()
        start.click()
        wait_for(
            lambda: fhub.api("GET", f"workspaces/{ws['id']}", token)["active_job"],
            30,
            what="the admin's start to launch the workspace's job",
        )
        active = fhub.api("GET", f"workspaces/{ws['id']}", token)["active_job"]
        assert fhub.wait_job(active["id"], token, {"running", "failed"})["status"] == "running"
        # the panel, updated after the start, is still there, its table still React's
        expect(named_row.locator(".start-button, .stop-button")).to_be_visible()
        expect(details).to_be_visible()
        assert page.locator("#react-admin-hook .server-dashboard-container > table").count() == 1
        assert errors == []
        stop(fhub, token, active)
    finally:
        context.close()
    # on a phone the panel's table scrolls in its own box, not the page
    context, page = browserutil.login(fhub, browser, "flowadmin", ADMIN_PASSWORD, **browserutil.PHONE)
    try:
        page.goto(f"{fhub.url}/hub/admin")
        expect(page.locator("[data-testid=stop-all]")).to_be_visible(timeout=30_000)
        assert page.evaluate("document.scrollingElement.scrollWidth") <= browserutil.PHONE["viewport"]["width"]
    finally:
        context.close()


# ---------------------------------------------------------------- 4. lists that scale
def names(page) -> list[str]:
    return [ws["name"] for ws in page["items"]]


def test_workspace_lists_search_sort_filter_and_page_in_the_api(fhub):
    owner, token = person(fhub)
    friend, friend_token = person(fhub)
    made = [new_workspace(fhub, token, name) for name in ("Gamma rays", "alpha decay", "Beta test", "gamma two")]
    shared = new_workspace(fhub, friend_token, "Friend's gamma")
    fhub.api(
        "POST", f"workspaces/{shared['id']}/shares", friend_token, json={"user": owner, "level": "viewer"}, expect=201
    )
    # by default oldest first, as the API always listed them; shared ones are listed too
    assert names(fhub.api("GET", "workspaces", token)) == [ws["name"] for ws in made] + ["Friend's gamma"]
    assert names(fhub.api("GET", "workspaces?sort=name", token)) == [
        "alpha decay",
        "Beta test",
        "Friend's gamma",
        "Gamma rays",
        "gamma two",
    ]
    assert names(fhub.api("GET", "workspaces?sort=name&order=desc&limit=2", token))[:2] == ["gamma two", "Gamma rays"]
    # search: every word, in name, slug or description, any case; no wildcards
    assert names(fhub.api("GET", "workspaces?q=GAMMA&sort=name", token)) == [
        "Friend's gamma",
        "Gamma rays",
        "gamma two",
    ]
    assert names(fhub.api("GET", "workspaces?q=gamma%20two", token)) == ["gamma two"]
    assert names(fhub.api("GET", "workspaces?q=%25", token)) == []
    # whose, owner
    assert names(fhub.api("GET", "workspaces?whose=shared", token)) == ["Friend's gamma"]
    assert len(names(fhub.api("GET", "workspaces?whose=mine", token))) == 4
    assert names(fhub.api("GET", f"workspaces?owner={friend}", token)) == ["Friend's gamma"]
    # last used: a job's launch puts its workspace first; size sorts by disk usage
    job = launch(fhub, token, made[1])
    fhub.wait_job(job["id"], token, {"running"})
    stop(fhub, token, job)
    assert names(fhub.api("GET", "workspaces?sort=last_used&whose=mine", token))[0] == "alpha decay"
    fhub.request("PUT", f"workspaces/{made[2]['id']}/files/big.bin", token, data=b"x" * 5000)
    assert names(fhub.api("GET", "workspaces?sort=size&whose=mine", token))[0] == "Beta test"
    # pages of a sorted list are pages of the same order
    first = fhub.api("GET", "workspaces?sort=name&limit=2&offset=0", token)
    second = fhub.api("GET", "workspaces?sort=name&limit=2&offset=2", token)
    assert names(first) + names(second) == ["alpha decay", "Beta test", "Friend's gamma", "Gamma rays"]
    assert first["_pagination"]["total"] == 5
    # what it does not know, it says
    for query, message in (
        ("sort=colour", "Unknown sort 'colour'; one of ['last_used', 'created', 'name', 'size']"),
        ("order=up", "Unknown order 'up'; one of ['asc', 'desc']"),
        ("whose=theirs", "Unknown whose 'theirs'; one or more of ['mine', 'shared', 'others']"),
        ("q=" + "x" * 201, "The search (q) is longer than 200 characters"),
    ):
        r = fhub.request("GET", f"workspaces?{query}", token)
        assert (r.status_code, r.json()["message"]) == (400, message)
    # the jobs API pages through a workspace's whole history, and filters by owner
    for _ in range(3):
        job = launch(fhub, token, made[0])
        stop(fhub, token, job)
    history = fhub.api("GET", f"jobs?workspace={made[0]['id']}&limit=2", token)
    assert history["_pagination"]["total"] == 3 and history["_pagination"]["next"] is not None
    rest = fhub.api("GET", f"jobs?workspace={made[0]['id']}&limit=2&offset=2", token)
    assert len(history["items"]) + len(rest["items"]) == 3
    assert {j["owner"] for j in fhub.api("GET", f"jobs?owner={owner}", fhub.admin_token)["items"]} == {owner}


@pytest.mark.browser
def test_my_workspaces_list_scales_and_acts_per_row(fhub, browser):
    from playwright.sync_api import expect

    owner, token = person(fhub)
    friend, friend_token = person(fhub)
    made = [new_workspace(fhub, token, f"Project {i:02d}") for i in range(7)]
    shared = new_workspace(fhub, friend_token, "Friend's project")
    fhub.api(
        "POST", f"workspaces/{shared['id']}/shares", friend_token, json={"user": owner, "level": "editor"}, expect=201
    )
    context, page = browserutil.login(fhub, browser, owner, PASSWORD)
    try:
        # no job yet: said in words (what to do), not an empty table
        page.goto(f"{fhub.url}/hub/jobs")
        expect(page.locator("#jobs-count")).to_have_text("No jobs yet: launch one from a workspace's page.")
        expect(page.locator("#job-list")).to_be_hidden()
        # newest (last used) first, in pages, with the shared one marked
        page.goto(f"{fhub.url}/hub/workspaces?rows=5")
        expect(page.locator("#ws-count")).to_contain_text("1–5 of 8 workspaces")
        rows = page.locator("#workspaces tbody tr")
        expect(rows).to_have_count(5)
        expect(rows.first).to_contain_text("Friend's project")
        expect(rows.first.locator(".ws-shared")).to_have_text(f"shared by {friend} · editor")
        page.click("#page-next")
        expect(page.locator("#ws-count")).to_contain_text("6–8 of 8 workspaces")
        # a credential in the address stays out of the page's links (the list's own words stay)
        page.goto(f"{fhub.url}/hub/workspaces?rows=5&token=s3cr3tt0ken&_xsrf=x5rfv4lue")
        assert "rows=5" in page.locator("#page-next").get_attribute("href")
        html = page.content()
        assert "s3cr3tt0ken" not in html and "x5rfv4lue" not in html
        page.goto(f"{fhub.url}/hub/workspaces?rows=5&page=2")
        expect(rows.last).to_contain_text("Project 00")
        page.go_back()
        expect(page.locator("#ws-count")).to_contain_text("1–5 of 8 workspaces")
        # the order in words, for the sort it is about
        order = page.locator("#ws-order option")
        expect(order).to_have_text(["Most recently used first", "Least recently used first"])
        # search, and sort by name: the address says what the list shows
        page.fill("#ws-search", "project 0")
        page.select_option("#ws-sort", "name")
        expect(order).to_have_text(["A to Z", "Z to A"])
        page.click("#ws-search-button")
        # all on one page: how many, not "1–7 of 7"
        expect(page.locator("#ws-count")).to_have_text(re.compile(r"^\s*7 workspaces matching “project 0”"))
        assert "q=project+0" in page.url and "sort=name" in page.url
        expect(rows.first).to_contain_text("Project 00")
        expect(order).to_have_text(["A to Z", "Z to A"])
        page.select_option("#ws-order", label="Z to A")
        page.click("#ws-search-button")
        assert "order=desc" in page.url
        expect(rows.first).to_contain_text("Project 06")
        expect(page.locator("#ws-order")).to_have_value("desc")
        page.fill("#ws-search", "nothing like it")
        page.click("#ws-search-button")
        expect(page.locator("#ws-count")).to_contain_text("No workspace matches")
        # act on a row: Launch, then Open and Stop, live
        page.goto(f"{fhub.url}/hub/workspaces?q=project+03")
        expect(page.locator("#ws-count")).to_have_text(re.compile(r"^\s*1 workspace matching"))
        row = page.locator(f"tr[data-workspace-id='{made[3]['id']}']")
        row.locator(".ws-launch").click()
        expect(row.locator(".ws-job")).to_have_text("Minimal test server: running", timeout=30_000)
        expect(row.locator(".ws-open")).to_be_visible()
        expect(row.locator(".ws-launch")).to_be_hidden()
        row.locator(".ws-stop").click()
        expect(row.locator(".ws-job")).to_have_text("", timeout=30_000)
        expect(row.locator(".ws-launch")).to_be_visible()
        # it was used last: first in the default order
        page.goto(f"{fhub.url}/hub/workspaces")
        expect(rows.first).to_contain_text("Project 03")
        # every job of the user, in pages, beyond a workspace's last 20; one job in detail
        for _ in range(5):
            stop(fhub, token, launch(fhub, token, made[5]))
        page.goto(f"{fhub.url}/hub/jobs?rows=5")
        expect(page.locator("#jobs-count")).to_contain_text("1–5 of 6 jobs")
        page.goto(f"{fhub.url}/hub/jobs?status=failed")
        expect(page.locator("#jobs-count")).to_have_text("No job matches.")
        page.goto(f"{fhub.url}/hub/jobs?rows=5")
        # each job's workspace by its name (its slug is project-05), to its page
        expect(page.locator("#job-list .job-workspace").first).to_have_text("Project 05")
        page.click("#page-next")
        expect(page.locator("#job-list tbody tr")).to_have_count(1)
        page.locator("#job-list tbody tr a").first.click()
        expect(page.locator("h1")).to_have_text(re.compile(r"Minimal test server job \d+"))
        expect(page.locator("#job-times")).to_contain_text("Launched")
        expect(page.locator("#job-times")).to_contain_text("Ran for")
        expect(page.locator("#job-place")).to_contain_text("local")
        page.click("#job-log summary")
        expect(page.locator("#job-output")).not_to_have_text("Loading…")
    finally:
        context.close()
    # a collaborator sees the job but not its log; a stranger not even the job
    context, page = browserutil.login(fhub, browser, friend, PASSWORD)
    try:
        fhub.api(
            "POST", f"workspaces/{made[5]['id']}/shares", token, json={"user": friend, "level": "viewer"}, expect=201
        )
        [job] = fhub.api("GET", f"jobs?workspace={made[5]['id']}&limit=1", token)["items"]
        page.goto(f"{fhub.url}/hub/jobs/{job['id']}")
        expect(page.locator("#job-status")).to_have_text(job["status"])
        assert page.locator("#job-log").count() == 0
        stranger, stranger_token = person(fhub)
        assert fhub.request("GET", f"jobs/{job['id']}", stranger_token).status_code == 404
    finally:
        context.close()
    # nor the job's page: a stranger gets a 404, an anonymous visitor is sent to log in
    context, page = browserutil.login(fhub, browser, stranger, PASSWORD)
    try:
        assert page.goto(f"{fhub.url}/hub/jobs/{job['id']}").status == 404
    finally:
        context.close()
    anonymous = fhub.request("GET", f"/hub/jobs/{job['id']}")
    assert anonymous.status_code == 302 and "/hub/login" in anonymous.headers["Location"]


@pytest.mark.browser
def test_my_workspaces_on_a_phone_shows_the_list_first_and_creates_by_a_button(fhub, browser):
    """Issue 18, item 4: on a 390x844 phone the list of many workspaces starts on the first
    screen (not below the New workspace form); the form opens from a button by touch or
    keyboard, Escape and Cancel close it, and it makes a workspace."""
    from playwright.sync_api import expect

    owner, token = person(fhub)
    for i in range(36):
        new_workspace(fhub, token, f"Phone {i:02d}")
    context, page = browserutil.login(fhub, browser, owner, PASSWORD, **browserutil.PHONE)
    try:
        page.goto(f"{fhub.url}/hub/workspaces")
        first = page.locator("#workspaces tbody tr").first
        expect(first).to_contain_text("Phone 35")
        assert page.evaluate("window.scrollY") == 0
        box = first.bounding_box()
        assert box["y"] < browserutil.PHONE["viewport"]["height"], f"the first row starts {box['y']} px down"
        form, button = page.locator("#create-workspace"), page.locator("#new-workspace")
        expect(form).to_be_hidden()
        expect(button).to_have_attribute("aria-expanded", "false")
        assert browserutil.axe_violations(page) == []
        # by keyboard: the button opens the form on its Name field, Escape closes it back to the button
        button.focus()
        page.keyboard.press("Enter")
        expect(form).to_be_visible()
        expect(button).to_have_attribute("aria-expanded", "true")
        expect(page.locator("#ws-name")).to_be_focused()
        assert browserutil.axe_violations(page) == []
        page.keyboard.press("Escape")
        expect(form).to_be_hidden()
        expect(button).to_be_focused()
        # Cancel too
        button.click()
        expect(page.locator("#ws-name")).to_be_focused()
        page.click("#create-cancel")
        expect(form).to_be_hidden()
        expect(button).to_be_focused()
        # and by touch: it makes the workspace and opens its page
        button.tap()
        page.fill("#ws-name", "Made on a phone")
        page.locator("#create-button").tap()
        expect(page.locator("h1")).to_have_text("Made on a phone")
        assert page.evaluate("document.scrollingElement.scrollWidth") <= browserutil.PHONE["viewport"]["width"]
    finally:
        context.close()
    # on a wide screen the form stays in view, without the button
    context, page = browserutil.login(fhub, browser, owner, PASSWORD, viewport={"width": 1280, "height": 800})
    try:
        page.goto(f"{fhub.url}/hub/workspaces")
        expect(page.locator("#create-workspace")).to_be_visible()
        expect(page.locator("#new-workspace")).to_be_hidden()
    finally:
        context.close()


@pytest.mark.browser
def test_a_running_jobs_page_says_how_long_it_ran_what_is_left_and_what_it_asked_for(fhub, browser):
    """The job detail page (issue 18, item 4): its times, elapsed and remaining, what it asked for, where."""
    from playwright.sync_api import expect

    owner, token = person(fhub)
    ws = new_workspace(fhub, token, "Timed run")
    job = launch(fhub, token, ws, job_type="limited", resources={"time_limit": "3:00:00", "cpus": 1})
    fhub.wait_job(job["id"], token, {"running"})
    context, page = browserutil.login(fhub, browser, owner, PASSWORD)
    try:
        page.goto(f"{fhub.url}/hub/jobs/{job['id']}")
        expect(page.locator("h1")).to_have_text(f"Minimal, 2 h limit job {job['id']}")
        times = page.locator("#job-times")
        expect(times).to_contain_text("Running")
        expect(page.locator("#job-elapsed")).to_contain_text("so far")
        expect(times.locator("tr", has_text="Time limit")).to_contain_text("2 h 00 min")
        # the time left: the job type's limit less the time it has run
        expect(page.locator("#job-remaining")).to_have_text(re.compile(r"^1 h [45]\d min$"))
        place = page.locator("#job-place")
        expect(place.locator("tr", has_text="Workspace")).to_contain_text("Timed run")
        expect(place.locator("tr", has_text="Resource").first).to_contain_text("local")
        # what the launch asked for, in words (3:00:00 is SLURM's way of saying it)
        expect(place.locator("tr", has_text="Time limit")).to_have_text("Time limit3 h 00 min")
        expect(place.locator("th", has_text=re.compile("^CPUs$"))).to_have_count(1)
        page.click("#stop-job")
        fhub.wait_job(job["id"], token, TERMINAL)
        # the page shows itself anew at the job's end (a reload here would race with it)
        expect(page.locator("#job-status")).to_have_text(re.compile("completed|cancelled"))
        # an ended job ran for as long as it ran: no time left, nothing "so far"
        expect(page.locator("#job-remaining")).to_have_count(0)
        expect(page.locator("#job-elapsed")).not_to_contain_text("so far")
    finally:
        context.close()


@pytest.mark.browser
def test_pages_say_resources_uses_and_shares_in_words(fhub, browser):
    """What a job asked for in words ("1 GiB", not "1G"); a workspace nothing was
    launched in was never used (not "now"); a direct share is shared "directly"; the
    Files section starts at the workspace's name; an admin's top bar fits at 1200 px."""
    from playwright.sync_api import expect

    owner, token = person(fhub)
    friend, friend_token = person(fhub)
    never = new_workspace(fhub, token, "Never used")
    used = new_workspace(fhub, token, "Used once")
    job = launch(fhub, token, used, resources={"memory": "1G", "cpus": 1, "time_limit": "90"})
    fhub.wait_job(job["id"], token, {"running"})
    stop(fhub, token, job)
    mine = new_workspace(fhub, friend_token, "Friend's data")
    fhub.api(
        "POST", f"workspaces/{mine['id']}/shares", friend_token, json={"user": owner, "level": "viewer"}, expect=201
    )
    context, page = browserutil.login(fhub, browser, owner, PASSWORD)
    try:
        page.goto(f"{fhub.url}/hub/jobs/{job['id']}")
        place = page.locator("#job-place")
        expect(place.locator("tr", has_text="Memory")).to_have_text("Memory1 GiB")
        expect(place.locator("tr", has_text="CPUs")).to_have_text("CPUs1 CPU")
        expect(place.locator("tr", has_text="Time limit")).to_have_text("Time limit1 h 30 min")
        page.goto(f"{fhub.url}/hub/workspaces")
        expect(page.locator(f"tr[data-workspace-id='{never['id']}'] .ws-last-used")).to_have_text("never")
        expect(page.locator(f"tr[data-workspace-id='{used['id']}'] .ws-last-used time")).to_have_count(1)
        page.goto(f"{fhub.url}/hub/shared")
        expect(page.locator(f"#collaborations tr[data-workspace-id='{mine['id']}'] .share-through")).to_have_text(
            "directly"
        )
        page.goto(f"{fhub.url}/hub/workspaces/{never['id']}")
        expect(page.locator("#files-here")).to_have_text("Never used")
    finally:
        context.close()
    context, page = browserutil.login(
        fhub, browser, "flowadmin", ADMIN_PASSWORD, viewport={"width": 1200, "height": 800}
    )
    try:
        page.goto(f"{fhub.url}/hub/admin/workspaces?owner={owner}")
        expect(page.locator("#all-workspaces tbody tr", has_text="Never used")).to_contain_text("never")
        # every link of the top bar on one row
        tops = page.evaluate(
            "[...document.querySelectorAll('#thenavbar .nav-link')].map((a) => a.getBoundingClientRect().top)"
        )
        assert len(tops) >= 8 and len(set(tops)) == 1, tops
    finally:
        context.close()


@pytest.mark.browser
def test_all_workspaces_for_the_admin_filters_sizes_and_pages(fhub, browser):
    from playwright.sync_api import expect

    owner, token = person(fhub)
    made = [new_workspace(fhub, token, f"Admin view {i}") for i in range(6)]
    fhub.request("PUT", f"workspaces/{made[0]['id']}/files/data.bin", token, data=b"x" * 2048)
    context, page = browserutil.login(fhub, browser, "flowadmin", ADMIN_PASSWORD)
    try:
        page.goto(f"{fhub.url}/hub/admin/workspaces?rows=5&owner={owner}")
        expect(page.locator("#ws-count")).to_have_text("1–5 of 6 workspaces")
        page.click("#page-next")
        expect(page.locator("#all-workspaces tbody tr")).to_have_count(1)
        page.goto(f"{fhub.url}/hub/admin/workspaces?owner={owner}&sort=size")
        expect(page.locator("#ws-count")).to_have_text("6 workspaces")
        first = page.locator("#all-workspaces tbody tr").first
        expect(first).to_contain_text("Admin view 0")
        expect(first.locator(".ws-usage")).to_have_text("2.0 KiB")
        page.select_option("#ws-status-filter", "deleting")
        page.click("#ws-search-button")
        expect(page.locator("#ws-count")).to_have_text("No workspace matches.")
        page.click("text=all jobs")
        expect(page.locator("h1")).to_have_text("All jobs")
    finally:
        context.close()


# ---------------------------------------------------------------- 5. sharing you can see
def test_notifications_are_read_and_dismissed_by_their_recipient(fhub):
    owner, owner_token = person(fhub)
    name, token = person(fhub)
    ws = new_workspace(fhub, owner_token, "Sent as a copy")
    invite = fhub.api(
        "POST", f"workspaces/{ws['id']}/shares", owner_token, json={"kind": "copy", "user": name}, expect=201
    )
    fhub.api("POST", f"shares/{invite['id']}/accept", token, expect=202)

    def copy_ready():
        notes = fhub.api("GET", "notifications", token, expect=200)["items"]
        return notes if any("is ready" in n["reason"] for n in notes) else None

    notes = wait_for(copy_ready, 30, what="the copy's notification")
    note = notes[0]  # newest first
    assert "is ready" in note["reason"] and note["read_at"] is None and note["dismissed_at"] is None
    count = len(notes)
    assert fhub.api("GET", "notifications?unread=true", token)["_pagination"]["total"] == count
    # only its recipient
    assert fhub.request("POST", f"notifications/{note['id']}/read", owner_token).status_code == 404
    assert fhub.request("DELETE", f"notifications/{note['id']}", owner_token).status_code == 404
    assert fhub.request("GET", "notifications", fhub.admin_token).status_code == 400
    assert fhub.request("GET", "notifications?unread=maybe", token).status_code == 400
    read = fhub.api("POST", f"notifications/{note['id']}/read", token, expect=200)
    assert read["read_at"] is not None and read["dismissed_at"] is None
    assert note["id"] not in [n["id"] for n in fhub.api("GET", "notifications?unread=true", token)["items"]]
    assert fhub.api("GET", "notifications?unread=true", token)["_pagination"]["total"] == count - 1
    assert fhub.api("GET", "notifications", token)["_pagination"]["total"] == count
    gone = fhub.api("DELETE", f"notifications/{note['id']}", token, expect=200)
    assert gone["dismissed_at"] is not None
    assert note["id"] not in [n["id"] for n in fhub.api("GET", "notifications", token)["items"]]
    assert fhub.api("GET", "notifications", token)["_pagination"]["total"] == count - 1
    # job events are not notifications
    assert fhub.request("POST", "notifications/1/read", token).status_code in (404,)


@pytest.mark.browser
def test_a_new_users_landing_shows_what_is_shared_and_waiting(fhub, browser):
    from playwright.sync_api import expect

    owner, owner_token = person(fhub)
    newcomer, newcomer_token = person(fhub)
    shared = new_workspace(fhub, owner_token, "Lab notebook")
    fhub.api(
        "POST", f"workspaces/{shared['id']}/shares", owner_token, json={"user": newcomer, "level": "viewer"}, expect=201
    )
    sent = new_workspace(fhub, owner_token, "Course material")
    fhub.api(
        "POST", f"workspaces/{sent['id']}/shares", owner_token, json={"kind": "copy", "user": newcomer}, expect=201
    )
    context, page = browserutil.login(fhub, browser, newcomer, PASSWORD)
    try:
        # not "You have no workspaces yet": the shared one, and the invitation waiting
        page.goto(f"{fhub.url}/hub/workspaces")
        expect(page.locator("#no-workspaces")).to_have_count(0)
        expect(page.locator("#workspaces")).to_contain_text("Lab notebook")
        expect(page.locator("#workspaces .ws-shared")).to_have_text(f"shared by {owner} · viewer")
        expect(page.locator("#invitations-waiting")).to_contain_text("1 copy of a workspace waits for you")
        # the count in the navigation: the invitation, and the notifications of the share and of the copy sent
        badge = page.locator("#nav-waiting")
        expect(badge).to_have_text("3 waiting")
        assert badge.get_attribute("title") == "1 invitation(s) waiting, 2 unread notification(s)"
        # a viewer may not launch there
        assert page.locator(f"tr[data-workspace-id='{shared['id']}'] .ws-launch").count() == 0
        page.click("#invitations-waiting a")
        page.click(".accept-share")
        expect(page.locator("#copies")).to_contain_text("Course material", timeout=30_000)
        expect(page.locator("#notifications")).to_contain_text("is ready", timeout=30_000)
        # notifications: read one by one (the count follows), then dismissed
        notes = page.locator("#notifications .notification")
        expect(page.locator("#notifications .notification-new")).to_have_count(3)
        expect(badge).to_have_text("3 waiting")
        for left in (2, 1, 0):
            page.locator("#notifications .notification-read").first.click()
            expect(page.locator("#notifications .notification-new")).to_have_count(left)
        expect(badge).to_have_count(0)
        page.locator("#notifications .notification-dismiss").first.click()
        expect(notes).to_have_count(2)
    finally:
        context.close()


@pytest.mark.browser
def test_share_dialog_says_what_happened(fhub, browser):
    from playwright.sync_api import expect

    owner, owner_token = person(fhub)
    friend, _ = person(fhub, prefix="fr")
    ws = new_workspace(fhub, owner_token, "Shared in the dialog")
    context, page = browserutil.login(fhub, browser, owner, PASSWORD)
    try:
        page.goto(f"{fhub.url}/hub/workspaces/{ws['id']}")
        page.click("#share-open")
        page.fill("#share-search", friend)
        page.click(f".share-result:has-text('{friend}')")
        expect(page.locator("#share-target")).to_contain_text(friend)
        expect(page.locator("#share-submit")).to_be_enabled()
        # a search that matches nobody says so, and drops the earlier pick
        page.fill("#share-search", "zz-nobody-like-this")
        expect(page.locator("#share-no-match")).to_have_text("No person or group matches “zz-nobody-like-this”.")
        expect(page.locator("#share-target")).to_have_text("nobody yet")
        expect(page.locator("#share-submit")).to_be_disabled()
        # share: the dialog says it was done
        page.fill("#share-search", friend)
        page.click(f".share-result:has-text('{friend}')")
        page.click("#share-submit")
        expect(page.locator("#share-success")).to_have_text(f"Shared with {friend.upper()} ({friend}) as viewer.")
        row = page.locator("#share-list tbody tr", has_text=friend)
        # the level, changed in place
        row.locator(".share-level-select").select_option("editor")
        expect(page.locator("#share-success")).to_have_text(f"{friend} is now editor.")
        [share] = fhub.api("GET", f"workspaces/{ws['id']}/shares", owner_token)["items"]
        assert share["level"] == "editor"
        # removal is confirmed first: no, then yes
        page.once("dialog", lambda dialog: dialog.dismiss())
        row.locator(".share-remove").click()
        expect(row).to_be_visible()
        assert len(fhub.api("GET", f"workspaces/{ws['id']}/shares", owner_token)["items"]) == 1
        page.once("dialog", lambda dialog: dialog.accept())
        row.locator(".share-remove").click()
        expect(page.locator("#share-success")).to_have_text(f"{friend} no longer has access.")
        expect(page.locator("#share-none")).to_be_visible()
    finally:
        context.close()


@pytest.mark.browser
def test_a_viewer_opens_jupyterlab_read_only_and_leaves_nothing_behind(fhub, browser):
    from playwright.sync_api import expect

    owner, owner_token = person(fhub)
    viewer, _ = person(fhub)
    notebook = {
        "cells": [{"cell_type": "markdown", "metadata": {}, "source": "# Results"}],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    ws = fhub.api(
        "POST",
        "workspaces",
        owner_token,
        expect=201,
        json={
            "name": f"Lab {uuid.uuid4().hex[:6]}",
            "files": [
                {"path": "results.ipynb", "content": json.dumps(notebook)},
                {"path": "notes.txt", "content": "n\n"},
            ],
        },
    )
    fhub.api("POST", f"workspaces/{ws['id']}/shares", owner_token, json={"user": viewer, "level": "viewer"}, expect=201)
    job = fhub.wait_job(
        launch(fhub, owner_token, ws, job_type="jupyterlab")["id"], owner_token, {"running", "failed"}, timeout=120
    )
    assert job["status"] == "running", job["reason"]
    directory = fhub.workspaces_root / owner / ws["slug"]
    before = sorted(p.name for p in directory.iterdir())
    context, page = browserutil.login(fhub, browser, viewer, PASSWORD)
    try:
        page.set_default_timeout(60_000)
        page.goto(f"{fhub.url}/user/{owner}/{ws['slug']}/lab/tree/results.ipynb")
        # no "Authorize access" page on the way: straight into JupyterLab
        page.wait_for_url(re.compile(rf".*/user/{owner}/{ws['slug']}/lab.*"))
        # JupyterLab opens the file once its page has loaded its extensions: seconds on a
        # loaded machine, beyond expect's default 5 s (set_default_timeout is not expect's)
        lab = 60_000
        expect(page.locator(".jp-Notebook")).to_contain_text("Results", timeout=lab)
        # and it says it is read-only before anyone tries to save
        expect(page.locator(".jp-NotebookPanel-toolbar")).to_contain_text("notebook is read-only", timeout=lab)
        # a text file too
        page.goto(f"{fhub.url}/user/{owner}/{ws['slug']}/lab/tree/notes.txt")
        expect(page.locator(".jp-FileEditor")).to_be_visible(timeout=lab)
        expect(page.locator(".jp-Toolbar", has_text="file is read-only").first).to_be_visible(timeout=lab)
    finally:
        context.close()
    # the visit left nothing in the owner's workspace
    assert sorted(p.name for p in directory.iterdir()) == before
    stop(fhub, owner_token, job)
