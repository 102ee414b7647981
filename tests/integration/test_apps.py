"""Web apps as jobs, in Chromium through the proxy: the shipped examples (a
Voilà dashboard that viewers may open, a Streamlit app that they may not,
uws_hub.jobs.examples) launched from the workspace page in new workspaces,
rendered, and used (their websockets carry a widget's change and a text
input); then who else may open them: a viewer and an editor the dashboard only
(the owner's server runs as the owner: only its launcher uses it fully), a
stranger and anonymous neither; what an app gets (its command template
filled in, none of its visitors' credentials: tests/echo_app.py), and that a
viewer of the dashboard cannot run code in its kernel."""

from __future__ import annotations

import json
import os
import pwd
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests
import websocket
from playwright.sync_api import expect

from .. import browserutil
from ..hubutil import REPO

pytestmark = pytest.mark.browser

PASSWORD = "a long password for the apps"
OWNER, VIEWER, EDITOR, STRANGER = "uwsalice", "uwsbob", "uwscarol", "uwsnoshare"
#: what the example dashboard shows, for its slider at 6 and at 7
SUM_6 = "Sum of the squares of 1 to 6: 91"
SUM_7 = "Sum of the squares of 1 to 7: 140"
#: a web app that answers with what it was given (tests/echo_app.py); viewers may use it
ECHO_JOB_TYPE = {
    "display_name": "Echo",
    "app": {
        "command": [sys.executable, str(REPO / "tests" / "echo_app.py"), "{port}", "{base_url}", "{workspace}"],
        "env": {"ECHO_TOKEN": "{token}"},
        "request_headers": {"X-Echo-Token": "{token}"},
        "viewers": True,
    },
}
#: the echo app where jupyter-server-proxy cannot be loaded (tests/without_proxy)
UNSERVED_JOB_TYPE = {**ECHO_JOB_TYPE, "env": {"PYTHONPATH": str(REPO / "tests" / "without_proxy")}}


@pytest.fixture(scope="module")
def apphub(make_hub, system_users, group_prefix):
    hub = make_hub(f"""
from uws_hub.jobs.examples import EXAMPLE_APP_JOB_TYPES
from uws_hub.jobs.types import DEFAULT_JOB_TYPES
c.UWSHub.system_users = True
c.UWSHub.job_reconcile_interval = 2
c.UWSHub.share_posix_group_prefix = {group_prefix!r}
c.Authenticator.admin_users = {{"uwsadmin"}}
c.UWSHub.job_types = {{**DEFAULT_JOB_TYPES, **EXAMPLE_APP_JOB_TYPES, "echo": {ECHO_JOB_TYPE!r},
                      "unserved": {UNSERVED_JOB_TYPE!r}}}
""")
    for name in (OWNER, VIEWER, EDITOR, STRANGER):
        hub.api("POST", "accounts", json={"username": name, "password": PASSWORD}, expect=201)
    hub.tokens = {name: hub.add_user(name) for name in (OWNER, VIEWER, EDITOR, STRANGER)}
    return hub


def login(hub, browser, name: str):
    return browserutil.login(hub, browser, name, PASSWORD)


def launch_from_the_page(page, hub, job_type: str) -> tuple[dict, object]:
    """A new workspace of the page's user, the job type launched from its page;
    returns the workspace and the app's tab, opened with the Open button."""
    page.goto(hub.url + "/hub/workspaces")
    page.fill("#ws-name", f"{job_type} {uuid.uuid4().hex[:6]}")
    page.click("#create-button")
    page.wait_for_url(re.compile(r".*/hub/workspaces/\d+$"))
    ws = hub.api("GET", "workspaces/" + page.url.rsplit("/", 1)[1], hub.tokens[OWNER], expect=200)
    page.select_option("#job-type-select", job_type)
    job_type_model = next(t for t in hub.api("GET", "job-types", hub.tokens[OWNER]) if t["name"] == job_type)
    expect(page.locator("#job-type-description")).to_have_text(job_type_model["description"])
    expect(page.locator("#job-type-icon")).to_have_class(re.compile(f"fa-{job_type_model['icon']}"))
    started = time.monotonic()
    app = browserutil.launch_and_open(page, job_type)
    app.started = started  # type: ignore[attr-defined]
    return ws, app


def seeded(hub, ws: dict, name: str) -> bool:
    path = hub.workspaces_root / OWNER / ws["slug"] / name
    return path.is_file() and path.stat().st_uid == path.parent.stat().st_uid


