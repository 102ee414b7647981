"""The UWS 1.1 routes: one job list per batch job type, each job and its child resources.

=============================================  ==========================================
``{jobs}`` = ``/hub/api/uws/{job type}``
=============================================  ==========================================
``GET {jobs}``                                 ``<uws:jobs>``; ``PHASE`` (repeatable), ``AFTER``, ``LAST``
``POST {jobs}``                                a new job (PENDING, or started with ``PHASE=RUN``): 303 to it
``GET {jobs}/{id}``                            ``<uws:job>``; blocks with ``WAIT`` (and ``PHASE``)
``POST {jobs}/{id}``                           ``ACTION=DELETE`` as DELETE; else parameters (PENDING)
``DELETE {jobs}/{id}``                         destroys the job: 303 to ``{jobs}``
``…/phase``                                    the phase; ``POST PHASE=RUN`` or ``ABORT``
``…/executionduration``, ``…/destruction``     seconds, an instant; ``POST`` sets them
``…/error``, ``…/quote``, ``…/owner``          text
``…/results``, ``…/results/{path}``            ``<uws:results>``, a result's file
``…/parameters``, ``…/parameters/{name}``      ``<uws:parameters>`` (``POST`` while PENDING), a value
``…/log``                                      the job's log (owner and admins)
=============================================  ==========================================

Every rule is the job service's (:mod:`uws_hub.jobs.service`): parameters,
launch checks and quotas, the queue, stops, time limits, destruction and
deletion; access is decided by the hub's scopes as in the JSON API, and a
job the caller may not read is not found (404). The handlers translate.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

from ... import access
from ...apihandlers.files import send_file
from ...apihandlers.jobs import send_log
from ...errors import BadRequest, Conflict, Forbidden, NotFound
from ...inputs import MAX_OFFSET
from ...jobs.types import JobType
from ...orm import Job, Workspace, utcnow
from ...scopes import LAUNCH_JOBS, READ_WORKSPACES, WRITE_WORKSPACES, requires
from ...slots import reader_of
from . import documents, forms, phases, translate
from .base import UWSHandler
from .config import IVOAUWS

#: the description of the workspace made for jobs created without ``WORKSPACE``
DEFAULT_WORKSPACE_DESCRIPTION = "Jobs created through the UWS interface (IVOA UWS 1.1) without a WORKSPACE"


class UWSJobsHandler(UWSHandler):
    """What the routes share: the job type of the URL, the job, URLs, and blocking."""

    def initialize(self, interface: IVOAUWS):
        #: the interface's options (``c.IVOAUWS``)
        self.interface = interface

    # ---------------------------------------------------------------- lookups
    def batch_job_type(self, name: str) -> JobType:
        job_type = self.uws.job_types.get(name)
        if job_type is None or job_type.interactive:
            offered = sorted(n for n, jt in self.uws.job_types.items() if not jt.interactive)
            raise NotFound(f"No UWS job list {name!r}; the batch job types are: {', '.join(offered) or 'none'}")
        return job_type

    def uws_job(self, job_type: str, job_id: str, scope: str = READ_WORKSPACES) -> Job:
        """The job, if it is of the URL's job type and the request may act on it with ``scope``."""
        self.batch_job_type(job_type)
        job = self.find_job(job_id, scope)
        if job.job_type != job_type:
            raise NotFound(f"No such job: {job_id}")
        return job

    def authorize_destruction(self, workspace_id: int) -> None:
        """403 unless the request may delete the results of a job in the workspace: a
        destruction (``DELETE``, a ``DESTRUCTION`` time) deletes them and the job's log."""
        self.find_workspace(str(workspace_id), WRITE_WORKSPACES)

    def form(self) -> forms.Form:
        if self.request.files:
            raise BadRequest("File uploads (inline parameters) are not taken; send the parameters as form fields")
        return forms.Form.from_request(self.request.arguments)

    # ---------------------------------------------------------------- URLs
    def list_url(self, job_type: str) -> str:
        return f"{self.public_origin}{self.hub.base_url}{self.interface.base_path}/{quote(job_type, safe='')}"

    def job_url(self, job: Job) -> str:
        return f"{self.list_url(job.job_type)}/{job.id}"

    # ---------------------------------------------------------------- answers
    async def job_document(self, job: Job) -> bytes:
        url = self.job_url(job)
        files = await self.uws.jobs.results(job) if job.archived_at is None else []
        document = translate.job_document(
            job,
            url,
            results=translate.result_list(files or [], self.uws.jobs.results_path(job) or "", url),
            execution_duration=self.uws.jobs.time_limit_seconds(job),
            log_readable=access.may_read_job_output(self, job) and job.archived_at is None,
        )
        return documents.job_document(document)

    def see_job(self, job: Job) -> None:
        self.see_other(self.job_url(job))

    # ---------------------------------------------------------------- waiting
    async def wait_for_change(self, job: Job, seconds: float, *, until: Any = None) -> None:
        """Wait, holding no thread, until the job's phase changes (or ``until(job)`` is
        true), it is deleted, ``seconds`` passed or the client went away; a 403 if the
        caller changed meanwhile (:meth:`watch_caller`: a token deleted, the admin flag
        removed), as a new request would be refused or authorized afresh."""
        with self.uws.streams.try_hold(reader_of(self.current_user)) as taken:
            # over UWSHub.max_streams_per_user: answered at once (UWS lets the
            # service answer a WAIT before it ends; the client asks again)
            if taken:
                await self._wait(job, seconds, until)

    async def _wait(self, job: Job, seconds: float, until: Any) -> None:
        job_id = job.id
        events = self.uws.events
        self._subscription = sub = events.subscribe(lambda event: event["kind"] == "job" and event["job_id"] == job_id)
        self.watch_caller(sub)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        phase = translate.job_phase(job)
        try:
            while not sub.closed.is_set() and (left := deadline - loop.time()) > 0:
                await sub.next_batch(timeout=left)
                current = Job.find(self.db, job_id)
                if current is None or translate.job_phase(current) != phase or (until and until(current)):
                    break
        finally:
            events.unsubscribe(sub)
        if self.caller_changed:
            raise Forbidden("Your credentials or rights changed while this request waited; send it again")

    def on_connection_close(self):
        sub = getattr(self, "_subscription", None)
        if sub is not None:
            self.uws.events.unsubscribe(sub)  # ends the wait


