"""A SLURM job's output: the end of its file, read as the job's account, and kept in
the hub's own log file of the job (which only its owner and admins read)."""

from __future__ import annotations

import logging
import os
import pwd
from typing import Any

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
        try:
            with open(path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - max_bytes))
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
    if len(text.encode()) >= max_bytes and "\n" in text:
        text = text.split("\n", 1)[1]
    return text.strip()


def keep_tail(log_path: str, text: str, log: logging.Logger) -> None:
    """Write ``text`` to the hub's log file of the job, never through a link planted there."""
    try:
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
    except OSError as e:
        log.warning("Cannot write %s: %s", log_path, e)


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
    deleted, whose name was given to someone else) is set aside, its own still, and a new
    one made: earlier versions handed it, with that account's jobs' output, to the new one.
    ``holder`` (:func:`uws_hub.jobs.service.account_holder`, the hub user the account is
    for) is recorded beside the folder, in the hub's own file: an account made again with
    the uid of the former (``useradd`` gives the highest free one, often the one just
    freed) owns the folder by its uid, but is another hub user."""
    parent = os.path.dirname(directory)
    os.makedirs(parent, mode=0o711, exist_ok=True)
    path = parent
    while True:
        os.chmod(path, 0o711)
        if path == log_dir or not path.startswith(log_dir + os.sep):
            break
        path = os.path.dirname(path)
    try:
        os.mkdir(directory, 0o700)
        made = True
    except FileExistsError:
        made = False
    marker = os.path.join(parent, f".{os.path.basename(directory)}.holder")
    recorded = _read_holder(marker) if holder is not None and not made else None
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    owner = os.fstat(fd).st_uid
    if owner not in (account.pw_uid, os.geteuid()) or (recorded is not None and recorded != holder):
        # an earlier account of the same name's (deleted, and the name given to someone
        # else): its output stays its own, out of the way, and the new account gets a new folder
        os.close(fd)
        aside = _set_aside(directory, owner)
        if owner != account.pw_uid:
            whose = f"uid {owner}, not to {account.pw_name} (uid {account.pw_uid})"
        else:
            whose = f"the hub user {recorded}, not to {holder} (both uid {owner})"
        log.warning(
            "The output folder %s belonged to %s: an earlier account of that name's; moved it to %s",
            directory,
            whose,
            aside,
        )
        os.mkdir(directory, 0o700)
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
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
        _write_holder(marker, holder)


def _read_holder(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip() or None
    except FileNotFoundError:
        return None


def _write_holder(path: str, holder: str) -> None:
    """Record ``holder`` in the hub's own file ``path`` (0600, replaced at once)."""
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(holder + "\n")
    os.replace(tmp, path)


def _set_aside(directory: str, uid: int) -> str:
    """Rename the folder ``directory`` of a former account (``uid``) beside itself, to a
    name no account has (a leading dot); returns the new path."""
    parent, name = os.path.split(directory)
    for n in range(1, 1000):
        aside = os.path.join(parent, f".former-uid{uid}-{name}" + (f"-{n}" if n > 1 else ""))
        if not os.path.lexists(aside):
            os.rename(directory, aside)
            return aside
    raise FileExistsError(f"No name left to set {directory} aside")
