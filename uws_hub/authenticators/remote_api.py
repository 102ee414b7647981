"""Log in by asking a remote HTTP API whether the user name and password are right.

Entry point ``uws-remote-api``. On every login the hub POSTs the credentials
(JSON or a form) to :attr:`~WorkspaceRemoteAPIAuthenticator.remote_url`:

- a 2xx reply with a JSON object logs the user in: the hub user name, email,
  display name, id, admin flag and groups are read from it (dotted keys, e.g.
  ``"user.login"``);
- a 401 or 403 reply (:attr:`~WorkspaceRemoteAPIAuthenticator.rejected_status_codes`)
  means wrong credentials: "Invalid username or password";
- anything else (the service is down, refuses connections, answers 5xx, too
  slowly, or not with JSON) fails the login *closed*, with a clear message on
  the login page ("The login service is not available …"), and the hub keeps
  running.

Credentials are only sent over the connection to :attr:`remote_url`; use
``https://`` for anything but a service on the same host.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode, urlsplit

from jupyterhub.traitlets import Callable
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from traitlets import Any as AnyTrait
from traitlets import Bool, CaselessStrEnum, Dict, Float, List, Unicode, Union, default, validate

from .identity import lookup, make_user_info
from .jobenv import JobEnvironmentMixin
from .sameperson import SamePersonMixin


class RemoteServiceUnavailable(web.HTTPError):
    """The remote login service could not answer: the login fails, with this message."""

    def __init__(self, message: str, status_code: int = 503):
        super().__init__(status_code, "%s", message)
        self.jupyterhub_message = message


class WorkspaceRemoteAPIAuthenticator(SamePersonMixin, JobEnvironmentMixin):
    """Check user names and passwords against a remote HTTP API."""

    remote_url = Unicode(
        config=True,
        help="""URL the credentials are POSTed to, e.g. ``https://accounts.example.org/api/login``.

        Required. Use https unless the service runs on the hub's own host.

        .. versionadded:: 0.2
        """,
    )

    @validate("remote_url")
    def _validate_remote_url(self, proposal):
        url = proposal.value
        if url and urlsplit(url).scheme not in ("http", "https"):
            raise ValueError(f"remote_url must be an http(s) URL, not {url!r}")
        return url

    request_format = CaselessStrEnum(
        ["json", "form"],
        default_value="json",
        config=True,
        help="""How the credentials are sent: ``"json"`` (``{"username": …, "password": …}``)
        or ``"form"`` (``application/x-www-form-urlencoded``).

        .. versionadded:: 0.2
        """,
    )

    username_field = Unicode(
        "username",
        config=True,
        help="""Name of the field carrying the user name in the request.

        .. versionadded:: 0.2
        """,
    )

    password_field = Unicode(
        "password",
        config=True,
        help="""Name of the field carrying the password in the request.

        .. versionadded:: 0.2
        """,
    )

    extra_fields = Dict(
        config=True,
        help="""Constant fields added to every request, e.g. ``{"client": "uws-hub"}``.

        .. versionadded:: 0.2
        """,
    )

    request_headers = Dict(
        config=True,
        help="""Extra HTTP headers for every request, e.g. an API key:
        ``{"X-Api-Key": os.environ["ACCOUNTS_API_KEY"]}``.

        .. versionadded:: 0.2
        """,
    )

    connect_timeout_seconds = Float(
        5.0,
        config=True,
        help="""Seconds to wait for the connection to the remote service.

        .. versionadded:: 0.2
        """,
    )

    request_timeout_seconds = Float(
        10.0,
        config=True,
        help="""Seconds to wait for the whole reply (connection included).

        A slower service fails the login with "not available" rather than
        keeping the login page waiting.

        .. versionadded:: 0.2
        """,
    )

    validate_cert = Bool(
        True,
        config=True,
        help="""Check the remote service's TLS certificate (https).

        .. versionadded:: 0.2
        """,
    )

    ca_certs = Unicode(
        "",
        config=True,
        help="""File of CA certificates to check the remote service's certificate with
        (PEM); empty: the system's.

        .. versionadded:: 0.2
        """,
    )

    rejected_status_codes = List(
        [401, 403],
        config=True,
        help="""HTTP statuses that mean "wrong user name or password".

        Other non-2xx statuses mean the service is not working: the login fails
        with "The login service is not available" and the hub logs the status.

        .. versionadded:: 0.2
        """,
    )

    success_key = Unicode(
        "",
        config=True,
        help="""Key of the reply that must be true for a successful login, e.g.
        ``"authenticated"``; empty: a 2xx reply is success.

        .. versionadded:: 0.2
        """,
    )

    username_key = Union(
        [Unicode(), Callable()],
        default_value="username",
        config=True,
        help="""Where the hub user name is in the reply: a dotted key (``"user.login"``),
        or a callable ``f(reply: dict) -> str``. Empty: the name the user typed.

        .. versionadded:: 0.2
        """,
    )

    id_key = Unicode(
        "id",
        config=True,
        help="""Dotted key of the user's stable id at the remote service, stored as
        ``user_info["external_ids"][provider_name]``.

        .. versionadded:: 0.2
        """,
    )

    email_key = Unicode(
        "email",
        config=True,
        help="""Dotted key of the user's email address in the reply (``user_info["email"]``).

        .. versionadded:: 0.2
        """,
    )

    display_name_key = Unicode(
        "name",
        config=True,
        help="""Dotted key of the user's display name in the reply (``user_info["display_name"]``).

        .. versionadded:: 0.2
        """,
    )

    admin_key = Unicode(
        "",
        config=True,
        help="""Dotted key of a boolean in the reply that makes the user an admin.

        When set, a user whose reply says false loses admin rights at login
        (unless listed in ``admin_users``). Empty: admin rights come from
        ``admin_users`` and JupyterHub only.

        .. versionadded:: 0.2
        """,
    )

    groups_key = Unicode(
        "",
        config=True,
        help="""Dotted key of a list of group names in the reply.

        With ``c.Authenticator.manage_groups = True`` the user's JupyterHub
        groups are set to these at every login.

        .. versionadded:: 0.2
        """,
    )

    provider_name = Unicode(
        "remote",
        config=True,
        help="""Key of this service in ``user_info["external_ids"]``.

        .. versionadded:: 0.2
        """,
    )

    auth_state_keys = List(
        Unicode(),
        config=True,
        help="""Dotted keys of the reply kept in the user's encrypted ``auth_state``
        (e.g. ``["token"]`` for a token the service issues), under
        ``auth_state["remote"]``. Needs ``enable_auth_state``.

        .. versionadded:: 0.2
        """,
    )

    pass_tokens_to_jobs = Bool(
        False,
        config=True,
        help="""Hand the kept :attr:`auth_state_keys` to jobs, as JSON in
        ``$UWS_REMOTE_AUTH_STATE``.

        Off by default. Needs ``enable_auth_state``.

        .. versionadded:: 0.2
        """,
    )

    @default("allow_all")
    def _default_allow_all(self):
        # the remote service decides who may log in
        return True

    http_client = AnyTrait()

    @default("http_client")
    def _default_http_client(self):
        return AsyncHTTPClient()

    # ---------------------------------------------------------------- pure parts
    def build_request(self, username: str, password: str) -> HTTPRequest:
        fields = {**self.extra_fields, self.username_field: username, self.password_field: password}
        headers = {"Accept": "application/json", "User-Agent": "uws-hub", **self.request_headers}
        if self.request_format == "json":
            body = json.dumps(fields)
            headers["Content-Type"] = "application/json"
        else:
            body = urlencode(fields)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        kwargs: dict[str, Any] = {}
        if self.ca_certs:
            kwargs["ca_certs"] = self.ca_certs
        return HTTPRequest(
            self.remote_url,
            method="POST",
            body=body,
            headers=headers,
            connect_timeout=self.connect_timeout_seconds,
            request_timeout=self.request_timeout_seconds,
            validate_cert=self.validate_cert,
            follow_redirects=False,
            **kwargs,
        )

    def reply_to_auth_model(self, reply: dict[str, Any], typed_username: str) -> dict[str, Any] | None:
        """The auth model for a successful reply, or None if it says no."""
        if self.success_key and not lookup(reply, self.success_key):
            return None
        if callable(self.username_key):
            name = self.username_key(reply)
        elif self.username_key:
            name = lookup(reply, self.username_key)
        else:
            name = typed_username
        if not isinstance(name, str) or not name.strip():
            raise RemoteServiceUnavailable(
                "The login service answered without a user name: ask the hub's administrators"
                " to check the remote API authenticator's username_key",
                502,
            )
        name = name.strip()
        external_id = lookup(reply, self.id_key) if self.id_key else None
        model: dict[str, Any] = {
            "name": name,
            "user_info": make_user_info(
                self.provider_name,
                external_id if external_id not in (None, "") else None,
                email=lookup(reply, self.email_key) if self.email_key else None,
                display_name=lookup(reply, self.display_name_key) if self.display_name_key else None,
            ),
            "auth_state": {"remote": {key: lookup(reply, key) for key in self.auth_state_keys}},
        }
        if self.admin_key:
            model["admin"] = bool(lookup(reply, self.admin_key)) or self.normalize_username(name) in self.admin_users
        if self.groups_key:
            groups = lookup(reply, self.groups_key)
            model["groups"] = [str(g) for g in groups] if isinstance(groups, list) else []
        return model

    # ---------------------------------------------------------------- login
    async def authenticate(self, handler, data):
        username = (data.get("username") or "").strip()
        password = data.get("password") or ""
        if not username or not password:
            return None
        if not self.remote_url:
            self.log.error("WorkspaceRemoteAPIAuthenticator.remote_url is not set: nobody can log in")
            raise RemoteServiceUnavailable("Login is not configured on this hub: ask its administrators.")
        service = urlsplit(self.remote_url).netloc
        try:
            response = await self.http_client.fetch(self.build_request(username, password), raise_error=False)
        except HTTPClientError as e:
            # tornado reports timeouts as 599
            self.log.error("Login service %s failed for %s: %s", self.remote_url, username, e)
            raise RemoteServiceUnavailable(
                f"The login service ({service}) did not answer in time. Please try again later."
            ) from None
        except OSError as e:
            self.log.error("Login service %s is unreachable: %s", self.remote_url, e)
            raise RemoteServiceUnavailable(
                f"The login service ({service}) is not available right now. Please try again later."
            ) from None
        if response.code in self.rejected_status_codes:
            self.log.warning("Login service rejected the credentials of %s (HTTP %s)", username, response.code)
            return None
        if not 200 <= response.code < 300:
            self.log.error("Login service %s answered HTTP %s for %s", self.remote_url, response.code, username)
            raise RemoteServiceUnavailable(
                f"The login service ({service}) is not available right now (HTTP {response.code})."
                " Please try again later."
            )
        try:
            reply = json.loads(response.body or b"")
        except ValueError:
            reply = None
        if not isinstance(reply, dict):
            self.log.error("Login service %s answered with something other than a JSON object", self.remote_url)
            raise RemoteServiceUnavailable(
                f"The login service ({service}) gave an answer the hub cannot read. Please try again later.", 502
            )
        model = self.reply_to_auth_model(reply, username)
        if model is None:
            self.log.warning("Login service said no to %s (%s is false)", username, self.success_key)
        return model

    # ---------------------------------------------------------------- jobs
    def passes_to_jobs(self) -> bool:
        return self.pass_tokens_to_jobs

    def job_environment(self, auth_state: dict[str, Any]) -> dict[str, str]:
        kept = auth_state.get("remote")
        return {"UWS_REMOTE_AUTH_STATE": json.dumps(kept)} if kept else {}
