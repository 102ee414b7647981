"""POSIX groups for shared workspaces, where jobs run as real system users.

When a workspace is shared with editors and ``UWSHub.system_users`` is on,
its directory gets a system group of its own, named ``<prefix><workspace id>``
(``uws-ws-12`` by default; ``UWSHub.share_posix_group_prefix``), which no
account is a member of:

- the directory tree is handed to that group with group read/write (and
  execute on directories), directories get the setgid bit, so everything
  created below them belongs to the group too;
- a *default ACL* (``group::rwx``, and ``rwx`` for the workspace's owner) on
  every directory makes files created there group-writable whatever the
  creating process's umask (022 would otherwise leave new files read-only for
  the group), and changeable by the owner, whose processes without the group
  (an ssh login) still change what the editors' jobs wrote;
- the hub gives the group to the jobs it starts in that workspace, for its
  owner or an editor (the launch is authorized:
  :func:`uws_hub.spawners.localjob.job_groups`,
  :func:`uws_hub.spawners.slurm.commands.as_account`), and to nothing else.
  Editors reach a shared workspace through the hub's jobs, not their own
  logins: as a member, an editor's every process (an ssh login, cron, a SLURM
  job of their own) held the group, kept write access after the share was
  revoked, and was killed with the revocation, though the owner granted
  nothing over it. The group's members are emptied (``gpasswd -M ""``), which
  also empties the groups of a hub that made editors members.

A process keeps the groups it started with, as always on POSIX systems: so the
hub kills every process that holds a workspace's group and runs as neither its
owner nor a current editor (:func:`kill_strays`; the allowed accounts come from
the shares), whatever started it (a daemon left by an interactive server's
terminal outlives the server), and every process holding the group of a deleted
workspace (its gid may be given to another).

Viewers never get the group: they read through the hub (files API, the owner's
server). Everything here is blocking (subprocesses, tree walks): the hub calls
it in a thread.
"""

from __future__ import annotations

import errno
import grp
import logging
import os
import signal
import stat
import struct
import subprocess

from ..spawners.groupnames import group_name as group_name  # the hub names groups with it
from ..spawners.groupnames import is_group_name
from ..spawners.wrapper import has_ended
from ..workspaces.paths import DIR_FLAGS, FILE_FLAGS, MAX_DEPTH

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


def clear_members(name: str) -> bool:
    """Make group ``name`` have no members (a hub before this one made the editors
    members); True if it had some."""
    if not grp.getgrnam(name).gr_mem:
        return False
    _run(["gpasswd", "-M", "", name])
    return True


#: how many /proc scans :func:`kill_strays` makes at most
KILL_ROUNDS = 10


def ended(fields: dict[str, str]) -> bool:
    """Whether the process whose ``/proc/<pid>/status`` these fields are has ended and only
    waits for its parent (:func:`uws_hub.spawners.wrapper.has_ended`: a zombie with
    threads left lives on, with its groups)."""
    state = fields.get("State", "").split()  # "Z (zombie)"
    return has_ended(state[0] if state else "", int(fields.get("Threads", "1")))


def _stray_of(status: str, holders: dict[int, set[int]]) -> bool:
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    if ended(fields):
        return False  # its parent has yet to collect it
    uids = {int(v) for v in fields.get("Uid", "").split()}
    gids = {int(v) for v in (fields.get("Gid", "") + " " + fields.get("Groups", "")).split()}
    if not uids or uids & {0, os.getuid(), os.geteuid()}:
        return False  # root's and the hub's own are never killed
    return any(gid in gids and not uids & allowed for gid, allowed in holders.items())


def kill_strays(holders: dict[int, set[int]]) -> int:
    """SIGKILL every process that holds one of these groups (a key, as a supplementary
    group or as its own) and runs as none of the uids allowed to hold it (its value);
    never root's nor the hub's own. Returns how many it killed.

    A revoked editor's process keeps the workspace's group (its write access) for as
    long as it runs, whatever started it. Each process is opened as a pidfd before its
    status is read, so a pid reused since is never signalled. A process forking as the
    scan goes may leave a child the scan passed: it scans again until a scan finds no
    new one (at most :data:`KILL_ROUNDS`). Blocking (a scan of /proc): the hub calls it
    in a thread."""
    if not holders:
        return 0
    killed: set[int] = set()
    for _ in range(KILL_ROUNDS):
        found = False
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                pidfd = os.pidfd_open(int(entry))
            except OSError:
                continue  # gone
            try:
                # not as UTF-8: its name is as the process set it (``/proc/self/comm``), any bytes;
                # one that named itself in none was never read, never killed, and kept the group
                with open(f"/proc/{entry}/status", errors="replace") as f:
                    status = f.read()
                if _stray_of(status, holders):
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                    found = found or int(entry) not in killed
                    killed.add(int(entry))
            except (OSError, ValueError):
                continue  # gone meanwhile: its pidfd, never a new process of its pid, was signalled
            finally:
                os.close(pidfd)
        if not found:
            break
    return len(killed)


