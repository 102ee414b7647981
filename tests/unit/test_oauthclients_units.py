"""The hub's OAuth provider (uws_hub.oauthclients) on a real JupyterHub database: a
server's client secret that is a token JupyterHub generated is hashed with 1 round,
as that token is; every other secret as JupyterHub hashes it; JupyterHub's own check
of a secret accepts the right one and refuses any other."""

from __future__ import annotations

import pytest
from jupyterhub import orm as hub_orm
from jupyterhub.oauth.provider import JupyterHubOAuthServer, make_provider
from jupyterhub.utils import compare_token

from uws_hub import oauthclients


@pytest.fixture
def provider():
    db = hub_orm.new_session_factory("sqlite:///:memory:")()
    db.add(hub_orm.OAuthClient(identifier="jupyterhub"))
    user = hub_orm.User(name="owner")
    db.add(user)
    db.commit()
    provider = make_provider(lambda: db, url_prefix="/hub/api/oauth2", login_url="/hub/login")
    oauthclients.install(provider)
    yield provider, db, user
    db.close()


def stored_secret(db, client_id: str) -> str:
    return db.query(hub_orm.OAuthClient).filter_by(identifier=client_id).one().secret


def rounds(hashed: str) -> int:
    return int(hashed.split(":")[1])


def test_a_servers_generated_token_as_secret_is_hashed_as_the_token_is(provider):
    provider, db, user = provider
    assert type(provider) is oauthclients.UWSOAuthServer and isinstance(provider, JupyterHubOAuthServer)
    # what User.spawn does: a new API token for the server, then its client with the token as secret
    token = user.new_api_token(note="Server at /user/owner/ws/")
    client = provider.add_client(
        "jupyterhub-user-owner-ws", token, "/user/owner/ws/oauth_callback", allowed_scopes=["access:servers"]
    )
    assert client is db.query(hub_orm.OAuthClient).filter_by(identifier="jupyterhub-user-owner-ws").one()
    assert (client.redirect_uri, client.allowed_scopes, client.description) == (
        "/user/owner/ws/oauth_callback",
        ["access:servers"],
        "jupyterhub-user-owner-ws",
    )
    secret = stored_secret(db, "jupyterhub-user-owner-ws")
    assert rounds(secret) == 1 == rounds(hub_orm.APIToken.find(db, token).hashed)
    # its own salt, not the token's hash again
    assert secret != hub_orm.APIToken.find(db, token).hashed
    # JupyterHub's check of the secret (the code exchange) takes the right one only
    assert compare_token(secret, token)
    assert not compare_token(secret, token[:-1] + ("0" if token[-1] != "0" else "1"))
    assert not compare_token(secret, hub_orm.APIToken.find(db, token).hashed[:32])
    # updating the client (the next start's new token) keeps one row
    token2 = user.new_api_token(note="Server at /user/owner/ws/")
    provider.add_client("jupyterhub-user-owner-ws", token2, "/user/owner/ws/oauth_callback")
    assert db.query(hub_orm.OAuthClient).filter_by(identifier="jupyterhub-user-owner-ws").count() == 1
    secret2 = stored_secret(db, "jupyterhub-user-owner-ws")
    assert rounds(secret2) == 1 and compare_token(secret2, token2) and not compare_token(secret2, token)


def test_any_other_secret_is_hashed_as_jupyterhub_hashes_it(provider):
    provider, db, user = provider
    # a service's configured secret, chosen by a person: not an API token
    provider.add_client("service-x", "a configured secret", "/services/x/oauth_callback")
    assert rounds(stored_secret(db, "service-x")) == hub_orm.Hashed.rounds == 16384
    # a token a spawner brought back, which JupyterHub stored as not generated (hashed hard)
    brought = "brought-back-token-0123456789"
    user.new_api_token(brought, generated=False, note="retrieved from spawner ws")
    assert rounds(hub_orm.APIToken.find(db, brought).hashed) == 16384
    provider.add_client("jupyterhub-user-owner-ws", brought, "/user/owner/ws/oauth_callback")
    assert rounds(stored_secret(db, "jupyterhub-user-owner-ws")) == 16384
    assert compare_token(stored_secret(db, "jupyterhub-user-owner-ws"), brought)
    # no secret: none stored, as JupyterHub does
    provider.add_client("service-y", "", "/services/y/oauth_callback")
    assert stored_secret(db, "service-y") == ""


def test_a_servers_client_is_committed_by_its_caller_with_the_servers_link_to_it(provider):
    """``User.spawn`` links the server to its client and commits both right after
    ``add_client`` (nothing awaited in between): a commit of its own in ``add_client``
    was one more on the way to every start (failed before: add_client committed)."""
    from sqlalchemy import event

    provider, db, user = provider
    token = user.new_api_token(note="Server at /user/owner/ws/")
    commits: list[int] = []
    event.listen(db, "after_commit", lambda session: commits.append(1))
    client = provider.add_client("jupyterhub-user-owner-ws", token, "/user/owner/ws/oauth_callback")
    assert commits == [] and client in db.new
    db.commit()  # the caller's
    assert commits == [1]
    assert stored_secret(db, "jupyterhub-user-owner-ws").startswith("sha512:1:")
