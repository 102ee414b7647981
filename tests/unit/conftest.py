"""Fixtures of the in-process tests."""

from __future__ import annotations

import pytest

from uws_hub.workspaces.paths import Owner
from uws_hub.workspaces.storage import WorkspaceStorage

from ..helpers import OUTSIDE


@pytest.fixture
def storage(tmp_path):
    root = tmp_path / "root"
    store = WorkspaceStorage(str(root))
    directory = store.directory_for("alice", "ws")
    store.create(directory, Owner())
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_bytes(OUTSIDE)
    (tmp_path / "outside" / "only-outside.txt").write_bytes(OUTSIDE * 1000)
    return store, directory
