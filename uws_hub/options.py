"""Options of sharing, quotas and notifications, mixed into :class:`uws_hub.app.UWSHub`.

Kept apart from ``app.py`` so that it stays about the hub's wiring; they are
written ``c.UWSHub.<name>`` like every other uws-hub option.
"""

from __future__ import annotations

from jupyterhub.traitlets import ByteSpecification
from traitlets import Bool, Enum, Float, HasTraits, Integer, Unicode

from .quotas.limits import PERIODS


class SharingOptions(HasTraits):
    share_search = Enum(
        ["all", "groups"],
        "all",
        config=True,
        help="""Who the recipient search of the share dialog finds (``/hub/api/share-recipients``).

        ``"all"``: every user and group of the hub, by (part of) their name or
        display name. ``"groups"``: only the searcher's own groups and the
        members of those groups.
        """,
    )

    share_search_show_email = Bool(
        False,
        config=True,
        help="""Show users' e-mail addresses in the recipient search.

        Off by default: people see each other's names and display names only.
        """,
    )

    share_posix_group_prefix = Unicode(
        "uws-ws-",
        config=True,
        help="""Prefix of the POSIX group of each workspace shared with editors: ``<prefix><workspace id>``.

        Only with ``system_users``: the hub creates the group (``groupadd``)
        and hands the workspace's directory tree to it with group read/write,
        setgid directories and a default ACL, so files written by any job
        there stay shared. No account is a member (the hub empties it with
        ``gpasswd -M ""``, also the members earlier versions added): the hub
        gives the group to the jobs it starts in the workspace for its owner
        or an editor, and to nothing else, so editors reach it through the
        hub, not their own logins. Groups with this prefix and a number that is no workspace's
        id are deleted by the hub: keep it unique to uws-hub (and to each hub
        on a machine). At most 32 characters with the id.
        """,
    )

    share_sync_interval_seconds = Float(
        300.0,
        config=True,
        help="""Seconds between checks that shared workspaces' JupyterHub roles and
        POSIX groups match their shares (0: only at startup).

        Every share change applies at once; this repairs what changed behind
        uws-hub's back (a group's members, a role edited by hand), and stops
        the jobs of users who are no longer editors of the workspace they
        launched them in (they left a group that is an editor), and kills the
        processes that hold a workspace's POSIX group and run as neither its
        owner nor a current editor (one scan of ``/proc``).
        """,
    )

    editors_run_code = Bool(
        True,
        config=True,
        help="""Whether editors of a shared workspace may launch jobs in it (jobs that run as themselves).

        A job runs as the system account of whoever launched it: the owner's
        jobs (and those an admin or a service launches) as the owner, an
        editor's as the editor's own account, with the workspace's POSIX group
        (``share_posix_group_prefix``), so it reads and writes the workspace and
        nothing else of the owner's. In a running server only its launcher
        (and holders of ``admin:servers``) writes and runs code; the owner,
        other editors and viewers get the read-only view. Editors never run
        code as the owner.

        True (the default): editors launch jobs (the API, the pages,
        JupyterHub's server start, the HuBMAP and UWS interfaces), run their
        own held jobs, and stop any job of the workspace.

        False: editors read and change the workspace's files through the hub
        and stop its jobs, but their launches are refused with a 403 that says
        why. Applies to launches at once.

        With ``system_users`` off (single-account mode) every job runs as the
        hub's own account whoever launched it, as before; the server's
        launcher-only rule still applies.
        """,
    )

    server_auth_cache_seconds = Integer(
        1,
        min=1,
        config=True,
        help="""Seconds a job's Jupyter server trusts the hub's last answer about a login or a token.

        This bounds how long a grantee whose share was revoked keeps reaching a
        server that is already open in their browser: after it, the server
        asks the hub again and is refused. JupyterHub's default is 300; 1 is
        the smallest (0 would mean "forever" to JupyterHub's HubAuth). Applies
        to jobs started after a change.
        """,
    )

    jupyterlab_news = Bool(
        False,
        config=True,
        help="""Whether JupyterLab in workspace jobs offers Jupyter's news and update checks.

        False: the servers uws-hub launches disable JupyterLab's announcements
        plugin (``@jupyterlab/apputils-extension:announcements``), so a newcomer's
        first JupyterLab does not ask "Would you like to get notified about
        official Jupyter news?", and no server fetches the news feed or checks
        for a newer JupyterLab on the internet (compute nodes often cannot reach
        it). True: JupyterLab's own default, which asks each user once and
        remembers their answer. Applies to jobs started after a change.
        """,
    )

    copy_max_attempts = Integer(
        3,
        config=True,
        help="""How many times the hub tries to make an accepted copy before it gives up.

        A copy interrupted by a hub restart counts as an attempt. A copy over
        the recipient's disk quota is not tried again.
        """,
    )

    copy_retry_seconds = Float(
        10.0,
        config=True,
        help="""Seconds before an accepted copy that failed is tried again (up to ``copy_max_attempts``).""",
    )


