"""The authenticators' pure parts, without servers: identity, reply and claim
mapping, LDAP filters, the job-environment hook, Globus token handling."""

from __future__ import annotations

import json
import logging
import time

import pytest

from uws_hub.authenticators import identity
from uws_hub.authenticators.jobenv import JobEnvironmentMixin
from uws_hub.authenticators.remote_api import RemoteServiceUnavailable, WorkspaceRemoteAPIAuthenticator
from uws_hub.authenticators.sameperson import PersonChanged


# ---------------------------------------------------------------- identity
def test_user_info_shape_and_readers():
    info = identity.make_user_info("orcid", "0000-0001", email="a@b.org", display_name="A B", groups=None)
    assert info == {"email": "a@b.org", "display_name": "A B", "external_ids": {"orcid": "0000-0001"}}
    assert identity.make_user_info("x", None) == {"external_ids": {}}
    assert identity.email_of(info) == "a@b.org" and identity.email_of(None) is None
    assert identity.display_name_of(info, "ab") == "A B"
    assert identity.display_name_of({"display_name": "  "}, "ab") == "ab"
    assert identity.display_name_of(None, "ab") == "ab"
    assert identity.external_ids_of(info) == {"orcid": "0000-0001"}
    assert identity.external_ids_of({"external_ids": "junk"}) == {}
    assert identity.lookup({"a": {"b": 1}}, "a.b") == 1
    assert identity.lookup({"a": 1}, "a.b") is None
    assert identity.email_domain("X@Example.ORG") == "example.org"
    assert identity.email_domain("nope") is None


# ---------------------------------------------------------------- the same person
class Users:
    """A handler's ``find_user`` over {name: user_info}."""

    def __init__(self, **infos):
        self.infos = infos

    def find_user(self, name):
        return None if name not in self.infos else type("User", (), {"user_info": self.infos[name]})()


@pytest.mark.parametrize(
    "stored, fresh",
    [
        (None, {"external_ids": {"remote": "2"}}),  # a user from before ids were kept (or made through the API)
        ({"external_ids": {"remote": "1"}}, {"external_ids": {"remote": "1"}}),  # the same person
        (
            {"external_ids": {"ldap": "1"}},
            {"external_ids": {"remote": "2"}},
        ),  # ids of another provider: nothing to compare
        ({"external_ids": {"remote": "1"}}, {"external_ids": {}}),  # the login carries no id
    ],
)
def test_a_login_of_the_same_person_or_of_no_known_person_is_let_through(stored, fresh):
    auth = WorkspaceRemoteAPIAuthenticator()
    auth.check_same_person(Users(ann=stored), {"name": "ann", "user_info": fresh})
    auth.check_same_person(Users(), {"name": "ann", "user_info": fresh})  # a new user


def test_a_login_of_another_person_with_the_name_is_refused(caplog):
    auth = WorkspaceRemoteAPIAuthenticator()
    users = Users(ann={"external_ids": {"remote": "1", "ldap": "x"}})
    with pytest.raises(PersonChanged) as refused:
        auth.check_same_person(users, {"name": "ann", "user_info": {"external_ids": {"remote": "2"}}})
    assert refused.value.status_code == 403
    assert "belongs to another person on this hub" in refused.value.jupyterhub_message
    assert "Login refused for ann: their remote id at the identity provider is 2, the user's is 1" in caplog.text


# ---------------------------------------------------------------- job environment hook
class FakeUser:
    name = "someone"

    def __init__(self, state):
        self.state = state

    async def get_auth_state(self):
        return self.state


class FakeSpawner:
    def __init__(self):
        self.environment = {"KEEP": "me"}


class Tokens(JobEnvironmentMixin):
    on = False

    def passes_to_jobs(self):
        return self.on

    def job_environment(self, auth_state):
        return {"TOKEN": auth_state.get("token"), "SECRET_FREE": "yes"}


