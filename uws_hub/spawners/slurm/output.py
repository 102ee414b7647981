"""A SLURM job's output: the end of its file, read as the job's account, and kept in
the hub's own log file of the job (which only its owner and admins read)."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import pwd
import stat
import uuid
from typing import Any

from ...hubfolders import DIR_FLAGS, open_folder, open_folder_of, open_own_file, rename_noreplace
from .commands import SlurmCommandError, command_environment
from .poller import SlurmPoller

#: how much of the end of a job's output the hub keeps
OUTPUT_TAIL_BYTES = 16 * 1024


async def read_tail(
    poller: SlurmPoller, path: str, *, as_user: dict[str, Any], prefix: list[str], max_bytes: int = OUTPUT_TAIL_BYTES
) -> str:
    """The last lines of ``path``: with ``tail`` run as the job's account (``as_user``,
    ``prefix``) when the hub could read more than the job could, else directly."""
    if as_user or prefix:
        try:
            # not the hub's environment: the file may be a FIFO, the tail the user's to read
            result = await poller.command(
                [*prefix, "tail", "-c", str(max_bytes), path], env=command_environment(), **as_user
            )
        except SlurmCommandError:
            return ""
        text = result.stdout if result.returncode == 0 else ""
    else:
        text = await asyncio.to_thread(_read_end, path, max_bytes)
    if len(text.encode()) >= max_bytes and "\n" in text:
        text = text.split("\n", 1)[1]
    return text.strip()


def _read_end(path: str, max_bytes: int) -> str:
    """The last ``max_bytes`` of the regular file ``path``, read by the hub itself (a hub not
    root, whose jobs run as its account), in a thread. The job may have replaced its
    output: a FIFO's open waited for a writer that never came (on the hub's event loop,
    where it was read: the whole hub hung), a link was followed to a file of the hub's.
    Opened without waiting or following, what is no regular file has no tail ("")."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        if not _regular(fd):
            return ""
        with os.fdopen(fd, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - max_bytes))
            return f.read(max_bytes).decode("utf-8", "replace")
    except OSError:
        return ""


def server_output_path(
    output_dir: str, *, job_log_dir: str, workspace: str, username: str, job_id: int, slurm_id: str
) -> str:
    """A server's output file (``WorkspaceSlurmSpawner.output_dir``, its fields replaced,
    then ``job-<id>-<SLURM id>.log``): where the spawner has SLURM write it, and where a
    deleted user's is found to be set aside (:meth:`SlurmBatchRunner.server_output`)."""
    directory = output_dir.format(job_log_dir=job_log_dir, workspace=workspace, username=username, job_id=job_id)
    return os.path.join(directory, f"job-{job_id}-{slurm_id}.log")


def keep_tail(log_path: str, text: str, log: logging.Logger) -> None:
    """Write ``text`` to the hub's log file of the job (:func:`~uws_hub.hubfolders.open_own_file`:
    through no link of an account's, into no file that is not the hub's alone)."""
    try:
        fd = open_own_file(log_path)
        os.ftruncate(fd, 0)
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
    except OSError as e:
        log.warning("Cannot write %s: %s", log_path, e)


def remove_output(path: str, log: logging.Logger) -> None:
    """Remove a finished job's output file ``path`` (its job deleted), in its folder opened
    by descriptor (:func:`~uws_hub.hubfolders.open_folder`): the folder is its account's,
    and a ``batch_output_dir`` outside ``job_log_dir`` may be in a folder the account
    writes in too (``/scratch/{username}/uws``). Removed by its path, a link of the
    account's on the way had root remove the file of that name wherever it pointed
    (another account's output, another hub's of the same job id); now nothing is
    removed then, and the log says so. A folder of the log's name is the account's: left."""
    fd = open_folder_of(path)
    if fd is None:
        log.warning("The folder of %s is a link, no folder or gone: the job's output is left", path)
        return
    try:
        os.unlink(os.path.basename(path), dir_fd=fd)
    except (FileNotFoundError, IsADirectoryError):
        pass
    finally:
        os.close(fd)


