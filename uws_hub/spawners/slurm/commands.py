"""Running SLURM's commands: argv lists (never a shell), each with a timeout."""

from __future__ import annotations

import asyncio
import functools
import grp
import os
import pwd
import shutil
from dataclasses import dataclass
from typing import Any


# ---------------------------------------------------------------- subprocesses
class SlurmCommandError(RuntimeError):
    """A SLURM command failed, timed out or could not be run."""


#: all a command run as a user gets of the hub's environment: enough to find and configure
#: SLURM. Never the rest (its secrets: JUPYTERHUB_CRYPT_KEY, a database URL, an admin
#: password), which the user could read in ``/proc/<pid>/environ`` of their process.
COMMAND_ENV_NAMES = ("PATH", "LANG", "LC_ALL", "SLURM_CONF", "TZ")


def command_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a SLURM command run as a user (:data:`COMMAND_ENV_NAMES` of the
    hub's, a default ``PATH``), with ``extra``."""
    env = {k: v for k, v in os.environ.items() if k in COMMAND_ENV_NAMES}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(extra or {})
    return env


@dataclass
class CommandResult:
    returncode: int
    stdout: str
    stderr: str


def as_account(account: pwd.struct_passwd, group: str | None = None) -> dict[str, Any]:
    """Popen arguments (for :func:`run_command`) that run a command as ``account``, with
    its groups. ``group``, a shared workspace's POSIX group (an editor's job: the launch
    is authorized), is made its primary group: no account is a member of it (see
    :mod:`uws_hub.sharing.posixgroups`), and SLURM gives a job the primary group of the
    process that submits it (its credential's), and its other groups from the account's
    own (``getgrouplist``, or a cache of it)."""
    gid = account.pw_gid
    if group is not None:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            pass  # no longer shared: the workspace's folders are the owner's alone again
    return {"user": account.pw_uid, "group": gid, "extra_groups": os.getgrouplist(account.pw_name, account.pw_gid)}


async def run_command(
    argv: list[str],
    *,
    timeout: float,
    input: str | None = None,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    user: int | None = None,
    group: int | None = None,
    extra_groups: list[int] | None = None,
) -> CommandResult:
    """Run ``argv`` (no shell) with a timeout; kill it if it takes longer.

    ``user``/``group``/``extra_groups`` run it as another account (the hub
    is root): through ``setpriv`` (:func:`setpriv_argv`) where it is installed,
    else as Popen does, without a Python ``preexec_fn``; without ``env`` it gets
    :func:`command_environment`, never the hub's own.
    Raises :class:`SlurmCommandError` on a timeout or if it cannot be started.
    """
    name = argv[0]
    kwargs: dict[str, Any] = {}
    through_setpriv = False
    if user is not None:
        env = command_environment() if env is None else env
        prefix = setpriv_argv(user, group, extra_groups or [])
        if prefix:
            argv, through_setpriv = [*prefix, *argv], True
        else:
            kwargs.update(user=user, group=group, extra_groups=extra_groups or [])
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=cwd,
            **kwargs,
        )
    except OSError as e:
        raise SlurmCommandError(f"cannot run {name}: {e}") from e
    try:
        out, err = await asyncio.wait_for(proc.communicate(input.encode() if input is not None else None), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise SlurmCommandError(f"{name} did not answer within {timeout:g} s") from None
    except asyncio.CancelledError:
        if proc.returncode is None:
            proc.kill()
        raise
    result = CommandResult(proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace"))
    if through_setpriv and result.returncode in (126, 127) and result.stderr.startswith("setpriv: "):
        # setpriv could not switch accounts or run the command: Popen would have raised
        raise SlurmCommandError(f"cannot run {name}: {result.stderr.strip()[:300]}")
    return result


@functools.cache
def _setpriv() -> str | None:
    return shutil.which("setpriv", path=os.defpath + ":/usr/sbin:/sbin")


def setpriv_argv(user: int, group: int | None, extra_groups: list[int]) -> list[str]:
    """The ``setpriv`` (util-linux) prefix that runs a command as ``user``, with ``group``
    (if given) as its real and effective group and exactly ``extra_groups`` as its
    supplementary groups (none: cleared), as Popen's ``user``/``group``/``extra_groups``
    do, or [] where ``setpriv`` is missing.

    Popen cannot ``vfork`` when it changes the account: it ``fork``s the whole hub,
    hundreds of MB of page tables copied for each ``sbatch``, ``scancel`` or ``tail``
    as a user (~18 ms each on a 300 MB process against ~2 ms through ``setpriv``).
    Like Popen, setpriv sets the saved ids too and the kernel drops root's
    capabilities; no shell is involved.
    """
    setpriv = _setpriv()
    if setpriv is None:
        return []
    argv = [setpriv, f"--reuid={user}"]
    if group is not None:
        argv.append(f"--regid={group}")
    argv.append(f"--groups={','.join(str(g) for g in extra_groups)}" if extra_groups else "--clear-groups")
    return [*argv, "--"]


def scancel_argv(scancel_cmd: list[str], ids: list[str], uid: int | None) -> list[str]:
    """``scancel`` of ``ids``, only of the jobs of ``uid`` (the uid they were submitted as,
    if known): the hub runs it as root, and SLURM gives a forgotten job's id again to any
    account's next job, which ``scancel -u <uid>`` leaves alone (without an error)."""
    return [*scancel_cmd, *(["-u", str(uid)] if uid is not None else []), *ids]


def check_scancel(result: CommandResult, ids: list[str]) -> None:
    """Raise unless ``scancel`` of ``ids`` worked, or they had ended already (not an error)."""
    stderr = result.stderr.lower()
    if result.returncode != 0 and "already completing or completed" not in stderr and "invalid job id" not in stderr:
        raise SlurmCommandError(f"scancel {' '.join(ids)} failed: {result.stderr.strip()[:500]}")
