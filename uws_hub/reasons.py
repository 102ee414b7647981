"""A job's reason: one line, in plain language, for everyone who may read the job.

Every end of a job that went wrong is said here, in one place, so that a
server's and a batch command's ends read alike ("The server exited with status
1", "The command was killed by signal 9 (SIGKILL) — out of memory?", "The
server did not answer within 60 s"). A reason never holds what the job printed:
that output can hold secrets and is read by the job's owner and admins only
(:meth:`uws_hub.jobs.service.JobService.output`). :func:`one_line` keeps a
reason from anywhere else (an exception's message, a resource's note) to one
line, with credentials redacted. It is outside :mod:`uws_hub.jobs` so that
the resources' runners (:mod:`uws_hub.spawners`, which do not import the hub)
say their ends with it too.
"""

from __future__ import annotations

import asyncio
import re
import signal as signals

from .redaction import redact

#: the longest reason stored (a resource's message can be long)
MAX_REASON_CHARS = 500

#: a job whose server was stopped with JupyterHub's own server API (what its admin panel and an
#: idle culler use) rather than uws-hub's
STOPPED_OUTSIDE = "Stopped outside uws-hub (JupyterHub's server API, admin panel or idle culler)"

#: signals that mostly mean the kernel's out-of-memory killer (or a memory limit) ended the process
_OUT_OF_MEMORY_SIGNALS = {signals.SIGKILL}

#: a server that does not answer in time (``Spawner.http_timeout``): JupyterHub's message for its
#: HTTP check, and :func:`uws_hub.spawners.listening.wait_listening`'s for a port nobody listens on
_NO_ANSWER = re.compile(r"didn't respond in (\d+(?:\.\d+)?) seconds|did not listen on \S+ within (\d+(?:\.\d+)?) s")


def signal_name(number: int) -> str:
    """``SIGKILL`` for 9; ``signal 77`` for a number no signal has."""
    try:
        return signals.Signals(number).name
    except ValueError:
        return f"signal {number}"


def exit_reason(subject: str, status: int | None = None, *, signal: int | None = None, when: str = "") -> str:
    """How a process ended, as a reason: ``"The server exited with status 1"``.

    ``status`` is an exit status as Python's ``Popen.returncode`` gives it
    (negative: killed by that signal) or as a shell gives it (128 + the
    signal's number); ``signal`` a signal known to have ended it. A SIGKILL
    adds "— out of memory?": it is what the kernel's out-of-memory killer,
    cgroups and SLURM send a job that uses more memory than it may.
    ``when`` is inserted before that hint (" before it answered").
    """
    if signal is None and status is not None and status < 0:
        signal = -status
    if signal is not None:
        text = f"{subject} was killed by signal {signal} ({signal_name(signal)}){when}"
        return text + (" — out of memory?" if signal in _OUT_OF_MEMORY_SIGNALS else "")
    text = f"{subject} exited with status {status}"
    if status is not None and 128 < status < 128 + 65:
        # a shell's way of saying its command was killed by a signal
        number = status - 128
        text += f" (signal {number}, {signal_name(number)})"
        return text + when + (" — out of memory?" if number in _OUT_OF_MEMORY_SIGNALS else "")
    return text + when


def no_answer(subject: str, seconds: float) -> str:
    """A server that started but never answered the hub: ``"The server did not answer within 60 s"``."""
    return f"{subject} did not answer within {seconds:g} s"


def not_started(subject: str, seconds: float) -> str:
    """A start that took too long: ``"The server did not start within 300 s"``."""
    return f"{subject} did not start within {seconds:g} s"


def one_line(text: str) -> str:
    """``text`` as a stored reason: its first line, credentials redacted, at most
    :data:`MAX_REASON_CHARS` characters."""
    line = redact(text.strip().splitlines()[0] if text.strip() else "")
    return line if len(line) <= MAX_REASON_CHARS else line[: MAX_REASON_CHARS - 1] + "…"


def from_exception(e: BaseException, *, start_timeout: float | None = None) -> str:
    """A reason from an exception that ended a start or a stop (tornado's HTTPError's
    message first; JupyterHub's time-outs in plain words).

    ``start_timeout``: the spawner's ``start_timeout``, for a start that
    JupyterHub gave up on (its ``TimeoutError`` has no message).
    """
    msg = getattr(e, "log_message", None) or getattr(e, "message", None) or str(e)
    if getattr(e, "args", None) and "%" in str(msg):
        try:
            msg = msg % e.args
        except TypeError:
            pass
    if isinstance(e, TimeoutError | asyncio.TimeoutError):
        if match := _NO_ANSWER.search(msg or ""):
            return no_answer("it", float(match.group(1) or match.group(2)))
        if not msg and start_timeout:
            return not_started("it", start_timeout)
    return one_line(msg or type(e).__name__)
