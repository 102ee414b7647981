"""Which of a user's API tokens JupyterHub's user and activity API narrows
(``ServerTokenMixin.foreign_server`` in uws_hub/apihandlers/servers.py): the API
token of a server its owner did not launch, told by the token's note.
tests/integration/test_editor_launches.py tries it on a real hub."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import SimpleNamespace

import pytest

from uws_hub.apihandlers import servers as api
from uws_hub.jobs.servers import server_of_token_note, server_token_notes

BASE = "/user/al%20ice/"


@pytest.mark.parametrize("name", ["ws", "a b", "ü-é", "x/y", "100%", "@~"])
@pytest.mark.parametrize("base", [BASE, "/prefix/user/bob/"])
def test_every_note_of_a_servers_token_names_the_server(name, base):
    for note in server_token_notes(base, name):
        assert server_of_token_note(note) == name


@pytest.mark.parametrize(
    "note",
    [
        "",
        "Requested via api by user alice",
        "HuBMAP API token (POST tokens)",
        "Server at " + BASE,  # the default server: there is none
        "Server at " + BASE + "ws",
        "Server at ws/",
        "Server at /user/bob/",
        "Server at /user/",
        "Server at /prefix/user/bob//",
        "retrieved from spawner ",
        "server at " + BASE + "ws/",
    ],
)
def test_other_notes_name_no_server(note):
    assert server_of_token_note(note) is None


class Unwalkable(Mapping):
    """A user's servers (``User.orm_spawners``): thousands, found one by one, never walked."""

    def __init__(self, names):
        self.names = set(names)

    def __getitem__(self, name):
        if name not in self.names:
            raise KeyError(name)
        return SimpleNamespace(name=name)

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("walked the user's servers")

    def __len__(self) -> int:
        return len(self.names)


def test_a_servers_token_is_told_from_its_note_alone(monkeypatch):
    owner = SimpleNamespace(id=1, name="al ice", base_url=BASE)
    owner.orm_spawners = Unwalkable(["editors", "owners", "ended"] + [f"w{i}" for i in range(1000)])
    jobs = {
        "editors": SimpleNamespace(launcher=SimpleNamespace(id=2)),
        "owners": SimpleNamespace(launcher=SimpleNamespace(id=1)),
    }
    workspaces = {"editors", "owners", "ended"}
    monkeypatch.setattr(
        api.Workspace,
        "find_by_slug",
        staticmethod(lambda db, owner_id, slug: SimpleNamespace(id=slug) if slug in workspaces else None),
    )
    monkeypatch.setattr(api.Job, "active_in", staticmethod(lambda db, ws_id: jobs.get(ws_id)))

    def foreign(note: str, user_id: int = 1):
        token = SimpleNamespace(user_id=user_id, note=note)
        handler = SimpleNamespace(get_token=lambda: token, db=None)
        return api.ServerTokenMixin.foreign_server(handler, owner)

    for editors, owners, ended, gone in zip(
        *(server_token_notes(BASE, name) for name in ("editors", "owners", "ended", "gone")), strict=True
    ):
        assert foreign(editors) == "editors"
        assert foreign(owners) is None  # the owner's own server: JupyterHub's as it is
        assert foreign(editors, user_id=2) is None  # (another user's token: JupyterHub's scopes decide)
        # a token the hub has yet to revoke: of a server with no unfinished job, or whose
        # workspace is gone, narrowed too
        assert foreign(ended) == "ended"
        assert foreign(gone) == "gone"
    assert foreign("Requested via api") is None
    # an admin renamed the owner while an editor's server runs: its token's note keeps
    # the old name, and it is still that server's
    for note in server_token_notes("/user/old%20name/", "editors"):
        assert foreign(note) == "editors"
    assert foreign("") is None
