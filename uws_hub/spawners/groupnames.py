"""The names of workspaces' POSIX groups: ``<prefix><workspace id>`` (``uws-ws-12``).

One rule for the hub that makes and deletes the groups
(:mod:`uws_hub.sharing.posixgroups`) and the local spawner that strips other
workspaces' groups from a job's (:func:`uws_hub.spawners.localjob.job_groups`); it is
here because the spawners never import the hub's modules."""

from __future__ import annotations

import re


def group_name(prefix: str, workspace_id: int) -> str:
    return f"{prefix}{workspace_id}"


def is_group_name(prefix: str, name: str) -> bool:
    """Whether ``name`` is one the hub gives a workspace's group (:func:`group_name`).
    Only those: ``str.isdigit`` also passes digits ``int`` refuses (``²``: every share
    sync failed) and names the hub never makes (``012``, ``٣``: read as another
    workspace's group, an administrator's group was deleted and its holders killed)."""
    return re.fullmatch(re.escape(prefix) + "[1-9][0-9]*", name) is not None
