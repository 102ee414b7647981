"""REST API: files in a workspace.

``GET /hub/api/workspaces/{id}/files?path=dir`` lists a directory,
``GET .../files/{path}`` downloads a file (streamed), ``?format=zip`` a folder
as a zip file (made as it is sent, :mod:`uws_hub.workspaces.archive`),
``?format=text`` a small UTF-8 text file as ``text/plain`` (for the page's text view),
``PUT .../files/{path}`` uploads one (streamed to a temporary file, renamed
into place when complete, so a failed upload loses nothing; with
``If-None-Match: *`` only where no file is, with ``If-Match`` only over the
version read, else 412; ``?format=text``: only small UTF-8 text), refused
with a 413 over ``UWSHub.max_upload_bytes`` and with a 422 over the workspace
owner's disk quota. The room on the quota is reserved (:meth:`QuotaService.reserve_disk`)
before the first byte is written, from ``Content-Length``; a body without one
reserves as it arrives, and once it goes over, the rest of it is discarded and
refused at its end. Every way an upload ends gives the room back or turns it
into usage. ``POST .../files/{path}`` makes a folder, ``PATCH`` moves (renames)
a file or folder, ``DELETE`` deletes one (a folder with everything in it with
``?recursive=1``), freeing its room on the quota at once, so a user over the
quota can delete without launching a job.

Paths are made safe by :mod:`uws_hub.workspaces.paths` alone; every storage call (all of
them block: opening, listing, each read and write, the rename) runs in a
thread, so a slow disk or a FIFO never holds up the hub, and in the caller's share of
the file threads (:mod:`uws_hub.filethreads`), so one caller's slow disk work holds
up no one else's.
"""

from __future__ import annotations

import asyncio
import mimetypes
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field
from tornado import iostream, web

from ..errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PreconditionFailed,
    TooManyRequests,
    Unprocessable,
    UWSError,
)
from ..filethreads import in_file_thread
from ..inputs import Text, query_bool
from ..orm import Workspace
from ..quotas.limits import Reservation
from ..quotas.service import QuotaExceeded
from ..scopes import READ_WORKSPACES, WRITE_WORKSPACES, requires
from ..slots import reader_of
from ..workspaces.paths import FileConflict, NotText, PathError, TooManyEntries, etag
from ..workspaces.paths import NotFound as StorageNotFound
from ..workspaces.storage import TEXT_MAX_BYTES, Precondition, Upload, text_of
from .base import UWSAPIHandler

CHUNK_BYTES = 256 * 1024
#: the largest JSON body of a POST or PATCH (collected in memory)
JSON_MAX_BYTES = 64 * 1024
#: when a reader at ``UWSHub.max_zip_downloads_per_user`` is told to try again
ZIP_RETRY_SECONDS = 10


class NewFileModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["directory"]


class MoveFileModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: Text = Field(min_length=1, max_length=4096)
    overwrite: bool = False


@contextmanager
def storage_refusals(conflict: type[UWSError] = Conflict) -> Iterator[None]:
    """The storage's refusals as client errors: 400 for bad paths, 404 for missing
    ones, ``conflict`` (409) for what the workspace's contents refuse, 422 for a
    file that is no text to edit."""
    try:
        yield
    except PathError as e:
        raise BadRequest(str(e)) from None
    except StorageNotFound as e:
        raise NotFound(str(e)) from None
    except FileConflict as e:
        raise conflict(str(e)) from None
    except (NotText, TooManyEntries) as e:
        raise Unprocessable(str(e)) from None


async def in_thread(func, *args, conflict: type[UWSError] = Conflict, **kwargs):
    """Run a blocking storage call off the event loop (in the caller's file threads),
    its refusals as client errors."""
    with storage_refusals(conflict):
        return await in_file_thread(func, *args, **kwargs)


#: what ``?format=`` a request of each method may ask for
FORMATS = {"GET": ("zip", "text"), "PUT": ("text",)}


def requested_format(handler: web.RequestHandler) -> str | None:
    """The request's ``?format=`` (None: none), or a 400 naming the ones its method takes."""
    kind = handler.get_argument("format", None)
    known = FORMATS.get(handler.request.method or "", ())
    if kind is None or kind in known:
        return kind
    names = " and ".join(repr(k) for k in known)
    raise BadRequest(f"Unknown format {kind[:40]!r}: the formats here are {names}")


