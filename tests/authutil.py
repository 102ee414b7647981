"""Helpers for the authenticators' tests: log in through the hub's real login
form (with its XSRF cookie), as a browser does, and read what the hub says."""

from __future__ import annotations

import re
from html import unescape

import requests

from .hubutil import Hub

LOGIN_ERROR = re.compile(r'<p class="login_error">(.*?)</p>', re.S)


class Login:
    """The outcome of one login form submission."""

    def __init__(self, response: requests.Response, session: requests.Session):
        self.response = response
        self.session = session

    @property
    def ok(self) -> bool:
        return self.response.status_code == 302 and "/hub/login" not in self.response.headers.get("Location", "")

    @property
    def error(self) -> str | None:
        match = LOGIN_ERROR.search(self.response.text)
        return unescape(match.group(1)).strip() if match else None

    def __repr__(self) -> str:
        return f"<Login {self.response.status_code} error={self.error!r}>"


def login(hub: Hub, username: str, password: str, session: requests.Session | None = None) -> Login:
    """POST the login form the way a browser does (XSRF cookie and field)."""
    session = session or requests.Session()
    session.get(hub.url + "/hub/login", timeout=30)
    return submit_login(hub, session, username, password)


def submit_login(hub: Hub, session: requests.Session, username: str, password: str) -> Login:
    """POST the login form with the XSRF cookie ``session`` got from the login page."""
    xsrf = session.cookies.get("_xsrf", path="/hub/")
    r = session.post(
        hub.url + "/hub/login",
        data={"username": username, "password": password, "_xsrf": xsrf},
        allow_redirects=False,
        timeout=60,
    )
    return Login(r, session)


def whoami(hub: Hub, session: requests.Session) -> dict | None:
    """The logged-in user's model from ``/hub/api/user`` with the session's cookie, or None."""
    xsrf = session.cookies.get("_xsrf", path="/hub/")
    r = session.get(hub.url + "/hub/api/user", headers={"X-XSRFToken": xsrf or ""}, timeout=30)
    return r.json() if r.status_code == 200 else None


#: a job type whose "server" prints its environment's uws-hub variables and
#: exits: the job fails (see ``job_env``)
PRINTENV_JOB_TYPE = {
    "display_name": "Print the environment",
    "cmd": [
        "python3",
        "-c",
        "import json, os, sys; print('ENV=' + json.dumps({k: v for k, v in os.environ.items()"
        " if k.startswith(('UWS_', 'GLOBUS_', 'CUSTOM_'))})); sys.exit(3)",
    ],
}


def job_env(hub: Hub, token: str, job_type: str = "printenv") -> dict[str, str]:
    """Launch ``job_type`` (see :data:`PRINTENV_JOB_TYPE`) in a new workspace and
    return the environment the job saw.

    Read from the hub's own file of the job's output (the tests run as root):
    the output API redacts the tokens these tests look for."""
    import json
    import uuid

    ws = hub.api("POST", "workspaces", token, json={"name": f"env {uuid.uuid4().hex[:8]}"}, expect=201)
    job = hub.api("POST", f"workspaces/{ws['id']}/jobs", token, json={"job_type": job_type}, expect=202)
    job = hub.wait_job(job["id"], token, {"failed", "completed", "cancelled"})
    output = (hub.workdir / "uws-job-logs" / f"job-{job['id']}.log").read_text()
    match = re.search(r"^ENV=(\{.*\})$", output, re.M)
    assert match, f"the job printed no environment: {output!r}"
    return json.loads(match.group(1))