class JobListHandler(UWSJobsHandler):
    @requires(READ_WORKSPACES)
    def get(self, job_type):
        self.batch_job_type(job_type)
        wanted = forms.parse_list_filter(self.form())
        where = access.workspace_clause(self, READ_WORKSPACES, Job.owner_id, Job.workspace_id)
        where &= (Job.job_type == job_type) & Job.interactive.is_(False)
        if wanted.phases:
            where &= translate.or_phases(wanted.phases)
        else:
            where &= Job.archived_at.is_(None)
        if wanted.after is not None:
            where &= Job.created_at > wanted.after
        # the newest first (ids grow with creation times), the LAST newest if asked
        jobs = self.uws.jobs.page(where, 0, wanted.last or MAX_OFFSET)
        list_url = self.list_url(job_type)
        self.write_xml(documents.jobs_document(translate.job_ref(job, f"{list_url}/{job.id}") for job in jobs))

    @requires(LAUNCH_JOBS)
    async def post(self, job_type):
        kind = self.batch_job_type(job_type)
        creation = forms.parse_creation(self.form(), {name: spec.type for name, spec in kind.parameters.items()})
        ws = await self.workspace_for(creation.workspace)
        if creation.destruction is not None:
            self.authorize_destruction(ws.id)
        launcher = await self.fresh_launcher(ws)
        service = self.uws.jobs
        job = service.launch(
            ws,
            kind.name,
            None,
            {},
            self.actor,
            creation.parameters,
            launcher=launcher,
            held=True,
            run_id=creation.run_id,
        )
        if creation.execution_duration is not None:
            service.set_time_limit(job, creation.execution_duration, self.actor)
        if creation.destruction is not None:
            service.set_destruction(job, creation.destruction, self.actor)
        if creation.run:
            service.run(job, self.actor)
        self.see_job(job)

    async def workspace_for(self, name: str | None) -> Workspace:
        """The workspace to create the job in: ``WORKSPACE`` (an id, or a slug of the
        caller's), else the caller's default one, made the first time."""
        if name is not None and name.isascii() and name.isdigit():
            return self.find_workspace(name, LAUNCH_JOBS)
        user = getattr(self.current_user, "orm_user", None)
        if user is None:
            raise BadRequest("WORKSPACE is required: only users have a default workspace")
        slug = name if name is not None else self.interface.default_workspace
        ws = Workspace.find_by_slug(self.db, user.id, slug)
        if ws is None and name is not None:
            raise NotFound(f"You have no workspace {name!r}; give its id or slug, or leave WORKSPACE out")
        if ws is None:
            if not access.may(self, WRITE_WORKSPACES, user):
                raise Forbidden(f"Creating your workspace {slug!r} for UWS jobs requires the scope {WRITE_WORKSPACES}")
            try:
                ws = await self.uws.workspaces.create(user, "UWS jobs", DEFAULT_WORKSPACE_DESCRIPTION, [], slug=slug)
            except Conflict:
                # made by a request at the same time
                ws = Workspace.find_by_slug(self.db, user.id, slug)
                if ws is None:
                    raise
        return self.find_workspace(str(ws.id), LAUNCH_JOBS)


