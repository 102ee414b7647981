"""Where a workspace's symlinks point: ``source_path`` as given, ``dataset_uuid`` looked up.

HuBMAP's server linked ``source_path`` wherever it pointed; here every
target must be under ``HubMAPCompat.dataset_roots``, which
:meth:`uws_hub.storage.WorkspaceStorage.link_target` checks (the one place
paths are made safe). A ``dataset_uuid`` becomes a path through
``HubMAPCompat.dataset_lookup``: a URL template (HuBMAP's entity API answers
``{"path": ...}``, with the user's Globus token) or a callable.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from jupyterhub.utils import maybe_future
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from .models import HubMAPError, SymlinkSpec


async def lookup_dataset(lookup: Any, uuid: str, token: str, timeout: float) -> str:
    """The path of dataset ``uuid`` (a 400 saying why when it cannot be found)."""
    if callable(lookup):
        path = await maybe_future(lookup(uuid, token))
    elif lookup:
        request = HTTPRequest(
            lookup.format(uuid=quote(uuid, safe="")),
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            connect_timeout=timeout,
            request_timeout=timeout,
            follow_redirects=False,
        )
        try:
            response = await AsyncHTTPClient().fetch(request)
            path = json.loads(response.body).get("path")
        except (HTTPClientError, OSError, ValueError, AttributeError) as e:
            raise HubMAPError(400, f"Dataset {uuid} could not be looked up: {e}") from None
    else:
        raise HubMAPError(400, "This hub does not link datasets by dataset_uuid (HubMAPCompat.dataset_lookup).")
    if not isinstance(path, str) or not path:
        raise HubMAPError(400, f"Dataset {uuid} could not be looked up: no path")
    return path


async def link_targets(
    symlinks: list[SymlinkSpec], token: str | None, lookup: Any, timeout: float
) -> list[tuple[str, str]]:
    """``(path in the workspace, target)`` of each symlink requested."""
    links = []
    for spec in symlinks:
        target = spec.source_path
        if spec.dataset_uuid is not None:
            target = await lookup_dataset(lookup, spec.dataset_uuid, token or "", timeout)
        links.append((spec.path, target))
    return links