class QuotaOptions(HasTraits):
    quota_disk_bytes = ByteSpecification(
        None,
        allow_none=True,
        config=True,
        help="""Default disk quota of a user (all their workspaces together); None: no limit.

        Uploads and copies that would go over it are refused (422). Accepts a
        number of bytes or a string with a unit, e.g. ``"50G"``. Admins
        override it per user and per group (``/hub/admin/quotas``,
        ``PUT /hub/api/quotas/{user}``).
        """,
    )

    quota_core_hours = Float(
        None,
        allow_none=True,
        config=True,
        help="""Default core-hours a user's jobs may use per ``quota_period``; None: no limit.

        A job uses its cpus (``resources["cpus"]``, 1 if not given) times its
        running time. At the limit new launches are refused and running jobs
        are stopped (``failed``, with the reason).
        """,
    )

    quota_period = Enum(
        list(PERIODS),
        "month",
        config=True,
        help="""The period core-hours are counted over: ``"day"``, ``"week"`` (from Monday),
        ``"month"``, ``"year"`` (calendar periods, UTC) or ``"all"`` (never reset).""",
    )

    quota_concurrent_jobs = Integer(
        None,
        allow_none=True,
        config=True,
        help="""Default number of unfinished jobs a user may have at once; None: no limit.""",
    )

    quota_max_cpus = Integer(
        None,
        allow_none=True,
        config=True,
        help="""Default largest ``cpus`` one job of a user may request; None: no limit.""",
    )

    quota_max_memory_bytes = ByteSpecification(
        None,
        allow_none=True,
        config=True,
        help="""Default largest ``memory`` one job of a user may request; None: no limit.

        Accepts a number of bytes or a string with a unit, e.g. ``"64G"``.
        """,
    )

    quota_max_gpus = Integer(
        None,
        allow_none=True,
        config=True,
        help="""Default largest ``gpus`` one job of a user may request; None: no limit.""",
    )

    quota_warning_fraction = Float(
        0.9,
        config=True,
        help="""Share of a disk or core-hour quota at which the user is warned (once), in the hub and by e-mail.""",
    )

    quota_interval_seconds = Float(
        60.0,
        config=True,
        help="""Seconds between core-hour accountings (0: never).

        Each one recomputes every user's core-hours in the period from the jobs,
        stops the jobs of users over their limit and sends warnings. A job
        over the limit runs at most this much longer.
        """,
    )

    workspace_usage_full_scan_seconds = Float(
        86400.0,
        config=True,
        help="""Seconds between measurements of *every* workspace's disk usage.

        In between, each pass of ``workspace_usage_interval`` measures only the
        workspaces that may have changed behind the hub's back: those that ran
        a job since their last measurement, those shared on disk with editors,
        and those never measured. Uploads and copies update the usage as they
        happen. The first pass after the hub starts measures every workspace
        too, deleting the temporary files of uploads the previous hub process
        was receiving when it stopped.

        The frequent passes re-read only the directories whose times changed
        since the workspace's last measurement, and the files written within
        the last hour; a file untouched for longer and then written in place
        (no file created, deleted or renamed beside it) is counted anew at
        this full pass, which reads every file.
        """,
    )


class NotificationOptions(HasTraits):
    smtp_host = Unicode(
        "",
        config=True,
        help="""SMTP server for notification e-mails (shares, copies, quota warnings); empty: no e-mail.

        Mail goes to the address in each user's ``user_info`` (see
        docs/authentication.md); users without one get notifications in the
        hub only.
        """,
    )

    smtp_port = Integer(25, config=True, help="""Port of the SMTP server (587 for STARTTLS, 465 for TLS).""")

    smtp_from = Unicode(
        "",
        config=True,
        help="""The From address of notification e-mails, e.g. ``"uws-hub <hub@example.org>"``.""",
    )

    smtp_tls = Enum(
        ["none", "starttls", "ssl"],
        "none",
        config=True,
        help="""Encryption to the SMTP server: ``"none"``, ``"starttls"`` or ``"ssl"`` (TLS from the start).""",
    )

    smtp_user = Unicode("", config=True, help="""User name to log in to the SMTP server with (empty: no login).""")

    smtp_password = Unicode("", config=True, help="""Password to log in to the SMTP server with.""")

    smtp_timeout_seconds = Float(
        30.0, config=True, help="""Seconds to wait for the SMTP server before a message is given up."""
    )
