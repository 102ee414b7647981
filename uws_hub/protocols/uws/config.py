"""The options of the IVOA UWS 1.1 interface: ``c.IVOAUWS.<name>``."""

from __future__ import annotations

from traitlets import Bool, Float, Unicode, validate
from traitlets.config import Configurable

from ...errors import UWSError
from ...workspaces.service import slugify
from .. import base_path


class IVOAUWS(Configurable):
    """The IVOA Universal Worker Service (UWS 1.1) interface to batch jobs."""

    enabled = Bool(
        True,
        config=True,
        help="""Serve every batch job type as a UWS 1.1 job list (on by default).

        Under ``<hub URL>/hub/<base_path>/<job type>``, e.g.
        ``https://hub.example.org/hub/api/uws/count-lines``, for UWS clients
        such as pyvo. See docs/uws.md.

        .. versionadded:: 0.4
        """,
    )

    base_path = Unicode(
        "api/uws",
        config=True,
        help="""Where the job lists are, under the hub's prefix (``/hub/``).

        .. versionadded:: 0.4
        """,
    )

    @validate("base_path")
    def _validate_base_path(self, proposal):
        return base_path(proposal.value, "IVOAUWS.base_path", "api/uws")

    max_wait_seconds = Float(
        50.0,
        config=True,
        help="""The longest a blocking ``GET`` of a job (``?WAIT=``) waits, in seconds.

        A client asks to wait for the job's next phase change with ``WAIT=n``
        (or ``WAIT=-1``: as long as the server allows); the hub answers at the
        change, after ``n`` seconds, or after this many, whichever comes
        first. Keep it below the read timeout of the clients (pyvo 1.10
        waits 60 s) and the idle timeout of any proxy in front of the hub.
        A waiting request holds no thread, only a subscription to the job's
        events.

        .. versionadded:: 0.4
        """,
    )

    @validate("max_wait_seconds")
    def _validate_max_wait_seconds(self, proposal):
        if not 0 <= proposal.value <= 3600:
            raise ValueError("IVOAUWS.max_wait_seconds must be from 0 to 3600")
        return proposal.value

    default_workspace = Unicode(
        "uws-jobs",
        config=True,
        help="""The slug of the workspace a job is created in when the request names none.

        A job list's ``POST`` may name a workspace (``WORKSPACE=<id or
        slug>``); without it, the job runs in the caller's workspace with
        this slug, created (with this description: "Jobs created through the
        UWS interface") the first time it is needed.

        .. versionadded:: 0.4
        """,
    )

    @validate("default_workspace")
    def _validate_default_workspace(self, proposal):
        try:
            valid = slugify(proposal.value) == proposal.value
        except UWSError:
            valid = False
        if not valid:
            raise ValueError(f"IVOAUWS.default_workspace must be a workspace slug, not {proposal.value!r}")
        return proposal.value
