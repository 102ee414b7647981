"""Hub users to the system accounts that own their files and run their jobs."""

from __future__ import annotations

import pwd

from ..errors import Conflict
from ..workspaces.paths import Owner

#: the kernel's overflow id, ``nobody``: shared by daemons that run as nobody in particular
OVERFLOW_UID = 65534


class SystemAccounts:
    """Maps hub users to the system accounts that own their files and run their jobs.

    A hub user's name is the account's: whoever can make a hub user of a
    given name (an admin or user admin through JupyterHub's API, an identity
    provider whose users choose their names, a directory) would otherwise
    make the hub run jobs and own files as ``root``, ``daemon``, ``postgres``
    or ``slurm``. So an account below ``min_uid`` (and ``nobody``) is never
    one: such a user's workspaces and jobs are refused, saying why.
    """

    def __init__(self, system_users: bool, min_uid: int = 1000):
        self.system_users = system_users
        self.min_uid = max(1, min_uid)

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

    def _lookup(self, name: str) -> pwd.struct_passwd:
        try:
            account = pwd.getpwnam(name)
        except ValueError:
            # a NUL, which no account's name holds and getpwnam refuses (ValueError)
            # rather than looks up: an identity provider or a user admin may name a user so
            raise Conflict(
                f"User {name!r} can have no system account on the hub's machine (no account's name holds"
                " such a character), which this hub needs (UWSHub.system_users is on); ask an"
                " administrator to rename the user."
            ) from None
        except KeyError:
            raise Conflict(
                f"User {name!r} has no system account on the hub's machine, which this hub"
                " needs (UWSHub.system_users is on); ask an administrator to create it."
            ) from None
        if account.pw_uid < self.min_uid or account.pw_uid == OVERFLOW_UID:
            raise Conflict(
                f"User {name!r} has the name of a system account (uid {account.pw_uid}; users'"
                f" accounts start at UWSHub.system_users_min_uid, {self.min_uid}): the hub runs no"
                " job and keeps no files as it. Ask an administrator to rename the user."
            )
        return account
