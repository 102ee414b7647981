"""The HuBMAP-compatible API's routes: tokens, workspaces, jobs, job types, parameters, status.

Each parses HuBMAP's request, calls uws-hub's services (the same ones, with
the same checks, quotas and events as uws-hub's own API) and answers in
HuBMAP's words (:mod:`.models`). Sharing and users are in :mod:`.shares`.
Every route answers with and without its trailing slash (HuBMAP's server
has it, the portal leaves it out), never with a redirect.
"""

from __future__ import annotations

import asyncio
import json
import os
from urllib.parse import urlsplit, urlunsplit

from pydantic import ValidationError
from sqlalchemy import func, select
from tornado.websocket import WebSocketClosedError, WebSocketHandler

from ... import __version__, access
from ...apihandlers.base import validation_message
from ...apihandlers.events import EventFilter, EventsWebSocketHandler
from ...apihandlers.jobs import ResourcesModel
from ...apihandlers.workspaces import WorkspaceCreateModel, WorkspaceUpdateModel
from ...errors import Conflict, Forbidden, Unprocessable
from ...filethreads import in_file_thread
from ...jobs.limits import time_limit_seconds
from ...orm import Job, Workspace
from ...quotas.limits import job_cpus
from ...scopes import LAUNCH_JOBS, READ_WORKSPACES, WRITE_WORKSPACES, requires
from ...states import JobStatus
from ...workspaces.paths import NotFound as StorageNotFound
from ...workspaces.paths import PathError
from ...workspaces.service import SeedFile
from . import models, tokens
from .base import HubMAPHandler, parse_int
from .datasets import link_targets
from .models import HubMAPError, JobFacts
from .store import HubMAPStore

#: the most entries ``current_workspace_details`` lists per workspace (HuBMAP's portal
#: reads the notebooks and the dataset links; a workspace of a million files stays cheap)
MAX_LISTED_ENTRIES = 2000


class TranslatingHandler(HubMAPHandler):
    """Builds HuBMAP's jobs and workspaces from uws-hub's."""

    @property
    def store(self) -> HubMAPStore:
        return HubMAPStore(self.db)

    def job_facts(self, job: Job, offered: dict[str, str]) -> JobFacts:
        jobs = self.uws.jobs
        limit = jobs.time_limit_seconds(job)
        if not limit and job.resources.get("time_limit"):
            limit = time_limit_seconds(job.resources["time_limit"])
        url = job.url if job.status == JobStatus.running.value else None
        origin = self.public_origin
        if url is not None and "://" in url:
            # the server's own origin (JupyterHub's subdomain_host): the portal joins the two
            parts = urlsplit(url)
            origin, url = f"{parts.scheme}://{parts.netloc}", urlunsplit(("", "", parts.path, parts.query, ""))
        return JobFacts(
            job_type_id=models.job_type_id_of(job.job_type, offered),
            url=url,
            url_domain=origin,
            resource_options=models.options_of(job.resources or {}, self.compat.resource_options),
            time_limit_seconds=limit,
            cpus=job_cpus(job),
            now=self.now(),
        )

    def job_models(self, jobs: list[Job]) -> list[dict]:
        offered = self.offered_job_types()
        return [models.job_model(job, self.job_facts(job, offered)) for job in jobs]

    async def entries(self, ws: Workspace) -> list[tuple[str, str]]:
        """What is in the workspace (dot entries left out), [] if its directory cannot be read."""
        try:
            return await in_file_thread(self.uws.storage.walk, ws.directory, MAX_LISTED_ENTRIES, hidden=False)
        except (OSError, PathError, StorageNotFound):
            return []

    async def details(self, ws: Workspace) -> dict:
        """A workspace's ``workspace_details``."""
        row = self.store.get([ws.id]).get(ws.id)
        return {
            "request_workspace_details": (row.request_details if row else None) or dict(models.EMPTY_DETAILS),
            "current_workspace_details": models.current_workspace_details(await self.entries(ws)),
        }

    async def workspace_models(self, workspaces: list[Workspace]) -> list[dict]:
        ids = [ws.id for ws in workspaces]
        rows = self.store.get(ids)
        launches = (
            dict(
                self.db.execute(
                    select(Job.workspace_id, func.max(Job.created_at))
                    .where(Job.workspace_id.in_(ids))
                    .group_by(Job.workspace_id)
                ).all()
            )
            if ids
            else {}
        )
        result = []
        for ws in workspaces:
            row = rows.get(ws.id)
            result.append(
                models.workspace_model(
                    ws,
                    default_job_type=row.default_job_type if row else None,
                    request_details=row.request_details if row else None,
                    entries=await self.entries(ws),
                    last_launch=launches.get(ws.id),
                )
            )
        return result

    async def add_details(self, ws: Workspace, details: models.WorkspaceDetails) -> None:
        """Write the files and make the symlinks of a create's or an update's ``workspace_details``."""
        links = await link_targets(
            details.symlinks,
            details.globus_groups_token,
            self.compat.dataset_lookup,
            self.compat.lookup_timeout_seconds,
        )
        for spec in details.files:
            await self.uws.workspaces.write_file(ws, spec.path, spec.content.encode("utf-8"))
        if links:
            await self.uws.workspaces.add_links(ws, links, self.compat.dataset_roots)

    def check_job_type(self, job_type: object) -> str:
        """The uws-hub job type of a HuBMAP job type id, or HuBMAP's 400."""
        offered = self.offered_job_types()
        if not isinstance(job_type, str) or job_type not in offered:
            raise HubMAPError(400, f"{job_type} is not in the list of available job types.")
        return offered[job_type]