class JobHandler(UWSJobsHandler):
    @requires(READ_WORKSPACES)
    async def get(self, job_type, job_id):
        job = self.uws_job(job_type, job_id)
        seconds, last_seen = forms.parse_wait(self.form(), self.interface.max_wait_seconds)
        phase = translate.job_phase(job)
        if seconds > 0 and phase in phases.ACTIVE_PHASES and (last_seen is None or last_seen == phase):
            await self.wait_for_change(job, seconds)
            job = self.uws_job(job_type, job_id)
        self.write_xml(await self.job_document(job))

    @requires(LAUNCH_JOBS)
    async def post(self, job_type, job_id):
        job = self.uws_job(job_type, job_id, LAUNCH_JOBS)
        form = self.form()
        action = form.one("ACTION")
        if action is not None:
            if action.strip().upper() != "DELETE":
                raise BadRequest(f"ACTION: only ACTION=DELETE is known, not {action[:40]!r}")
            await self.destroy(job)
            return
        set_parameters(self, job, form)
        self.see_job(job)

    @requires(LAUNCH_JOBS)
    async def delete(self, job_type, job_id):
        await self.destroy(self.uws_job(job_type, job_id, LAUNCH_JOBS))

    async def destroy(self, job: Job) -> None:
        """UWS's deletion: an ended job is deleted with its results and log (then 404). A
        job still running is aborted first and deleted once it ended; if it takes longer
        than ``max_wait_seconds``, the hub destroys it when it ends (it is ARCHIVED).

        The caller's rights are asked again after the wait, as a new request would ask
        them: a share revoked meanwhile deletes nothing (the stop stands)."""
        self.authorize_destruction(job.workspace_id)
        list_url = self.list_url(job.job_type)
        service = self.uws.jobs
        if not job.terminal:
            service.stop(job, self.actor, "Deleted on request (UWS)")
            await self.wait_for_change(job, self.interface.max_wait_seconds, until=lambda j: j.terminal)
            if Job.find(self.db, job.id) is None:
                self.see_other(list_url)
                return
            job = self.uws_job(job.job_type, str(job.id), LAUNCH_JOBS)
            self.authorize_destruction(job.workspace_id)
        if job.terminal:
            await service.delete(job, self.actor, results=True)
        else:
            service.set_destruction(job, utcnow(), self.actor)
        self.see_other(list_url)


