"""Credentials out of text that people read: job output and the hub's log; and
forged lines out of the hub's log.

:func:`redact` replaces what looks like a credential with ``[redacted]``:

- values of URL parameters that carry credentials (``?token=``, ``code=``,
  ``state=``, ``_xsrf=``, ...; also URL-encoded, as in a login redirect's
  ``next=%2Fhub%2Fhome%3Ftoken%3D...``);
- ``Authorization: token|bearer|basic <credential>`` (and ``UWS-Authorization``);
- values of names that say they are secret (``JUPYTERHUB_API_TOKEN=...``,
  ``'MY_SECRET': '...'``, ``"password": "..."``): environment lines, Python
  dict reprs, JSON;
- strings shaped like tokens: JWTs, 32 or more hex digits (JupyterHub's API
  and OAuth tokens, session ids, cookie signatures), and 32 or more
  characters of base64 mixing upper case, lower case and digits.

It errs on the side of redacting: a 40-digit commit hash or a long mixed-case
identifier goes too, which costs a reader little; a token that stays costs
the owner of the server it opens.

:func:`install_log_redaction` applies :func:`redact` to every log record the
hub's process makes, whichever logger, handler or level: tornado's warnings
(``403 GET /hub/api/...?token=...``), JupyterHub's redirect lines, spawners'
debug output (batchspawner logs the job's environment, API token included).
It also writes every value a record is formatted with on one line
(:func:`one_line`): those are where the strings of clients and identity
providers go (a name typed at login, a user's name, a workspace's, a job's,
a UWS RUNID), and a newline there forged a line of the hub's log (``x\n[I
2026-... log:192] 200 GET ... (admin@...)``).
"""

from __future__ import annotations

import logging
import numbers
import re
from collections.abc import Mapping
from typing import Any

REDACTED = "[redacted]"

