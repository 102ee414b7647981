"""A hub user stays the person who first logged in as them, whatever the provider later names so.

A hub user is a user name, and an identity provider hands out user names
that can change hands: an OIDC provider's ``preferred_username`` is a name
its users may change (Keycloak, Auth0), freeing the old one for someone
else; Globus names ``alice@globusid.org`` and ``alice@uni.example`` (two
people, at two identity providers) both ``alice`` unless
``identity_provider`` is set; a directory entry deleted and made again for
a newcomer (a former employee's ``uid``) has the same name. Each such
login took over the hub user of that name: the first person's workspaces,
files, jobs, shares, tokens, groups and system account. Every login of
these authenticators also carries the person's stable id at the provider
(``user_info["external_ids"]``: the OIDC ``sub``, the Globus identity id,
``entryUUID``), which the hub stores at each login; a login whose id is not
the one stored for its user name is refused here, before the user is
touched, saying what to do.

An administrator frees the name for the newcomer by renaming (JupyterHub's
``PATCH /hub/api/users/{name}``) or deleting the old user; for one person
whose id changed (a directory entry made again for them), they switch
:attr:`SamePersonMixin.bind_names_to_external_ids` off until that person
has logged in once.
"""

from __future__ import annotations

from typing import Any

from jupyterhub.auth import Authenticator
from tornado import web
from traitlets import Bool

from .identity import external_ids_of


class PersonChanged(web.HTTPError):
    """A login whose stable id is not its user name's: refused with this message."""

    def __init__(self, message: str):
        super().__init__(403, "%s", message)
        self.jupyterhub_message = message


class SamePersonMixin(Authenticator):
    """Refuse a login whose provider id is not the one its hub user was made with. Mix in
    before a JupyterHub Authenticator whose auth models hold ``user_info["external_ids"]``."""

    bind_names_to_external_ids = Bool(
        True,
        config=True,
        help="""Refuse a login whose stable id at the identity provider (the OIDC ``sub``,
        the Globus identity, the LDAP ``id_attribute``; ``user_info["external_ids"]``) is
        not the one stored for the hub user of that name at an earlier login.

        A provider's user names can pass to someone else (a renamed account's old
        name, an entry made again for a newcomer, the same name at two Globus
        identity providers): without this, the newcomer became the earlier person's
        hub user, with their workspaces, jobs, tokens and system account. Turn it
        off only while one person whose id changed logs in once (the new id is then
        stored), or to rename the provider's ids wholesale; to give the name to a new
        person, rename or delete the old hub user instead.

        .. versionadded:: 0.4
        """,
    )

    async def get_authenticated_user(self, handler, data):
        model = await super().get_authenticated_user(handler, data)
        if model is not None and self.bind_names_to_external_ids:
            self.check_same_person(handler, model)
        return model

    def check_same_person(self, handler, model: dict[str, Any]) -> None:
        """Raise :class:`PersonChanged` if the hub user ``model`` names was made by a login
        of another person at this provider (pure but for the handler's user lookup)."""
        user = handler.find_user(model["name"]) if handler is not None else None
        if user is None:
            return
        stored = external_ids_of(user.user_info)
        fresh = external_ids_of(model.get("user_info"))
        changed = sorted(key for key in stored.keys() & fresh.keys() if stored[key] != fresh[key])
        if not changed:
            return
        self.log.warning(
            "Login refused for %s: their %s id at the identity provider is %s, the user's is %s"
            " (another person with the same user name?)",
            model["name"],
            changed[0],
            fresh[changed[0]],
            stored[changed[0]],
        )
        raise PersonChanged(
            f"The user name {model['name']!r} belongs to another person on this hub (their identity"
            " provider's id is not yours). Ask an administrator: they can rename that user and"
            " free the name for you."
        )