def set_parameters(handler: UWSJobsHandler, job: Job, form: forms.Form) -> None:
    """``POST`` of parameters to a PENDING job (the job or its ``…/parameters``)."""
    kind = handler.batch_job_type(job.job_type)
    values = forms.declared_parameters(form, {name: spec.type for name, spec in kind.parameters.items()}, control=False)
    if not values:
        raise BadRequest(f"No parameters given; the job type takes: {', '.join(kind.parameters) or 'none'}")
    handler.authorize_held(job)
    handler.uws.jobs.set_parameters(job, values, handler.actor)


class PhaseHandler(UWSJobsHandler):
    @requires(READ_WORKSPACES)
    def get(self, job_type, job_id):
        self.write_text(translate.job_phase(self.uws_job(job_type, job_id)))

    @requires(LAUNCH_JOBS)
    def post(self, job_type, job_id):
        job = self.uws_job(job_type, job_id, LAUNCH_JOBS)
        action = forms.parse_phase_action(self.form().one("PHASE"))
        if action == "RUN":
            self.authorize_held(job)
            self.uws.jobs.run(job, self.actor)
        else:
            phase = translate.job_phase(job)
            if phase not in phases.ACTIVE_PHASES and phase != phases.ABORTED:
                raise Conflict(f"Job {job.id} is {phase}: there is nothing to abort")
            self.uws.jobs.stop(job, self.actor, "Aborted on request (UWS PHASE=ABORT)")
        self.see_job(job)


class ExecutionDurationHandler(UWSJobsHandler):
    @requires(READ_WORKSPACES)
    def get(self, job_type, job_id):
        job = self.uws_job(job_type, job_id)
        self.write_text(str(round(self.uws.jobs.time_limit_seconds(job))))

    @requires(LAUNCH_JOBS)
    def post(self, job_type, job_id):
        job = self.uws_job(job_type, job_id, LAUNCH_JOBS)
        text = self.form().one("EXECUTIONDURATION")
        if text is None:
            raise BadRequest("EXECUTIONDURATION is required: the job's time limit in seconds (0: none)")
        self.authorize_held(job)
        self.uws.jobs.set_time_limit(job, forms.parse_execution_duration(text), self.actor)
        self.see_job(job)


class DestructionHandler(UWSJobsHandler):
    @requires(READ_WORKSPACES)
    def get(self, job_type, job_id):
        self.write_text(documents.isotime(self.uws_job(job_type, job_id).destroy_at) or "")

    @requires(LAUNCH_JOBS)
    def post(self, job_type, job_id):
        job = self.uws_job(job_type, job_id, LAUNCH_JOBS)
        text = self.form().one("DESTRUCTION")
        if text is None:
            raise BadRequest("DESTRUCTION is required: when the hub destroys the job (ISO 8601, UTC)")
        self.authorize_destruction(job.workspace_id)
        self.uws.jobs.set_destruction(job, forms.parse_time(text, "DESTRUCTION"), self.actor)
        self.see_job(job)


class ErrorHandler(UWSJobsHandler):
    """Why the job failed or was aborted (its reason), and for its owner and admins the
    end of its log, credentials redacted."""

    @requires(READ_WORKSPACES)
    async def get(self, job_type, job_id):
        job = self.uws_job(job_type, job_id)
        text = job.reason or ""
        if job.archived_at is None and access.may_read_job_output(self, job):
            output = await self.uws.jobs.output(job)
            if output:
                text += f"\n\nThe end of the job's log:\n{output}"
        self.write_text(text + "\n" if text else "")