def make_account_folder(
    directory: str,
    log_dir: str,
    account: pwd.struct_passwd,
    log: logging.Logger,
    stale: str | None = None,
    holder: str | None = None,
) -> None:
    """``directory`` (under the hub's ``log_dir``), the job's account's own folder for its
    output (0700), in folders of the hub's that every account may pass through but not
    list (0711: the hub's own files in them are 0600); a file ``stale`` left there by an
    earlier hub with the same job ids goes. Made by the hub: no other account can plant
    anything on the way (the output of a server in its workspace was there for its
    editors to read). A folder of another account (an earlier account of the same name,
    deleted, whose name was given to someone else) is set aside, closed to all but root
    (:func:`_close_to_root`), and a new one made: earlier versions handed it, with that
    account's jobs' output, to the new one.
    ``holder`` (:func:`uws_hub.jobs.service.account_holder`, the hub user the account is
    for) is recorded beside the folder, in the hub's own file: an account made again with
    the uid of the former (``useradd`` gives the highest free one, often the one just
    freed) owns the folder by its uid, but is another hub user.

    All of it is done in the folder above ``directory`` opened once, by descriptor
    (:func:`_open_parent`), never by a path the kernel resolves again: a link on the way
    that is no admin's is refused (``OSError``), and the account's folder is opened,
    handed over and set aside as it is, whatever is renamed in between."""
    parent = _open_parent(os.path.dirname(directory), log_dir, account.pw_uid)
    name = os.path.basename(directory)
    try:
        _make_account_folder_at(parent, name, directory, account, log, stale, holder)
    finally:
        os.close(parent)


