"""The services the handlers use, built by the app (``settings['uws']``)."""

from __future__ import annotations

from dataclasses import dataclass

from .events import EventBus
from .jobs import JobService
from .jobtypes import JobType
from .notify import Notifier
from .quotas import QuotaService
from .reconcile import JobReconciler
from .servers import ServerControl
from .sharing import ShareService
from .storage import WorkspaceStorage
from .workspaces import WorkspaceService


@dataclass
class Services:
    storage: WorkspaceStorage
    workspaces: WorkspaceService
    jobs: JobService
    reconciler: JobReconciler
    events: EventBus
    job_types: dict[str, JobType]
    max_upload_bytes: int
    servers: ServerControl
    quotas: QuotaService
    sharing: ShareService
    notifier: Notifier