def _checked(model, data: dict):
    """``data`` through one of uws-hub's request models (its limits on names, lengths, characters)."""
    try:
        return model.model_validate(data, strict=True)
    except ValidationError as e:
        raise HubMAPError(400, validation_message(e)) from None


# ---------------------------------------------------------------- tokens
class TokensHandler(HubMAPHandler):
    anonymous = True

    async def post(self):
        body = self.json_body(invalid="{!r}")
        token = await tokens.exchange(self, body, list(self.compat.token_scopes), self.compat.token_lifetime_seconds)
        self.answer({"success": True, "message": "Successful authentication.", "token": token})


# ---------------------------------------------------------------- workspaces
class WorkspacesHandler(TranslatingHandler):
    #: a creation's or update's body holds its files (:mod:`uws_hub.bodies`)
    takes_seed_files = True

    @requires(READ_WORKSPACES)
    async def get(self, workspace_id=None):
        where = access.workspace_clause(self, READ_WORKSPACES, Workspace.owner_id, Workspace.id)
        if workspace_id is not None:
            number = parse_int(workspace_id)
            where = where & (Workspace.id == (number if number is not None else 0))
        for name in ("name", "description", "status"):
            value = self.get_query_argument(name, None)
            if value is not None:
                where = where & (getattr(Workspace, name) == value)
        found = self.uws.workspaces.page(where, 0, self.uws.workspaces.count(where))
        self.answer(models.listing("workspaces", await self.workspace_models(found), "Workspace"))

    @requires(WRITE_WORKSPACES)
    async def post(self):
        owner = self.caller
        if not access.may(self, WRITE_WORKSPACES, owner):
            raise Forbidden(f"Creating workspaces requires the scope {WRITE_WORKSPACES}")
        body = self.json_body()
        if "name" not in body or "description" not in body:
            raise HubMAPError(400, "Missing required fields.")
        default_job_type = body.get("default_job_type")
        if default_job_type is not None:
            self.check_job_type(default_job_type)
        details = models.parse_workspace_details(body.get("workspace_details", {}))
        checked = _checked(
            WorkspaceCreateModel,
            {
                "name": body["name"],
                "description": body["description"],
                "files": [{"path": f.path, "content": f.content} for f in details.files],
            },
        )
        links = await link_targets(
            details.symlinks,
            details.globus_groups_token,
            self.compat.dataset_lookup,
            self.compat.lookup_timeout_seconds,
        )
        for _, target in links:  # before anything is made: refused targets make no workspace
            try:
                await in_file_thread(self.uws.storage.link_target, target, self.compat.dataset_roots)
            except (PathError, StorageNotFound) as e:
                raise HubMAPError(400, f"Invalid symlink source path specified: {e}") from None
        # HuBMAP's workspace names need not be unique; uws-hub's slugs are
        slug = await self.uws.workspaces.free_slug(owner, checked.name)
        ws = await self.uws.workspaces.create(
            owner, checked.name, checked.description, [SeedFile(f.path, f.content) for f in checked.files], slug
        )
        try:
            if links:
                await self.uws.workspaces.add_links(ws, links, self.compat.dataset_roots)
        except Unprocessable:
            self.uws.workspaces.delete(ws, self.actor)
            raise
        row = self.store.row(ws.id)
        row.default_job_type = default_job_type
        row.request_details = details.request_model()
        self.db.commit()
        [model] = await self.workspace_models([ws])
        self.answer(models.success("Successful.", workspace=model))