def stop(hub, ws: dict) -> None:
    job = hub.api("GET", f"workspaces/{ws['id']}", hub.tokens[OWNER])["active_job"]
    if job:
        hub.api("POST", f"jobs/{job['id']}/stop", hub.tokens[OWNER])
        hub.wait_job(job["id"], hub.tokens[OWNER], {"completed", "cancelled", "failed"})


def test_the_apps_start_from_the_page_and_render_in_new_workspaces(apphub, browser):
    context, page = login(apphub, browser, OWNER)
    try:
        # Voilà: the example notebook written into the workspace, its outputs shown;
        # the slider's change goes to the kernel and back through the websocket
        requested: list[str] = []
        context.on("request", lambda request: requested.append(request.url))
        ws, dashboard = launch_from_the_page(page, apphub, "voila")
        dashboard.wait_for_url(re.compile(rf".*/user/{OWNER}/{ws['slug']}/app/"))
        expect(dashboard.get_by_text(SUM_6)).to_be_visible(timeout=90_000)
        print(f"voila: launch to rendered {time.monotonic() - dashboard.started:.1f} s")
        expect(dashboard.locator("body")).not_to_contain_text("import ipywidgets")  # outputs, not code
        dashboard.locator(".widget-slider [role=slider], .widget-slider .noUi-handle").first.focus()
        dashboard.keyboard.press("ArrowRight")
        expect(dashboard.get_by_text(SUM_7)).to_be_visible(timeout=30_000)
        assert seeded(apphub, ws, "dashboard.ipynb")
        stop(apphub, ws)

        # Streamlit: the example script; what is typed goes to the app and its
        # answer comes back through the websocket
        ws, app = launch_from_the_page(page, apphub, "streamlit")
        expect(app.get_by_text("Hello, world!")).to_be_visible(timeout=90_000)
        print(f"streamlit: launch to rendered {time.monotonic() - app.started:.1f} s")
        app.get_by_label("Your name").fill("Ada")
        app.get_by_label("Your name").press("Enter")
        expect(app.get_by_text("Hello, Ada!")).to_be_visible(timeout=30_000)
        assert seeded(apphub, ws, "streamlit_app.py")
        # no developer menu for visitors (the example's settings apply)
        expect(app.get_by_text("Deploy", exact=True)).to_have_count(0)
        stop(apphub, ws)
    finally:
        context.close()
    # neither app's pages fetch anything from elsewhere (Streamlit's usage statistics, a CDN)
    elsewhere = [url for url in requested if url.startswith("http") and not url.startswith(apphub.url)]
    assert not elsewhere, elsewhere


# ---------------------------------------------------------------- who else may open them
@pytest.fixture(scope="module")
def shared_apps(apphub):
    """The owner's running Voilà, Streamlit and echo jobs, each in a workspace
    shared with the viewer and the editor (launched through the API, all three
    before waiting for any: their starts overlap instead of adding up)."""
    owner = apphub.tokens[OWNER]
    launched = {}
    for job_type in ("voila", "streamlit", "echo"):
        ws = apphub.api(
            "POST", "workspaces", owner, json={"name": f"shared {job_type} {uuid.uuid4().hex[:6]}"}, expect=201
        )
        for name, level in ((VIEWER, "viewer"), (EDITOR, "editor")):
            apphub.api("POST", f"workspaces/{ws['id']}/shares", owner, json={"user": name, "level": level}, expect=201)
        job = apphub.api("POST", f"workspaces/{ws['id']}/jobs", owner, json={"job_type": job_type}, expect=202)
        launched[job_type] = ws, job
    apps = {}
    for job_type, (ws, job) in launched.items():
        job = apphub.wait_job(job["id"], owner, {"running", "failed"}, timeout=90)
        assert job["status"] == "running", job["reason"]
        apps[job_type] = {"ws": ws, "job": job, "server": f"/user/{OWNER}/{ws['slug']}/"}
    yield apps
    for app in apps.values():
        stop(apphub, app["ws"])


def app_get(hub, server: str, token: str | None, **kw) -> requests.Response:
    headers = {"Authorization": f"token {token}"} if token else {}
    return requests.get(hub.url + server + "app/", headers=headers, allow_redirects=False, timeout=90, **kw)


