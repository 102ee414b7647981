"""REST API: job types and jobs, and batch jobs' logs (read, and followed live)."""

from __future__ import annotations

import asyncio
import hmac
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from tornado.iostream import StreamClosedError

from .. import access
from ..errors import BadRequest, Conflict, Forbidden
from ..filethreads import in_file_thread
from ..inputs import Text
from ..jobs import logs
from ..jobs.limits import MemorySize, Partition, TimeLimit
from ..models import job_model
from ..orm import Job
from ..scopes import LAUNCH_JOBS, READ_WORKSPACES, WRITE_WORKSPACES, requires
from ..states import JobStatus
from ..workspaces.listing import owned_by
from .base import UWSAPIHandler, parse_id

#: how often a follow of a log looks for more
FOLLOW_INTERVAL_SECONDS = 0.5


class ResourcesModel(BaseModel):
    """Requested resources; each resource kind says which it honours and their limits."""

    model_config = ConfigDict(extra="forbid")

    cpus: int | None = Field(None, ge=1, le=4096)
    memory: MemorySize | None = None
    gpus: int | None = Field(None, ge=0, le=64)
    time_limit: TimeLimit | None = None
    partition: Partition | None = None


class JobCreateModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    job_type: Text = Field(min_length=1, max_length=63)
    resource: Text | None = Field(None, min_length=1, max_length=63)
    resources: ResourcesModel = Field(default_factory=ResourcesModel)
    #: a batch job type's parameters (checked against its declaration by the job service)
    parameters: dict[str, Any] = Field(default_factory=dict, max_length=256)


class JobTypesAPIHandler(UWSAPIHandler):
    @requires(READ_WORKSPACES)
    def get(self):
        self.write_json([jt.public_model() for jt in self.uws.job_types.values()])


class WorkspaceJobsAPIHandler(UWSAPIHandler):
    @requires(LAUNCH_JOBS)
    async def post(self, workspace_id):
        ws = self.find_workspace(workspace_id, LAUNCH_JOBS)
        body = self.parse_body(JobCreateModel)
        launcher = await self.fresh_launcher(ws)
        job = self.uws.jobs.launch(
            ws,
            body.job_type,
            body.resource,
            body.resources.model_dump(exclude_none=True),
            self.actor,
            body.parameters,
            launcher=launcher,
        )
        self.write_json(job_model(job), status=202)


class JobsAPIHandler(UWSAPIHandler):
    @requires(READ_WORKSPACES)
    def get(self):
        where = access.workspace_clause(self, READ_WORKSPACES, Job.owner_id, Job.workspace_id)
        workspace = self.get_argument("workspace", None)
        if workspace is not None:
            where = where & (Job.workspace_id == parse_id(workspace, "workspace"))
        statuses = self.status_filter(JobStatus)
        if statuses is not None:
            where = where & Job.status.in_(statuses)
        job_type = self.get_argument("job_type", None)
        if job_type is not None:
            where = where & (Job.job_type == job_type)
        owner = self.get_argument("owner", None)
        if owner is not None:
            where = where & owned_by(Job.owner_id, owner)
        offset, limit = self.get_api_pagination()
        jobs = self.uws.jobs
        models = [job_model(job) for job in jobs.page(where, offset, limit)]
        self.write_json(self.paginated_model(models, offset, limit, jobs.count(where)))


class JobAPIHandler(UWSAPIHandler):
    @requires(READ_WORKSPACES)
    async def get(self, job_id):
        job = self.find_job(job_id)
        results = await self.uws.jobs.results(job)
        self.write_json(job_model(job, results, self.hub.base_url + "api/"))

    @requires(LAUNCH_JOBS)
    async def delete(self, job_id):
        job = self.find_job(job_id, LAUNCH_JOBS)
        results = self.get_argument("results", "false")
        if results not in ("true", "false"):
            raise BadRequest(f"results must be true or false, not {results[:20]!r}")
        if results == "true":
            self.find_workspace(str(job.workspace_id), WRITE_WORKSPACES)
        model = job_model(job)
        await self.uws.jobs.delete(job, self.actor, results=results == "true")
        self.write_json(model)


