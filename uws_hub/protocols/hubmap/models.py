"""HuBMAP's objects from uws-hub's, and uws-hub's requests from HuBMAP's: pure functions.

Nothing here touches the database, the disk or the network; the handlers
pass in what they looked up. Field names, their order, the status values
and the messages are those of the HuBMAP User Workspaces Server's code
(``src/user_workspaces_server/``: ``models.py``, ``views/``,
``validation/``), which its clients parse; ``tests/unit/test_hubmap_units.py``
checks them.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tornado import web

from ...jobs.limits import memory_bytes, time_limit_seconds
from ...states import JobStatus, WorkspaceStatus
from ...workspaces.paths import text_name

# ---------------------------------------------------------------- statuses
#: what HuBMAP's clients accept (the portal throws on anything else, breaking the whole list)
JOB_STATUSES = ("pending", "running", "stopping", "complete", "failed")
WORKSPACE_STATUSES = ("active", "idle", "initializing", "deleting", "error")

#: uws-hub's job status -> HuBMAP's: a job on its resource whose server does not
#: answer yet is still "pending" (HuBMAP's "running" is what the portal opens); a
#: cancelled job "complete", as HuBMAP reports a stopped or a SLURM-cancelled job
_JOB_STATUS = {
    JobStatus.pending: "pending",
    JobStatus.queued: "pending",
    JobStatus.running: "running",
    JobStatus.stopping: "stopping",
    JobStatus.completed: "complete",
    JobStatus.cancelled: "complete",
    JobStatus.failed: "failed",
}
#: uws-hub's workspace statuses are HuBMAP's
_WORKSPACE_STATUS = {status: status.value for status in WorkspaceStatus}


def job_status(status: str) -> str:
    return _JOB_STATUS[JobStatus(status)]


def workspace_status(status: str) -> str:
    return _WORKSPACE_STATUS[WorkspaceStatus(status)]


def uws_job_statuses(hubmap_status: str) -> list[str]:
    """uws-hub's statuses that show as ``hubmap_status`` (for ``?status=`` filters)."""
    return sorted(s.value for s, h in _JOB_STATUS.items() if h == hubmap_status)


# ---------------------------------------------------------------- errors and envelopes
class HubMAPError(web.HTTPError):
    """A refusal in HuBMAP's form: ``{"success": false, "message": ...}`` with this status."""

    def __init__(self, status_code: int, message: str):
        super().__init__(status_code, "%s", message)
        self.message = message


def failure(message: str) -> dict[str, Any]:
    return {"success": False, "message": message}


def success(message: str, **data: Any) -> dict[str, Any]:
    """HuBMAP's answer: ``message``, ``success``, then ``data`` when there is some (its key order)."""
    body: dict[str, Any] = {"message": message, "success": True}
    if data:
        body["data"] = data
    return body


def listing(items_key: str, items: list, what: str, **more: list) -> dict[str, Any]:
    """A list answer: 200 with the items, or with none and HuBMAP's not-found message (never a 404)."""
    found = bool(items) or any(more.values())
    message = "Successful." if found else f"{what} matching given parameters could not be found."
    return success(message, **{items_key: items, **more})


# ---------------------------------------------------------------- dates
def iso_millis(dt: datetime | None) -> str | None:
    """As HuBMAP's server writes dates (Django's JSON encoder): milliseconds and a 'Z'."""
    return None if dt is None else dt.isoformat(timespec="milliseconds") + "Z"


def iso_micros(dt: datetime | None) -> str | None:
    """As HuBMAP's share serializer writes them (Django REST framework): microseconds and a 'Z'."""
    return None if dt is None else dt.isoformat(timespec="microseconds") + "Z"


# ---------------------------------------------------------------- job types and resource options
@dataclass(frozen=True)
class Conversion:
    """How one uws-hub resource is written as a HuBMAP option, and back."""

    #: HuBMAP's validation type (the value's Python type name)
    type: str
    to_uws: Callable[[Any], Any]
    from_uws: Callable[[Any], Any]
    display_name: str
    description: str


RESOURCE_CONVERSIONS: dict[str, Conversion] = {
    "cpus": Conversion("int", int, int, "Number of CPUs", "CPUs of the job."),
    "memory": Conversion(
        "int",
        lambda mb: f"{mb}M",
        lambda m: memory_bytes(m) // 1024**2,
        "Memory (MB)",
        "Memory of the job, in megabytes.",
    ),
    "time_limit": Conversion(
        "int",
        str,
        lambda t: time_limit_seconds(t) // 60,
        "Time limit (minutes)",
        "How long the job may run, in minutes.",
    ),
    "gpus": Conversion("bool", int, bool, "GPU enabled", "Whether the job gets a GPU."),
    "partition": Conversion("str", str, str, "Partition", "The SLURM partition the job runs in."),
}


