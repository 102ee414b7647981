"""Errors the services raise, each with the HTTP status a client should see.

They are tornado ``HTTPError`` subclasses, as JupyterHub's own refusals are,
so a service's refusal reaches the client as a JSON error with a clear
message through JupyterHub's ``write_error``, with no translation layer in
every handler. The services import nothing else of tornado.
"""

from __future__ import annotations

from tornado import web


class UWSError(web.HTTPError):
    """A refusal the client can act on; ``status_code`` is the HTTP status.

    A refusal that speaks of a user (``"alice's unfinished jobs would be 2"``)
    can say it to that user in the second person (``"your unfinished jobs
    would be 2"``): ``about`` names the user, ``to_them`` is the message for
    them, and :meth:`message_for` picks the one for the reader. Everyone else
    (a collaborator launching in alice's workspace, a job's stored reason)
    reads ``message``.
    """

    code = 400

    def __init__(self, message: str, *, about: str | None = None, to_them: str | None = None):
        super().__init__(self.code, "%s", message)
        self.message = message
        self.about = about
        self.to_them = to_them

    def message_for(self, reader: str | None) -> str:
        """The message as ``reader`` (a user's name) should read it."""
        return self.to_them if self.to_them and reader is not None and reader == self.about else self.message

    def __str__(self) -> str:
        return self.message


class BadRequest(UWSError):
    code = 400


class Forbidden(UWSError):
    code = 403


class NotFound(UWSError):
    code = 404


class Conflict(UWSError):
    """The request is fine but the current state forbids it (busy, exists)."""

    code = 409


class PreconditionFailed(UWSError):
    """A condition the request set does not hold (``If-None-Match: *`` and the file exists)."""

    code = 412


class Unprocessable(UWSError):
    """Well-formed but invalid values (unknown job type, limits exceeded)."""

    code = 422


class TooManyRequests(UWSError):
    """The hub is busy: try again later (``Retry-After``, seconds, says when).

    JupyterHub's ``write_error`` sends an exception's ``headers``.
    """

    code = 429

    def __init__(self, message: str, retry_after_seconds: int):
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after_seconds)}
