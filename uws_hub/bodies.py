"""Request bodies the hub reads whole: bounded before a byte of one is read.

Tornado reads a request's whole body into memory before any handler runs
(before anyone is authenticated), up to 100 MB by default, which JupyterHub
leaves as it is: an anonymous client could make the hub hold 100 MB per
connection, as many connections as it liked, and wait for each body as long as
it was sent. Every route now takes at most ``UWSHub.max_request_body_bytes``
(the routes that take a new workspace's seed files ``SEED_JSON_EXPANSION`` times
``UWSHub.max_seed_bytes`` more); a body said to be larger is a 413 at once, before it is read, and one
that turns out larger (sent in chunks) closes the connection when it gets there.
Streamed bodies (uploads to the files API) set their own limits before they read.
"""

from __future__ import annotations

import json
from typing import Any

from tornado import httputil, web

#: how many bytes of a body a byte of seed files may take: JSON as most clients write it
#: (Python's json, ensure_ascii) sends a letter of two bytes in UTF-8 as ``\u00e9``, six
#: bytes, and one of four as two such escapes (base64 takes 4/3, ASCII text at most 2)
SEED_JSON_EXPANSION = 3


@web.stream_request_body
class BodyTooLargeHandler(web.RequestHandler):
    """The answer to a request whose ``Content-Length`` is over its route's limit: a 413
    saying which, before the body is read (a streaming handler: tornado reads nothing
    of the body before ``prepare``). Authenticates no one: it says nothing but the limit."""

    def initialize(self, limit: int) -> None:
        self.limit = limit

    def check_xsrf_cookie(self) -> None:
        """No XSRF check: the answer is the same whoever asks, and changes nothing."""

    def prepare(self) -> None:
        self.set_status(413)
        self.set_header("Content-Type", "application/json")
        # the body is not read: the connection cannot carry another request after it
        self.set_header("Connection", "close")
        message = (
            f"Request body larger than the limit of {self.limit} bytes (UWSHub.max_request_body_bytes;"
            " upload files through the files API)"
        )
        self.finish(json.dumps({"status": 413, "message": message}))

    def data_received(self, chunk: bytes) -> None:
        """Nothing of the body is kept (none is read: the answer is sent in ``prepare``)."""


class BodyLimitedApplication(web.Application):
    """JupyterHub's tornado application with each request's body bounded by its route.

    ``max_body_bytes``: the most any route reads whole; ``seed_body_bytes``: what
    routes whose handler class says ``takes_seed_files`` take on top of it.
    """

    def __init__(self, handlers: Any, max_body_bytes: int, seed_body_bytes: int, **settings: Any) -> None:
        super().__init__(handlers, **settings)
        self.max_body_bytes = max_body_bytes
        self.seed_body_bytes = seed_body_bytes

    def body_limit(self, handler_class: type[web.RequestHandler]) -> int:
        extra = self.seed_body_bytes if getattr(handler_class, "takes_seed_files", False) else 0
        return self.max_body_bytes + extra

    def get_handler_delegate(
        self,
        request: httputil.HTTPServerRequest,
        target_class: type[web.RequestHandler],
        target_kwargs: dict[str, Any] | None = None,
        path_args: list[bytes] | None = None,
        path_kwargs: dict[str, bytes] | None = None,
    ) -> web._HandlerDelegate:
        # called once the headers are read, before the body is
        limit = self.body_limit(target_class)
        set_max_body_size = getattr(request.connection, "set_max_body_size", None)  # HTTP/1's
        if set_max_body_size is not None:
            set_max_body_size(limit)
        length = request.headers.get("Content-Length", "")
        if _over(length, limit) and not getattr(target_class, "_stream_request_body", False):
            return super().get_handler_delegate(request, BodyTooLargeHandler, {"limit": limit})
        return super().get_handler_delegate(request, target_class, target_kwargs, path_args, path_kwargs)


def _over(length: str, limit: int) -> bool:
    """Whether a ``Content-Length`` says more than ``limit`` bytes. ASCII digits only, as
    HTTP reads a length (tornado answers 400 to any other): str.isdigit() also takes "²",
    which int() refuses; and a number of more digits than the limit's is larger without
    int(), which refuses more than 4300 digits (``sys.set_int_max_str_digits``)."""
    if not (length.isascii() and length.isdigit()):
        return False
    digits = length.lstrip("0")
    return len(digits) > len(str(limit)) or int(digits or "0") > limit
