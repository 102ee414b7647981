"""The HuBMAP portal's calls to its workspaces API, as its code sends them, for the
HuBMAP-compatible API's tests.

From portal-ui ``context/app/static/js/components/workspaces/api.ts`` (URLs,
methods, bodies; GET/PUT/DELETE without a trailing slash, the browser's
POSTs with one), ``utils.ts`` (``getWorkspaceHeaders``: ``Content-Type:
application/json`` and ``UWS-Authorization: Token <t>`` on every call; the
job types are fetched with no headers), ``statusCodes.ts`` (the status sets,
checked on every job and workspace of every list, as
``mergeJobsIntoWorkspaces`` does) and ``routes_auth.py`` /
``routes_notebooks.py`` (the portal's Flask server: the token exchange, and
creating a workspace from a notebook, with ``requests``).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

from .hubutil import free_port

#: the portal's origin (a browser sends it with every call)
ORIGIN = "https://portal.example.org"
JOB_STATUSES = {"pending", "running", "stopping", "complete", "failed"}
WORKSPACE_STATUSES = {"active", "idle", "initializing", "deleting", "error"}
#: the Globus groups token the portal puts in workspace_details (the entity API stand-in accepts it)
GROUPS_TOKEN = "portal-users-groups-token"


def validate(jobs: list[dict] = (), workspaces: list[dict] = ()) -> None:
    """``validateJobStatus`` / ``validateWorkspaceStatus``: the portal throws on anything else."""
    for job in jobs:
        assert job["status"] in JOB_STATUSES, f"Unexpected job status {job['status']!r}"
        assert isinstance(job["job_details"]["current_job_details"], dict)
    for ws in workspaces:
        assert ws["status"] in WORKSPACE_STATUSES, f"Unexpected workspace status {ws['status']!r}"
        details = ws["workspace_details"]
        assert isinstance(details["current_workspace_details"]["files"], list)
        assert isinstance(details["request_workspace_details"]["files"], list)


class Portal:
    """One logged-in user of the portal (their browser, and the portal's Flask server)."""

    def __init__(self, hub, token: str):
        self.endpoint = hub.url + "/hub/api/hubmap"  # the portal's WORKSPACES_ENDPOINT
        self.token = token

    def headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json", "UWS-Authorization": f"Token {self.token}", "Origin": ORIGIN}

    def fetch(self, method: str, path: str, body=None, headers=None) -> requests.Response:
        r = requests.request(
            method,
            self.endpoint + path,
            headers=self.headers() if headers is None else headers,
            data=None if body is None else json.dumps(body),
            allow_redirects=False,
            timeout=60,
        )
        assert r.status_code not in (301, 302, 307, 308), f"{method} {path} redirected"
        assert r.headers.get("Content-Type", "").startswith("application/json"), r.text
        if "Origin" in (self.headers() if headers is None else headers):
            # without it the browser would not let the portal read the answer
            assert r.headers.get("Access-Control-Allow-Origin") == ORIGIN, (method, path, r.headers)
        return r

    # -------------------------------------------------------------- reads (SWR fetchers)
    def jobs(self) -> list[dict]:
        r = self.fetch("GET", "/jobs")
        assert r.ok, "API Error; Are you logged in?"
        body = r.json()
        assert body["success"], body
        validate(jobs=body["data"]["jobs"])
        return body["data"]["jobs"]

    def workspaces(self, workspace_id: int | None = None) -> list[dict]:
        r = self.fetch("GET", "/workspaces" if workspace_id is None else f"/workspaces/{workspace_id}")
        assert r.status_code == 200, r.text
        workspaces = r.json()["data"]["workspaces"]
        validate(workspaces=workspaces)
        return workspaces

    def job_types(self) -> dict:
        # fetchJobTypes: fetch(url), no headers (the browser adds its Origin)
        r = self.fetch("GET", "/job_types", headers={"Origin": ORIGIN})
        body = r.json()
        assert body["success"], body
        return body["data"]["job_types"]

    def users(self, query: str) -> list[dict]:
        r = self.fetch("GET", f"/users?search={query}")
        assert r.status_code == 200, r.text
        return r.json()["data"]["users"]

    def invitations(self, invitation_id: int | None = None) -> dict:
        path = "/shared_workspaces" if invitation_id is None else f"/shared_workspaces/{invitation_id}/"
        r = self.fetch("GET", path)
        assert r.status_code == 200, r.text
        return r.json()["data"]

    # -------------------------------------------------------------- actions
    def create(self, body: dict) -> dict:
        r = self.fetch("POST", "/workspaces/", body)
        result = r.json()
        assert result["success"], f"Failed to create workspace: {result['message']}"
        return result["data"]["workspace"]

    def update(self, workspace_id: int, body: dict) -> requests.Response:
        return self.fetch("PUT", f"/workspaces/{workspace_id}", body)

    def start(self, workspace_id: int, job_type: str, resource_options: dict) -> requests.Response:
        return self.fetch(
            "PUT",
            f"/workspaces/{workspace_id}/start",
            {"job_type": job_type, "job_details": {}, "resource_options": resource_options},
        )

    def stop(self, job_id: int) -> requests.Response:
        return self.fetch("PUT", f"/jobs/{job_id}/stop")

    def delete(self, workspace_id: int) -> requests.Response:
        return self.fetch("DELETE", f"/workspaces/{workspace_id}")

    def share(self, workspace_id: int, user_ids: list[int]) -> requests.Response:
        # ShareInvitationBody: the workspace id as a string
        return self.fetch(
            "POST", "/shared_workspaces/", {"original_workspace_id": str(workspace_id), "shared_user_ids": user_ids}
        )

    def accept(self, invitation_id: int) -> requests.Response:
        return self.fetch("PUT", f"/shared_workspaces/{invitation_id}/accept/")

    def decline(self, invitation_id: int) -> requests.Response:
        return self.fetch("DELETE", f"/shared_workspaces/{invitation_id}/")

    def wait_for_job(self, workspace_id: int, statuses: set[str], timeout: float = 120, not_id: int | None = None):
        """The please-wait page: GET jobs every second, this workspace's job picked client-side."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            jobs = [j for j in self.jobs() if str(j["workspace_id"]) == str(workspace_id) and j["id"] != not_id]
            last = jobs
            found = [j for j in jobs if j["status"] in statuses]
            if found:
                return max(found, key=lambda j: j["id"])
            time.sleep(1)
        raise AssertionError(f"no job of workspace {workspace_id} reached {statuses}: {last}")


def exchange_token(hub, body: dict) -> requests.Response:
    """The portal's Flask server at login (routes_auth.py): POST tokens/ with a JSON
    string as the body and no Content-Type."""
    return requests.post(hub.url + "/hub/api/hubmap/tokens/", data=json.dumps(body), timeout=60)


class EntityAPI:
    """HuBMAP's entity API, as far as the workspaces server uses it:
    ``GET /datasets/<uuid>/file-system-abs-path`` answers ``{"path": ...}`` for the
    portal's Globus token, on a thread of the test process."""

    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        root_dir = root

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                parts = self.path.strip("/").split("/")
                ok = (
                    len(parts) == 3
                    and parts[0] == "datasets"
                    and parts[2] == "file-system-abs-path"
                    and self.headers.get("Authorization") == f"Bearer {GROUPS_TOKEN}"
                )
                status, body = (200, {"path": str(root_dir / parts[1])}) if ok else (401, {"error": "no"})
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
