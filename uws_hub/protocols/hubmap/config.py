"""The options of the HuBMAP-compatible API: ``c.HubMAPCompat.<name>``."""

from __future__ import annotations

from jupyterhub.traitlets import Callable
from traitlets import Bool, Dict, Float, Integer, List, Unicode, Union, validate
from traitlets.config import Configurable

from ...scopes import USER_SCOPES
from .. import base_path
from .models import RESOURCE_CONVERSIONS

#: HuBMAP's option names and the uws-hub resource each sets (see ``resource_options``)
DEFAULT_RESOURCE_OPTIONS = {
    "num_cpus": "cpus",
    "memory_mb": "memory",
    # the portal's name, and the one of HuBMAP's example configuration
    "time_limit_minutes": "time_limit",
    "time_limit_min": "time_limit",
    "gpu_enabled": "gpus",
}


class HubMAPCompat(Configurable):
    """The API of the HuBMAP User Workspaces Server, served by the hub for HuBMAP's clients."""

    enabled = Bool(
        False,
        config=True,
        help="""Serve the HuBMAP-compatible API (off by default).

        Clients of the HuBMAP User Workspaces Server (the HuBMAP portal's
        ``WORKSPACES_ENDPOINT``) then use ``<hub URL>/hub/<base_path>``, e.g.
        ``https://hub.example.org/hub/api/hubmap``. See docs/hubmap.md.

        .. versionadded:: 0.3
        """,
    )

    base_path = Unicode(
        "api/hubmap",
        config=True,
        help="""Where the HuBMAP-compatible API is, under the hub's prefix (``/hub/``).

        .. versionadded:: 0.3
        """,
    )

    @validate("base_path")
    def _validate_base_path(self, proposal):
        return base_path(proposal.value, "HubMAPCompat.base_path", "api/hubmap")

    job_type_ids = Dict(
        {"jupyter_lab": "jupyterlab"},
        config=True,
        help="""HuBMAP job type ids and the uws-hub job type (``c.UWSHub.job_types``) each starts.

        HuBMAP's clients ask for their own ids (the portal's default is
        ``jupyter_lab``). Every uws-hub job type without an id here is
        offered under its own name. Ids naming a job type the hub does not
        have are left out (with a warning in the log). Example::

            c.HubMAPCompat.job_type_ids = {"jupyter_lab": "jupyterlab", "jupyter_lab_r": "jupyterlab-r"}

        .. versionadded:: 0.3
        """,
    )

    resource_options = Dict(
        DEFAULT_RESOURCE_OPTIONS,
        config=True,
        help="""HuBMAP's ``resource_options`` and the uws-hub resource each sets.

        Values are ``"cpus"`` (an integer), ``"memory"`` (an integer of
        megabytes), ``"time_limit"`` (an integer of minutes), ``"gpus"`` (a
        boolean: one GPU or none, or an integer) and ``"partition"`` (a
        string). Options not listed are ignored, as HuBMAP's server ignores
        them. The job type's limits and the user's quotas apply as to every
        launch; a launch over them is refused with HuBMAP's 422
        ``Invalid resource options found: [...]``.

        .. versionadded:: 0.3
        """,
    )

    @validate("resource_options")
    def _validate_resource_options(self, proposal):
        unknown = {v for v in proposal.value.values() if v not in RESOURCE_CONVERSIONS}
        if unknown:
            raise ValueError(
                f"HubMAPCompat.resource_options maps to unknown resources {sorted(unknown)};"
                f" use {sorted(RESOURCE_CONVERSIONS)}"
            )
        return proposal.value

    dataset_roots = List(
        Unicode(),
        config=True,
        help="""Directories that workspace symlinks (``workspace_details.symlinks``) may point into.

        A symlink's target (``source_path``, or the path its ``dataset_uuid``
        is looked up to) must resolve to one of these directories or below,
        else the request is refused. Empty (the default): no symlinks at all.
        The files API never follows a symlink out of its workspace; jobs see
        the datasets through them, with their owner's file permissions.
        Example: ``["/hive/hubmap/data"]``.

        .. versionadded:: 0.3
        """,
    )

    dataset_lookup = Union(
        [Unicode(), Callable()],
        default_value="",
        config=True,
        help="""How a symlink's ``dataset_uuid`` becomes a path.

        A URL template with ``{uuid}``, fetched with the request's
        ``globus_groups_token`` as ``Authorization: Bearer``, whose JSON answer
        has the path in ``path`` (HuBMAP's entity API:
        ``"https://entity.api.hubmapconsortium.org/datasets/{uuid}/file-system-abs-path"``);
        or a callable ``f(uuid: str, token: str) -> str`` (may be async).
        Empty (the default): ``dataset_uuid`` symlinks are refused.

        .. versionadded:: 0.3
        """,
    )

    lookup_timeout_seconds = Float(
        10.0,
        config=True,
        help="""Seconds to wait for the dataset lookup and for Globus (token exchange).

        .. versionadded:: 0.3
        """,
    )

    token_lifetime_seconds = Integer(
        7 * 24 * 3600,
        config=True,
        help="""Seconds the tokens that ``POST tokens`` hands out stay valid (0: no expiry).

        HuBMAP's server issued tokens that never expire; the portal asks for
        a new one at every login. JupyterHub's
        ``token_expires_in_max_seconds`` caps this too.

        .. versionadded:: 0.3
        """,
    )

    token_scopes = List(
        Unicode(),
        [*USER_SCOPES, "access:servers!user", "read:users:name!user"],
        config=True,
        help="""Scopes of the tokens that ``POST tokens`` hands out.

        The default: the user's own workspaces, jobs and shares, and opening
        their own jobs' servers. A user must hold the scopes (JupyterHub
        refuses a token with more rights than its owner).

        .. versionadded:: 0.3
        """,
    )

    cors_origins = List(
        Unicode(),
        config=True,
        help="""Browser origins allowed to call the API, e.g. ``["https://portal.hubmapconsortium.org"]``.

        The HuBMAP portal calls the API from the browser with a
        ``UWS-Authorization`` header, so its origin must be listed. Empty
        (the default): no cross-origin calls. Only tokens authenticate here
        (never the hub's cookies), so an allowed origin cannot act with a
        logged-in user's cookie.

        .. versionadded:: 0.3
        """,
    )

    stop_wait_seconds = Float(
        30.0,
        config=True,
        help="""Seconds a start or a delete waits for a job that is stopping.

        HuBMAP's portal renews a session by stopping its job and starting
        another at once; uws-hub runs one job per workspace at a time, so the
        start waits for the stop to finish, up to this long (then it is
        refused with a 400 saying so).

        .. versionadded:: 0.3
        """,
    )