#: URL parameters whose values are credentials (any name containing one of these,
#: as JupyterHub's own log_request scrubs them)
_PARAM = r"[\w.-]*(?:token|auth|key|code|state|xsrf|secret|password|passwd|signature|session)[\w.-]*"
_URL_PARAM = re.compile(rf"(?i)((?:[?&;]|%3F|%26){_PARAM}(?:=|%3D))((?:(?!%26)[^&;\s#'\"<>])+)")
_AUTHORIZATION = re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?(?:(?:token|bearer|basic)\s+)?)([^\s'\",;]+)")
#: NAME=value, 'NAME': 'value', "name": "value" where the name says it is secret
_SECRET_NAME = r"[\w.-]*(?:token|secret|password|passwd|api_?key|private_?key|access_?key|credentials?)[\w.-]*"
_NAMED_SECRET = re.compile(rf"(?i)(\b{_SECRET_NAME}['\"]?\s*(?:=|:\s*)['\"]?)([^\s'\",;&}})]+)")
#: right after a control character as Python writes it in a string literal (by
#: :func:`one_line`, by ``repr``: a backslash, then ``n``, ``x1b``, ``u2028``), where a
#: token starts too: the letter and digits of the escape are none of its (the token of
#: ``ok\n<32 hex digits>``, as a log argument, was left as it was)
_AFTER_ESCAPE = r"(?<=\\[tnr])|(?<=\\x[0-9a-f]{2})|(?<=\\u[0-9a-f]{4})|(?<=\\U[0-9a-f]{8})"
_JWT = re.compile(rf"(?:\b|{_AFTER_ESCAPE})eyJ[\w-]+\.[\w-]+\.[\w-]*")
_HEX = re.compile(rf"(?:(?<![0-9A-Za-z])|{_AFTER_ESCAPE})[0-9a-fA-F]{{32,}}(?![0-9A-Za-z])")
_BASE64 = re.compile(r"(?<![A-Za-z0-9_+/-])[A-Za-z0-9_+/-]{32,}={0,2}(?![A-Za-z0-9_+/=-])")


#: what every pattern above needs somewhere in an ASCII text for it to match: a word that
#: names a credential (in the URL parameters', the ``Authorization`` header's, the secret
#: names'), a JWT's start (in the text made lower case), or a run of 32 characters of base64
#: (hex digits are some). Most log lines have none (``202 POST /hub/api/workspaces/7/jobs
#: (ann@10.0.0.1) 3.52ms``): two searches instead of six substitutions. (One search, or one
#: case-insensitive, took as long as the six; a text that is not ASCII goes through all six,
#: as their case-insensitive matches take letters that lower case does not give: ``ſ`` for s.)
_SECRET_WORD = re.compile("token|auth|key|code|state|xsrf|secret|passw|signature|session|credential|eyj")
_TOKEN_RUN = re.compile(r"[A-Za-z0-9_+/-]{32}")


def _may_hold_secret(text: str) -> bool:
    return not text.isascii() or bool(_SECRET_WORD.search(text.lower()) or _TOKEN_RUN.search(text))


def _token_shaped(match: re.Match) -> str:
    """A long base64 run is a secret if it mixes cases and digits and is not a path."""
    s = match.group(0)
    mixed = re.search(r"[a-z]", s) and re.search(r"[A-Z]", s) and re.search(r"[0-9]", s)
    # a path (a/b/c) has slashes but neither '+' nor padding; base64 with '/' has either
    path_like = "/" in s and "+" not in s and not s.endswith("=")
    return REDACTED if mixed and not path_like else s


def redact(text: str) -> str:
    """``text`` with everything that looks like a credential replaced by ``[redacted]``."""
    if not text or not _may_hold_secret(text):
        return text
    text = _URL_PARAM.sub(rf"\1{REDACTED}", text)
    text = _AUTHORIZATION.sub(rf"\1{REDACTED}", text)
    text = _NAMED_SECRET.sub(rf"\1{REDACTED}", text)
    text = _JWT.sub(REDACTED, text)
    text = _HEX.sub(REDACTED, text)
    return _BASE64.sub(_token_shaped, text)


#: what starts a new line, or rewrites one, wherever a log is read: C0 and C1 controls
#: (\n, \r, ESC, NEL), DEL, and the Unicode line and paragraph separators
CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def one_line(text: str) -> str:
    """``text`` with its control characters written as Python writes them in a string
    literal (``\\n``, ``\\x1b``, ``\\u2028``): on one line, and nothing a terminal acts on."""
    return CONTROL_CHARACTERS.sub(_escaped, text)


#: the same but the newline: what starts a line the log's formatter does not indent
_CONTROL_BUT_NEWLINE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def _escaped(match: re.Match) -> str:
    return repr(match.group())[1:-1]


class _OneLine:
    """A log argument formatted (``%s``, ``%r``) by :func:`one_line`: a string, an
    exception's message, a list of names."""

    __slots__ = ("value",)

    def __init__(self, value: object):
        self.value = value

    def __str__(self) -> str:
        return one_line(str(self.value))

    def __repr__(self) -> str:
        return one_line(repr(self.value))


def _one_line_arg(value: Any) -> Any:
    if isinstance(value, str):
        return _OneLine(value) if CONTROL_CHARACTERS.search(value) else value
    # numbers stay numbers, for %d and %.2f (and None, which holds no line)
    if value is None or isinstance(value, numbers.Number):
        return value
    return _OneLine(value)


class _Redacted:
    """An attribute redacted when it is set (a descriptor, for :class:`RedactedLogRecord`)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.key = f"_redacted_{name}"

    def __get__(self, obj: object, objtype: type | None = None):
        return self if obj is None else obj.__dict__.get(self.key)

    def __set__(self, obj: object, value: str | None) -> None:
        # a traceback's lines are the hub's, but for its exception's message, which may be
        # anyone's (a name, a command's output): its newlines are indented by the log's
        # formatter, its other controls (``\r``, NEL, U+2028) started a line of its own
        obj.__dict__[self.key] = redact(_CONTROL_BUT_NEWLINE.sub(_escaped, value)) if value else value


class RedactedLogRecord(logging.LogRecord):
    """A log record whose message, traceback and stack are redacted when formatted.

    Made for every record of the process (:func:`install_log_redaction`), so
    no handler, formatter or logger can write a credential: the redaction is
    where the text is made, not where each call site logs.
    """

    #: set by Formatter.format from the exception (and reused by later handlers)
    exc_text = _Redacted()
    stack_info = _Redacted()

    def getMessage(self) -> str:
        """The message, its arguments each on one line (:func:`one_line`), redacted.

        The format (``msg``) is the hub's code, and may span lines; its arguments
        are data, and may not: one is formatted into no line of its own."""
        msg = str(self.msg) if isinstance(self.msg, str) else one_line(str(self.msg))
        if self.args:
            if isinstance(self.args, Mapping):
                msg = msg % {key: _one_line_arg(value) for key, value in self.args.items()}
            else:
                msg = msg % tuple(_one_line_arg(value) for value in self.args)
        return redact(msg)


def install_log_redaction(log: logging.Logger) -> None:
    """Redact every log record of this process from now on (see :class:`RedactedLogRecord`).

    ``log`` is told if another log record factory is in place already, which
    this would replace.
    """
    current = logging.getLogRecordFactory()
    if current is RedactedLogRecord:
        return
    if current is not logging.LogRecord:
        log.warning("Replacing the log record factory %r with uws-hub's, which redacts credentials", current)
    logging.setLogRecordFactory(RedactedLogRecord)
