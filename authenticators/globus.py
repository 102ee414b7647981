"""Log in with Globus Auth, and hand Globus transfer tokens to jobs (HuBMAP's use).

Entry point ``uws-globus`` (needs the ``globus`` extra: oauthenticator 17).

:class:`WorkspaceGlobusAuthenticator` is oauthenticator's
``GlobusOAuthenticator`` (user name from ``preferred_username`` without the
``@domain``, ``identity_provider``, ``allowed_globus_groups``,
``admin_globus_groups``, token revocation at logout) plus uws-hub's
:class:`~uws_hub.authenticators.oauth.WorkspaceOAuthMixin` (``user_info``,
``allowed_domains``, refreshing, handing tokens to jobs), and changes:

- **no pickle**: oauthenticator's ``pre_spawn_start`` puts a base64 pickle of
  the whole auth state (refresh tokens included) in ``$GLOBUS_DATA``. Here,
  only when :attr:`pass_tokens_to_jobs` is on, jobs get JSON with access tokens
  only:

  - ``UWS_GLOBUS_TOKENS``: ``{"<resource server>": {"access_token", "expires_at",
    "scope", "token_type", "resource_server"}}`` for every kept resource
    server (all but ``exclude_tokens``: by default the Globus Auth and Groups
    tokens are kept from jobs);
  - ``GLOBUS_<NAME>_ACCESS_TOKEN`` for each, e.g. ``GLOBUS_TRANSFER_ACCESS_TOKEN``;
  - ``GLOBUS_LOCAL_ENDPOINT`` when ``globus_local_endpoint`` is set.

- **refresh**: oauthenticator refreshes only the Globus Auth token; here
  every kept resource server's token (transfer …) that expires within
  :attr:`token_refresh_margin_seconds` is refreshed with its own refresh token
  (Globus issues refresh tokens when asked for ``access_type=offline``, the
  default :attr:`extra_authorize_params` here).

- token responses without ``other_tokens`` are accepted (a plain OIDC provider
  standing in for Globus in tests).

- :meth:`~WorkspaceGlobusAuthenticator.authenticate_access_token`: who holds
  a Globus access token (HuBMAP's clients exchange one for a hub token): the
  token is introspected at Globus Auth with the hub's client credentials and
  goes through the same rules as a login (identity provider, allowed and
  admin Globus groups, read with that token).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from oauthenticator.globus import GlobusOAuthenticator
from tornado import web
from traitlets import Unicode, default

from .oauth import WorkspaceOAuthMixin, expires_at

_TOKEN_FIELDS = ("access_token", "expires_at", "scope", "token_type", "resource_server")
#: the Globus resource server whose token lists a user's groups
GROUPS_RESOURCE_SERVER = "groups.api.globus.org"


@dataclass(frozen=True)
class _IntrospectedToken:
    """What :meth:`WorkspaceGlobusAuthenticator.authenticate` is given for an access token
    (not a login): made only by :meth:`~WorkspaceGlobusAuthenticator.authenticate_access_token`,
    so no request body can pose as one."""

    token_info: dict
    claims: dict


class WorkspaceGlobusAuthenticator(WorkspaceOAuthMixin, GlobusOAuthenticator):
    """Log in with Globus (entry point ``uws-globus``)."""

    introspect_url = Unicode(
        "https://auth.globus.org/v2/oauth2/token/introspect",
        config=True,
        help="""Globus Auth's token introspection endpoint, where access tokens that clients
        present (HuBMAP's ``POST tokens``) are checked with the hub's client credentials.

        .. versionadded:: 0.3
        """,
    )

    @default("provider_name")
    def _default_provider_name(self):
        return "globus"

    @default("scope")
    def _default_scope(self):
        # oauthenticator's (openid, profile, transfer, groups when needed), plus
        # email: user_info["email"] is where notifications go
        scopes = list(GlobusOAuthenticator._scope_default(self))
        return scopes if "email" in scopes else [*scopes, "email"]

    @default("extra_authorize_params")
    def _default_extra_authorize_params(self):
        # refresh tokens, so that transfer tokens outlive their 48 hours
        return {"access_type": "offline"}

    def get_globus_tokens(self, token_info):
        """Globus's token response as one dict per resource server, with ``expires_at``.

        The expiry is stamped on the response itself (kept in auth_state), so
        that later rebuilds keep it.
        """
        now = time.time()
        token_info.setdefault("resource_server", "auth.globus.org")
        token_info.setdefault("expires_at", expires_at(token_info, now))
        token_info.setdefault("other_tokens", [])
        for other in token_info["other_tokens"]:
            other.setdefault("expires_at", expires_at(other, now))
        tokens = super().get_globus_tokens(token_info)
        stamped = [*token_info["other_tokens"], token_info]
        for token, source in zip(tokens, stamped):
            token["expires_at"] = source.get("expires_at")
        return tokens

    async def introspect(self, token: str) -> dict[str, Any] | None:
        """Globus Auth's introspection of ``token`` (its user's claims), or None if it is not active."""
        reply = await self.httpfetch(
            self.introspect_url,
            label="introspecting a token",
            method="POST",
            headers={**self.get_client_credential_headers(), "Content-Type": "application/x-www-form-urlencoded"},
            body=urlencode({"token": token}),
            raise_error=False,
        )
        if not isinstance(reply, dict) or not reply.get("active") or not reply.get("sub"):
            return None
        claims = dict(reply)
        # introspection names it "username"; logins read it from the userinfo claim
        claims.setdefault(self.username_claim, reply.get("username"))
        return claims

    async def authenticate_access_token(self, handler, token: str) -> dict[str, Any] | None:
        """The auth model of whoever holds a Globus access token, with a login's rules applied.

        None if the token is not active; a 403 if its user may not use the
        hub (identity provider, allowed Globus groups, read with this token:
        HuBMAP's clients send a Groups token). The model's ``auth_state``
        holds no tokens to keep: a user's tokens come from their logins.
        """
        if not isinstance(token, str) or not token:
            return None
        claims = await self.introspect(token)
        if claims is None:
            return None
        token_info = {
            "access_token": token,
            "resource_server": GROUPS_RESOURCE_SERVER,
            "scope": claims.get("scope", ""),
            "token_type": "Bearer",
            "expires_in": max(0, int(claims.get("exp") or 0) - int(time.time())) or None,
        }
        model = await self.get_authenticated_user(handler, _IntrospectedToken(token_info, claims))
        if model is None:
            raise web.HTTPError(
                403,
                "User is not a member of any allowed Globus groups. Please contact your administrator for access."
                if self.allowed_globus_groups else f"{claims.get(self.username_claim)} may not use this hub.",
            )
        return model

    async def authenticate(self, handler, data=None, **kwargs):
        if isinstance(data, _IntrospectedToken):
            # oauthenticator's steps after the code exchange, with the introspected claims
            # in place of the userinfo reply (a Groups token cannot read userinfo)
            auth_state = self.build_auth_state_dict(dict(data.token_info), data.claims)
            model = {
                "name": self.normalize_username(self.user_info_to_username(data.claims)),
                "admin": None,
                "auth_state": auth_state,
            }
            model = await self.update_auth_model(model)
            if self.manage_groups:
                model = await self._apply_managed_groups(model)
            return model
        return await super().authenticate(handler, data, **kwargs)

    async def refresh_user(self, user, handler=None, **kwargs):
        """Refresh the kept resource servers' tokens that expire soon.

        ``True`` when nothing needed refreshing, the new auth model when tokens
        were refreshed, ``False`` (log in again) when a refresh failed or a
        token expires without a refresh token.
        """
        if not self.enable_auth_state:
            return True
        auth_state = await user.get_auth_state()
        if not auth_state:
            self.log.info("No auth_state for %s: they must log in again", user.name)
            return False
        tokens = dict(auth_state.get("tokens") or {})
        changed = False
        for server, token in tokens.items():
            if not self.expiring(token.get("expires_at")):
                continue
            if not token.get("refresh_token"):
                self.log.info("The %s token of %s expires and cannot be refreshed: log in again", server, user.name)
                return False
            try:
                fresh = await self.get_token_info(handler, self.build_refresh_token_request_params(token["refresh_token"]))
            except Exception as e:
                self.log.warning("Could not refresh the %s token of %s (%s): log in again", server, user.name, e)
                return False
            tokens[server] = {
                **token,
                "access_token": fresh["access_token"],
                "refresh_token": fresh.get("refresh_token") or token["refresh_token"],
                "expires_in": fresh.get("expires_in"),
                "expires_at": expires_at(fresh),
                "scope": fresh.get("scope", token.get("scope")),
                "token_type": fresh.get("token_type", token.get("token_type")),
            }
            self.log.info("Refreshed the %s token of %s", server, user.name)
            changed = True
        if not changed:
            return True
        auth_state["tokens"] = tokens
        return {"name": user.name, "auth_state": auth_state}

    def job_environment(self, auth_state: dict[str, Any]) -> dict[str, str]:
        tokens = {
            server: {k: token.get(k) for k in _TOKEN_FIELDS}
            for server, token in (auth_state.get("tokens") or {}).items()
            if server not in self.exclude_tokens and token.get("access_token")
        }
        env = {"UWS_GLOBUS_TOKENS": json.dumps(tokens, sort_keys=True)}
        for server, token in tokens.items():
            name = server.split(".", 1)[0].upper().replace("-", "_")
            env[f"GLOBUS_{name}_ACCESS_TOKEN"] = token["access_token"]
        if self.globus_local_endpoint:
            env["GLOBUS_LOCAL_ENDPOINT"] = self.globus_local_endpoint
        return env
