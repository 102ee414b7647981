"""Hub users to the system accounts that own their files and run their jobs."""

from __future__ import annotations

import pwd

from ..errors import Conflict
from ..workspaces.paths import Owner


class SystemAccounts:
    """Maps hub users to the system accounts that own their files and run their jobs."""

    def __init__(self, system_users: bool):
        self.system_users = system_users

    def system_user(self, name: str) -> str | None:
        """The system account a user's jobs run as, or None for the hub's own."""
        if not self.system_users:
            return None
        self._lookup(name)
        return name

    def owner(self, name: str) -> Owner:
        if not self.system_users:
            return Owner()
        account = self._lookup(name)
        return Owner(uid=account.pw_uid, gid=account.pw_gid)

    @staticmethod
    def _lookup(name: str) -> pwd.struct_passwd:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            raise Conflict(
                f"User {name!r} has no system account on the hub's machine, which this hub"
                " needs (UWSHub.system_users is on); ask an administrator to create it."
            ) from None
