"""Who a user is, stored once: JupyterHub's ``user_info``, in one shape for every authenticator.

uws-hub keeps no table of its own for identities. Each authenticator returns
JupyterHub's auth model::

    {
        "name": "alice",                      # the hub user name
        "user_info": {                        # stored on orm.User.user_info (JSON)
            "email": "alice@example.org",
            "display_name": "Alice Liddell",
            "external_ids": {"globus": "6c1f…", "orcid": "0000-…"},
        },
        "auth_state": {...},                  # secrets, encrypted (JUPYTERHUB_CRYPT_KEY)
    }

and JupyterHub stores ``user_info`` on the user at every login. Everything
else in uws-hub (pages, sharing, notifications) reads it through the helpers
below, never by poking at provider-specific claims:

``email``
    The address notifications go to (may be missing).
``display_name``
    How to show the person (falls back to the user name).
``external_ids``
    ``{provider: id}``: the stable id of this person at each identity provider
    that logged them in (``"oidc"``, ``"globus"``, ``"ldap"``, ``"remote"``,
    ``"local"``; the OIDC authenticator's key is configurable). Sharing can
    look people up by them.

This module is pure: no hub, no ORM, no network.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: the keys of ``user_info`` other uws-hub features may rely on
USER_INFO_KEYS = ("email", "display_name", "external_ids")


def make_user_info(
    provider: str,
    external_id: str | None,
    email: str | None = None,
    display_name: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The ``user_info`` dict an authenticator returns.

    Empty values are left out so that readers can use ``.get()``; ``extra``
    keys (e.g. ``"groups"``) are kept as given.
    """
    info: dict[str, Any] = {}
    if email:
        info["email"] = str(email)
    if display_name:
        info["display_name"] = str(display_name)
    info["external_ids"] = {provider: str(external_id)} if external_id else {}
    info.update({k: v for k, v in extra.items() if v is not None})
    return info


def email_of(user_info: Mapping[str, Any] | None) -> str | None:
    """The user's email address, or None."""
    email = (user_info or {}).get("email")
    return email if isinstance(email, str) and email else None


def display_name_of(user_info: Mapping[str, Any] | None, username: str) -> str:
    """The name to show for the user: their display name, else their user name."""
    name = (user_info or {}).get("display_name")
    return name if isinstance(name, str) and name.strip() else username


def external_ids_of(user_info: Mapping[str, Any] | None) -> dict[str, str]:
    """``{provider: id}`` for the user (empty when unknown)."""
    ids = (user_info or {}).get("external_ids")
    return {str(k): str(v) for k, v in ids.items()} if isinstance(ids, Mapping) else {}


def lookup(data: Any, path: str) -> Any:
    """``data["a"]["b"]`` for ``path = "a.b"``; None where a key is missing."""
    for part in path.split(".") if path else []:
        if not isinstance(data, Mapping):
            return None
        data = data.get(part)
    return data


def email_domain(address: str | None) -> str | None:
    """The lower-cased domain of an email-like string ``user@domain``, or None."""
    if not address or "@" not in address:
        return None
    return address.rsplit("@", 1)[1].strip().lower() or None