async def send_log(
    handler: UWSAPIHandler, job_id: int, path: str, uid: int, start: int = 0, end: int | None = None
) -> None:
    """Answer with bytes ``start`` to ``end`` of a job's log, streamed in pieces
    (:func:`uws_hub.jobs.logs.pieces`: never held whole). A log is as long as its job
    likes (terabytes of a hole cost it nothing): one who may no longer read it meanwhile
    (a token deleted, a login ended, an admin no more) is cut off, as from a zip
    (:meth:`~.base.UWSAPIHandler.rechecked`)."""
    allowed = handler.rechecked(lambda: handler.still_reads_output(job_id))
    try:
        async for data in logs.pieces(path, uid, start, end):
            if not await handler.send_piece(allowed, data):
                return
    except StreamClosedError:
        return  # the client stopped reading
    handler.finish()


class JobLogMixin(UWSAPIHandler):
    def find_log(self, job_id: str) -> tuple[Job, str, int]:
        """The batch job, its log's path and the uid its file must have (owner and admins only)."""
        job = self.find_job(job_id)
        if not access.may_read_job_output(self, job):
            raise Forbidden("A job's log is shown to its owner and admins only")
        if job.interactive:
            raise Conflict(
                f"Job {job.id} is interactive: it has no log, read what its server printed"
                f" at GET /hub/api/jobs/{job.id}/output"
            )
        return job, self.uws.jobs.log_path(job), self.uws.jobs.log_owner(job)


class JobLogAPIHandler(JobLogMixin):
    """The log as text: whole, or one byte range (``Range: bytes=-4096`` is its tail)."""

    @requires(READ_WORKSPACES)
    async def get(self, job_id):
        job, path, uid = self.find_log(job_id)
        size = await in_file_thread(logs.log_size, path, uid)
        wanted = logs.parse_range(self.request.headers.get("Range"), size)
        start, end = wanted or (0, size)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("Accept-Ranges", "bytes")
        self.set_header("Cache-Control", "no-store")
        if wanted is not None:
            self.set_status(206)
            self.set_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        await send_log(self, job.id, path, uid, start, end)


class JobLogStreamAPIHandler(JobLogMixin):
    """The log followed live, as server-sent events: each ``log`` event holds whole lines
    (its ``id`` the byte offset after them, so a reconnection resumes there); an ``end``
    event with the job's status once it ended and everything was sent.

    Who may read it is asked again every ``UWSHub.stream_recheck_seconds`` (the caller, as the event
    streams do, and the rule for the log): a follow of a job that runs for days ends
    once its reader lost the right to it."""

    keepalive_seconds = 15.0

    @requires(READ_WORKSPACES)
    async def get(self, job_id):
        job, path, uid = self.find_log(job_id)
        # a reconnecting EventSource sends the URL it first opened: its Last-Event-ID wins
        given = self.resume_points("offset")
        offset = given[-1] if given else 0
        with self.stream_slot():
            await self._follow(job, path, uid, offset)

    async def _follow(self, job: Job, path: str, uid: int, offset: int) -> None:
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        job_pk = job.id
        idle = 0.0
        loop = asyncio.get_running_loop()
        every = self.uws.stream_recheck_seconds
        recheck = loop.time() + every
        try:
            self.write(": following\n\n")
            await self.flush()
            while True:
                current = Job.find(self.db, job_pk)
                if loop.time() >= recheck:
                    recheck = loop.time() + every
                    if not await self.caller_unchanged() or (
                        current is not None and not access.may_read_job_output(self, current)
                    ):
                        break
                ended = current is None or current.terminal
                data, size = await in_file_thread(logs.read_log, path, uid, offset, offset + logs.FOLLOW_CHUNK_BYTES)
                full = len(data) == logs.FOLLOW_CHUNK_BYTES
                send = logs.complete_lines(data, final=(ended and offset + len(data) >= size) or full)
                if send:
                    offset += len(send)
                    lines = send.decode("utf-8", "replace").split("\n")
                    if lines and lines[-1] == "":
                        lines.pop()
                    body = "".join(f"data: {line}\n" for line in lines)
                    self.write(f"id: {offset}\nevent: log\n{body}\n")
                    await self.flush()
                    idle = 0.0
                    if full:
                        continue
                if ended and offset >= size:
                    end = {"job_id": job_pk, "status": current.status if current else "deleted", "offset": offset}
                    if current is not None:
                        end.update(exit_code=current.exit_code, exit_signal=current.exit_signal, reason=current.reason)
                    self.write(f"event: end\ndata: {json.dumps(end)}\n\n")
                    break
                await asyncio.sleep(FOLLOW_INTERVAL_SECONDS)
                idle += FOLLOW_INTERVAL_SECONDS
                if idle >= self.keepalive_seconds:
                    self.write(": keepalive\n\n")
                    await self.flush()
                    idle = 0.0
        except StreamClosedError:
            return
        self.finish()