async def test_job_environment_only_when_turned_on_and_not_lingering():
    auth, spawner = Tokens(), FakeSpawner()
    await auth.pre_spawn_start(FakeUser({"token": "t1"}), spawner)
    assert spawner.environment == {"KEEP": "me"}
    auth.on = True
    await auth.pre_spawn_start(FakeUser({"token": "t1"}), spawner)
    assert spawner.environment == {"KEEP": "me", "TOKEN": "t1", "SECRET_FREE": "yes"}
    # the next start of the same server, without a token: nothing left from the last one
    await auth.pre_spawn_start(FakeUser({"other": 1}), spawner)
    assert spawner.environment == {"KEEP": "me", "SECRET_FREE": "yes"}
    await auth.pre_spawn_start(FakeUser(None), spawner)
    assert spawner.environment == {"KEEP": "me"}


# ---------------------------------------------------------------- remote API
def test_remote_reply_mapping():
    auth = WorkspaceRemoteAPIAuthenticator(
        username_key="account.name",
        id_key="account.id",
        email_key="account.mail",
        display_name_key="",
        admin_key="account.staff",
        groups_key="account.teams",
        success_key="ok",
        auth_state_keys=["jwt"],
        admin_users={"root"},
    )
    reply = {
        "ok": True,
        "account": {"name": "Kim", "id": 9, "mail": "kim@x.org", "staff": False, "teams": ["a", 2]},
        "jwt": "j",
    }
    model = auth.reply_to_auth_model(reply, "typed")
    assert model == {
        "name": "Kim",
        "user_info": {"email": "kim@x.org", "external_ids": {"remote": "9"}},
        "auth_state": {"remote": {"jwt": "j"}},
        "admin": False,
        "groups": ["a", "2"],
    }
    assert auth.reply_to_auth_model({**reply, "ok": False}, "typed") is None
    with pytest.raises(RemoteServiceUnavailable):
        auth.reply_to_auth_model({"ok": True, "account": {}}, "typed")
    auth.username_key = lambda r: r["account"]["name"].lower()
    assert auth.reply_to_auth_model(reply, "typed")["name"] == "kim"
    auth.username_key = ""
    assert auth.reply_to_auth_model(reply, "typed")["name"] == "typed"
    assert auth.job_environment({"remote": {"jwt": "j"}}) == {"UWS_REMOTE_AUTH_STATE": '{"jwt": "j"}'}


def test_remote_request_formats():
    auth = WorkspaceRemoteAPIAuthenticator(
        remote_url="https://a.example/login",
        extra_fields={"app": "uws"},
        username_field="user",
        request_format="form",
        connect_timeout_seconds=1,
        request_timeout_seconds=2,
    )
    req = auth.build_request("kim", "p&ss")
    assert req.method == "POST" and req.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert req.body == b"app=uws&user=kim&password=p%26ss"
    assert (req.connect_timeout, req.request_timeout, req.follow_redirects) == (1, 2, False)
    auth.request_format = "json"
    assert json.loads(auth.build_request("kim", "pw").body) == {"app": "uws", "user": "kim", "password": "pw"}
    with pytest.raises(ValueError, match="remote_url must be an http"):
        WorkspaceRemoteAPIAuthenticator(remote_url="file:///etc/passwd")


# ---------------------------------------------------------------- LDAP
def test_ldap_filters_and_dns():
    ldap = pytest.importorskip("uws_hub.authenticators.ldap")
    assert ldap.user_search_filter("({attribute}={username})", "uid", "a*b") == r"(uid=a\2ab)"
    assert ldap.group_search_filter("(member={userdn})", "uid=a(1),dc=x", "a") == r"(member=uid=a\281\29,dc=x)"
    assert ldap.bind_dn("uid={username},dc=x", "a,b=c") == r"uid=a\,b\=c,dc=x"
    assert ldap.dn_key("UID=A,  DC=X") == "uid=a,dc=x"
    auth = ldap.WorkspaceLDAPAuthenticator(admin_groups=["cn=adm,dc=x"], email_attribute="mail")
    found = ldap.DirectoryUser(
        dn="uid=a,dc=x",
        attributes={
            "uid": ["a"],
            "mail": ["a@x"],
            "cn": ["A"],
            "uidNumber": [5],
            "gidNumber": ["6"],
            "homeDirectory": ["/h/a"],
            "entryUUID": ["u-1"],
        },
        groups=[("CN=Adm,DC=x", "adm")],
    )
    model = auth.auth_model("a", found)
    assert model["admin"] is True and model["groups"] == ["adm"]
    assert model["user_info"] == {
        "email": "a@x",
        "display_name": "A",
        "external_ids": {"ldap": "u-1"},
        "ldap_dn": "uid=a,dc=x",
    }
    assert model["auth_state"]["ldap"]["gid_number"] == 6
    assert auth.job_environment(model["auth_state"])["UWS_LDAP_HOME"] == "/h/a"
    with pytest.raises(ValueError, match="is not a DN"):
        ldap.WorkspaceLDAPAuthenticator(allowed_groups=["not a dn"])


