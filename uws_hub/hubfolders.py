"""The hub's own folders, opened by descriptor: a link followed only where an admin put it.

The hub (root, where jobs run as the users' accounts) renames, makes and hands over
files in folders of its own (``job_log_dir``, the set-aside of deleted users' data)
and in folders of the accounts' (a SLURM job's output folder). A path the kernel
resolves follows every link on its way, and a link an account put in a folder it may
write in (a folder of theirs swapped for a link to another's) then had root act on
whatever it pointed at. Here a path is walked a folder at a time, each opened
relative to the one above it with ``O_NOFOLLOW``; a link on the way is followed only
if it is trusted (:func:`_trusted_link`): the hub's account's or root's, in a folder of
theirs that no one else may write in (an admin's, such as a ``job_log_dir`` that is a
link, or the system's ``/var/run``). Any other link is refused (``ELOOP``), whatever is
swapped in between two steps: a folder the walk has open is the one it checked.

Importable by the spawners (``uws_hub.spawners`` imports neither the app nor
``uws_hub.workspaces``, which takes its flags and renames from here). All of it blocks.
"""

from __future__ import annotations

import ctypes
import errno
import os
import pwd
import stat

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
#: ``renameat2``'s flag that refuses to replace an existing destination
RENAME_NOREPLACE = 1
#: as many links as Linux follows in one path (``MAXSYMLINKS``)
MAX_SYMLINKS = 40


def _trusted_uids() -> tuple[int, ...]:
    """Whose links and folders are the admins': root's and the hub's account's."""
    return (0, os.geteuid())


def folder_is_admins(st: os.stat_result) -> bool:
    """Whether the folder of ``st`` is root's (or the hub's account's) and no one else may
    write in it: what is in it was put there by an admin, or by the hub."""
    return st.st_uid in _trusted_uids() and not st.st_mode & 0o022


def _trusted_link(dir_fd: int, name: str, st: os.stat_result) -> bool:
    """Whether the link ``name`` (``st``, its ``lstat``) in the folder open at ``dir_fd`` is
    an admin's: root's or the hub's account's, in a folder of theirs no one else may write
    in. A link of root's in an account's folder is not (one the hub made there before the
    account was given the folder, a hard link to one where ``fs.protected_hardlinks`` is
    off); nor is one in a folder that is sticky and world-writable (``/tmp``)."""
    return st.st_uid in _trusted_uids() and folder_is_admins(os.fstat(dir_fd))


