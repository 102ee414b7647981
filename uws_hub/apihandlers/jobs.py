"""REST API: job types and jobs."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from .. import access
from ..errors import Forbidden
from ..inputs import Text
from ..jobs.limits import MemorySize, Partition, TimeLimit
from ..models import job_model
from ..orm import Job
from ..scopes import LAUNCH_JOBS, READ_WORKSPACES, requires
from ..states import JobStatus
from ..workspaces.listing import owned_by
from .base import UWSAPIHandler, parse_id


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


class JobTypesAPIHandler(UWSAPIHandler):
    @requires(READ_WORKSPACES)
    def get(self):
        self.write_json([jt.public_model() for jt in self.uws.job_types.values()])


class WorkspaceJobsAPIHandler(UWSAPIHandler):
    @requires(LAUNCH_JOBS)
    async def post(self, workspace_id):
        ws = self.find_workspace(workspace_id, LAUNCH_JOBS)
        body = self.parse_body(JobCreateModel)
        if self.authenticator.refresh_pre_spawn:
            # as JupyterHub does before a spawn: fresh auth state (tokens for the job)
            owner = self.users[ws.owner]
            if await self.refresh_auth(owner, force=True) is None:
                raise Forbidden(f"{owner.name}'s login has expired; log in again to launch jobs")
        job = self.uws.jobs.launch(
            ws, body.job_type, body.resource, body.resources.model_dump(exclude_none=True), self.actor
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
        owner = self.get_argument("owner", None)
        if owner is not None:
            where = where & owned_by(Job.owner_id, owner)
        offset, limit = self.get_api_pagination()
        jobs = self.uws.jobs
        models = [job_model(job) for job in jobs.page(where, offset, limit)]
        self.write_json(self.paginated_model(models, offset, limit, jobs.count(where)))


class JobAPIHandler(UWSAPIHandler):
    @requires(READ_WORKSPACES)
    def get(self, job_id):
        self.write_json(job_model(self.find_job(job_id)))


class JobOutputAPIHandler(UWSAPIHandler):
    @requires(READ_WORKSPACES)
    async def get(self, job_id):
        job = self.find_job(job_id)
        if not access.may_read_output(self, job.owner):
            raise Forbidden("A job's output is shown to its owner and admins only")
        self.write_json({"job_id": job.id, "output": await self.uws.jobs.output(job)})


class JobStopAPIHandler(UWSAPIHandler):
    @requires(LAUNCH_JOBS)
    def post(self, job_id):
        job = self.find_job(job_id, LAUNCH_JOBS)
        was_terminal = job.terminal
        job = self.uws.jobs.stop(job, self.actor)
        self.write_json(job_model(job), status=200 if was_terminal else 202)


default_handlers = [
    (r"/api/job-types", JobTypesAPIHandler),
    (r"/api/workspaces/([^/]+)/jobs", WorkspaceJobsAPIHandler),
    (r"/api/jobs", JobsAPIHandler),
    (r"/api/jobs/([^/]+)", JobAPIHandler),
    (r"/api/jobs/([^/]+)/output", JobOutputAPIHandler),
    (r"/api/jobs/([^/]+)/stop", JobStopAPIHandler),
]