def app_websocket(hub, server: str, token: str | None) -> int:
    """The status a websocket upgrade to the app gets (101: connected)."""
    url = hub.url.replace("http", "ws", 1) + server + "app/_stcore/stream"
    header = [f"Authorization: token {token}"] if token else []
    try:
        ws = websocket.create_connection(url, header=header, timeout=30)
    except websocket.WebSocketBadStatusException as e:
        return e.status_code
    ws.close()
    return 101


def test_a_viewer_opens_the_dashboard_and_nothing_else(apphub, shared_apps, browser):
    voila, streamlit = shared_apps["voila"]["server"], shared_apps["streamlit"]["server"]
    context, page = login(apphub, browser, VIEWER)
    try:
        page.goto(apphub.url + voila + "app/")
        browserutil.authorize(page)
        expect(page.get_by_text(SUM_6)).to_be_visible(timeout=90_000)
        # the dashboard's widgets work for a viewer (its kernel's websocket passes the guard)
        page.locator(".widget-slider [role=slider], .widget-slider .noUi-handle").first.focus()
        page.keyboard.press("ArrowRight")
        expect(page.get_by_text(SUM_7)).to_be_visible(timeout=30_000)
        # JupyterLab's write paths in the same server stay refused to the viewer
        assert (
            browserutil.put_from_page(
                page, voila + "api/contents/bob-was-here.txt", {"type": "file", "format": "text", "content": "from bob"}
            )
            == 403
        )
        # the Streamlit app, which viewers may not use, is refused like the rest
        response = page.goto(apphub.url + streamlit + "app/")
        browserutil.authorize(page)
        expect(page.locator("body")).to_contain_text("may only read here", timeout=30_000)
        assert response is not None
    finally:
        context.close()
    bob = apphub.tokens[VIEWER]
    assert app_get(apphub, voila, bob).status_code == 200
    r = app_get(apphub, streamlit, bob)
    assert r.status_code == 403 and "may only read here" in r.json()["message"]
    assert app_websocket(apphub, streamlit, bob) == 403
    kernel = requests.post(apphub.url + voila + "api/kernels", headers={"Authorization": f"token {bob}"}, timeout=30)
    assert kernel.status_code == 403
    assert not (apphub.workspaces_root / OWNER / shared_apps["voila"]["ws"]["slug"] / "bob-was-here.txt").exists()


@pytest.mark.expect_log_errors(
    r"User <User\(uwsnoshare [^>]*> not allowed to access Server at /user/uwsalice/",
)
def test_a_stranger_and_anonymous_are_refused(apphub, shared_apps, browser):
    stranger = apphub.tokens[STRANGER]
    for job_type, app in shared_apps.items():
        r = app_get(apphub, app["server"], stranger)
        assert r.status_code == 403, (job_type, r.status_code)
        assert SUM_6 not in r.text
        assert app_websocket(apphub, app["server"], stranger) == 403
        # anonymous: sent to log in, nothing of the app
        r = app_get(apphub, app["server"], None)
        assert r.status_code == 302 and "/hub/api/oauth2/authorize" in r.headers["Location"], job_type
        assert app_websocket(apphub, app["server"], None) == 403
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(apphub.url + shared_apps["voila"]["server"] + "app/")
        page.wait_for_url(re.compile(r".*/hub/login.*"))
        expect(page.locator("body")).not_to_contain_text("Sum of the squares")
    finally:
        context.close()
    context, page = login(apphub, browser, STRANGER)
    try:
        response = page.goto(apphub.url + shared_apps["voila"]["server"] + "app/")
        assert response is not None and response.status == 403
        expect(page.locator("body")).not_to_contain_text("Sum of the squares")
    finally:
        context.close()


def test_the_editor_opens_what_a_viewer_opens_in_the_owners_server(apphub, shared_apps):
    """The owner's apps run as the owner, who launched them: an editor is a reader there
    (the dashboard, which viewers may open; not the Streamlit app, which runs code as the
    owner for whoever uses it). An editor's own launch runs as the editor."""
    voila, streamlit = shared_apps["voila"]["server"], shared_apps["streamlit"]["server"]
    carol = apphub.tokens[EDITOR]
    r = app_get(apphub, voila, carol)
    assert r.status_code == 200, r.status_code
    r = app_get(apphub, streamlit, carol)
    assert r.status_code == 403 and f"runs as {OWNER}'s account" in r.json()["message"], r.text
    assert app_websocket(apphub, streamlit, carol) == 403


