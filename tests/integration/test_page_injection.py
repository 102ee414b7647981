"""Stored injection into the pages, in a real Chromium: what one user writes (a
workspace's name and description, a batch job's parameters, a file's name, a display
name) and
another's page shows must stay text. Each reader (the owner, a viewer, an editor, an
admin) opens the workspace, the workspaces list, the job and the admin's list; the
pages' own scripts must run (they build the Recent jobs and Files panels) and none of
the hostile strings may run anything or end a script early."""

from __future__ import annotations

import uuid

import pytest

from ..browserutil import login
from ..helpers import MULTIUSER_CONFIG

pytestmark = pytest.mark.browser

PASSWORD = "a long password for tests"
PEOPLE = ("uwsalice", "uwsbob", "uwscarol", "uwsadmin")
#: what a hostile user types: markup, a script's end, and an HTML comment opening that,
#: inside a <script>, makes the parser run past the script's own end (the page's script
#: then fails as a whole)
HOSTILE = [
    '<img src=x onerror="window.__pwned=1">',
    "</script><script>window.__pwned=1</script>",
    "<!--<script>",
]


@pytest.fixture(scope="module")
def phub(make_hub, system_users):
    hub = make_hub(MULTIUSER_CONFIG)
    admin = hub.add_user("uwsadmin")  # an admin (the config says so): only admins make admins' accounts
    for name in PEOPLE:
        if name == "uwsadmin":
            hub.api("PATCH", f"accounts/{name}", admin, json={"password": PASSWORD}, expect=200)
        else:
            # a display name is what an identity provider says, or what the user chose
            body = {"username": name, "password": PASSWORD, "display_name": HOSTILE[0] + HOSTILE[2]}
            hub.api("POST", "accounts", admin, json=body, expect=201)
    hub.tokens = {name: hub.add_user(name) for name in PEOPLE}
    return hub


def hostile_workspace(hub) -> tuple[dict, dict]:
    """alice's workspace with a hostile name, description and file names, shared with bob
    (viewer) and carol (editor), and a batch job carol ran in it with hostile parameters."""
    alice, carol = hub.tokens["uwsalice"], hub.tokens["uwscarol"]
    files = [{"path": f"{i}-{text.replace('/', '_')}.txt", "content": text} for i, text in enumerate(HOSTILE)]
    body = {"name": f"{HOSTILE[0]} {uuid.uuid4().hex[:4]}", "description": "\n".join(HOSTILE), "files": files}
    ws = hub.api("POST", "workspaces", alice, json=body, expect=201)
    shares = f"workspaces/{ws['id']}/shares"
    hub.api("POST", shares, alice, json={"user": "uwsbob", "level": "viewer"}, expect=201)
    hub.api("POST", shares, alice, json={"user": "uwscarol", "level": "editor"}, expect=201)
    job = hub.api(
        "POST",
        f"workspaces/{ws['id']}/jobs",
        carol,
        json={"job_type": "echo", "parameters": {"text": HOSTILE[2] + HOSTILE[1]}},
        expect=202,
    )
    hub.wait_job(job["id"], carol, {"completed", "failed"})
    return ws, job


@pytest.mark.parametrize("reader", ["uwsalice", "uwsbob", "uwscarol", "uwsadmin"])
def test_what_users_write_stays_text_on_each_others_pages(phub, browser, reader):
    ws, job = hostile_workspace(phub)
    context, page = login(phub, browser, reader, PASSWORD)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: (errors.append(f"a dialog: {d.message}"), d.dismiss()))
    try:
        pages = [f"workspaces/{ws['id']}", "workspaces", f"jobs/{job['id']}"]
        if reader == "uwsadmin":
            pages += ["admin/workspaces", "admin/accounts"]
        for where in pages:
            page.goto(f"{phub.url}/hub/{where}")
            page.wait_for_load_state("networkidle")
            assert page.evaluate("window.__pwned") is None, where
            assert not errors, f"{where}: {errors}"
            assert page.locator("img[src=x]").count() == 0, where
            # every script ended at its own end: none ran on past it into the page
            overrun = page.evaluate("Array.from(document.scripts).filter(s => s.text.includes('</')).length")
            assert overrun == 0, f"{where}: a script runs past its end"
            if where.startswith("workspaces/"):
                # the page's script ran: it lists the job and the files
                page.locator(f"a[href$='/jobs/{job['id']}']").first.wait_for()
                page.get_by_text("0-<img src=x", exact=False).first.wait_for()
    finally:
        context.close()