def _open_parent(parent: str, log_dir: str, account_uid: int) -> int:
    """The folder ``parent`` opened, made if missing: ``log_dir`` (where a link is the
    admin's, followed) by :func:`~uws_hub.hubfolders.open_folder`, then each folder
    below it with ``O_NOFOLLOW`` (a link there is refused: ``ELOOP``); earlier versions
    made and chmodded them by their paths, following whatever link was put in their
    place. Each of the hub's own folders from ``log_dir`` down is made 0711 (passable,
    not listable) if the hub makes it, made passable (:func:`_passable`) if it was
    there; a folder of another uid below ``log_dir`` is left as its owner made it. A
    ``parent`` outside ``log_dir`` is opened by :func:`~uws_hub.hubfolders.open_folder`
    alone. The top one (``log_dir``, or ``parent`` outside it) of another account's than
    root's, the hub's or the job's account's (``account_uid``: ``/scratch/{username}/uws``)
    is refused (``OSError`` ``EPERM``): an account that made it first (``/tmp/uws-out``)
    could rename every account's folder in it."""
    if parent == log_dir or parent.startswith(log_dir + os.sep):
        top, below = log_dir, [p for p in parent[len(log_dir) :].split(os.sep) if p]
    else:
        top, below = parent, []
    fd = open_folder(top, make=0o711)
    try:
        owner = os.fstat(fd).st_uid
        if owner not in (0, os.geteuid(), account_uid):
            # (made first by another account: it could rename every account's folder in it)
            raise OSError(
                errno.EPERM, f"The folder of the accounts' output folders is uid {owner}'s, not the hub's", top
            )
        _passable(fd)
        for part in below:
            try:
                os.mkdir(part, 0o711, dir_fd=fd)
            except FileExistsError:
                pass
            inner = os.open(part, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = inner
            _passable(fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _passable(fd: int) -> None:
    """The folder open at ``fd``, if it is the hub's own, made passable by every account
    (``--x`` for group and others added where missing: the hub makes its own 0700, then
    0711), its mode otherwise left as it is: earlier versions made it 0711, whatever it
    was, and an admin's ``job_log_dir`` such as ``/var/log`` (root's) lost its readers."""
    st = os.fstat(fd)
    if st.st_uid == os.geteuid() and st.st_mode & 0o011 != 0o011:
        os.fchmod(fd, stat.S_IMODE(st.st_mode) | 0o011)


def _make_account_folder_at(
    parent: int,
    name: str,
    directory: str,
    account: pwd.struct_passwd,
    log: logging.Logger,
    stale: str | None,
    holder: str | None,
) -> None:
    """:func:`make_account_folder` in the folder open at ``parent``."""
    try:
        os.mkdir(name, 0o700, dir_fd=parent)
        made = True
    except FileExistsError:
        made = False
    marker = f".{name}.holder"
    recorded = _read_holder(parent, marker) if holder is not None and not made else None
    fd = os.open(name, DIR_FLAGS, dir_fd=parent)
    owner = os.fstat(fd).st_uid
    if owner not in (account.pw_uid, os.geteuid()) or (recorded is not None and recorded != holder):
        # an earlier account of the same name's (deleted, and the name given to someone
        # else): its output stays its own, out of the way, and the new account gets a new folder
        os.close(fd)
        aside = _set_aside(parent, name, owner)
        _close_to_root(parent, aside)
        if owner != account.pw_uid:
            whose = f"uid {owner}, not to {account.pw_name} (uid {account.pw_uid})"
        else:
            whose = f"the hub user {recorded}, not to {holder} (both uid {owner})"
        log.warning(
            "The output folder %s belonged to %s: an earlier account of that name's; moved it to %s",
            directory,
            whose,
            os.path.join(os.path.dirname(directory), aside),
        )
        os.mkdir(name, 0o700, dir_fd=parent)
        fd = os.open(name, DIR_FLAGS, dir_fd=parent)
    try:
        os.fchown(fd, account.pw_uid, account.pw_gid)
        os.fchmod(fd, 0o700)
        if stale is not None:
            try:
                os.unlink(stale, dir_fd=fd)
            except FileNotFoundError:
                pass
    finally:
        os.close(fd)
    if holder is not None and recorded != holder:
        _write_holder(parent, marker, holder)


def _read_holder(dir_fd: int, name: str) -> str | None:
    """The hub user recorded in the hub's own file ``name`` (in the folder open at
    ``dir_fd``); None if there is none, or if it is no regular file (never followed
    through a link, never a FIFO's open that waits for a writer, a folder's closed)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ELOOP, errno.ENXIO):
            return None
        raise
    if not _regular(fd):
        return None
    with os.fdopen(fd, encoding="utf-8") as f:
        return f.read(4096).strip() or None


def _regular(fd: int) -> bool:
    """Whether ``fd`` is open on a regular file; if not, it is closed. (``os.fdopen`` of a
    folder fails, ``IsADirectoryError``, and leaves the descriptor open: a folder made in
    place of a file the hub reads left one more open in the hub at each read.)"""
    if stat.S_ISREG(os.fstat(fd).st_mode):
        return True
    os.close(fd)
    return False


def _write_holder(dir_fd: int, name: str, holder: str) -> None:
    """Record ``holder`` in the hub's own file ``name`` (0600, replaced at once), in the
    folder open at ``dir_fd``: written to a new file of a name of its own (never one
    found there, a link or another name of a file elsewhere), then renamed over ``name``."""
    tmp = f"{name}.{uuid.uuid4().hex}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(holder + "\n")
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        raise


def _close_to_root(parent: int, name: str) -> None:
    """The folder ``name`` (in the folder open at ``parent``; never through a link) made
    root's (the hub's account's), 0700; what is in it stays as it was. A folder set aside
    stayed its former account's: a new account of the same uid (``useradd`` gives the
    highest free one, often the one just freed; the same account made again for another
    hub user) entered it by its name (``.former-uid<uid>-<name>``, in a folder every
    account may pass through) and read the former's jobs' output, servers' tokens among it."""
    fd = os.open(name, DIR_FLAGS, dir_fd=parent)
    try:
        os.fchown(fd, os.geteuid(), os.getegid())
        os.fchmod(fd, 0o700)
    finally:
        os.close(fd)


def _set_aside(parent: int, name: str, uid: int) -> str:
    """Rename the folder ``name`` of a former account (``uid``), in the folder open at
    ``parent``, beside itself, to a name no account has (a leading dot); returns the new
    name. The check that the name is free and the rename are one step
    (:func:`~uws_hub.hubfolders.rename_noreplace`): nothing made there meanwhile is replaced."""
    for n in range(1, 1000):
        aside = f".former-uid{uid}-{name}" + (f"-{n}" if n > 1 else "")
        try:
            rename_noreplace(parent, name, parent, aside)
        except FileExistsError:
            continue
        return aside
    raise FileExistsError(f"No name left to set {name} aside")