class WorkspaceHandler(WorkspacesHandler):
    async def post(self, workspace_id):
        raise HubMAPError(405, "")

    @requires(WRITE_WORKSPACES)
    async def put(self, workspace_id):
        ws = self.workspace(workspace_id, WRITE_WORKSPACES)
        body = self.json_body()
        renames = "name" in body or "description" in body
        if renames and not access.may_workspace(self, WRITE_WORKSPACES, ws, grantees=False):
            raise Forbidden("Only the owner renames a workspace")
        if "default_job_type" in body and body["default_job_type"] is not None:
            self.check_job_type(body["default_job_type"])
        details = models.parse_workspace_details(body.get("workspace_details", {}))
        if renames:
            checked = _checked(WorkspaceUpdateModel, {k: body[k] for k in ("name", "description") if k in body})
            self.uws.workspaces.update(ws, checked.name, checked.description)
        await self.add_details(ws, details)
        if "default_job_type" in body:
            self.store.row(ws.id).default_job_type = body["default_job_type"]
        ws.updated_at = self.now()
        self.db.commit()
        self.answer(models.success("Update successful."))

    @requires(WRITE_WORKSPACES)
    async def delete(self, workspace_id):
        ws = self.workspace(workspace_id, WRITE_WORKSPACES, grantees=False)
        ws = await self.wait_for_stop(ws, WRITE_WORKSPACES, grantees=False)
        try:
            self.uws.workspaces.delete(ws, self.actor)
        except Conflict:
            raise HubMAPError(400, "Cannot delete workspace, jobs are running for this workspace.") from None
        self.answer(models.success(f"Workspace {workspace_id} queued for deletion."))


class WorkspaceActionHandler(TranslatingHandler):
    #: an upload's body holds its files, read whole as a creation's seed files (:mod:`uws_hub.bodies`)
    takes_seed_files = True

    @requires(READ_WORKSPACES)
    async def put(self, workspace_id, action):
        if action.lower() == "start":
            await self.start(workspace_id)
        elif action.lower() == "upload":
            await self.upload(workspace_id)
        else:
            raise HubMAPError(400, "Invalid PUT type passed.")

    async def start(self, workspace_id):
        ws = self.workspace(workspace_id, LAUNCH_JOBS)
        body = self.json_body()
        job_type_id, options = models.parse_start(body, self.store.default_job_type(ws.id))
        job_type = self.check_job_type(job_type_id)
        resources, errors = models.translate_options(options, self.compat.resource_options)
        if errors:
            raise models.invalid_options(errors)
        try:
            ResourcesModel.model_validate(resources, strict=True)
        except ValidationError as e:
            raise models.invalid_options([validation_message(e)]) from None
        ws = await self.wait_for_stop(ws, LAUNCH_JOBS)
        launcher = await self.fresh_launcher(ws)
        try:
            job = self.uws.jobs.launch(ws, job_type, None, resources, self.actor, launcher=launcher)
        except Unprocessable as e:
            # the job type's limits and the owner's quotas
            raise models.invalid_options([e.message]) from None
        [model] = self.job_models([job])
        self.answer(models.success("Successful start.", job=model))

    async def upload(self, workspace_id):
        ws = self.workspace(workspace_id, WRITE_WORKSPACES)
        parts = [f for files in self.request.files.values() for f in files]
        if not parts:
            raise HubMAPError(400, "No files found in request.")
        for part in parts:
            # at the workspace's top level under the part's own file name, as HuBMAP's server
            name = os.path.basename(part.filename.replace("\\", "/")).strip()
            if name in ("", ".", ".."):
                raise HubMAPError(400, f"Invalid file name {part.filename!r}")
            await self.uws.workspaces.write_file(ws, name, part.body)
        ws.updated_at = self.now()
        self.db.commit()
        self.answer(models.success("Successful upload."))


# ---------------------------------------------------------------- jobs
class JobsHandler(TranslatingHandler):
    @requires(READ_WORKSPACES)
    def get(self):
        where = access.workspace_clause(self, READ_WORKSPACES, Job.owner_id, Job.workspace_id)
        workspace_id = self.get_query_argument("workspace_id", None)
        if workspace_id is not None:
            where = where & (Job.workspace_id == (parse_int(workspace_id) or 0))
        resource_job_id = self.get_query_argument("resource_job_id", None)
        if resource_job_id is not None:
            where = where & (Job.resource_id == resource_job_id)
        job_type = self.get_query_argument("job_type", None)
        if job_type is not None:
            where = where & (Job.job_type == self.offered_job_types().get(job_type, ""))
        status = self.get_query_argument("status", None)
        if status is not None:
            where = where & Job.status.in_(models.uws_job_statuses(status))
        found = self.uws.jobs.page(where, 0, self.uws.jobs.count(where))
        self.answer(models.listing("jobs", self.job_models(found), "Job"))