def delete_group(name: str) -> None:
    if gid_of(name) is not None:
        _run(["groupdel", name])


def groups_with_prefix(prefix: str) -> dict[str, grp.struct_group]:
    """The system's groups named as the hub names its own (:func:`group_name`: the prefix,
    then a workspace id), by name, with their gids and members: one ``getgrall``, where a
    ``getgrnam`` a group reads the group file (or asks the NSS) again for each (the share
    sync looks up none it listed: :class:`ShareService`'s ``_listed``). Only those names
    (:func:`is_group_name`)."""
    return {g.gr_name: g for g in grp.getgrall() if is_group_name(prefix, g.gr_name)}


def _set_default_acl(fd: int, acl: bytes, log: logging.Logger) -> None:
    try:
        os.setxattr(fd, _ACL_XATTR, acl)
    except OSError as e:
        if e.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        log.warning("No POSIX ACLs on this filesystem: new files follow the creating process's umask")


def is_shared(directory: str, gid: int) -> bool:
    st = os.lstat(directory)
    return st.st_gid == gid and bool(st.st_mode & stat.S_ISGID)


def share_tree(directory: str, gid: int, log: logging.Logger) -> None:
    """Hand ``directory`` and everything below it to group ``gid``, group-writable.

    Owners are unchanged; setuid bits are dropped. The owner's jobs may be
    changing the tree meanwhile, and the hub runs this as root, so it goes by
    descriptor (as :mod:`uws_hub.workspaces.paths` does): each directory and regular
    file is opened relative to its open directory with ``O_NOFOLLOW`` and
    changed through its descriptor, so a link swapped in is never followed
    out of the tree. Links, FIFOs, sockets and devices are left as they are.
    It holds one descriptor per folder it is in, so it goes :data:`MAX_DEPTH` folders
    deep (a job can make a tree of any depth: one of thousands took all the hub's
    descriptors), as zips, copies and listings do; deeper folders are left out.
    """
    top = os.open(directory, DIR_FLAGS)
    acl = default_acl(os.fstat(top).st_uid)
    # the open directories from the top down, each with its entries still to do
    frames: list[tuple[int, list[str]]] = []
    too_deep = False
    try:
        _enter(top, gid, acl, log, frames)
        while frames:
            fd, names = frames[-1]
            if not names:
                os.close(fd)
                frames.pop()
                continue
            name = names.pop()
            try:
                mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
                if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                    continue
                if stat.S_ISDIR(mode) and len(frames) > MAX_DEPTH:
                    if not too_deep:
                        log.warning("%s: folders more than %s deep are not shared with its group", directory, MAX_DEPTH)
                    too_deep = True
                    continue
                child = os.open(name, DIR_FLAGS if stat.S_ISDIR(mode) else FILE_FLAGS, dir_fd=fd)
            except OSError as e:
                # gone, or replaced by a link or a special file since it was listed
                if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.ENXIO):
                    continue
                raise
            _enter(child, gid, acl, log, frames)
    finally:
        for fd, _ in frames:
            os.close(fd)


def _enter(fd: int, gid: int, acl: bytes, log: logging.Logger, frames: list[tuple[int, list[str]]]) -> None:
    """Share the open ``fd``; a directory joins ``frames`` (to do its entries), a file is closed."""
    try:
        mode = _share_fd(fd, gid, acl, log)
        below = os.listdir(fd) if stat.S_ISDIR(mode) else None
    except BaseException:
        os.close(fd)
        raise
    if below is None:
        os.close(fd)
    else:
        frames.append((fd, below))


def _share_fd(fd: int, gid: int, acl: bytes, log: logging.Logger) -> int:
    """Hand the open directory or regular file to group ``gid``; returns its mode (0 if it is neither)."""
    st = os.fstat(fd)
    if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
        return 0
    os.fchown(fd, -1, gid)
    mode = stat.S_IMODE(st.st_mode) & ~(stat.S_ISUID | stat.S_ISGID)
    if stat.S_ISDIR(st.st_mode):
        os.fchmod(fd, mode | 0o070 | stat.S_ISGID)
        _set_default_acl(fd, acl, log)
    else:
        os.fchmod(fd, mode | 0o060)
    return st.st_mode
