"""POSIX groups for shared workspaces, where jobs run as real system users.

When a workspace is shared with editors and ``UWSHub.system_users`` is on,
its directory gets a system group of its own, named ``<prefix><workspace id>``
(``uws-ws-12`` by default; ``UWSHub.share_posix_group_prefix``), whose members
are the owner's and the editors' system accounts:

- the directory tree is handed to that group with group read/write (and
  execute on directories), directories get the setgid bit, so everything
  created below them belongs to the group too;
- a *default ACL* (``group::rwx``, and ``rwx`` for the workspace's owner) on
  every directory makes files created there group-writable whatever the
  creating process's umask (022 would otherwise leave new files read-only for
  the group), and changeable by the owner, whose processes started before the
  group existed (a running server) do not have the group;
- membership is set as a whole with ``gpasswd -M`` (idempotent), so a revoked
  editor's next login or process has no access. A process that was already
  running keeps the groups it started with, as always on POSIX systems.

Viewers are not members: they read through the hub (files API, the owner's
server). Everything here is blocking (subprocesses, tree walks): the hub calls
it in a thread.
"""

from __future__ import annotations

import errno
import grp
import logging
import os
import stat
import struct
import subprocess

#: default ACLs in Linux's xattr encoding (acl_ea_header, then acl_ea_entry sorted by tag and id)
_ACL_XATTR = "system.posix_acl_default"
_ACL_VERSION = 2
_ACL_UNDEFINED_ID = 0xFFFFFFFF
_ACL_USER_OBJ, _ACL_USER, _ACL_GROUP_OBJ, _ACL_MASK, _ACL_OTHER = 0x01, 0x02, 0x04, 0x10, 0x20


def default_acl(owner_uid: int) -> bytes:
    """``user::rwx user:<owner>:rwx group::rwx mask::rwx other::---``.

    New files and directories below get it (masked by the mode the creating
    call asks for, but not by its umask), so whoever of the group creates
    them, the group and the workspace's owner can change them: the owner's
    processes started before the group existed do not have the group.
    """
    entries = [
        (_ACL_USER_OBJ, 7, _ACL_UNDEFINED_ID),
        (_ACL_USER, 7, owner_uid),
        (_ACL_GROUP_OBJ, 7, _ACL_UNDEFINED_ID),
        (_ACL_MASK, 7, _ACL_UNDEFINED_ID),
        (_ACL_OTHER, 0, _ACL_UNDEFINED_ID),
    ]
    return struct.pack("<I", _ACL_VERSION) + b"".join(struct.pack("<HHI", *e) for e in entries)

COMMAND_TIMEOUT_SECONDS = 30


class PosixGroupError(RuntimeError):
    """A group command failed."""


def group_name(prefix: str, workspace_id: int) -> str:
    return f"{prefix}{workspace_id}"


def _run(argv: list[str]) -> None:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_SECONDS)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise PosixGroupError(f"{argv[0]} failed: {e}") from e
    if r.returncode != 0:
        raise PosixGroupError(f"{' '.join(argv)} exited with {r.returncode}: {r.stderr.strip()}")


def gid_of(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def ensure_group(name: str) -> int:
    """The gid of group ``name``, created (``groupadd``) if missing."""
    gid = gid_of(name)
    if gid is None:
        _run(["groupadd", name])
        gid = gid_of(name)
        if gid is None:
            raise PosixGroupError(f"groupadd {name} did not create the group")
    return gid


def set_members(name: str, members: list[str]) -> bool:
    """Make ``members`` exactly the members of group ``name``; True if that changed it."""
    wanted = sorted(set(members))
    if sorted(grp.getgrnam(name).gr_mem) == wanted:
        return False
    _run(["gpasswd", "-M", ",".join(wanted), name])
    return True


def delete_group(name: str) -> None:
    if gid_of(name) is not None:
        _run(["groupdel", name])


def groups_with_prefix(prefix: str) -> list[str]:
    return [g.gr_name for g in grp.getgrall() if g.gr_name.startswith(prefix) and g.gr_name[len(prefix):].isdigit()]


def _set_default_acl(path: str, acl: bytes, log: logging.Logger) -> None:
    try:
        os.setxattr(path, _ACL_XATTR, acl, follow_symlinks=False)
    except OSError as e:
        if e.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        log.warning("No POSIX ACLs on %s: new files follow the creating process's umask", path)


def is_shared(directory: str, gid: int) -> bool:
    st = os.lstat(directory)
    return st.st_gid == gid and bool(st.st_mode & stat.S_ISGID)


def share_tree(directory: str, gid: int, log: logging.Logger) -> None:
    """Hand ``directory`` and everything below it to group ``gid``, group-writable.

    Never follows symlinks. Owners are unchanged; setuid bits are dropped.
    """
    acl = default_acl(os.lstat(directory).st_uid)
    stack = [directory]
    _share_entry(directory, gid, acl, is_dir=True, log=log)
    while stack:
        d = stack.pop()
        with os.scandir(d) as it:
            for entry in it:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if stat.S_ISLNK(st.st_mode):
                    continue
                is_dir = stat.S_ISDIR(st.st_mode)
                _share_entry(entry.path, gid, acl, is_dir=is_dir, log=log, st=st)
                if is_dir:
                    stack.append(entry.path)


def _share_entry(
    path: str, gid: int, acl: bytes, *, is_dir: bool, log: logging.Logger, st: os.stat_result | None = None
) -> None:
    st = st or os.lstat(path)
    os.chown(path, -1, gid, follow_symlinks=False)
    mode = stat.S_IMODE(st.st_mode) & ~(stat.S_ISUID | stat.S_ISGID)
    if is_dir:
        os.chmod(path, mode | 0o070 | stat.S_ISGID)
        _set_default_acl(path, acl, log)
    else:
        os.chmod(path, mode | 0o060)