class JobHandler(EventsWebSocketHandler, TranslatingHandler):
    """``GET jobs/{id}``, and on the same path a WebSocket of the job's status.

    HuBMAP's server sends ``{"status", "current_job_details"}`` at every poll of
    the job, to anyone who connects; this one sends it when the job changes
    (and once at the start), to those who may read the job: uws-hub's event
    stream of the job, in HuBMAP's shape.
    """

    @requires(READ_WORKSPACES)
    async def get(self, job_id):
        if self.request.headers.get("Upgrade", "").lower() == "websocket":
            self._job_id = self.job(job_id).id
            await WebSocketHandler.get(self, job_id)
            return
        number = parse_int(job_id)
        where = access.workspace_clause(self, READ_WORKSPACES, Job.owner_id, Job.workspace_id) & (
            Job.id == (number if number is not None else 0)
        )
        self.answer(models.listing("jobs", self.job_models(self.uws.jobs.page(where, 0, 1)), "Job"))

    def check_origin(self, origin):
        return origin in self.compat.cors_origins or super().check_origin(origin)

    def open(self, job_id):
        if self.take_stream_slot():
            self._subscription = self.subscribe(EventFilter(workspace_id=None, job_id=self._job_id, after=None))
            self._pump = asyncio.ensure_future(self._run())

    def _message(self) -> str | None:
        job = Job.find(self.db, self._job_id)
        if job is None:
            return None
        [model] = self.job_models([job])
        return json.dumps(
            {"status": model["status"], "current_job_details": model["job_details"]["current_job_details"]}
        )

    async def _run(self) -> None:
        sub = self._subscription
        assert sub is not None  # subscribed in open()
        try:
            message = self._message()
            while message is not None and not sub.closed.is_set():
                await self.write_message(message)
                batch: list[dict] = []
                while not batch and not sub.closed.is_set():
                    batch = await sub.next_batch(timeout=30)
                message = self._message()
            self.close()
        except WebSocketClosedError:
            pass


class JobActionHandler(TranslatingHandler):
    @requires(READ_WORKSPACES)
    def put(self, job_id, action):
        if action.lower() != "stop":
            raise HubMAPError(400, "Invalid PUT type passed.")
        job = self.job(job_id, LAUNCH_JOBS)
        if job.terminal or job.target == "stopped":
            raise HubMAPError(400, "This job is not running or pending.")
        never_launched = job.resource_id is None
        self.uws.jobs.stop(job, self.actor)
        self.answer(models.success("Successful stop." if never_launched else "Job queued to stop."))


# ---------------------------------------------------------------- open routes
class JobTypesHandler(HubMAPHandler):
    anonymous = True

    def get(self):
        names = {name: jt.display_name or name for name, jt in self.uws.job_types.items()}
        self.answer(models.success("Successful.", job_types=models.job_types_model(self.offered_job_types(), names)))


class ParametersHandler(HubMAPHandler):
    anonymous = True

    def get(self):
        offered = self.offered_job_types()
        job_type = self.uws.job_types[next(iter(offered.values()))]
        params = models.parameters(
            self.compat.resource_options, job_type.limits.model_dump(), job_type.default_resources.model_dump()
        )
        self.answer(models.success("Successful.", parameters=params))


class StatusHandler(HubMAPHandler):
    anonymous = True

    def get(self):
        self.answer(
            {
                "message": "",
                "success": True,
                "version": __version__,
                "build": "",
                "dependencies": {"main_resource": {"connected": True, "message": f"uws-hub {__version__}"}},
            }
        )


#: the routes of this module, relative to the API's base path (see :mod:`.routes`)
patterns = [
    (r"tokens", TokensHandler),
    (r"workspaces", WorkspacesHandler),
    (r"workspaces/([^/]+)", WorkspaceHandler),
    (r"workspaces/([^/]+)/([^/]+)", WorkspaceActionHandler),
    (r"jobs", JobsHandler),
    (r"jobs/([^/]+)", JobHandler),
    (r"jobs/([^/]+)/([^/]+)", JobActionHandler),
    (r"job_types", JobTypesHandler),
    (r"parameters", ParametersHandler),
    (r"status", StatusHandler),
]
