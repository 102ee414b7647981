"""Every route of the HuBMAP-compatible API, for the app to register when it is enabled."""

from __future__ import annotations

from . import handlers, shares
from .config import HubMAPCompat


def routes(compat: HubMAPCompat) -> list[tuple[str, type, dict]]:
    """The routes under ``/<base_path>/``, each with and without its trailing slash."""
    return [
        (f"/{compat.base_path}/{pattern}/?", handler, {"compat": compat})
        for pattern, handler in [*handlers.patterns, *shares.patterns]
    ]