def precondition(headers) -> Precondition:
    """An upload's condition from ``If-None-Match: *`` and ``If-Match`` (RFC 9110)."""
    if_match = headers.get("If-Match", "").strip()
    return Precondition(absent=headers.get("If-None-Match", "").strip() == "*", etag=if_match or None)


def attachment(handler: web.RequestHandler, name: str, content_type: str) -> None:
    handler.set_header("Content-Type", content_type)
    handler.set_header("Content-Disposition", f"attachment; filename*=UTF-8''{quote(name)}")


async def send_file(handler: UWSAPIHandler, ws: Workspace, relpath: str) -> None:
    """Answer with a workspace's file, streamed as a download (opened safely, read
    in a thread), with its ETag (what a later ``If-Match`` names). A large file takes
    as long as its reader likes: one who may no longer read the workspace meanwhile
    is cut off, as from a zip (:meth:`~.base.UWSAPIHandler.reads_rechecked`)."""
    f, st = await in_thread(handler.uws.storage.open_read, ws.directory, relpath)
    allowed = handler.reads_rechecked(ws.id)
    try:
        name = os.path.basename(relpath)
        attachment(handler, name, mimetypes.guess_type(name)[0] or "application/octet-stream")
        handler.set_header("Content-Length", str(st.st_size))
        handler.set_header("ETag", etag(st))
        left = st.st_size  # as much as Content-Length says, if the file grows meanwhile
        while left and (chunk := await in_file_thread(f.read, min(CHUNK_BYTES, left))):
            if not await handler.send_piece(allowed, chunk):
                return
            left -= len(chunk)
    except iostream.StreamClosedError:
        return  # the client went away
    finally:
        await in_file_thread(f.close)
    handler.finish()


class WorkspaceFilesAPIHandler(UWSAPIHandler):
    @requires(READ_WORKSPACES)
    async def get(self, workspace_id):
        ws = self.find_workspace(workspace_id)
        relpath = self.get_argument("path", "")
        entries = await in_thread(self.uws.storage.list_dir, ws.directory, relpath, self.uws.folder_max_entries)
        offset, limit = self.get_api_pagination()
        page = [e.to_dict() for e in entries[offset : offset + limit]]
        model = self.paginated_model(page, offset, limit, len(entries))
        model["path"] = relpath.strip("/")
        self.write_json(model)


