"""Names that could pass for others (uws_hub.authenticators.names): refused when new,
kept by the hub users who have them. (Through real hubs: tests/integration/test_auth_local.py,
test_auth_oidc.py.)"""

from __future__ import annotations

import pytest
from jupyterhub import orm as hub_orm
from sqlalchemy.orm import Session
from traitlets.config import Configurable

from uws_hub.authenticators.local import WorkspaceLocalAuthenticator
from uws_hub.authenticators.names import LookAlikeName, look_alike

from ..helpers import memory_database


@pytest.mark.parametrize(
    "name",
    [
        *["alice", "bob.smith", "user_1-x", "josé", "алиса", "山田たろう", "yamada山田", "김민수", "müller"],
        # (refused before: 々 and ー were scripts of their own, ß and ς case-folded to ss and σ)
        *["佐々木", "ターナー", "らーめん", "〆切", "νίκος", "strauß", "o'brien", "ᏹᏴ".lower()],
    ],
)
def test_names_of_one_script_in_normal_form_pass(name):
    assert look_alike(name) is None


@pytest.mark.parametrize(
    "name",
    [
        "\uff41lice",  # fullwidth a
        "\u0430lice",  # Cyrillic a
        "\u03b1lice",  # Greek alpha
        "alice\u200b",  # zero-width space
        "alice\u00ad",  # soft hyphen
        "jose\u0301",  # decomposed é
        "zq\u0308",  # a mark that composes with nothing
        "Alice",
        "ALICE",
        "佐々木\u0430",  # Han with Cyrillic
        "\ufb01le",  # the fi ligature
    ],
)
def test_look_alikes_are_named(name):
    assert look_alike(name)


def test_a_hub_user_who_has_a_look_alike_name_keeps_it():
    """Made before the rule (renaming nobody): they still log in; a new one is refused."""
    engine = memory_database()
    db = Session(engine)
    db.add(hub_orm.User(name="\u0430lice"))
    db.commit()
    hub = Configurable()
    hub.db = db  # (what the authenticator reads of JupyterHub's app)
    auth = WorkspaceLocalAuthenticator(parent=hub)
    assert auth.validate_username("\u0430lice") is True
    with pytest.raises(LookAlikeName) as refused:
        auth.validate_username("\u0430nna")
    assert refused.value.status_code == 400
    db.close()
    engine.dispose()
