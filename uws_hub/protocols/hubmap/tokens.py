"""``POST tokens``: a HuBMAP client exchanges credentials for a hub API token.

Which credentials depends on the hub's authenticator, as on HuBMAP's server:

- **local accounts** and the **remote API** (HuBMAP's local and PSC
  methods): ``{"client_token", "user_info": {"username", "email",
  "first_name"?, "last_name"?}}``. The client token is a hub API token of a
  trusted client (a service, or a user) vouching for the user: it must hold
  JupyterHub's ``tokens`` scope on that user, exactly what JupyterHub's own
  ``POST /hub/api/users/{name}/tokens`` requires, and to create a user who
  does not exist yet, ``admin:users`` (JupyterHub's ``POST /hub/api/users``).
  An existing user whose e-mail address differs is refused.
- **Globus**: ``{"auth_token": <a Globus token>}`` (the portal sends its Groups
  token), introspected at Globus Auth, with a login's rules (identity
  provider, allowed Globus groups); a new user is created as a login would.

Any other authenticator: refused with a message saying so. The token handed
out has ``HubMAPCompat.token_scopes`` and expires after
``HubMAPCompat.token_lifetime_seconds``; refusals are HuBMAP's (401
``Incorrect authentication credentials.``), the reason goes to the log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from jupyterhub.scopes import Scope, check_scope_filter, get_scopes_for, parse_scopes
from jupyterhub.utils import maybe_future
from tornado import web

from ...authenticators.identity import email_of, make_user_info
from ...authenticators.local import WorkspaceLocalAuthenticator
from ...authenticators.remote_api import WorkspaceRemoteAPIAuthenticator
from .models import HubMAPError

REFUSED = "Incorrect authentication credentials."


def login_message(e: web.HTTPError) -> str | None:
    """What a refused login says to the person (``jupyterhub_message``, the one JupyterHub's
    login page shows), else the error's formatted message: the raw ``log_message`` of an
    error raised as ``HTTPError(403, "%s", text)`` is the template ``"%s"``."""
    message = getattr(e, "jupyterhub_message", None)
    if message:
        return str(message)
    if not e.log_message:
        return None
    return e.log_message % e.args if e.args else e.log_message


@dataclass(frozen=True)
class _NewUser:
    """A user that does not exist yet, for JupyterHub's scope filters (in no group)."""

    name: str
    groups: tuple = field(default_factory=tuple)


def _refused(handler, why: str, *args) -> HubMAPError:
    handler.log.warning("HuBMAP token exchange refused: " + why, *args)
    return HubMAPError(401, REFUSED)


async def _vouched_user(handler, body: dict[str, Any]):
    """The user a trusted client's token vouches for (HuBMAP's local and PSC methods)."""
    if "client_token" not in body:
        raise HubMAPError(400, "Missing client_token. Please have admin generate a token for you.")
    if "user_info" not in body:
        raise HubMAPError(400, "Missing user_info. Please provide user_info to get user_token.")
    client_token, info = body["client_token"], body["user_info"]
    client = handler.uws.token_ids.find(handler.db, client_token) if isinstance(client_token, str) else None
    now = datetime.now(UTC).replace(tzinfo=None)
    if client is None or (client.expires_at is not None and client.expires_at < now):
        raise _refused(handler, "unknown or expired client token")
    if (
        not isinstance(info, dict)
        or not isinstance(info.get("username"), str)
        or not isinstance(info.get("email"), str)
    ):
        raise _refused(handler, "user_info needs a username and an email")
    authenticator = handler.authenticator
    name = authenticator.normalize_username(info["username"])
    if not authenticator.validate_username(name):
        raise _refused(handler, "invalid user name %r", name)
    granted = parse_scopes(get_scopes_for(client))
    client_name = (client.service or client.user).name
    user = handler.find_user(name)
    tokens_filter = granted.get("tokens")
    if tokens_filter is None or not check_scope_filter(
        tokens_filter, user.orm_user if user else _NewUser(name), "user"
    ):
        raise _refused(handler, "%s may not issue tokens for %s (JupyterHub's 'tokens' scope)", client_name, name)
    if user is not None:
        known = email_of(user.user_info)
        if known and known.casefold() != info["email"].casefold():
            raise _refused(handler, "%s's e-mail address is not %s", name, info["email"])
        return user
    if granted.get("admin:users") is not Scope.ALL:
        raise _refused(handler, "%s may not create the user %s (JupyterHub's 'admin:users' scope)", client_name, name)
    display = " ".join(str(info.get(k) or "").strip() for k in ("first_name", "last_name")).strip()
    model = {
        "name": name,
        "admin": None,
        "auth_state": None,
        "groups": None,
        "user_info": make_user_info("hubmap-client", None, email=info["email"], display_name=display or None),
    }
    if not await maybe_future(authenticator.check_blocked_users(name, model)):
        raise _refused(handler, "%s is blocked", name)
    if not authenticator.allow_all and not await maybe_future(authenticator.check_allowed(name, model)):
        raise _refused(handler, "%s is not allowed", name)
    handler.log.info("%s created the user %s through the HuBMAP token exchange", client_name, name)
    return await handler.auth_to_user(model)


async def _globus_user(handler, body: dict[str, Any]):
    """The user of a Globus token (HuBMAP's Globus method), created if a login would create them."""
    if "auth_token" not in body:
        raise HubMAPError(400, "Missing auth_token.")
    try:
        model = await handler.authenticator.authenticate_access_token(handler, body["auth_token"])
    except web.HTTPError as e:
        if e.status_code == 403:
            raise HubMAPError(403, login_message(e) or REFUSED) from None
        raise
    except Exception:
        handler.log.exception("Checking a Globus token failed")
        raise HubMAPError(503, "Could not check the token with Globus; try again later.") from None
    if model is None:
        raise _refused(handler, "the Globus token is not active")
    return handler.find_user(model["name"]) or await handler.auth_to_user(model)


def token_method(authenticator) -> str | None:
    """Which exchange the hub's authenticator offers: "client_token", "globus" or None."""
    if isinstance(authenticator, (WorkspaceLocalAuthenticator, WorkspaceRemoteAPIAuthenticator)):
        return "client_token"
    if callable(getattr(authenticator, "authenticate_access_token", None)):
        return "globus"
    return None


async def exchange(handler, body: dict[str, Any], scopes: list[str], lifetime_seconds: int) -> str:
    """A new hub API token for the user the credentials in ``body`` prove, or a HubMAPError."""
    method = token_method(handler.authenticator)
    if method is None:
        raise HubMAPError(
            400,
            f"This hub logs in with {type(handler.authenticator).__name__}, which has no token exchange;"
            " create a token on the hub's token page instead.",
        )
    user = await (_vouched_user if method == "client_token" else _globus_user)(handler, body)
    expires_in = lifetime_seconds or None
    most = handler.settings.get("token_expires_in_max_seconds") or 0
    if most:
        expires_in = min(expires_in or most, most)
    try:
        return user.new_api_token(note="HuBMAP API token (POST tokens)", expires_in=expires_in, scopes=scopes)
    except ValueError as e:
        handler.log.error("HubMAPCompat.token_scopes cannot be granted to %s: %s", user.name, e)
        raise HubMAPError(
            500, "The hub cannot issue tokens with its configured scopes; ask its administrators."
        ) from None
