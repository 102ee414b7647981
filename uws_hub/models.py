"""JSON models of workspaces and jobs, shared by the REST API, the pages and the
protocol facades (shares' are in :mod:`uws_hub.sharing.models`)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from .orm import Job, Workspace, isoformat
from .states import JobStatus


def job_model(job: Job, results: list[dict[str, Any]] | None = None, api_url: str = "/hub/api/") -> dict[str, Any]:
    """A job as the API shows it; its URL while it runs, its node until it ends (both stored).

    A batch job also shows its parameters, how its command ended, and its
    results folder; ``results`` (its files, listed for one job at a time) get
    download links through the files API (under ``api_url``).
    """
    batch = not job.interactive
    return {
        "id": job.id,
        "workspace_id": job.workspace_id,
        "workspace": job.workspace.slug,
        "owner": job.owner.name,
        "launcher": job.launcher.name,
        "job_type": job.job_type,
        "resource": job.resource,
        "resources": job.resources,
        "status": job.status,
        "target": job.target,
        "reason": job.reason,
        "server_name": job.server_name,
        "resource_id": job.resource_id,
        "node": None if job.terminal else job.node,
        "url": job.url if job.status == JobStatus.running.value else None,
        "created_at": isoformat(job.created_at),
        "queued_at": isoformat(job.queued_at),
        "running_at": isoformat(job.running_at),
        "stopping_at": isoformat(job.stopping_at),
        "finished_at": isoformat(job.finished_at),
        "updated_at": isoformat(job.updated_at),
        "submitted_at": isoformat(job.submitted_at),
        "interactive": job.interactive,
        "parameters": (job.parameters or {}) if batch else None,
        "exit_code": job.exit_code if batch else None,
        "exit_signal": job.exit_signal if batch else None,
        "results_dir": f"results/{job.id}" if batch else None,
        "run_id": job.run_id,
        "destroy_at": isoformat(job.destroy_at),
        "archived_at": isoformat(job.archived_at),
        "results": None
        if results is None
        else [
            {**r, "url": f"{api_url}workspaces/{job.workspace_id}/files/" + "/".join(map(quote, r["path"].split("/")))}
            for r in results
        ],
    }


def workspace_model(ws: Workspace, active_job: Job | None, last_job: Job | None) -> dict[str, Any]:
    """A workspace as the API shows it, with its unfinished job and its most recent one
    (so that a list can say which workspace's last job failed, and sort by last use).
    While a job runs it is usually both: its model is made once."""
    active = job_model(active_job) if active_job else None
    last = active if last_job is not None and last_job is active_job else job_model(last_job) if last_job else None
    return {
        "id": ws.id,
        "owner": ws.owner.name,
        "slug": ws.slug,
        "name": ws.name,
        "description": ws.description,
        "status": ws.status,
        "status_reason": ws.status_reason,
        "disk_usage_bytes": ws.disk_usage_bytes,
        "usage_measured_at": isoformat(ws.usage_measured_at),
        "active_job": active,
        "last_job": last,
        # when a job was last launched in it (else when it was made): what "last used" sorts by
        "last_used_at": isoformat(ws.last_used_at),
        "created_at": isoformat(ws.created_at),
        "updated_at": isoformat(ws.updated_at),
    }