class JobOutputAPIHandler(UWSAPIHandler):
    @requires(READ_WORKSPACES)
    async def get(self, job_id):
        job = self.find_job(job_id)
        if not access.may_read_job_output(self, job):
            raise Forbidden("A job's output is shown to its owner and admins only")
        self.write_json({"job_id": job.id, "output": await self.uws.jobs.output(job)})


class JobStopAPIHandler(UWSAPIHandler):
    @requires(LAUNCH_JOBS)
    def post(self, job_id):
        job = self.find_job(job_id, LAUNCH_JOBS)
        was_terminal = job.terminal
        job = self.uws.jobs.stop(job, self.actor)
        self.write_json(job_model(job), status=200 if was_terminal else 202)


class JobWakeAPIHandler(UWSAPIHandler):
    """``POST /hub/api/jobs/{id}/wake``: a starting job's own server (its SLURM batch
    script, once its port is in the job's comment) asks the hub to look at its start
    now instead of at its next poll.

    Only the job's own server token (``JUPYTERHUB_API_TOKEN`` of that start) may:
    any other caller, a user's own token, a stranger's or none, gets a 403 and
    starts nothing. The request carries nothing the hub uses (the spawner reads
    the job's state from its resource as without it); a spawner acts on one wake
    a second at most (later ones are put off, see the spawner's ``wake``), and a
    job whose start no longer waits gets a 409.
    """

    def post(self, job_id):
        number = parse_id(job_id, "job")
        token = self.get_auth_token()
        user = self.current_user
        spawner = None
        if token and user is not None and user.kind == "user":
            for candidate in user.spawners.values():
                launch = getattr(candidate, "launch", None)
                if (
                    launch is not None
                    and launch.job_id == number
                    and candidate.api_token
                    and hmac.compare_digest(candidate.api_token.encode(), token.encode())
                ):
                    spawner = candidate
        if spawner is None:
            raise Forbidden("Only a job's own server, with its token, wakes the hub for it")
        if not spawner.wake():
            raise Conflict(f"Job {number} is not starting: there is nothing to wake the hub for")
        self.set_status(204)
        self.finish()


default_handlers = [
    (r"/api/job-types", JobTypesAPIHandler),
    (r"/api/workspaces/([^/]+)/jobs", WorkspaceJobsAPIHandler),
    (r"/api/jobs", JobsAPIHandler),
    (r"/api/jobs/([^/]+)", JobAPIHandler),
    (r"/api/jobs/([^/]+)/output", JobOutputAPIHandler),
    (r"/api/jobs/([^/]+)/log", JobLogAPIHandler),
    (r"/api/jobs/([^/]+)/log/stream", JobLogStreamAPIHandler),
    (r"/api/jobs/([^/]+)/stop", JobStopAPIHandler),
    (r"/api/jobs/([^/]+)/wake", JobWakeAPIHandler),
]
