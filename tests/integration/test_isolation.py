"""One user never sees or touches another's workspaces, jobs, servers or files.

Refusals are 404 (not 403) wherever a name or id would otherwise leak.
"""

from __future__ import annotations

import os
import subprocess

import pytest


@pytest.fixture(scope="module")
def running(hub, alice):
    """A workspace of alice's with JupyterLab running in it."""
    ws = hub.api(
        "POST",
        "workspaces",
        alice,
        json={"name": "private work", "files": [{"path": "secret.txt", "content": "alice's secret"}]},
        expect=201,
    )
    job = hub.api("POST", f"workspaces/{ws['id']}/jobs", alice, json={"job_type": "jupyterlab"}, expect=202)
    job = hub.wait_job(job["id"], alice, {"running", "failed"})
    assert job["status"] == "running", job["reason"]
    yield ws, job
    hub.api("POST", f"jobs/{job['id']}/stop", alice)
    hub.wait_job(job["id"], alice, {"completed", "cancelled", "failed"})


def test_other_users_workspace_is_not_found(hub, bob, running):
    ws, job = running
    wid, jid = ws["id"], job["id"]
    for method, path, body in [
        ("GET", f"workspaces/{wid}", None),
        ("PATCH", f"workspaces/{wid}", {"name": "mine now"}),
        ("DELETE", f"workspaces/{wid}", None),
        ("GET", f"workspaces/{wid}/files", None),
        ("GET", f"workspaces/{wid}/files/secret.txt", None),
        ("POST", f"workspaces/{wid}/jobs", {"job_type": "jupyterlab"}),
        ("GET", f"jobs/{jid}", None),
        ("POST", f"jobs/{jid}/stop", None),
    ]:
        r = hub.request(method, path, bob, json=body)
        assert r.status_code == 404, (method, path, r.status_code, r.text)
        assert "secret" not in r.text and "private" not in r.text
    r = hub.request("PUT", f"workspaces/{wid}/files/planted.txt", bob, data=b"x")
    assert r.status_code == 404
    assert not (hub.workspaces_root / "uwsalice" / "private-work" / "planted.txt").exists()
    # nothing of alice's in bob's lists
    assert wid not in [w["id"] for w in hub.api("GET", "workspaces", bob, expect=200)["items"]]
    assert jid not in [j["id"] for j in hub.api("GET", "jobs", bob, expect=200)["items"]]
    assert hub.api("GET", f"jobs?workspace={wid}", bob, expect=200)["items"] == []
    # and alice's job still runs, her workspace is as it was
    assert hub.api("GET", f"jobs/{jid}", hub.admin_token)["status"] == "running"
    assert hub.api("GET", f"workspaces/{wid}", hub.admin_token)["name"] == "private work"


def test_other_users_server_is_refused_by_the_proxy(hub, bob, alice, running):
    ws, job = running
    server = f"/user/uwsalice/{ws['slug']}"
    assert hub.request("GET", f"{server}/api/contents", alice).status_code == 200
    r = hub.request("GET", f"{server}/api/contents/secret.txt", bob)
    assert r.status_code in (403, 404)
    assert "alice's secret" not in r.text


def test_other_users_files_are_unreadable_on_disk(hub, running):
    """Jobs run as their owners: bob's processes cannot read alice's workspace."""
    directory = hub.workspaces_root / "uwsalice" / running[0]["slug"]
    r = subprocess.run(
        ["runuser", "-u", "uwsbob", "--", "cat", str(directory / "secret.txt")], capture_output=True, text=True
    )
    assert r.returncode != 0 and "Permission denied" in r.stderr
    r = subprocess.run(
        ["runuser", "-u", "uwsalice", "--", "cat", str(directory / "secret.txt")], capture_output=True, text=True
    )
    assert r.stdout == "alice's secret"


def test_admin_sees_everyone(hub, alice, bob, running):
    ws, job = running
    admin = hub.add_user("uwsadmin")
    assert hub.api("GET", f"workspaces/{ws['id']}", admin, expect=200)["owner"] == "uwsalice"
    owners = {w["owner"] for w in hub.api("GET", "workspaces", admin, expect=200)["items"]}
    assert "uwsalice" in owners
    assert hub.api("GET", f"jobs/{job['id']}", admin, expect=200)["status"] == "running"


@pytest.mark.parametrize(
    "path",
    [
        "../uwsbob",
        "..",
        "data/../../x",
        "%2e%2e/%2e%2e/etc/passwd",
        "%2E%2E%2Fsecret",
        "/etc/passwd",
        "%2Fetc%2Fpasswd",
        "a%00b",
    ],
)
def test_paths_outside_the_workspace_are_refused(hub, alice, workspace, path):
    """Through the proxy (which may drop dot segments itself: then the route does
    not match, a 404) and straight to the hub (its own path check: a 400)."""
    base = f"/hub/api/workspaces/{workspace['id']}/files"
    for method, url, body in [
        ("GET", f"{base}/{path}", None),
        ("PUT", f"{base}/{path}", b"pwned"),
        ("GET", f"{base}?path={path}", None),
    ]:
        status, text = hub.raw_request(method, url, alice, body)
        assert status in (400, 404), (method, url, status, text)
        assert "root:" not in text
        status, text = hub.raw_request(method, url, alice, body, direct=True)
        # tornado turns a NUL in a query argument into a space: not found, not a 400
        expected = (400, 404) if "?" in url and "%00" in path else (400,)
        assert status in expected, ("direct", method, url, status, text)
        assert "root:" not in text
    # nothing was written anywhere near the workspaces
    written = [p for p in hub.workspaces_root.rglob("*") if p.is_file() and p.read_bytes() == b"pwned"]
    assert written == []


def test_dotdot_is_refused_with_a_clear_message(hub, alice, workspace):
    r = hub.request("GET", f"/hub/api/workspaces/{workspace['id']}/files?path=../../", alice)
    assert r.status_code == 400
    assert "inside the workspace" in r.json()["message"]


def test_symlink_out_of_the_workspace_is_refused(hub, alice, workspace):
    directory = hub.workspaces_root / "uwsalice" / workspace["slug"]
    (directory / "escape").symlink_to("/etc")
    (directory / "passwd-link").symlink_to("/etc/passwd")
    (directory / "inside-link").symlink_to("README.md")
    wid = workspace["id"]
    for path in ("escape/passwd", "passwd-link"):
        r = hub.request("GET", f"workspaces/{wid}/files/{path}", alice)
        assert r.status_code == 400, r.text
        assert "root:" not in r.text
    r = hub.request("GET", f"workspaces/{wid}/files?path=escape", alice)
    assert r.status_code == 400
    r = hub.request("PUT", f"workspaces/{wid}/files/escape/uws-planted", alice, data=b"x")
    assert r.status_code == 400
    assert not os.path.exists("/etc/uws-planted")
    # a link that stays inside is fine, and listed as a link
    assert hub.request("GET", f"workspaces/{wid}/files/inside-link", alice).content == b"# hello\n"
    types = {e["name"]: e["type"] for e in hub.api("GET", f"workspaces/{wid}/files", alice)["items"]}
    assert types["escape"] == "symlink" and types["README.md"] == "file"
