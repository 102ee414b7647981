"""Log in with OAuth 2 / OpenID Connect (any provider: Keycloak, Auth0, ORCID, CILogon …).

Entry point ``uws-oidc`` (needs the ``globus`` extra, which installs
oauthenticator 17: ``pip install uws-hub[globus]``).

:class:`WorkspaceOIDCAuthenticator` is oauthenticator's
``GenericOAuthenticator`` plus what every uws-hub OAuth authenticator shares
(:class:`WorkspaceOAuthMixin`, also used by the Globus one):

- the identity as JupyterHub ``user_info``: email, display name and the
  provider's subject id (``external_ids``), from configurable claims;
- :attr:`~WorkspaceOAuthMixin.allowed_domains`: let in people whose (verified)
  email is at one of these domains, besides oauthenticator's own rules
  (``allowed_users``, ``allowed_groups`` with ``manage_groups``,
  ``admin_groups``, ``allow_all``);
- tokens kept in the encrypted ``auth_state`` with their expiry, refreshed with
  the refresh token when they are about to expire (each time JupyterHub
  refreshes the user: before a job starts, and every ``auth_refresh_age``);
- :attr:`~WorkspaceOAuthMixin.pass_tokens_to_jobs`: hand the access token to
  jobs as environment variables (JSON, never pickle).

The user name comes from ``username_claim`` (default ``preferred_username``;
a callable may compute it from the claims).
"""

from __future__ import annotations

import time
from typing import Any

from oauthenticator.generic import GenericOAuthenticator
from traitlets import Bool, Integer, Set, Unicode, default

from .identity import email_domain, lookup, make_user_info
from .jobenv import JobEnvironmentMixin
from .sameperson import SamePersonMixin


def expires_at(token: dict[str, Any], now: float | None = None) -> int | None:
    """Epoch seconds when a token response's access token expires (from ``expires_in``)."""
    expires_in = token.get("expires_in")
    try:
        return int((now if now is not None else time.time()) + int(expires_in))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


class WorkspaceOAuthMixin(SamePersonMixin, JobEnvironmentMixin):
    """What uws-hub's OAuth authenticators add to oauthenticator's; mix in before its class."""

    provider_name = Unicode(
        "oidc",
        config=True,
        help="""Key of this identity provider in ``user_info["external_ids"]``, e.g. ``"orcid"``.

        .. versionadded:: 0.2
        """,
    )

    email_claim = Unicode(
        "email",
        config=True,
        help="""Claim (dotted key of the userinfo reply) with the user's email address.

        .. versionadded:: 0.2
        """,
    )

    display_name_claim = Unicode(
        "name",
        config=True,
        help="""Claim with the name to show for the user (``user_info["display_name"]``).

        .. versionadded:: 0.2
        """,
    )

    id_claim = Unicode(
        "sub",
        config=True,
        help="""Claim with the user's stable id at the provider (``user_info["external_ids"][provider_name]``).

        .. versionadded:: 0.2
        """,
    )

    allowed_domains = Set(
        Unicode(),
        config=True,
        help="""Let in users whose email address (:attr:`email_claim`) is at one of these domains,
        e.g. ``{"example.org"}``. Sub-domains are not included.

        An address the provider marks ``email_verified: false`` does not count.
        This adds to the other rules that let users in (``allowed_users``,
        ``allowed_groups``, ``admin_users``, ``allow_all``); it blocks nobody.

        .. versionadded:: 0.2
        """,
    )

    token_refresh_margin_seconds = Integer(
        600,
        config=True,
        help="""Refresh access tokens that expire within this many seconds.

        Checked whenever JupyterHub refreshes the user: before every job start
        (``refresh_pre_spawn``, on when ``enable_auth_state`` is) and every
        ``auth_refresh_age`` seconds of use. A job thus starts with a token
        valid for at least this long. A failed refresh asks the user to log in
        again.

        .. versionadded:: 0.2
        """,
    )

    pass_tokens_to_jobs = Bool(
        False,
        config=True,
        help="""Hand the user's access tokens to jobs as environment variables
        (which ones: see the authenticator). Refresh tokens are never handed over.

        Off by default. Needs ``c.Authenticator.enable_auth_state = True`` and
        ``$JUPYTERHUB_CRYPT_KEY``.

        .. versionadded:: 0.2
        """,
    )

    # ---------------------------------------------------------------- identity and allow rules
    def identity(self, claims: dict[str, Any]) -> dict[str, Any]:
        """``user_info`` from the provider's userinfo claims (pure)."""
        external_id = lookup(claims, self.id_claim)
        return make_user_info(
            self.provider_name,
            str(external_id) if external_id not in (None, "") else None,
            email=lookup(claims, self.email_claim),
            display_name=lookup(claims, self.display_name_claim),
        )

    def domain_allowed(self, claims: dict[str, Any]) -> bool:
        if not self.allowed_domains or claims.get("email_verified") is False:
            return False
        domain = email_domain(lookup(claims, self.email_claim))
        return domain is not None and domain in {d.lower() for d in self.allowed_domains}

    async def update_auth_model(self, auth_model):
        auth_model = await super().update_auth_model(auth_model)
        claims = auth_model["auth_state"].get(self.user_auth_state_key) or {}
        auth_model["user_info"] = self.identity(claims)
        return auth_model

    async def get_user_groups(self, auth_state):
        key = self.auth_state_groups_key
        if isinstance(key, str) and key and lookup(auth_state, key) is None:
            # no groups claim for this user: no groups (oauthenticator would log an error)
            return set()
        return await super().get_user_groups(auth_state)

    async def check_allowed(self, username, auth_model):
        if await super().check_allowed(username, auth_model):
            return True
        claims = ((auth_model or {}).get("auth_state") or {}).get(self.user_auth_state_key) or {}
        if self.domain_allowed(claims):
            return True
        if self.allowed_domains:
            self.log.warning(
                "%s is not allowed (email domain %s)", username, email_domain(lookup(claims, self.email_claim))
            )
        return False

    def expiring(self, when: int | None) -> bool:
        return when is not None and when - time.time() < self.token_refresh_margin_seconds

    def passes_to_jobs(self) -> bool:
        return self.pass_tokens_to_jobs


