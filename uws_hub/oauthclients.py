"""Server OAuth clients whose secret JupyterHub generated: hashed as their API token is.

At each start, JupyterHub's ``User.spawn`` makes a new random API token for the
server (``uuid4().hex``: 122 random bits) and registers the server's OAuth
client with that same token as its secret. The token goes into ``api_tokens``
hashed with **1** round of SHA-512 (JupyterHub's ``Hashed.generated_rounds``:
generated tokens have the entropy that makes rounds pointless), but
``JupyterHubOAuthServer.add_client`` hashes every client secret with 16,384
rounds, the cost meant for secrets a person chose: 1.6 ms of the hub's CPU on
the way to every server's start, and as much again when the start is retried.

:class:`UWSOAuthServer` hashes a client secret with 1 round exactly when the
database already holds that very secret as an API token JupyterHub generated
(its row's hash has 1 round): the extra rounds then protect nothing, as the
same secret's 1-round hash lies in ``api_tokens`` beside it. Any other secret
(a service's configured ``oauth_client_secret``, a token a spawner brought
back that JupyterHub stored with ``generated=False``) is hashed as JupyterHub
does. The stored hash (``sha512:1:<salt>:<digest>``, a fresh random salt) is
what JupyterHub's ``compare_token`` checks, which reads the rounds from it, so
JupyterHub's OAuth flow verifies the secret unchanged.

Such a client is not committed by ``add_client`` itself, unlike JupyterHub's:
``User.spawn``, its one caller with a generated secret, links the server to the
client and commits both in its next statements (nothing awaited in between, so
no other task sees the session meanwhile): one commit fewer on the way to every
server's start.
"""

from __future__ import annotations

from jupyterhub import orm
from jupyterhub.oauth.provider import JupyterHubOAuthServer
from jupyterhub.utils import hash_token


def generated_token(db, secret: str) -> bool:
    """Whether ``secret`` is an API token in the database that JupyterHub generated
    (stored with its 1-round hash for generated tokens)."""
    found = orm.APIToken.find(db, secret)
    if found is None:
        return False
    return found.hashed.split(":")[1] == str(orm.APIToken.generated_rounds)


class UWSOAuthServer(JupyterHubOAuthServer):
    """JupyterHub's OAuth provider; the hub's is made one by :func:`install`."""

    def add_client(self, client_id, client_secret, redirect_uri, allowed_scopes=None, description=""):
        """JupyterHub's ``add_client`` (same query), with a generated secret hashed with
        1 round and left for the caller to commit (see the module's documentation)."""
        if not client_secret or not generated_token(self.db, client_secret):
            return super().add_client(client_id, client_secret, redirect_uri, allowed_scopes, description)
        orm_client = self.db.query(orm.OAuthClient).filter_by(identifier=client_id).one_or_none()
        if orm_client is None:
            orm_client = orm.OAuthClient(identifier=client_id)
            self.db.add(orm_client)
        orm_client.secret = hash_token(
            client_secret, rounds=orm.APIToken.generated_rounds, salt=orm.APIToken.generated_salt_bytes
        )
        orm_client.redirect_uri = redirect_uri
        orm_client.description = description or client_id
        orm_client.allowed_scopes = list(allowed_scopes or [])
        return orm_client


def install(provider: JupyterHubOAuthServer) -> None:
    """Make the hub's OAuth provider (JupyterHub's ``make_provider`` builds it) a
    :class:`UWSOAuthServer`: the subclass adds no state, only the method above."""
    if type(provider) is JupyterHubOAuthServer:
        provider.__class__ = UWSOAuthServer