@web.stream_request_body
class WorkspaceFileAPIHandler(UWSAPIHandler):
    """One file or folder. The body of an upload is streamed to disk as it arrives;
    the (small) JSON bodies of the other methods are collected (a streaming handler
    gets no ``request.body``)."""

    upload: Upload | None = None
    #: whose file threads the upload's work runs in (:func:`reader_of` the caller when it
    #: began: a caller whose token ends meanwhile is no one by the time it is discarded)
    uploader: str | None = None
    #: the JSON body of a POST or PATCH
    body: bytearray | None = None
    #: the upload's room on the workspace owner's disk quota
    reservation: Reservation | None = None
    #: why a streamed upload was refused while its body arrived
    refusal: Exception | None = None
    #: the client went away
    gone = False
    #: the largest body this upload may have (``UWSHub.max_upload_bytes``, less for text)
    limit = 0
    #: ``?format=text``: the body, checked to be text at its end (at most TEXT_MAX_BYTES)
    text: bytearray | None = None

    async def _execute(self, transforms, *args, **kwargs):
        """Refuse a method this handler does not have (405) only once its body is
        read. Tornado refuses it before reading anything, and on a streamed handler
        that closes the connection while the client still sends its body: the
        proxy then answers 503 instead of the 405 (found by tests/test_fuzz.py
        with a QUERY carrying a body)."""
        if self.request.method in self.SUPPORTED_METHODS:
            return await super()._execute(transforms, *args, **kwargs)
        self._transforms = transforms
        if self._prepared_future is not None:
            # the body may flow now: data_received keeps none of it (no upload)
            self._prepared_future.set_result(None)
        try:
            await self.request._body_future
        except iostream.StreamClosedError:
            return
        self.send_error(405)

    async def prepare(self):
        await super().prepare()
        if self.request.method in ("POST", "PATCH"):
            self.body = bytearray()
            length = self.request.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > JSON_MAX_BYTES:
                raise web.HTTPError(413, f"Request body larger than the limit of {JSON_MAX_BYTES} bytes")
            self.request.connection.set_max_body_size(JSON_MAX_BYTES)
        if self.request.method != "PUT" or self._finished:
            return
        try:
            await self._prepare_upload()
        except web.HTTPError as e:
            await self._discard()
            if e.status_code == 413:
                # too big to read: answer now (the connection is then closed)
                raise
            # answered once the (small) body is read and discarded: refusing before it
            # leaves the body on a kept-alive connection, which the proxy would
            # then reuse, and a later request would fail (a 503 from the proxy)
            self.refusal = e
        if self.gone:  # while the upload was being started
            await self._discard()

    async def _prepare_upload(self):
        # authorize before accepting a single byte of the body
        if not self.current_user:
            raise web.HTTPError(403, "Missing or invalid credentials.")
        workspace_id, relpath = self.path_args
        ws = self.find_workspace(workspace_id, WRITE_WORKSPACES)
        self.uws.workspaces.check_writable(ws)
        if requested_format(self) == "text":
            self.text = bytearray()
        self.limit = TEXT_MAX_BYTES if self.text is not None else self.uws.max_upload_bytes
        length = self.request.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            raise web.HTTPError(413, f"File larger than the limit of {self.limit} bytes")
        self.request.connection.set_max_body_size(self.limit)
        owner = self.uws.workspaces.file_owner(ws)
        self.uploader = reader_of(self.current_user)
        self.upload = upload = await in_thread(
            self.uws.storage.start_upload,
            ws.directory,
            relpath,
            owner,
            precondition(self.request.headers),
            conflict=PreconditionFailed,
        )
        self.workspace = ws
        # the owner's disk quota (an editor's upload counts against the workspace's owner)
        known = int(length) if length is not None and length.isdigit() else 0
        self.reservation = self.uws.quotas.reserve_disk(ws.owner, known, upload.replaced_bytes)

    async def data_received(self, chunk: bytes) -> None:
        if self.body is not None:
            self.body += chunk
            return
        if self.upload is None or self.reservation is None:
            return
        if self.upload.size + len(chunk) > self.limit:
            await self._discard()
            raise web.HTTPError(413, f"File larger than the limit of {self.limit} bytes")
        try:
            self.uws.quotas.grow_disk(self.reservation, self.upload.size + len(chunk), streamed=True)
        except QuotaExceeded as e:
            # an error raised here would only drop the connection: refuse at the end
            # of the body, discarding the rest of it
            await self._discard()
            self.refusal = e
            return
        if self.text is not None:
            self.text += chunk
        await self._in_thread(self.upload.write, chunk)

    async def _discard(self) -> None:
        """Drop the upload under way, if any (its temporary file goes, in a thread),
        and give its room back: it was refused, cut off or failed."""
        upload, self.upload = self.upload, None
        reservation, self.reservation = self.reservation, None
        if reservation is not None:
            self.uws.quotas.release_disk(reservation)
        if upload is not None:
            await self._in_thread(upload.abort)

    def _in_thread(self, func, *args):
        """``func`` in the caller's file threads, from where the request's own task does not
        run (so :func:`in_file_thread` does not know whose it is): ``data_received`` and
        the end of the connection."""
        return self.uws.file_threads.run(self.uploader or reader_of(self.current_user), func, *args)

    def _discard_soon(self) -> None:
        if self.upload is not None or self.reservation is not None:
            asyncio.ensure_future(self._discard())

    def on_connection_close(self):
        super().on_connection_close()
        self.gone = True
        self._discard_soon()

    def on_finish(self):
        # however the request ended (an error included), no temporary file or reservation stays
        self._discard_soon()

    @requires(WRITE_WORKSPACES)
    async def put(self, workspace_id, relpath):
        if self.refusal is not None:
            raise self.refusal
        # authorized before its body, which took as long as the uploader liked: a token
        # deleted, a login ended, a share revoked meanwhile (or the workspace being
        # deleted) places nothing; the caller is looked up afresh, then the workspace
        await self._caller_again()
        self.uws.workspaces.check_writable(self.find_workspace(workspace_id, WRITE_WORKSPACES))
        if self.text is not None:
            try:
                text_of(bytes(self.text), self.upload.path)
            except NotText as e:
                await self._discard()  # gone before the answer
                raise Unprocessable(str(e)) from None
        upload, self.upload = self.upload, None
        await in_thread(upload.commit, conflict=PreconditionFailed)
        self.uws.quotas.commit_disk(self.reservation, self.workspace, upload.size)
        self.set_header("ETag", upload.etag)
        self.write_json(
            {"path": upload.path, "size": upload.size},
            status=201,
        )

    async def _caller_again(self) -> None:
        """Look the caller up again (:meth:`caller_unchanged`), with their scopes of now:
        Forbidden if their credentials no longer stand for them (a token deleted or expired,
        a logout), before anything the request began is placed."""
        before = self.current_user
        if await self.caller_unchanged():
            return
        now = self.current_user
        if now is None or before is None or (now.kind, now.id) != (before.kind, before.id):
            raise Forbidden(
                "Your credentials ended while the file was sent (token deleted or expired, logged out):"
                " nothing was placed."
            )
        # the same caller with other scopes (a share revoked, a role given): decided afresh
        self._resolve_roles_and_scopes()

    @requires(READ_WORKSPACES)
    async def get(self, workspace_id, relpath):
        ws = self.find_workspace(workspace_id)
        kind = requested_format(self)
        if kind == "zip":
            await self._send_zip(ws, relpath)
            return
        if kind == "text":
            # plain text, shown as text whatever it holds (nosniff: never as HTML)
            text, st = await in_thread(self.uws.storage.read_text, ws.directory, relpath)
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.set_header("X-Content-Type-Options", "nosniff")
            self.set_header("ETag", etag(st))
            self.finish(text.encode())
            return
        await send_file(self, ws, relpath)

    async def _send_zip(self, ws, relpath: str) -> None:
        """The folder as a zip file, a piece at a time, each made in a thread only once
        the one before is sent (a client that reads slowly holds up only its own zip);
        at most ``UWSHub.max_zip_downloads_per_user`` at once by one reader."""

        def busy(most: int) -> TooManyRequests:
            return TooManyRequests(
                f"You are downloading {most} zip files already, the most at once; try again when one is done",
                ZIP_RETRY_SECONDS,
            )

        with self.uws.zip_downloads.hold(reader_of(self.current_user), busy):
            await self._stream_zip(ws, relpath)

    async def _stream_zip(self, ws, relpath: str) -> None:
        most = self.uws.zip_max_entries
        if len(await in_thread(self.uws.storage.tree, ws.directory, relpath, most + 1)) > most:
            shown = repr(relpath.strip("/")) if relpath.strip("/") else "The workspace"
            raise Unprocessable(
                f"{shown} holds more than {most} files and folders, too many for one zip file;"
                " download the folders in it one at a time"
            )
        stream = await in_thread(self.uws.storage.open_zip, ws.directory, relpath, ws.slug)
        allowed = self.reads_rechecked(ws.id)
        try:
            attachment(self, (os.path.basename(relpath.rstrip("/")) or ws.slug) + ".zip", "application/zip")
            while piece := await in_file_thread(stream.read):
                if not await self.send_piece(allowed, piece):
                    return
        except iostream.StreamClosedError:
            return  # the client went away
        finally:
            await in_file_thread(stream.close)
        self.finish()

    @requires(WRITE_WORKSPACES)
    async def post(self, workspace_id, relpath):
        ws = self.find_workspace(workspace_id, WRITE_WORKSPACES)
        self.parse_collected(NewFileModel)
        with storage_refusals():
            entry = await self.uws.workspaces.make_folder(ws, relpath)
        self.write_json(entry.to_dict(), status=201)

    @requires(WRITE_WORKSPACES)
    async def patch(self, workspace_id, relpath):
        ws = self.find_workspace(workspace_id, WRITE_WORKSPACES)
        move = self.parse_collected(MoveFileModel)
        with storage_refusals():
            entry = await self.uws.workspaces.move_path(ws, relpath, move.path, overwrite=move.overwrite)
        self.write_json(entry.to_dict())

    @requires(WRITE_WORKSPACES)
    async def delete(self, workspace_id, relpath):
        ws = self.find_workspace(workspace_id, WRITE_WORKSPACES)
        recursive = query_bool(self.get_argument("recursive", None), "recursive")
        with storage_refusals():
            entry, freed = await self.uws.workspaces.delete_path(ws, relpath, recursive=recursive)
        self.write_json({"path": entry.path, "type": entry.type, "freed_bytes": freed})

    def parse_collected(self, model):
        """The collected JSON body, validated (:meth:`parse_body`)."""
        self.request.body = bytes(self.body or b"")
        return self.parse_body(model)


default_handlers = [
    (r"/api/workspaces/([^/]+)/files", WorkspaceFilesAPIHandler),
    # an empty path too: a PUT without one is a 400 saying a path is needed, not a 404
    (r"/api/workspaces/([^/]+)/files/(.*)", WorkspaceFileAPIHandler),
]
