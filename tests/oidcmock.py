"""A local OpenID Connect provider for the tests: the ``oidc-provider-mock``
package (authlib underneath: the real authorization-code protocol, with PKCE,
refresh tokens, userinfo and a consent page to click in a browser), run as a
subprocess::

    python tests/oidcmock.py --port 9400 --users '[{"sub": "u1", "email": "a@b.c"}]' [--globus]

With ``--globus`` it also answers like Globus Auth where Globus differs from
plain OIDC, so that uws-hub's Globus authenticator can be pointed at it:

- token responses carry ``resource_server`` and ``other_tokens``: one token per
  Globus resource server the app asked scopes for (transfer, groups), each
  usable and refreshable at this provider (they are the provider's own tokens,
  relabelled);
- ``GET /v2/groups/my_groups`` (the Globus Groups API) lists the groups in the
  caller's ``globus_groups`` claim (``[{"id": ..., "name": ...}]``), for a
  valid bearer token;
- ``POST /v2/oauth2/token/introspect`` (Globus Auth's token introspection, with
  the client's credentials in HTTP Basic auth and ``token=`` in a form)
  answers ``{"active": true, "sub", "username", "email", "name", ...}`` for a
  valid token and ``{"active": false}`` for any other.
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import timedelta

import flask
import werkzeug.serving
from oidc_provider_mock import User
from oidc_provider_mock import app as make_app

GLOBUS_RESOURCE_SERVERS = {
    "transfer.api.globus.org": "urn:globus:auth:scope:transfer.api.globus.org:all",
    "groups.api.globus.org": "urn:globus:auth:scope:groups.api.globus.org:view_my_groups_and_memberships",
}


class GlobusTokenResponses:
    """WSGI middleware: reshape ``/oauth2/token`` JSON answers the way Globus Auth sends them."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") != "/oauth2/token":
            return self.app(environ, start_response)
        captured = {}

        def capture(status, headers, exc_info=None):
            captured["status"], captured["headers"] = status, headers
            return lambda data: None

        body = b"".join(self.app(environ, capture))
        if captured["status"].startswith("200"):
            token = json.loads(body)
            token["resource_server"] = "auth.globus.org"
            token["other_tokens"] = [
                {
                    "access_token": token["access_token"],
                    "refresh_token": token.get("refresh_token"),
                    "expires_in": token.get("expires_in"),
                    "token_type": token.get("token_type", "Bearer"),
                    "resource_server": server,
                    "scope": scope,
                }
                for server, scope in GLOBUS_RESOURCE_SERVERS.items()
            ]
            body = json.dumps(token).encode()
        headers = [(k, v) for k, v in captured["headers"] if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(body))))
        start_response(captured["status"], headers)
        return [body]


def build(users: list[dict], globus: bool, token_max_age: int):
    app = make_app(
        user_claims=[User(sub=u["sub"], claims={k: v for k, v in u.items() if k != "sub"}) for u in users],
        access_token_max_age=timedelta(seconds=token_max_age),
    )
    if globus:

        @app.get("/v2/groups/my_groups")
        def my_groups():
            auth = flask.request.headers.get("Authorization", "")
            with app.test_client() as client:
                info = client.get("/userinfo", headers={"Authorization": auth})
            if info.status_code != 200:
                return flask.jsonify({"code": "AUTHENTICATION_ERROR"}), 401
            groups = info.get_json().get("globus_groups") or []
            return flask.jsonify([{"id": gid, "name": f"group {gid}"} for gid in groups])

        @app.post("/v2/oauth2/token/introspect")
        def introspect():
            client = flask.request.authorization
            if client is None or not client.username or not client.password:
                return flask.jsonify({"error": "invalid_client"}), 401
            token = flask.request.form.get("token", "")
            with app.test_client() as test_client:
                info = test_client.get("/userinfo", headers={"Authorization": f"Bearer {token}"})
            if not token or info.status_code != 200:
                return flask.jsonify({"active": False})
            claims = info.get_json()
            return flask.jsonify(
                {
                    "active": True,
                    "sub": claims["sub"],
                    "username": claims.get("preferred_username"),
                    "email": claims.get("email"),
                    "name": claims.get("name"),
                    "client_id": client.username,
                    "scope": " ".join(GLOBUS_RESOURCE_SERVERS.values()),
                    "iss": "https://auth.globus.org",
                }
            )

        app.wsgi_app = GlobusTokenResponses(app.wsgi_app)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--users", default="[]", help="JSON list of {sub, claims...}")
    parser.add_argument("--globus", action="store_true")
    parser.add_argument("--token-max-age", type=int, default=3600)
    args = parser.parse_args()
    os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"
    app = build(json.loads(args.users), args.globus, args.token_max_age)
    werkzeug.serving.run_simple("127.0.0.1", args.port, app, threaded=True, use_reloader=False)


if __name__ == "__main__":
    main()