def app_command(owner: str, word: str) -> list[str]:
    """The command line of the owner's app process that has ``word`` in it."""
    uid = pwd.getpwnam(owner).pw_uid
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or proc.stat().st_uid != uid:
                continue
            argv = (proc / "cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        if any(word in arg for arg in argv):
            return argv
    raise AssertionError(f"no process of {owner} runs {word}")


def test_around_the_proxy_other_accounts_cannot_use_the_apps(apphub, shared_apps):
    """The apps run as the owner on this machine: Voilà's port answers only
    requests with the token the proxy sends (no one else knows it: it is in the
    app's environment, not on its command line), and Streamlit's socket is in
    a folder of the owner's that no other account may open."""
    assert app_get(apphub, shared_apps["voila"]["server"], apphub.tokens[OWNER]).status_code == 200
    voila = app_command(OWNER, "dashboard.ipynb")
    port = next(arg.split("=", 1)[1] for arg in voila if arg.startswith("--port="))
    r = requests.get(f"http://127.0.0.1:{port}/", allow_redirects=False, timeout=30)
    assert r.status_code in (302, 403) and "Sum of the squares" not in r.text, r.status_code

    assert app_websocket(apphub, shared_apps["streamlit"]["server"], apphub.tokens[OWNER]) == 101
    uvicorn = app_command(OWNER, "streamlit_asgi:app")
    sock = next(arg.split("=", 1)[1] for arg in uvicorn if arg.startswith("--uds="))
    connect = f"import socket; socket.socket(socket.AF_UNIX).connect({sock!r})"
    refused = subprocess.run(
        ["runuser", "-u", VIEWER, "--", "python3", "-c", connect], capture_output=True, text=True, timeout=30
    )
    assert refused.returncode != 0 and "PermissionError" in refused.stderr, refused.stderr
    owner = subprocess.run(
        ["runuser", "-u", OWNER, "--", "python3", "-c", connect], capture_output=True, text=True, timeout=30
    )
    assert owner.returncode == 0, owner.stderr


def test_an_app_gets_its_command_template_filled_and_no_visitors_credentials(apphub, shared_apps):
    """The echo app sees {base_url}, {workspace} and the {token} as the job type
    says (the token in its environment and the proxy's header, not on its command
    line) and the path below its prefix; of the visitor's credentials (an API
    token, JupyterHub's cookies) nothing, whether the guard let the visitor
    through as a writer or as a viewer of an app viewers may use."""
    echo = shared_apps["echo"]
    directory = os.path.realpath(apphub.workspaces_root / OWNER / echo["ws"]["slug"])
    cookies = "jupyterhub-session-id=0123abcd; jupyterhub-user-uwsalice-x=secret; theme=dark"
    for name in (OWNER, EDITOR, VIEWER):
        r = requests.get(
            apphub.url + echo["server"] + "app/some/page?x=1",
            allow_redirects=False,
            timeout=60,
            headers={"Authorization": f"token {apphub.tokens[name]}", "Cookie": cookies},
        )
        assert r.status_code == 200, (name, r.status_code, r.text[:300])
        seen = r.json()
        port, base_url, workspace = seen["argv"]
        assert port.isdigit() and base_url == echo["server"] + "app/"
        assert os.path.realpath(workspace) == directory and os.path.realpath(seen["cwd"]) == directory
        assert seen["path"] == "/some/page?x=1"
        headers = {k.lower(): v for k, v in seen["headers"].items()}
        assert "authorization" not in headers, name
        assert headers["cookie"] == "theme=dark", name
        assert len(seen["token"]) >= 32 and headers["x-echo-token"] == seen["token"]
    assert seen["token"] not in " ".join(app_command(OWNER, "echo_app.py"))


def test_a_viewer_cannot_run_code_in_the_dashboards_kernel(apphub, shared_apps):
    """A viewer may use the dashboard's widgets, not its kernel: Voilà passes
    the kernel only widget (comm) and kernel-info messages, so an
    execute_request sent on the dashboard kernel's websocket runs nothing."""
    bob = apphub.tokens[VIEWER]
    voila = shared_apps["voila"]
    marker = apphub.workspaces_root / OWNER / voila["ws"]["slug"] / "bob-ran-code.txt"
    page = app_get(apphub, voila["server"], bob)
    assert page.status_code == 200
    kernel = re.search(r'"kernelId":\s*"([0-9a-f-]{36})"', page.text)
    assert kernel, page.text[:2000]
    url = apphub.url.replace("http", "ws", 1) + voila["server"] + f"app/api/kernels/{kernel.group(1)}/channels"
    ws = websocket.create_connection(url, header=[f"Authorization: token {bob}"], timeout=60)

    def request(msg_type: str, content: dict) -> str:
        msg_id = uuid.uuid4().hex
        header = {
            "msg_id": msg_id,
            "msg_type": msg_type,
            "session": "bob",
            "username": "bob",
            "version": "5.3",
            "date": "2024-01-01T00:00:00Z",
        }
        ws.send(
            json.dumps(
                {
                    "header": header,
                    "parent_header": {},
                    "metadata": {},
                    "content": content,
                    "channel": "shell",
                    "buffers": [],
                }
            )
        )
        return msg_id

    try:
        request(
            "execute_request",
            {
                "code": f"open({str(marker)!r}, 'w').write('bob')",
                "silent": False,
                "store_history": False,
                "user_expressions": {},
                "allow_stdin": False,
            },
        )
        info = request("kernel_info_request", {})
        replies = []
        while True:  # the shell channel answers in order: an execute_reply would come first
            msg = json.loads(ws.recv())
            replies.append(msg["header"]["msg_type"])
            if msg["parent_header"].get("msg_id") == info and msg["header"]["msg_type"] == "kernel_info_reply":
                break
    finally:
        ws.close()
    assert "execute_reply" not in replies and "execute_input" not in replies, replies
    assert not marker.exists()


def test_an_apps_job_serves_jupyterlab_too(apphub, shared_apps):
    """The owner edits the app's file in the same job: its server serves
    JupyterLab beside the app, and the seeded notebook through the contents API."""
    owner = {"Authorization": f"token {apphub.tokens[OWNER]}"}
    server = apphub.url + shared_apps["voila"]["server"]
    lab = requests.get(server + "lab", headers=owner, timeout=60)
    assert lab.status_code == 200 and "JupyterLab" in lab.text
    notebook = requests.get(server + "api/contents/dashboard.ipynb", headers=owner, timeout=60)
    assert notebook.status_code == 200 and "Sum of the squares" in json.dumps(notebook.json()["content"])


def test_a_job_whose_app_cannot_be_served_fails_saying_why(apphub):
    """Without jupyter-server-proxy where the job runs, its server would open
    with no app: it stops instead, and the owner reads why."""
    owner = apphub.tokens[OWNER]
    ws = apphub.api("POST", "workspaces", owner, json={"name": f"unserved {uuid.uuid4().hex[:6]}"}, expect=201)
    job = apphub.api("POST", f"workspaces/{ws['id']}/jobs", owner, json={"job_type": "unserved"}, expect=202)
    job = apphub.wait_job(job["id"], owner, {"running", "failed"}, timeout=90)
    assert job["status"] == "failed", job
    assert "exited with status 1" in job["reason"], job["reason"]
    output = apphub.api("GET", f"jobs/{job['id']}/output", owner, expect=200)
    assert "the job type's web app is not served at app/" in json.dumps(output), output


def test_a_workspaces_own_dashboard_is_shown_and_kept(apphub):
    """A workspace with its own dashboard.ipynb gets it shown, not the example,
    and the file is left as it was."""
    owner = apphub.tokens[OWNER]
    mine = json.dumps(
        {
            "cells": [{"cell_type": "markdown", "id": "mine", "metadata": {}, "source": ["# Glacier melt, by year"]}],
            "metadata": {},
            "nbformat": 4,
            "nbformat_minor": 5,
        }
    )
    ws = apphub.api(
        "POST",
        "workspaces",
        owner,
        expect=201,
        json={"name": f"own dashboard {uuid.uuid4().hex[:6]}", "files": [{"path": "dashboard.ipynb", "content": mine}]},
    )
    job = apphub.api("POST", f"workspaces/{ws['id']}/jobs", owner, json={"job_type": "voila"}, expect=202)
    job = apphub.wait_job(job["id"], owner, {"running", "failed"}, timeout=90)
    assert job["status"] == "running", job["reason"]
    try:
        page = app_get(apphub, f"/user/{OWNER}/{ws['slug']}/", owner)
        assert page.status_code == 200
        assert "Glacier melt, by year" in page.text and "Example dashboard" not in page.text
        assert (apphub.workspaces_root / OWNER / ws["slug"] / "dashboard.ipynb").read_text() == mine
    finally:
        stop(apphub, ws)