def open_folder(path: str, *, make: int | None = None) -> int:
    """The folder ``path``, opened (:data:`DIR_FLAGS`): walked from ``/`` (or the current
    folder) a folder at a time, a trusted link followed (:func:`_trusted_link`), any other
    refused (``OSError`` ``ELOOP``), as is what is no folder (``ENOTDIR``). A folder
    missing on the way is made with the mode ``make`` (if not None; else
    ``FileNotFoundError``). ``..`` goes to the folder above the one open (where a link
    led, as the kernel's own ``..``)."""
    fd = os.open("/" if os.path.isabs(path) else ".", DIR_FLAGS)
    todo = [part for part in path.split("/") if part not in ("", ".")]
    links = 0
    try:
        while todo:
            name = todo.pop(0)
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                if make is None:
                    raise
                try:
                    os.mkdir(name, make, dir_fd=fd)
                except FileExistsError:
                    pass  # (made meanwhile: opened as it is below)
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                links += 1
                if links > MAX_SYMLINKS or not _trusted_link(fd, name, st):
                    raise OSError(errno.ELOOP, "A link that is not an admin's", os.path.join(path, name))
                target = os.readlink(name, dir_fd=fd)
                todo[:0] = [part for part in target.split("/") if part not in ("", ".")]
                if target.startswith("/"):
                    os.close(fd)
                    fd = os.open("/", DIR_FLAGS)
                continue
            below = os.open(name, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = below
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_folder_of(path: str) -> int | None:
    """The folder holding ``path``, opened (:func:`open_folder`); None if a link on its way
    is refused, a part of it is no folder, or it is gone (the caller says what it left)."""
    try:
        return open_folder(os.path.dirname(path))
    except OSError as e:
        if e.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            raise
        return None


def open_own_file(path: str, flags: int = 0) -> int:
    """The hub's own file ``path``, opened to write (``O_WRONLY``, with ``flags``, such as
    ``O_APPEND``), made 0600 if missing: its folder opened by :func:`open_folder` (an
    admin's link followed, any other refused), the file itself never through a link,
    and refused (``OSError`` ``EPERM``) unless it is a regular file of the hub's with no
    other name. Opened by its path, a ``job_log_dir`` that is an admin's link into an
    account's folder let the account, with a link of its own on the way, have root make
    or write a file of that name wherever it pointed, with what its job printed (in a
    folder whose files root runs or reads as its configuration); a hard link to a file
    of root's at the name (``fs.protected_hardlinks`` off) had root write in that file."""
    dir_fd = open_folder(os.path.dirname(path))
    try:
        fd = os.open(
            os.path.basename(path),
            os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC | flags,
            0o600,
            dir_fd=dir_fd,
        )
    finally:
        os.close(dir_fd)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_uid != os.geteuid():
        os.close(fd)
        raise OSError(errno.EPERM, "Not a file of the hub's alone", path)
    os.set_blocking(fd, True)  # (opened without waiting, for a FIFO: a job's output is handed this)
    return fd


_libc = ctypes.CDLL(None, use_errno=True)


def rename_noreplace(src_dir_fd: int, src: str, dst_dir_fd: int, dst: str) -> None:
    """Rename ``src`` to ``dst`` (each relative to its open directory) unless ``dst`` exists
    (FileExistsError), atomically: ``renameat2`` with ``RENAME_NOREPLACE``.

    Where the file system or the C library cannot do that (NFS, old kernels), or a
    seccomp filter refuses ``renameat2`` (older Docker profiles, which say ``EPERM``),
    the check comes just before a plain rename: then something made at ``dst`` in
    between is replaced, which only those who may write in ``dst``'s folder can cause.
    A plain rename that the hub may not make fails with its own error again.
    """
    renameat2 = getattr(_libc, "renameat2", None)
    if renameat2 is not None:
        if renameat2(src_dir_fd, os.fsencode(src), dst_dir_fd, os.fsencode(dst), RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):
            raise OSError(err, os.strerror(err), dst)
        # EINVAL is also a directory moved into itself, EPERM a rename the hub may not
        # make (a sticky folder's file of another's): the rename below says so again
    try:
        os.stat(dst, dir_fd=dst_dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        os.rename(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)
        return
    raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst)


def prepare_own_folder(path: str, what: str, setting: str, *, make: int = 0o700) -> None:
    """Make the hub's own folder ``path`` (``what``, set by ``setting``) if missing, with the
    mode ``make`` (:func:`open_folder`: a link on the way only if an admin's), and check
    that it is the hub's alone; raise ``ValueError`` saying which folder, whose it is and
    what to do if not. The hub refuses to start on it: a ``job_log_dir`` an account made
    first (``/tmp/uws-job-logs``, in a folder every account may write in) was used as it
    was, and that account, its owner, read every job's log (with what they printed of
    their tokens) and swapped its files; one that group or others may write in lets them
    put files in it and rename the hub's."""
    try:
        fd = open_folder(path, make=make)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ValueError(
                f"{what} {path} ({setting}) is, or is reached through, a link that is no admin's"
                " (not root's or the hub's account's, or in a folder others may write in, such as /tmp):"
                f" the hub refuses to use it. Make it a folder of the hub's account, or set {setting}"
                " to a folder outside /tmp that the hub makes itself."
            ) from e
        raise ValueError(f"Cannot make or open {what} {path} ({setting}): {e.strerror or e}") from e
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    me = os.geteuid()
    if st.st_uid == me and not st.st_mode & 0o022:
        return
    owner = _account_name(st.st_uid)
    mode = stat.S_IMODE(st.st_mode)
    raise ValueError(
        f"{what} {path} ({setting}) is owned by {owner} (uid {st.st_uid}) with mode {mode:04o},"
        f" not by the hub's account {_account_name(me)} (uid {me}) alone: whoever owns it or may"
        " write in it could read every job's log, with what it printed of its tokens, and swap its"
        f" files. The hub refuses to start. Set {setting} to a folder the hub makes itself (one that"
        f" does not exist yet, outside /tmp), or, if this folder and what is in it are to be trusted,"
        f" make it the hub's account's with no write access for group and others"
        f" (chown {_account_name(me)} {path}; chmod go-w {path})."
    )


def _account_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"
