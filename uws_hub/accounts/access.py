"""Who may see and change which local account: JupyterHub's rules for its users.

A local account is a way into a hub user (its password logs in as them), so
the accounts API and the Local accounts page decide exactly as JupyterHub's
own ``/hub/api/users`` does, with its messages, here and nowhere else:

- Everything needs ``admin:users``. With a filter (``!user=``, ``!group=``)
  only the users inside it exist for the request: lists leave the others out
  and one account outside it is "not found" (404), as JupyterHub answers for
  users outside a filter. An account whose hub user does not exist yet (a
  sign-up that never logged in) is inside ``!user=<its name>`` only.
- Creating accounts needs ``admin:users`` unfiltered, as JupyterHub's
  ``POST /hub/api/users``.
- *"Only admins can grant admin permissions"*: a non-admin cannot create an
  admin account.
- *"Only admins can modify other admins"*: a non-admin cannot change anything
  of an admin's account (password, disabled, unlock, email, display name),
  nor give an admin who has no account yet one (that would set their
  password). Reading an admin's account is allowed, as reading the user is.
- *"Only admins can modify users who hold rights you do not"*: a password
  reset lets the caller log in as the user, so a non-admin cannot change the
  account of a user whose roles (directly or through a group; besides
  JupyterHub's default ``user`` role and uws-hub's workspace-share roles)
  grant scopes the request does not hold itself: another user admin with a
  wider filter, a holder of ``admin:servers`` on people outside the caller's
  reach. Otherwise a filtered user admin could become one of them.
- *"You cannot disable your own account"*: nobody locks themselves out by
  a slip of the mouse (an admin who must go asks another admin).

"Admin" is JupyterHub's admin flag of the acting user or service
(``current_user.admin``), as JupyterHub checks it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from jupyterhub import orm as hub_orm
from jupyterhub.scopes import Scope, _intersect_expanded_scopes, check_scope_filter, expand_scopes

from ..access import ScopedRequest
from ..errors import Forbidden, NotFound
from ..scopes import ROLE_PREFIX

#: the JupyterHub scope every accounts endpoint needs
ADMIN_USERS = "admin:users"
ONLY_ADMINS_GRANT = "Only admins can grant admin permissions"
ONLY_ADMINS_MODIFY = "Only admins can modify other admins"
ONLY_ADMINS_MODIFY_RIGHTS = "Only admins can modify users who hold rights you do not"
CANNOT_DISABLE_SELF = "You cannot disable your own account: another admin can"
#: roles whose rights are not compared (see the module's rules): JupyterHub's
#: default role, and (by prefix) the roles of collaborate shares
ORDINARY_ROLES = frozenset({"user"})


@dataclass(frozen=True)
class _NoHubUser:
    """Stands for an account's user that JupyterHub does not know yet (in no group)."""

    name: str
    groups: list = field(default_factory=list)


class AccountAccess:
    """What one request may do with local accounts (see the module's rules)."""

    def __init__(self, request: ScopedRequest):
        self.request = request
        #: None (no admin:users), Scope.ALL, or JupyterHub's parsed filter
        self.filter = request.parsed_scopes.get(ADMIN_USERS)

    @property
    def is_admin(self) -> bool:
        return bool(getattr(self.request.current_user, "admin", False))

    @property
    def may_create(self) -> bool:
        """Whether the request may create accounts (``admin:users`` unfiltered)."""
        return self.filter is Scope.ALL

    def _hub_user(self, username: str) -> hub_orm.User | None:
        return hub_orm.User.find(self.request.db, username)

    def sees(self, username: str) -> bool:
        """Whether the account of ``username`` is inside the request's ``admin:users`` filter."""
        if self.filter is None or self.filter is Scope.ALL:
            return self.filter is Scope.ALL
        user = self._hub_user(username) or _NoHubUser(username)
        return bool(check_scope_filter(self.filter, user, "user"))

    def check_sees(self, username: str) -> None:
        """404, as for an account that does not exist, unless :meth:`sees`."""
        if not self.sees(username):
            raise NotFound(f"No such account: {username!r}")

    def refusal(self, username: str, *, grant_admin: bool = False) -> str | None:
        """Why the request may not create or change the account of ``username`` (None if it may).

        ``grant_admin``: the request would make the user an admin.
        """
        if self.is_admin:
            return None
        if grant_admin:
            return ONLY_ADMINS_GRANT
        user = self._hub_user(username)
        if user is not None and user.admin:
            return ONLY_ADMINS_MODIFY
        beyond = self._rights_beyond(user) if user is not None else set()
        if beyond:
            return f"{ONLY_ADMINS_MODIFY_RIGHTS} ({', '.join(sorted(beyond))})"
        return None

    def _rights_beyond(self, user: hub_orm.User) -> set[str]:
        """The scopes ``user``'s roles grant that this request does not hold itself."""
        granted: set[str] = set()
        for role in _roles_of(user):
            if role.name not in ORDINARY_ROLES and not role.name.startswith(ROLE_PREFIX):
                granted |= expand_scopes(role.scopes, owner=user)
        if not granted:
            return set()
        held = _intersect_expanded_scopes(frozenset(granted), frozenset(self.request.expanded_scopes), self.request.db)
        return granted - held

    def check_change(self, username: str, *, grant_admin: bool = False) -> None:
        """403 with JupyterHub's message if :meth:`refusal` gives a reason."""
        reason = self.refusal(username, grant_admin=grant_admin)
        if reason:
            raise Forbidden(reason)

    def may_disable(self, username: str) -> bool:
        """Whether the request may disable the account of ``username`` (besides
        :meth:`refusal`): not the account of the user who makes it."""
        me = self.request.current_user
        return not (getattr(me, "kind", None) == "user" and me.name == username)

    def check_disable(self, username: str) -> None:
        """403 unless :meth:`may_disable`."""
        if not self.may_disable(username):
            raise Forbidden(CANNOT_DISABLE_SELF)


def _roles_of(user: hub_orm.User) -> list[hub_orm.Role]:
    """The roles ``user`` holds, directly and through its groups."""
    return [*user.roles, *(role for group in user.groups for role in group.roles)]