def test_an_ldap_entry_without_a_stable_id_binds_its_name_to_nothing():
    """An entry without ``id_attribute`` (AD's, 389-ds's on the default ``entryUUID``) had
    its DN stored as its stable id: an OU move changed it, and its person was refused."""
    ldap = pytest.importorskip("uws_hub.authenticators.ldap")
    auth = ldap.WorkspaceLDAPAuthenticator(allow_all=True)
    found = ldap.DirectoryUser(dn="uid=a,ou=old,dc=x", attributes={"uid": ["a"]})
    model = auth.auth_model("a", found)
    assert model["user_info"] == {"external_ids": {}, "ldap_dn": "uid=a,ou=old,dc=x"}


class _RefreshedUser:
    def __init__(self, name, user_info):
        self.name, self.user_info = name, user_info


def _ldap_refresher(look_up, **config):
    ldap = pytest.importorskip("uws_hub.authenticators.ldap")
    settings = dict(server_address="ldap.invalid", search_bind_dn="cn=hub,dc=x", lookup_dn=True, allow_all=True)
    auth = ldap.WorkspaceLDAPAuthenticator(auth_refresh_age=300, **{**settings, **config})
    auth.look_up = look_up
    return ldap, auth


async def test_ldap_refresh_asks_the_directory_once_per_user_and_remembers_a_no():
    """JupyterHub asks again at every request of a user a refresh said no to (a departed
    user's token): each did a bind and a search, in the hub's thread pool."""
    import asyncio
    import threading

    calls = []
    release = threading.Event()

    def look_up(name):
        calls.append(name)
        release.wait(10)
        return None

    _ldap, auth = _ldap_refresher(look_up)
    gone = _RefreshedUser("gone", {"external_ids": {"ldap": "u-1"}})
    waiting = [asyncio.ensure_future(auth.refresh_user(gone)) for _ in range(8)]
    while not calls:
        await asyncio.sleep(0.01)
    release.set()
    assert await asyncio.gather(*waiting) == [False] * 8
    assert await auth.refresh_user(gone) is False
    assert calls == ["gone"]
    # a new login asks afresh
    auth.find_user = lambda name, password: _ldap.DirectoryUser(dn="uid=gone,dc=x", attributes={})
    assert await auth.authenticate(None, {"username": "gone", "password": "p"})
    assert await auth.refresh_user(gone) is False
    assert calls == ["gone", "gone"]


async def test_ldap_refresh_keeps_sessions_it_cannot_judge():
    """A directory that cannot be reached, or a search account that could not read the entry
    at login either (login accepts that, with bind_dn_template), is no departure: every
    user was logged out at each refresh."""
    ldap = pytest.importorskip("uws_hub.authenticators.ldap")

    def unavailable(name):
        raise ldap.DirectoryUnavailable("down")

    _ldap, auth = _ldap_refresher(unavailable)
    assert await auth.refresh_user(_RefreshedUser("a", {"external_ids": {"ldap": "u-1"}})) is True
    _ldap, auth = _ldap_refresher(lambda name: None, lookup_dn=False, bind_dn_template=["uid={username},dc=x"])
    assert await auth.refresh_user(_RefreshedUser("unread", {"external_ids": {}})) is True
    assert await auth.refresh_user(_RefreshedUser("read", {"external_ids": {}, "ldap_dn": "uid=read,dc=x"})) is False


