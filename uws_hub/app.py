"""UWSHub: JupyterHub with workspaces, jobs and their API and pages.

uws-hub *is* the hub: one process, one database, one URL space. This class
adds uws-hub's configuration, tables, handlers, templates, scopes and
background loops through JupyterHub's own ``init_*`` steps, and changes a few
JupyterHub defaults that workspaces need (named servers on, the workspaces
page as the landing page, uws-hub's spawner and authenticator).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import pwd
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC

from dateutil.parser import parse as parse_date
from jupyterhub import dbutil as hub_dbutil
from jupyterhub import orm as hub_orm
from jupyterhub.apihandlers.base import API404
from jupyterhub.app import JupyterHub, NewToken, UpgradeDB
from jupyterhub.handlers.base import BaseHandler
from jupyterhub.traitlets import ByteSpecification
from jupyterhub.utils import url_path_join
from sqlalchemy.exc import SQLAlchemyError
from traitlets import Bool, Dict, Enum, Float, Integer, TraitError, Unicode, default, validate

from . import __version__, dbutil, oauthclients, scopes, services
from .apihandlers import default_handlers as api_handlers
from .apihandlers.base import UnknownAPIRouteHandler, UWSAPIHandler
from .apihandlers.groups import default_handlers as group_api_handlers
from .apihandlers.servers import default_handlers as server_api_handlers
from .apihandlers.servers import refuse_name_being_deleted
from .authenticators.local import WorkspaceLocalAuthenticator
from .bodies import SEED_JSON_EXPANSION, BodyLimitedApplication
from .dbutil import drop_sqlite_ping, sqlite_wal
from .handlers import default_handlers as page_handlers
from .hubhandlers import refusing_nul
from .jobs.servers import load_spawner_class
from .jobs.types import DEFAULT_JOB_TYPES, parse_job_types
from .options import NotificationOptions, QuotaOptions, SharingOptions
from .orm import Job
from .protocols.hubmap import HubMAPCompat
from .protocols.hubmap.routes import routes as hubmap_routes
from .protocols.uws.config import IVOAUWS
from .protocols.uws.handlers import routes as uws_routes
from .proxy import WorkspaceConfigurableHTTPProxy
from .redaction import install_log_redaction
from .sharing.collaborate import role_specs
from .templates import TEMPLATE_DIR

# JupyterHub (6.1) reads it when an authenticator's refresh of a user fails, but sets it
# only when a token authenticated the request: a login cookie's request whose refresh
# failed (a person who left the directory, an OAuth refresh token revoked) raised an
# AttributeError, an ERROR in the log, instead of asking them to log in again
BaseHandler._token_authenticated = False

_hub_auth_to_user = BaseHandler.auth_to_user


async def _auth_to_user(self, authenticated, user=None):
    """JupyterHub's ``auth_to_user`` (every login, whatever the authenticator: the login
    form, an OAuth callback, HuBMAP's token exchange), refusing a login as a name being
    deleted (a 409 that says so, :func:`refuse_name_being_deleted`): it made the user of
    a name it did not know, and one made while the former user's deletion set aside what
    it listed by the name had it. (A refresh passes its user, whose name is not free.)"""
    if user is None:
        refuse_name_being_deleted(self, authenticated if isinstance(authenticated, str) else authenticated["name"])
    return await _hub_auth_to_user(self, authenticated, user)


BaseHandler.auth_to_user = _auth_to_user


class UWSUpgradeDB(UpgradeDB):
    """Upgrade JupyterHub's tables, then uws-hub's."""

    name = "uws-hub-upgrade-db"
    description = """Upgrade the database (JupyterHub's tables and uws-hub's) to the current schema.

    Back up the database first. Usage:

        uws-hub upgrade-db -f jupyterhub_config.py
    """

    def start(self):
        hub = UWSHub(parent=self)
        hub.load_config_file(hub.config_file)
        self.log = hub.log
        hub_dbutil.upgrade_if_needed(hub.db_url, log=self.log, db_kwargs=hub.db_kwargs)
        dbutil.upgrade_url(hub.db_url, log=self.log, **hub.db_kwargs)


class UWSNewToken(NewToken):
    """Generate an API token for a user (with uws-hub's roles and scopes loaded)."""

    name = "uws-hub-token"

    def start(self):
        # JupyterHub's NewToken.start, with UWSHub in place of JupyterHub:
        # a plain JupyterHub would load roles without uws-hub's scopes
        hub = UWSHub(parent=self)
        hub.load_config_file(hub.config_file)
        hub.init_db()

        def init_roles_and_users():
            loop = asyncio.new_event_loop()
            loop.run_until_complete(hub.init_role_creation())
            loop.run_until_complete(hub.init_users())

        ThreadPoolExecutor(1).submit(init_roles_and_users).result()
        user = hub_orm.User.find(hub.db, self.name)
        if user is None:
            print(f"No such user: {self.name}", file=sys.stderr)
            self.exit(1)
        print(user.new_api_token(note="command-line generated"))


class UWSHub(SharingOptions, QuotaOptions, NotificationOptions, JupyterHub):
    """JupyterHub with workspaces and jobs (the ``uws-hub`` command)."""

    name = "uws-hub"
    version = __version__
    description = """Start uws-hub: JupyterHub with workspaces, jobs on local processes
    or SLURM, sharing and quotas.
    """

    subcommands = {
        "token": (UWSNewToken, "Generate an API token for a user"),
        "upgrade-db": (UWSUpgradeDB, "Upgrade the database (JupyterHub's tables and uws-hub's)."),
    }

    # ---------------------------------------------------------------- uws-hub's options
    workspaces_root = Unicode(
        "workspaces",
        config=True,
        help="""Directory under which workspaces live: ``<root>/<user>/<workspace slug>``.

        Relative paths are relative to the directory the hub starts in. The hub
        creates it if needed. Every path a request names is checked to stay
        inside its workspace under this root.
        """,
    )

    job_types = Dict(
        config=True,
        help="""The kinds of jobs users can launch, by name.

        Each value is a dict with: ``display_name``, ``description``, ``icon``
        (a Font Awesome icon's name, e.g. ``"chart-line"``, shown with the
        description in the launch form), ``cmd``
        (the command that starts the job's server; default
        ``["uws-singleuser"]``, JupyterHub's ``jupyterhub-singleuser`` started
        without a grammar jsonschema compiles at import, about a second less),
        ``args_as_root`` (arguments added when
        the job would run as root, e.g. ``["--allow-root"]``), ``default_url``
        (e.g. ``"/lab"``), ``env``, ``resources`` (where it may run, the first
        being the default: ``["local"]``), ``interactive`` (default true),
        ``time_limit_seconds`` (the hub stops the job after it; 0: none),
        ``limits`` (the most a launch may request: ``cpus``, ``memory``,
        ``gpus``, ``time_limit``, ``partitions``; over them a launch is refused
        with a 422) and ``default_resources`` (what a launch gets when it does
        not ask: ``cpus``, ``memory``, ``gpus``, ``time_limit``,
        ``partition``). Memory is ``<n>[K|M|G|T]``, time limits are SLURM's
        (``30``: minutes, ``4:00:00``, ``1-12:00:00``).

        ``app`` makes the job a web app (a dashboard, a Streamlit app...) that
        the job's Jupyter server runs with jupyter-server-proxy and serves at
        ``<server>/app/`` (where the job opens), behind the hub's login and
        sharing rules: ``command`` (with ``{port}`` or ``{unix_socket}``,
        ``{base_url}``, ``{workspace}``), ``env`` and ``request_headers``
        (which may also name ``{token}``, a secret made at each start),
        ``timeout_seconds`` (default 60), ``viewers`` (whether viewers of a
        shared workspace may use it; default false) and ``seed`` (files to copy
        into the workspace when it has none of that name). See "Web apps" in
        docs/admin-guide.md; ``uws_hub.jobs.examples`` has a Voilà dashboard and
        a Streamlit app. Example::

            c.UWSHub.job_types = {
                "jupyterlab": {"display_name": "JupyterLab", "default_url": "/lab",
                               "args_as_root": ["--allow-root"]},
                "jupyterlab-hpc": {
                    "display_name": "JupyterLab on the cluster", "default_url": "/lab",
                    "resources": ["slurm"],
                    "limits": {"cpus": 16, "memory": "64G", "gpus": 1,
                               "time_limit": "8:00:00", "partitions": ["batch", "gpu"]},
                    "default_resources": {"cpus": 2, "memory": "8G", "time_limit": "2:00:00",
                                          "partition": "batch"},
                },
            }
        """,
    )

    @default("job_types")
    def _default_job_types(self):
        return {name: dict(spec) for name, spec in DEFAULT_JOB_TYPES.items()}

    resource_spawners = Dict(
        config=True,
        help="""The spawner class of each resource jobs can run on, by resource name.

        Job types list the resources they may use (``resources`` in
        ``c.UWSHub.job_types``); a job's server is started with its resource's
        spawner. Values are entry point names of ``jupyterhub.spawners``
        (``"uws-local"``, ``"uws-slurm"``), import strings or classes; each must
        be a uws-hub workspace spawner. Example::

            c.UWSHub.resource_spawners = {"local": "uws-local", "slurm": "uws-slurm"}
        """,
    )

    @default("resource_spawners")
    def _default_resource_spawners(self):
        return {"local": "uws-local"}

    system_users = Bool(
        False,
        config=True,
        help="""Run each user's jobs as the system account of the same name.

        Needs the hub to run as root and every user to have a system account
        (``useradd``). Workspace directories and files written through the hub
        then belong to their owner. When False (the default, for trying
        uws-hub out), all jobs run as the hub's own account: the hub still keeps
        users out of each other's workspaces, jobs and servers, but their
        processes are not isolated from each other.
        """,
    )

    system_users_min_uid = Integer(
        1000,
        config=True,
        help="""With ``system_users``, the lowest uid of an account that runs users' jobs and owns their files.

        A hub user's name is its system account's, and hub users can be made
        with any name (by an admin or a user admin through JupyterHub's API,
        by an identity provider whose users choose their names): a user named
        ``root``, ``daemon`` or ``postgres`` must never run jobs as that
        account. Accounts below this uid (Debian's ``UID_MIN``, 1000, by
        default), and ``nobody`` (65534), are refused: such a user's
        workspaces, jobs and files are refused with a 409 that says why.
        uid 0 is always refused. Lower it only if your users' accounts start
        lower (see ``UID_MIN`` in ``/etc/login.defs`` or your directory's range).
        """,
    )

    @validate("system_users_min_uid")
    def _valid_min_uid(self, proposal):
        if proposal["value"] < 1:
            raise TraitError("UWSHub.system_users_min_uid must be at least 1: uid 0 (root) never runs users' jobs")
        return proposal["value"]

    job_log_dir = Unicode(
        "uws-job-logs",
        config=True,
        help="""Directory for each job's output (``job-<id>.log``), readable by the hub only.

        Its files are the hub's, mode 0600. Batch jobs on SLURM write their
        output in a folder of their account's under ``slurm/`` here (see
        ``WorkspaceSlurmSpawner.batch_output_dir``): the hub then lets every
        account pass through this directory (0711), never list it.

        The end of this file, with credentials redacted, is what the job's
        owner and admins read at ``GET /hub/api/jobs/{id}/output``.
        Relative paths are relative to the directory the hub starts in.
        The hub makes it at its start if it is missing (0700), and refuses to
        start if it is another account's or group or others may write in it
        (a folder a local user made first in ``/tmp``): its owner would read
        every job's log. A folder of the admin's keeps its mode (the hub adds
        only ``--x`` for group and others, for SLURM jobs' output).
        It may be, or pass through, a link of root's (or of the hub's account)
        in a folder no one else may write in: the hub follows such links only,
        a folder at a time, when it works in it as root. A link of another
        account's on its way (or of root's in a folder an account may write
        in, such as ``/tmp``) is refused: SLURM jobs do not start, jobs' logs
        and servers' output read as empty, and a deleted user's logs are not
        set aside.
        """,
    )

    deleted_users_data = Enum(
        ["set-aside", "remove"],
        default_value="set-aside",
        config=True,
        help="""What becomes of a deleted user's workspace folders and job logs.

        ``"set-aside"`` (the default): when the user is deleted, each of their
        workspace folders, their jobs' log files (their SLURM servers' output
        files too) and the HOME of their jobs of the hub's own account are moved to
        ``<workspaces_root>/.deleted/<user id>-<name>-<UTC time>/``, which only
        root (the hub's account) may enter, and the hub's log says what went
        where. Left in place they were the next account's of the same uid
        (``useradd`` gives out freed uids again). An administrator recovers or
        purges them there (``rm -rf <workspaces_root>/.deleted/<entry>``).

        ``"remove"``: they are removed instead (set aside first, then removed
        in the background).

        A hub stopped between the deletion and the move finishes it at its next
        start.
        """,
    )

    max_seed_bytes = ByteSpecification(
        10 * 1024**2,
        config=True,
        help="""Largest total size of the files sent with a workspace-create request.

        Larger files are uploaded afterwards through the files API.
        Accepts a number of bytes or a string with a unit, e.g. ``"10M"``.
        """,
    )

    max_upload_bytes = ByteSpecification(
        10 * 1024**3,
        config=True,
        help="""Largest file accepted by ``PUT /hub/api/workspaces/{id}/files/{path}``.

        Uploads are streamed to disk, so this bounds disk use, not memory.
        Accepts a number of bytes or a string with a unit, e.g. ``"10G"``.
        """,
    )

    max_request_body_bytes = ByteSpecification(
        1024**2,
        config=True,
        help="""Largest body of a request the hub reads whole (JSON, forms): a larger one is a 413.

        Tornado reads such a body into memory before anyone is authenticated (up to
        100 MB unless bounded), so without this an anonymous client could make the hub
        hold that much per connection. Uploads to the files API are streamed to disk
        and bounded by ``max_upload_bytes`` instead; the requests that create a
        workspace (also HuBMAP's, and its workspace updates and uploads) may be larger by
        three times ``max_seed_bytes``, what their seed files' text takes once encoded in
        JSON (a letter of two bytes in UTF-8 is sent as an escape of six; a file of
        control characters, which takes more, goes in base64).
        Accepts a number of bytes or a string with a unit, e.g. ``"1M"``.
        """,
    )

    max_zip_downloads_per_user = Integer(
        2,
        min=1,
        config=True,
        help="""Most folders one user (or service) downloads as zip files at once
        (``GET .../files/{path}?format=zip``); one more is a 429 with ``Retry-After``.

        A zip is made as it is read, so one read slowly stays open as long as its
        reader wants, holding a descriptor for each folder it is in (up to 257)
        and memory for each entry so far: without a bound, one reader opening
        many would take the hub's descriptors and memory.
        """,
    )

    max_streams_per_user = Integer(
        20,
        min=1,
        config=True,
        help="""Most event streams (``/hub/api/events``, its WebSocket, HuBMAP's job
        WebSockets), log follows (``/hub/api/jobs/{id}/log/stream``) and UWS ``WAIT``s one
        user (or service) holds open at once; one more is a 429 with ``Retry-After`` (a
        WebSocket is closed with code 1013; a UWS ``WAIT`` is answered at once).

        Each stays open as long as its reader wants and costs the hub a connection, a
        subscription every event is offered to (on the hub's event loop) and a
        periodic check of its reader's rights: without a bound one account opening
        thousands would slow every request and take the hub's descriptors. A browser
        holds at most six connections to the hub (HTTP/1.1), so its tabs never reach
        the default; raise it for a service that follows many users' jobs.
        """,
    )

    max_file_operations_per_user = Integer(
        4,
        min=1,
        config=True,
        help="""Most threads of ``file_operation_threads`` one user (or service) holds at
        once with file operations: listings, downloads and zips (each read of a piece),
        uploads, moves, deletions, text views, job logs and results, HuBMAP's and UWS's
        file work. Their further operations wait in line behind their own, never
        behind anyone else's.

        Every file operation blocks a thread as long as the disk takes: a folder of
        a million entries, a slow or hung file system. Without a bound, one account
        looping slow listings took every thread, and everyone else's file operations
        waited behind theirs. Keep it well under ``file_operation_threads``.
        """,
    )

    file_operation_threads = Integer(
        32,
        min=2,
        config=True,
        help="""Threads for the file operations requests make (see
        ``max_file_operations_per_user``), a pool of their own: the hub's own work (its
        scans, logins, job starts) never waits behind users' file operations. Users
        each hold at most ``max_file_operations_per_user`` of them, so the pool is
        full only once ``file_operation_threads / max_file_operations_per_user``
        users (8 by default) hold all of theirs at once (on a hung disk).
        """,
    )

    zip_max_entries = Integer(
        100_000,
        min=1,
        config=True,
        help="""Most files and folders a folder may hold to be downloaded as one zip file
        (``GET .../files/{path}?format=zip``); a larger one is a 422 saying so.

        A zip file's directory of its entries is written at its end, so the hub keeps
        about half a kilobyte per entry until the zip is sent; files of no bytes cost
        no disk quota, so without a bound one folder of millions of them would take
        the hub's memory at each download.
        """,
    )

    folder_max_entries = Integer(
        100_000,
        min=1,
        config=True,
        help="""Most files and folders a folder may hold to be listed by the files API
        (``GET /hub/api/workspaces/{id}/files?path=``); a larger one is a 422 saying so.

        A listing is sorted before its page is sent, so the hub keeps every entry of
        the folder meanwhile (about 400 bytes each) and reads each one's metadata;
        files of no bytes cost no disk quota, so without a bound one folder of
        millions of them would take hundreds of MB of the hub's memory, and seconds
        of its CPU, at each request for a page of it.
        """,
    )

    max_unfinished_batch_jobs_per_user = Integer(
        1000,
        min=0,
        config=True,
        help="""Most batch jobs a user's workspaces may hold unfinished (held, waiting for
        a slot or running) at once, whoever launched them; one more launch is a 429
        with ``Retry-After``. 0: no limit.

        A batch launch is never refused for want of a slot (it waits in the fair
        queue), so without a bound one account launching in a loop would add jobs
        to the database, events to every stream and work to every plan of the
        queue for as long as it liked.
        """,
    )

    max_job_log_bytes = ByteSpecification(
        1024**3,
        config=True,
        help="""Most disk a running job's output (its log, ``job_log_dir``) may take; past it
        the job is stopped, failed, with a reason that says why (checked at each of the
        reconciler's scans, every ``job_reconcile_interval``). 0: no limit.

        A job's log lies outside its workspace, on the disk of the job log directory,
        and counts on no quota: without a bound, one job printing at full speed fills
        that disk for every user (and the hub's database, if it is there too). The
        disk the file takes counts, not its size (a log may be a hole of any size).
        Accepts a number of bytes or a string with a unit, e.g. ``"1G"``.
        """,
    )

    max_running_batch_jobs = Integer(
        0,
        min=0,
        config=True,
        help="""Most batch jobs that run at once on the hub's own machine (resources run by
        local processes); 0: as many as the machine has CPUs.

        Launches beyond it are not refused: they wait ``queued`` and start as
        running ones end, round-robin across users and in launch order within
        each user (see docs/batch-jobs.md). Each user's ``concurrent_jobs``
        quota bounds their own jobs the same way, on every resource.
        """,
    )

    job_reconcile_interval = Float(
        10.0,
        config=True,
        help="""Seconds between scans of the reconciler.

        Each scan puts every unfinished job, workspace being deleted and accepted
        copy on the reconciler's queue, so that a server that died, a start, a
        deletion or a copy interrupted by a hub restart, a proxy route that went
        missing or a job past a deadline is repaired within this time. Requests
        (launch, stop, delete, accept) and spawner reports wake the reconciler at once.
        """,
    )

    job_start_max_loop_lag_seconds = Float(
        0.1,
        config=True,
        help="""Hold back new job starts while the hub's event loop runs later than this (seconds; 0: never).

        Requests, event streams and job starts share one event loop, and each
        start's bookkeeping (JupyterHub's spawn, the proxy route, a dozen
        database commits) runs on it. While the loop is late by more than this
        (``uws_event_loop_lag_seconds`` measures it every 0.1 s), starts beyond
        two at a time wait, in launch order, and go ahead as soon as it has
        caught up: in a burst of launches the hub keeps answering, and the
        starts take the time that is left. Starts already under way go on.
        The reconciler's other steps give way too: while the loop is late, each
        worker takes its next step once the lag probe has run again.
        """,
    )

    max_local_starts = Integer(
        None,
        allow_none=True,
        min=0,
        config=True,
        help="""Most interactive job starts that use the hub machine's CPU at once; 0: no cap;
        None (the default): four per CPU the hub may run on (its CPU affinity).

        A start counts from the reconciler's start of it: while it is in its
        bookkeeping (JupyterHub's spawn, the server's token, before a local
        process is started or a SLURM job submitted), and, for a server started
        on the hub's machine (``WorkspaceLocalProcessSpawner``), until it
        listens (or fails). Each starting server is a Python interpreter
        importing its libraries, about a CPU's worth while it starts: in a burst
        of 200 local launches at once the hub's loop waited for a CPU behind
        them, and every request and event waited with it. Launches beyond the
        cap are answered at once as ever and wait ``pending``, in launch order
        (a progress message says how many are ahead), and start as slots free.
        A start whose job waits in SLURM's queue takes no slot (unlike
        ``c.JupyterHub.concurrent_spawn_limit``, which counts it until it runs).
        Local batch jobs do not count: ``max_running_batch_jobs`` limits them,
        and each is a fork of the resident launcher, not an interpreter's start.
        """,
    )

    thread_switch_interval_seconds = Float(
        0.02,
        min=0.0,
        max=1.0,
        config=True,
        help="""How long a thread of the hub's process runs Python before it must let another that
        waits run (seconds, at most 1; Python's ``sys.setswitchinterval``, 0.005 by default; 0:
        leave it).

        The hub's event loop runs in one thread; each local job start runs its
        process's start (``subprocess.Popen``: fork and exec) and its limits in
        helper threads. Whenever one of those waits for Python's interpreter
        lock, the loop is made to give it up every interval, in the middle of
        a request or a commit; in a burst of 200 launches at once that made
        every request and event wait longer. A longer interval lets the loop
        finish more of its work first (the helpers still run whenever the loop
        waits for the database, the network or the next event). The other side:
        a helper thread that runs Python for long without a system call (the
        hub's walk trees and copy files, making one at every entry) may hold the
        loop up to this long at a time instead of 5 ms.
        """,
    )

    job_reconcile_workers = Integer(
        4,
        config=True,
        help="""Number of reconciler workers taking jobs, deletions and copies off its queue concurrently.

        Starts, stops, deletions and copies run in the background; a worker only takes one step.
        """,
    )

    job_pending_timeout = Float(
        300.0,
        config=True,
        help="""Seconds a job's start may stay ``pending`` (asked for, not yet on its resource).

        A job still pending after this is stopped and ``failed`` with the reason.
        It counts from the start's beginning: a launch that waits for a start
        slot (``max_local_starts``, ``concurrent_spawn_limit``, a burst of
        launches) is not timed while it waits.
        """,
    )

    job_queued_timeout = Float(
        0.0,
        config=True,
        help="""Seconds a job may stay ``queued`` (on its resource, server not answering yet).

        0 means no limit (a batch queue may hold a job for hours); local jobs are
        bounded by JupyterHub's ``Spawner.start_timeout`` and ``http_timeout``.
        """,
    )

    job_stopping_timeout = Float(
        120.0,
        config=True,
        help="""Seconds a stop may take before the job is marked ``failed`` with the reason.

        Revoking an editor waits for their jobs in the workspace to end before it kills
        their processes still holding its group; a job that never ends holds that kill
        back for this long and 30 s more at most.
        """,
    )

    job_max_attempts = Integer(
        3,
        config=True,
        help="""How many times the hub starts a job's server before it gives up.

        A start is tried again only when the hub lost track of the previous one
        (a restart during the start); a server that fails to start fails its job.
        """,
    )

    event_queue_size = Integer(
        1000,
        config=True,
        help="""Events held in memory for each subscriber of the event streams.

        A stream whose queue is full (a burst of events, or a reader slower
        than the events) is not dropped: its queue is emptied and the stream
        replays what it missed from the database, then goes live again. So
        slow readers cannot grow the hub's memory, and a reader that keeps
        reading never loses an event.
        """,
    )

    event_stream_stall_seconds = Float(
        60.0,
        config=True,
        help="""Seconds an event stream waits for its reader to take what was sent before it drops it (0: never).

        A reader that stopped reading (a suspended laptop, a stuck client)
        would hold its connection and buffers for ever; it is told it was
        dropped (an ``overflow`` event with its last event id) and can
        reconnect with that id (``Last-Event-ID``) to get everything it
        missed. A reader that keeps reading, however slowly, is never dropped.
        """,
    )

    stream_recheck_seconds = Float(
        10.0,
        config=True,
        help="""Seconds a long request goes on before it asks again who holds it open.

        The event streams (SSE and WebSocket, HuBMAP's job WebSocket), a
        followed log, a blocking UWS ``GET`` (``?WAIT=``) and a download (a
        zip, a file, a UWS result: cut off) are authorized
        when they open, as every request; then, every this many seconds, they
        look their token or login cookie up again, and end (the ``GET``
        answers 403) once it was deleted or expired, or its user was deleted
        or disabled, or the caller's scopes changed. What a stream learnt about
        shares and about the owners whose workspaces it may read is forgotten
        as often. So this is the longest a caller who lost a grant keeps
        getting events and log lines through a stream opened before. Each
        recheck costs about 0.33 ms of the hub's CPU a stream (measured): a
        tighter bound costs that much more often, for every open stream.
        """,
    )

    @validate("stream_recheck_seconds")
    def _valid_stream_recheck(self, proposal):
        if not proposal["value"] > 0:
            raise TraitError("UWSHub.stream_recheck_seconds must be more than 0: streams ask again between two waits")
        return proposal["value"]

    job_start_poll_interval = Float(
        0.5,
        config=True,
        help="""Seconds between checks that a starting server's process is still alive.

        A server that exits before it answers fails its job within this time,
        instead of JupyterHub waiting ``Spawner.http_timeout`` for it.
        """,
    )

    workspace_usage_interval = Float(
        300.0,
        config=True,
        help="""Seconds between measurements of every workspace's disk usage (0: never).

        A job's end measures its workspace at once besides, so what the job
        wrote counts toward its owner's disk quota without waiting for the
        next pass (not with 0).
        """,
    )

    sqlite_wal = Bool(
        True,
        config=True,
        help="""With a SQLite database, use write-ahead logging and ``synchronous=NORMAL``.

        Commits then no longer wait for the disk several times each, which makes
        a busy hub (many jobs changing state at once) several times faster, and
        readers no longer block the writer. A power cut may lose the last
        transactions but never corrupts the database. Turn it off if the
        database file is on a network filesystem, where WAL does not work.
        No effect with PostgreSQL.
        """,
    )

    # ---------------------------------------------------------------- JupyterHub defaults
    @default("allow_named_servers")
    def _default_allow_named_servers(self):
        return True

    @validate("allow_named_servers")
    def _validate_allow_named_servers(self, proposal):
        if not proposal.value:
            raise ValueError("uws-hub runs each job as a named server: allow_named_servers must be True")
        return proposal.value

    @default("default_url")
    def _default_default_url(self):
        return url_path_join(self.hub_prefix, "workspaces")

    @default("spawner_class")
    def _default_spawner_class(self):
        return "uws-local"

    @default("authenticator_class")
    def _default_authenticator_class(self):
        return "uws-local"

    @default("proxy_class")
    def _default_proxy_class(self):
        # node CHP, whose 500s for undecodable paths its entry point turns into routing
        return WorkspaceConfigurableHTTPProxy

    @default("extra_user_scopes")
    def _default_extra_user_scopes(self):
        return list(scopes.USER_SCOPES)

    @default("classes")
    def _default_classes(self):
        # uws-hub's own configurable classes too (uws-hub --generate-config)
        return [*JupyterHub._load_classes(self), HubMAPCompat, IVOAUWS]

    # ---------------------------------------------------------------- init steps
    def init_logging(self):
        super().init_logging()
        # one place for every logged URL and message, whoever logs it (tornado's
        # warnings and JupyterHub's redirects carry request URLs, ?token= included)
        install_log_redaction(self.log)
        # JupyterHub gives tornado's loggers the application logger's level, DEBUG (its
        # handlers drop what is below log_level): every request then built records for
        # nothing (the scope check's debug line, an INFO access line at WARN)
        logging.getLogger("tornado").setLevel(self.log_level)

    def init_db(self):
        super().init_db()
        engine = self.db.get_bind()
        if engine.dialect.name == "sqlite":
            drop_sqlite_ping(engine)
        if self.sqlite_wal and engine.dialect.name == "sqlite" and ":memory:" not in self.db_url:
            sqlite_wal(engine)
        try:
            dbutil.prepare(self.db.get_bind(), allow_upgrade=self.upgrade_db, log=self.log)
        except dbutil.SchemaMismatch as e:
            self.log.critical("%s", e)
            self.exit(1)

    def init_oauth(self):
        super().init_oauth()
        # a server's OAuth client secret is its generated API token: hashed as that token is
        oauthclients.install(self.oauth_provider)

    async def init_role_creation(self):
        # JupyterHub deletes every role missing from load_roles: declare each shared
        # workspace's roles (uws_hub.sharing), with their users and groups
        shared = role_specs(self.db)
        names = {role["name"] for role in shared}
        self.load_roles = [r for r in self.load_roles if r["name"] not in names] + shared
        await super().init_role_creation()
        self._check_user_role()

    def _check_user_role(self):
        """Warn if JupyterHub's ``user`` role lacks a scope of :data:`scopes.USER_SCOPES`: a
        config that sets the role's scopes (``extra_user_scopes``, or the role in
        ``load_roles``) lists them itself, and one written before a scope was added to
        them (``custom:uws:write:servers``) would leave launchers read-only in their own
        servers and every HuBMAP token refused, with no word at startup."""
        role = hub_orm.Role.find(self.db, "user")
        held = set(role.scopes if role is not None else [])
        missing = [scope for scope in scopes.USER_SCOPES if not {scope, scope.partition("!")[0]} & held]
        if missing:
            self.log.warning(
                "The 'user' role lacks %s, which every user needs on their own workspaces and servers: add them"
                " to c.JupyterHub.extra_user_scopes (or to the user role in c.JupyterHub.load_roles)."
                " Without custom:uws:write:servers!user a launcher only reads in their own server, and"
                " HubMAPCompat.token_scopes cannot be granted",
                ", ".join(missing),
            )

    async def init_users(self):
        await super().init_users()
        self._check_signup()
        if isinstance(self.authenticator, WorkspaceLocalAuthenticator):
            for name, password in await asyncio.to_thread(self.authenticator.bootstrap_admins):
                if password is None:
                    self.log.info(
                        "Created the admin account %r (password from $%s)", name, self.authenticator.admin_password_env
                    )
                else:
                    # printed once, on purpose not logged
                    print(
                        f"\nCreated the first admin account: user {name!r}, password {password!r}\n"
                        "Log in with it and keep it safe; it is not shown again.\n",
                        flush=True,
                    )

    def _check_signup(self):
        """With system users, sign-up waits for an admin's approval whatever the config says.

        A hub user is the system account of its name, and sign-up takes any name that has
        no hub user: the account of a user deleted from the hub (whose files and home
        stay) or of someone who never used it. Without approval it went, with what it
        holds, to whoever signed up with its name first; an admin who approves says who
        that name is."""
        auth = self.authenticator
        if (
            self.system_users
            and isinstance(auth, WorkspaceLocalAuthenticator)
            and auth.allow_signup
            and not auth.signup_requires_approval
        ):
            self.log.warning(
                "With UWSHub.system_users, sign-up waits for an admin's approval"
                " (WorkspaceLocalAuthenticator.signup_requires_approval): a new account's name is a"
                " system account's, whose files and jobs an admin gives only to its person"
            )
            auth.signup_requires_approval = True

    def init_tornado_settings(self):
        # uws-hub's templates after the admin's template_paths, before JupyterHub's,
        # so that our page.html (with the Workspaces link) wraps JupyterHub's
        hub_templates = self._template_paths_default()[0]
        paths = [p for p in self.template_paths if p != TEMPLATE_DIR]
        paths.insert(paths.index(hub_templates) if hub_templates in paths else len(paths), TEMPLATE_DIR)
        self.template_paths = paths
        super().init_tornado_settings()
        self.uws = self._make_services()
        self.tornado_settings["uws"] = self.uws
        # pages link to the Local accounts admin page only when it is in use
        self.tornado_settings["template_vars"] = {
            **(self.tornado_settings.get("template_vars") or {}),
            "uws_local_accounts": isinstance(self.authenticator, WorkspaceLocalAuthenticator),
            # pages name job types as people know them ("JupyterLab", not "jupyterlab")
            "uws_job_type_names": {name: jt.display_name for name, jt in self.uws.job_types.items()},
            # invitations and unread notifications, counted in the navigation
            "uws_waiting": self.uws.waiting,
        }

    def init_tornado_application(self):
        """JupyterHub's application, with each route's request bodies bounded (:mod:`uws_hub.bodies`)."""
        self.tornado_application = BodyLimitedApplication(
            self.handlers,
            max_body_bytes=self.max_request_body_bytes,
            seed_body_bytes=SEED_JSON_EXPANSION * self.max_seed_bytes,
            **self.tornado_settings,
        )

    def _make_services(self) -> services.Services:
        try:
            spawner_classes = {name: load_spawner_class(value) for name, value in self.resource_spawners.items()}
            job_types = parse_job_types(self.job_types, list(spawner_classes))
            built = services.build(self, self.log, spawner_classes, job_types)
        except ValueError as e:
            self.log.critical("%s", e)
            self.exit(1)
        if self.system_users and os.geteuid() != 0:
            self.log.warning("UWSHub.system_users is on but the hub is not root: jobs will fail to start")
        if not self.system_users:
            self.log.warning(
                "Single-account mode: every job runs as the hub's own account (%s)."
                " Set c.UWSHub.system_users = True to run jobs as their owners' system accounts.",
                pwd.getpwuid(os.geteuid()).pw_name,
            )
        return built

    async def init_spawners(self):
        # JupyterHub is about to re-adopt running servers with its one spawner_class:
        # first give each unfinished job's server the spawner class of its resource
        for job in Job.unfinished(self.db):
            if job.interactive:  # batch jobs have no server (their runners find them)
                self.uws.servers.restore_class(job.owner, job.server_name, job.resource)
        count = await super().init_spawners()
        revoked = self.uws.servers.revoke_stale_tokens()
        if revoked:
            self.log.warning("Revoked %d API tokens of servers that are no longer running", revoked)
        # JupyterHub logs "Initialized %i spawners" with what this returns
        return count

    async def update_last_activity(self):
        """JupyterHub's poll of the proxy's activity, where a server an editor launched moves its own.

        JupyterHub takes the time of the last request through each server's
        route for the server's ``last_activity`` and its owner's. A server an
        editor launched is the editor's to use (and its code is theirs, which
        can send itself requests): its traffic moves the server's
        ``last_activity`` only, as its own activity reports do
        (:class:`uws_hub.apihandlers.servers.ActivityAPIHandler`), never the
        owner's, which is what their own requests and their own servers make it.
        The rest is JupyterHub's (``JupyterHub.update_last_activity``), the route
        check included.
        """
        routes = await self.proxy.get_all_routes()
        owners = Job.owners_own_servers(self.db)
        for route in routes.values():
            data = route["data"]
            if "user" not in data or "server_name" not in data or "last_activity" not in data:
                continue
            user = hub_orm.User.find(self.db, data["user"])
            spawner = None if user is None else user.orm_spawners.get(data["server_name"])
            if spawner is None:
                continue
            when = parse_date(data["last_activity"])
            if when.tzinfo:
                when = when.astimezone(UTC).replace(tzinfo=None)
            spawner.last_activity = max(spawner.last_activity, when) if spawner.last_activity else when
            if (user.id, data["server_name"]) in owners:
                user.last_activity = max(user.last_activity, when) if user.last_activity else when
        try:
            self.db.commit()
        except SQLAlchemyError:
            self.log.exception("Rolling back session due to database error")
            self.db.rollback()
            return
        await self.proxy.check_routes(self.users, self._service_map, routes)

    def init_handlers(self):
        super().init_handlers()
        # what importing a spawner's libraries added to JupyterHub's handlers and must not be served
        unwanted = {h for cls in self.uws.servers.spawner_classes.values() for h in cls.unwanted_hub_handlers()}
        self.handlers = [h for h in self.handlers if h[1] not in unwanted]
        # every error under /hub/api/ has a message, unknown routes' too
        self.handlers = [
            (route[0], UnknownAPIRouteHandler, *route[2:]) if route[1] is API404 else route for route in self.handlers
        ]
        self.hubmap = HubMAPCompat(parent=self)
        self.ivoa_uws = IVOAUWS(parent=self)
        protocols = hubmap_routes(self.hubmap) if self.hubmap.enabled else []
        if self.ivoa_uws.enabled:
            protocols += uws_routes(self.ivoa_uws)
        # ours first: JupyterHub's list ends with catch-alls (/api/(.*) -> 404); JupyterHub's
        # server API starts (server_api_handlers) launch workspace jobs instead of spawning
        # and JupyterHub's group API refuses a new member being deleted (group_api_handlers)
        ours = protocols + api_handlers + server_api_handlers + group_api_handlers + page_handlers
        self.handlers[:0] = self.add_url_prefix(self.hub_prefix, ours)
        # no NUL reaches the database through JupyterHub's handlers, nor ours built on them
        # (uws_hub.hubhandlers); the hub's own API refuses them its way
        self.handlers = [(route[0], refusing_nul(route[1], UWSAPIHandler), *route[2:]) for route in self.handlers]

    # ---------------------------------------------------------------- run
    async def start(self):
        await super().start()
        if self.subapp or self.generate_config or self.generate_certs:
            return
        deepen_listen_backlog(self.http_server)
        # every background task of uws-hub, in one pool (uws_hub.tasks)
        self.uws.start(self)
        set_thread_switch_interval(self.thread_switch_interval_seconds)
        # what the hub made to start (modules, JupyterHub's and SQLAlchemy's machinery,
        # the users it loaded) lives as long as the hub: out of the collector's sight, a
        # full collection walks only what came since (one stalled the event loop for
        # 140 ms in a burst of 200 launches)
        gc.freeze()

    async def cleanup(self):
        if hasattr(self, "uws"):
            await self.uws.stop(stop_servers=self.cleanup_servers)
        await super().cleanup()


#: connections the hub's socket holds until the hub accepts them (the kernel caps it at
#: net.core.somaxconn, 4096 on current Linux)
LISTEN_BACKLOG = 4096


def deepen_listen_backlog(server) -> None:
    """Let the hub's socket hold a burst of connections.

    JupyterHub listens with tornado's default backlog, 128 connections. The
    proxy opens a connection to the hub for each request it forwards at once,
    so in a burst (200 launches) the kernel drops the connections over 128,
    and each of those waits for a retransmission (1, 3, 7, 15 s) while the
    hub is idle. Listening again on a listening socket sets its backlog.
    """
    for sock in getattr(server, "_sockets", {}).values():
        sock.listen(LISTEN_BACKLOG)


def set_thread_switch_interval(seconds: float) -> None:
    """Python's thread switch interval for this process (``UWSHub.thread_switch_interval_seconds``;
    0 leaves Python's)."""
    if seconds > 0:
        sys.setswitchinterval(seconds)


UWSNewToken.classes.append(UWSHub)
UWSUpgradeDB.classes.append(UWSHub)

main = UWSHub.launch_instance

if __name__ == "__main__":
    main()
