"""Running SLURM's commands: argv lists (never a shell), each with a timeout."""

from __future__ import annotations

import asyncio
import grp
import os
import pwd
from dataclasses import dataclass
from typing import Any


# ---------------------------------------------------------------- subprocesses
class SlurmCommandError(RuntimeError):
    """A SLURM command failed, timed out or could not be run."""


@dataclass
class CommandResult:
    returncode: int
    stdout: str
    stderr: str


def as_account(account: pwd.struct_passwd, group: str | None = None) -> dict[str, Any]:
    """Popen arguments (for :func:`run_command`) that run a command as ``account``, with
    its groups. ``group``, a shared workspace's POSIX group the account is a member of
    (an editor's job), is made its primary group: SLURM gives a job the primary group of
    the process that submits it, but takes the job's other groups from a cache
    (``GroupUpdateTime``) that may be older than the editor's membership."""
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
    is root), as Popen does, without a Python ``preexec_fn``.
    Raises :class:`SlurmCommandError` on a timeout or if it cannot be started.
    """
    kwargs: dict[str, Any] = {}
    if user is not None:
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
        raise SlurmCommandError(f"cannot run {argv[0]}: {e}") from e
    try:
        out, err = await asyncio.wait_for(proc.communicate(input.encode() if input is not None else None), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise SlurmCommandError(f"{argv[0]} did not answer within {timeout:g} s") from None
    except asyncio.CancelledError:
        if proc.returncode is None:
            proc.kill()
        raise
    return CommandResult(proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace"))


def check_scancel(result: CommandResult, ids: list[str]) -> None:
    """Raise unless ``scancel`` of ``ids`` worked, or they had ended already (not an error)."""
    stderr = result.stderr.lower()
    if result.returncode != 0 and "already completing or completed" not in stderr and "invalid job id" not in stderr:
        raise SlurmCommandError(f"scancel {' '.join(ids)} failed: {result.stderr.strip()[:500]}")