class WorkspaceOIDCAuthenticator(WorkspaceOAuthMixin, GenericOAuthenticator):
    """Log in with any OAuth 2 / OpenID Connect provider (entry point ``uws-oidc``).

    Jobs get (with :attr:`pass_tokens_to_jobs`) ``UWS_OAUTH_ACCESS_TOKEN`` and
    ``UWS_OAUTH_ACCESS_TOKEN_EXPIRES_AT`` (epoch seconds).
    """

    @default("login_service")
    def _default_login_service(self):
        return "OpenID Connect"

    @default("scope")
    def _default_scope(self):
        return ["openid", "profile", "email"]

    @default("username_claim")
    def _default_username_claim(self):
        return "preferred_username"

    def build_auth_state_dict(self, token_info, user_info):
        # stamped on the token response itself (kept in auth_state as token_response),
        # so that rebuilding the state from it later keeps the original expiry
        token_info.setdefault("expires_at", expires_at(token_info))
        state = super().build_auth_state_dict(token_info, user_info)
        state["expires_at"] = token_info["expires_at"]
        return state

    async def refresh_user(self, user, handler=None, **kwargs):
        """Refresh an access token that expires soon; otherwise oauthenticator's check
        (the userinfo endpoint still accepts the token, else refresh)."""
        if not self.enable_auth_state:
            return True
        auth_state = await user.get_auth_state()
        if auth_state and auth_state.get("refresh_token") and self.expiring(auth_state.get("expires_at")):
            self.log.info(
                "Refreshing the access token of %s (expires within %ss)", user.name, self.token_refresh_margin_seconds
            )
            params = self.build_refresh_token_request_params(auth_state["refresh_token"])
            try:
                token_info = await self.get_token_info(handler, params)
                if not token_info.get("refresh_token"):
                    token_info["refresh_token"] = auth_state["refresh_token"]
                return await self._token_to_auth_model(token_info)
            except Exception as e:
                self.log.warning("Could not refresh the tokens of %s (%s): they must log in again", user.name, e)
                return False
        return await super().refresh_user(user, handler, **kwargs)

    def job_environment(self, auth_state: dict[str, Any]) -> dict[str, str]:
        env = {}
        if auth_state.get("access_token"):
            env["UWS_OAUTH_ACCESS_TOKEN"] = auth_state["access_token"]
            if auth_state.get("expires_at"):
                env["UWS_OAUTH_ACCESS_TOKEN_EXPIRES_AT"] = str(auth_state["expires_at"])
        return env