def translate_options(options: dict[str, Any], mapping: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
    """uws-hub's resources from HuBMAP's ``resource_options``, and HuBMAP's messages for wrong types.

    Options not in ``mapping`` are ignored, as HuBMAP's server ignores them.
    """
    resources: dict[str, Any] = {}
    errors = []
    for name, value in options.items():
        target = mapping.get(name)
        if target is None:
            continue
        conversion = RESOURCE_CONVERSIONS[target]
        if type(value).__name__ != conversion.type:
            errors.append(
                f"{name}: Value '{value}' of type {type(value).__name__} does not match required type"
                f" {conversion.type}. Skipping further validation of parameter {name}."
            )
            continue
        resources[target] = conversion.to_uws(value)
    return resources, errors


def _first_names(mapping: dict[str, str]) -> dict[str, str]:
    """uws-hub resource -> the first HuBMAP option that sets it."""
    names: dict[str, str] = {}
    for name, target in mapping.items():
        names.setdefault(target, name)
    return names


def options_of(resources: dict[str, Any], mapping: dict[str, str]) -> dict[str, Any]:
    """HuBMAP's ``resource_options`` for a job's uws-hub resources."""
    return {
        name: RESOURCE_CONVERSIONS[target].from_uws(resources[target])
        for target, name in _first_names(mapping).items()
        if resources.get(target) is not None
    }


def parameters(mapping: dict[str, str], limits: dict[str, Any], defaults: dict[str, Any]) -> list[dict[str, Any]]:
    """HuBMAP's ``parameters`` (one per option) from a job type's limits and default resources."""
    params = []
    for target, name in _first_names(mapping).items():
        conversion = RESOURCE_CONVERSIONS[target]
        validation: dict[str, Any] = {"type": conversion.type}
        if conversion.type == "int":
            validation["min"] = 1
            limit = limits.get(target)
            if limit is not None:
                validation["max"] = conversion.from_uws(limit)
        validation["required"] = False
        default = defaults.get(target)
        params.append(
            {
                "display_name": conversion.display_name,
                "description": conversion.description,
                "variable_name": name,
                "default_value": conversion.from_uws(default) if default is not None else None,
                "validation": validation,
            }
        )
    return params


def job_type_ids(ids: dict[str, str], names: dict[str, str]) -> dict[str, str]:
    """HuBMAP job type id -> uws-hub job type, for the job types that exist (``names``:
    uws-hub name -> display name): the configured ids, and every other type under its own name."""
    offered = {hubmap_id: name for hubmap_id, name in ids.items() if name in names}
    aliased = set(offered.values())
    offered.update({name: name for name in names if name not in aliased})
    return offered


def job_type_id_of(name: str, offered: dict[str, str]) -> str:
    """The HuBMAP id a uws-hub job type is offered under."""
    return next((hubmap_id for hubmap_id, uws_name in offered.items() if uws_name == name), name)


def job_types_model(offered: dict[str, str], names: dict[str, str]) -> dict[str, dict[str, str]]:
    return {hubmap_id: {"id": hubmap_id, "name": names[name]} for hubmap_id, name in offered.items()}


# ---------------------------------------------------------------- jobs
def current_job_details(
    status: str, reason: str | None, url: str | None, url_domain: str, time_left: float | None
) -> dict[str, Any]:
    """``job_details.current_job_details``: always an object (the portal reads it unguarded);
    ``connection_details`` only once the server answers (the portal opens it then)."""
    if status == JobStatus.running.value and url:
        details: dict[str, Any] = {
            "message": "Webserver ready.",
            "connection_details": {"url_domain": url_domain, "url_path": url},
        }
        if time_left is not None:
            details["time_left"] = time_left
        return details
    if status in (JobStatus.pending.value, JobStatus.queued.value):
        return {"message": reason or "Webserver not ready."}
    return {"message": reason or ""}


@dataclass(frozen=True)
class JobFacts:
    """What a job's HuBMAP model needs besides the row."""

    job_type_id: str
    url: str | None
    url_domain: str
    resource_options: dict[str, Any]
    time_limit_seconds: float
    cpus: int
    now: datetime


def job_model(job, facts: JobFacts) -> dict[str, Any]:
    """HuBMAP's job (``Job.get_dict_fields``)."""
    seconds = 0.0
    if job.running_at is not None:
        seconds = max(0.0, ((job.finished_at or facts.now) - job.running_at).total_seconds())
    time_left = None
    if facts.time_limit_seconds and job.running_at is not None:
        time_left = max(0.0, facts.time_limit_seconds - seconds)
    resource_id = job.resource_id or ""
    return {
        "id": job.id,
        "workspace_id": job.workspace_id,
        "resource_job_id": int(resource_id) if resource_id.isascii() and resource_id.isdigit() else -1,
        "job_type": facts.job_type_id,
        "status": job_status(job.status),
        "datetime_created": iso_millis(job.created_at),
        "datetime_start": iso_millis(job.running_at),
        "datetime_end": iso_millis(job.finished_at),
        "core_hours": f"{facts.cpus * seconds / 3600:.5f}",
        "job_details": {
            "metrics": {},
            "request_job_details": {"resource_options": facts.resource_options},
            "current_job_details": current_job_details(job.status, job.reason, facts.url, facts.url_domain, time_left),
        },
    }


# ---------------------------------------------------------------- workspaces
EMPTY_DETAILS: dict[str, list] = {"files": [], "symlinks": []}


def no_details() -> dict[str, Any]:
    """The ``workspace_details`` of a workspace whose contents are not shown."""
    return {"request_workspace_details": dict(EMPTY_DETAILS), "current_workspace_details": dict(EMPTY_DETAILS)}


def current_workspace_details(entries: list[tuple[str, str]]) -> dict[str, list[dict[str, str]]]:
    """``current_workspace_details`` from a walk of the workspace (``(relative path, type)``):
    names with a leading '/', symlinks apart, dot files and what is in dot folders left out."""
    files, symlinks = [], []
    for path, kind in entries:
        if any(part.startswith(".") for part in path.split("/")):
            continue
        if kind == "symlink":
            symlinks.append({"name": "/" + text_name(path)})
        elif kind == "file":
            files.append({"name": "/" + text_name(path)})
    return {"files": files, "symlinks": symlinks}


def workspace_model(
    ws,
    *,
    default_job_type: str | None,
    request_details: dict[str, Any] | None,
    entries: list[tuple[str, str]],
    last_launch: datetime | None,
) -> dict[str, Any]:
    """HuBMAP's workspace (``Workspace.get_dict_fields``)."""
    return {
        "id": ws.id,
        "name": ws.name,
        "description": ws.description,
        "disk_space": ws.disk_usage_bytes,
        "datetime_created": iso_millis(ws.created_at),
        "datetime_last_modified": iso_millis(ws.updated_at),
        "datetime_last_job_launch": iso_millis(last_launch),
        "workspace_details": {
            "request_workspace_details": request_details or dict(EMPTY_DETAILS),
            "current_workspace_details": current_workspace_details(entries),
        },
        "status": workspace_status(ws.status),
        "default_job_type": default_job_type,
    }


# ---------------------------------------------------------------- users and shares
def name_parts(display_name: str) -> tuple[str, str]:
    """(first name, last name) from a display name, as HuBMAP's users have them."""
    first, _, last = display_name.strip().partition(" ")
    return first, last.strip()


def user_ref(username: str, display_name: str, email: str) -> dict[str, str]:
    """A user nested in a share (HuBMAP's ``user_id``: no id)."""
    first, last = name_parts(display_name)
    return {"username": username, "first_name": first, "last_name": last, "email": email}


def user_model(user_id: int, username: str, display_name: str, email: str) -> dict[str, Any]:
    """A user of ``GET users``."""
    first, last = name_parts(display_name)
    return {"id": user_id, "first_name": first, "last_name": last, "username": username, "email": email}


def shared_workspace(
    workspace_id: int, name: str, description: str, details: dict[str, Any], user: dict[str, str]
) -> dict[str, Any]:
    """A workspace nested in a share: only these fields, as HuBMAP's serializer has them."""
    return {"id": workspace_id, "name": name, "description": description, "workspace_details": details, "user_id": user}


def share_model(
    *,
    original: dict[str, Any] | None,
    shared: dict[str, Any],
    last_resource_options: dict[str, Any],
    last_job_type: str,
    is_accepted: bool,
    created_at: datetime,
) -> dict[str, Any]:
    """HuBMAP's ``SharedWorkspaceMapping``."""
    return {
        "original_workspace_id": original,
        "shared_workspace_id": shared,
        "last_resource_options": last_resource_options,
        "last_job_type": last_job_type,
        "is_accepted": is_accepted,
        "datetime_share_created": iso_micros(created_at),
    }


#: what Django accepts for a boolean filter (``?is_accepted=``)
_TRUE, _FALSE = {"true", "t", "1", "yes"}, {"false", "f", "0", "no"}


def parse_bool(value: str, name: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE | _FALSE:
        return lowered in _TRUE
    raise HubMAPError(400, f"'{value}' value must be either True or False ({name}).")


# ---------------------------------------------------------------- requests
@dataclass
class FileSpec:
    """A file to write into a workspace: its path relative to the workspace, and its text."""

    path: str
    content: str


@dataclass
class SymlinkSpec:
    """A symlink to make in a workspace, as the request gave it."""

    path: str
    source_path: str | None
    dataset_uuid: str | None
    #: as sent (kept in ``request_workspace_details``)
    request: dict[str, Any]


@dataclass
class WorkspaceDetails:
    files: list[FileSpec] = field(default_factory=list)
    symlinks: list[SymlinkSpec] = field(default_factory=list)
    globus_groups_token: str | None = None

    def request_model(self) -> dict[str, Any]:
        """What ``request_workspace_details`` keeps: file names (not contents), symlinks as sent."""
        return {"files": [{"name": f.path} for f in self.files], "symlinks": [s.request for s in self.symlinks]}


def _relative_name(value: Any, what: str, invalid: str) -> str:
    if not isinstance(value, str) or not value.strip("/"):
        raise HubMAPError(400, f"{invalid} {value!r}")
    if ".." in value:
        raise HubMAPError(400, f"{what} name cannot contain double dots.")
    if any(unicodedata.category(c) == "Cc" for c in value):
        raise HubMAPError(400, f"{invalid} {value!r}: it holds control characters")
    return value.lstrip("/")


def parse_workspace_details(details: Any) -> WorkspaceDetails:
    """``workspace_details`` of a create or an update, with HuBMAP's messages for what is wrong."""
    if not isinstance(details, dict):
        raise HubMAPError(400, "Workspace details not JSON.")
    files, symlinks = details.get("files", []), details.get("symlinks", [])
    if not isinstance(symlinks, list):
        raise HubMAPError(400, "'symlinks' index must contain a list.")
    if not isinstance(files, list):
        raise HubMAPError(400, "'files' index must contain a list.")
    token = details.get("globus_groups_token")
    parsed = WorkspaceDetails(globus_groups_token=token if isinstance(token, str) and token else None)
    for entry in files:
        if not isinstance(entry, dict):
            raise HubMAPError(400, f"Invalid file path specified {entry!r}")
        path = _relative_name(entry.get("name"), "File", "Invalid file path specified")
        content = entry.get("content", "")
        if not isinstance(content, str):
            raise HubMAPError(400, f"File content must be a string: {entry.get('name')}")
        parsed.files.append(FileSpec(path, content))
    for entry in symlinks:
        if not isinstance(entry, dict):
            raise HubMAPError(400, f"Invalid symlink destination path specified {entry!r}")
        path = _relative_name(entry.get("name"), "Symlink", "Invalid symlink destination path specified")
        source, uuid = entry.get("source_path"), entry.get("dataset_uuid")
        if isinstance(uuid, str) and uuid:
            if parsed.globus_groups_token is None:
                raise HubMAPError(400, "No globus_groups_token passed when trying to use dataset_uuid.")
            parsed.symlinks.append(SymlinkSpec(path, None, uuid, entry))
        elif isinstance(source, str) and source:
            parsed.symlinks.append(SymlinkSpec(path, source, None, entry))
        else:
            raise HubMAPError(400, f"Symlink {entry.get('name')} needs a source_path or a dataset_uuid.")
    return parsed


def parse_start(body: dict[str, Any], default_job_type: str | None) -> tuple[str, dict[str, Any]]:
    """(HuBMAP job type id, resource options) of ``PUT workspaces/{id}/start``."""
    job_type = body.get("job_type") or default_job_type
    if not job_type:
        raise HubMAPError(400, "Missing job_type and no default job type set on workspace.")
    if not isinstance(job_type, str):
        raise HubMAPError(400, f"{job_type} is not in the list of available job types.")
    if not isinstance(body.get("job_details", {}), dict):
        raise HubMAPError(400, "Job details not JSON.")
    options = body.get("resource_options", {})
    if not isinstance(options, dict):
        raise HubMAPError(400, "Resource options not JSON.")
    return job_type, options


def invalid_options(errors: list[str]) -> HubMAPError:
    """HuBMAP's 422 for resource options refused (its message ends with a Python list)."""
    return HubMAPError(422, f"Invalid resource options found: {errors!r}")