class QuoteHandler(UWSJobsHandler):
    @requires(READ_WORKSPACES)
    def get(self, job_type, job_id):
        self.uws_job(job_type, job_id)
        self.write_text("")  # the hub does not predict when a job ends


class OwnerHandler(UWSJobsHandler):
    @requires(READ_WORKSPACES)
    def get(self, job_type, job_id):
        self.write_text(self.uws_job(job_type, job_id).owner.name)


class ResultsHandler(UWSJobsHandler):
    @requires(READ_WORKSPACES)
    async def get(self, job_type, job_id):
        job = self.uws_job(job_type, job_id)
        url = self.job_url(job)
        files = await self.uws.jobs.results(job) if job.archived_at is None else []
        results = translate.result_list(files or [], self.uws.jobs.results_path(job) or "", url)
        self.write_xml(documents.results_document(results))


class ResultFileHandler(UWSJobsHandler):
    """A result: a file of the job's results folder, read as the files API reads it."""

    @requires(READ_WORKSPACES)
    async def get(self, job_type, job_id, path):
        job = self.uws_job(job_type, job_id)
        folder = self.uws.jobs.results_path(job)
        if folder is None or job.archived_at is not None:
            raise NotFound(f"Job {job.id} has no results")
        await send_file(self, job.workspace, f"{folder}/{path}")


class ParametersHandler(UWSJobsHandler):
    @requires(READ_WORKSPACES)
    def get(self, job_type, job_id):
        job = self.uws_job(job_type, job_id)
        self.write_xml(documents.parameters_document(translate.parameter_list(job.parameters or {}, self.job_url(job))))

    @requires(LAUNCH_JOBS)
    def post(self, job_type, job_id):
        job = self.uws_job(job_type, job_id, LAUNCH_JOBS)
        set_parameters(self, job, self.form())
        self.see_job(job)


class ParameterHandler(UWSJobsHandler):
    """One parameter's value as text (what a parameter given by reference points to)."""

    @requires(READ_WORKSPACES)
    def get(self, job_type, job_id, name):
        job = self.uws_job(job_type, job_id)
        values = job.parameters or {}
        if name not in values:
            raise NotFound(f"Job {job.id} has no parameter {name[:40]!r}")
        self.write_text(translate.parameter_text(values[name]))


class LogHandler(UWSJobsHandler):
    """The job's log (its command's stdout and stderr), for its owner and admins."""

    @requires(READ_WORKSPACES)
    async def get(self, job_type, job_id):
        job = self.uws_job(job_type, job_id)
        if not access.may_read_job_output(self, job):
            raise Forbidden("A job's log is shown to its owner and admins only")
        if job.archived_at is not None:
            raise NotFound(f"Job {job.id} was destroyed; its log is gone")
        path, uid = self.uws.jobs.log_path(job), self.uws.jobs.log_owner(job)
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        await send_log(self, job.id, path, uid)


_JOB = r"([^/]+)/([^/]+)"

patterns: list[tuple[str, type]] = [
    (r"([^/]+)", JobListHandler),
    (_JOB, JobHandler),
    (_JOB + "/phase", PhaseHandler),
    (_JOB + "/executionduration", ExecutionDurationHandler),
    (_JOB + "/destruction", DestructionHandler),
    (_JOB + "/error", ErrorHandler),
    (_JOB + "/quote", QuoteHandler),
    (_JOB + "/owner", OwnerHandler),
    (_JOB + "/results", ResultsHandler),
    (_JOB + "/results/(.+)", ResultFileHandler),
    (_JOB + "/parameters", ParametersHandler),
    (_JOB + "/parameters/([^/]+)", ParameterHandler),
    (_JOB + "/log", LogHandler),
]


def routes(config: IVOAUWS) -> list[tuple[str, type, dict]]:
    """Every route under ``/<base_path>/``, for the app to register."""
    return [(f"/{config.base_path}/{pattern}", handler, {"interface": config}) for pattern, handler in patterns]