# ---------------------------------------------------------------- OAuth and Globus
def test_oidc_claims_and_domains():
    oauth = pytest.importorskip("uws_hub.authenticators.oauth")
    auth = oauth.WorkspaceOIDCAuthenticator(allowed_domains={"Uni.Example"}, provider_name="keycloak")
    claims = {"sub": "s1", "email": "a@uni.example", "name": "A"}
    assert auth.identity(claims) == {"email": "a@uni.example", "display_name": "A", "external_ids": {"keycloak": "s1"}}
    assert auth.domain_allowed(claims)
    assert not auth.domain_allowed({**claims, "email_verified": False})
    assert not auth.domain_allowed({**claims, "email": "a@sub.uni.example"})
    assert not auth.domain_allowed({"sub": "s"})
    assert oauth.expires_at({"expires_in": 60}, now=1000) == 1060
    assert oauth.expires_at({}, now=1000) is None
    state = auth.build_auth_state_dict({"access_token": "a", "expires_in": 100}, {"sub": "s"})
    assert abs(state["expires_at"] - (time.time() + 100)) < 5
    # rebuilt later from the kept token response: the expiry stays
    again = auth.build_auth_state_dict(state["token_response"], {"sub": "s"})
    assert again["expires_at"] == state["expires_at"]
    assert auth.job_environment(state) == {
        "UWS_OAUTH_ACCESS_TOKEN": "a",
        "UWS_OAUTH_ACCESS_TOKEN_EXPIRES_AT": str(state["expires_at"]),
    }


def test_globus_tokens_without_pickle():
    globus = pytest.importorskip("uws_hub.authenticators.globus")
    auth = globus.WorkspaceGlobusAuthenticator(client_id="c", globus_local_endpoint="ep")
    response = {
        "access_token": "auth-at",
        "refresh_token": "auth-rt",
        "expires_in": 100,
        "scope": "openid",
        "token_type": "Bearer",
        "resource_server": "auth.globus.org",
        "other_tokens": [
            {
                "access_token": "tr-at",
                "refresh_token": "tr-rt",
                "expires_in": 200,
                "scope": "transfer",
                "token_type": "Bearer",
                "resource_server": "transfer.api.globus.org",
            },
            {
                "access_token": "gr-at",
                "refresh_token": "gr-rt",
                "expires_in": 200,
                "scope": "groups",
                "token_type": "Bearer",
                "resource_server": "groups.api.globus.org",
            },
        ],
    }
    state = auth.build_auth_state_dict(response, {"sub": "s", "preferred_username": "a@globusid.org"})
    assert set(state["tokens"]) == {"transfer.api.globus.org"}
    assert state["tokens"]["transfer.api.globus.org"]["expires_at"] >= time.time() + 190
    env = auth.job_environment(state)
    assert env["GLOBUS_TRANSFER_ACCESS_TOKEN"] == "tr-at"
    assert env["GLOBUS_LOCAL_ENDPOINT"] == "ep"
    assert json.loads(env["UWS_GLOBUS_TOKENS"]) == {
        "transfer.api.globus.org": {
            "access_token": "tr-at",
            "expires_at": state["tokens"]["transfer.api.globus.org"]["expires_at"],
            "scope": "transfer",
            "token_type": "Bearer",
            "resource_server": "transfer.api.globus.org",
        }
    }
    assert "rt" not in json.dumps(env)
    # a plain OIDC token response (no other_tokens) works too
    plain = auth.build_auth_state_dict({"access_token": "x", "expires_in": 5}, {"sub": "s"})
    assert plain["tokens"] == {}


async def test_globus_pre_spawn_start_does_not_pickle(caplog):
    globus = pytest.importorskip("uws_hub.authenticators.globus")
    auth = globus.WorkspaceGlobusAuthenticator(client_id="c")
    spawner = FakeSpawner()
    state = {"tokens": {"transfer.api.globus.org": {"access_token": "t", "refresh_token": "r"}}}
    await auth.pre_spawn_start(FakeUser(state), spawner)
    assert spawner.environment == {"KEEP": "me"}  # off by default
    auth.pass_tokens_to_jobs = True
    await auth.pre_spawn_start(FakeUser(state), spawner)
    assert "GLOBUS_DATA" not in spawner.environment
    assert spawner.environment["GLOBUS_TRANSFER_ACCESS_TOKEN"] == "t"
    with caplog.at_level(logging.WARNING):
        await auth.pre_spawn_start(FakeUser(None), spawner)
    assert "no auth_state" in caplog.text
    assert "GLOBUS_TRANSFER_ACCESS_TOKEN" not in spawner.environment
