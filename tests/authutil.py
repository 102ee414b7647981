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
