"""The LDAP authenticator against a real slapd (Debian's), started by the test
setup with a small directory (see tests/ldaputil.py): directly, through
JupyterHub's own authentication path, and on a real hub through its login form."""

from __future__ import annotations

import secrets
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from ..authutil import PRINTENV_JOB_TYPE, job_env, login, whoami
from ..hubutil import free_port, wait_for
from ..ldaputil import GROUPS, PEOPLE, SEARCH_DN, SEARCH_PASSWORD, SlapdServer, user_dn

ldap = pytest.importorskip("uws_hub.authenticators.ldap")

RESEARCHERS = f"cn=researchers,{GROUPS}"
HUBADMINS = f"cn=hubadmins,{GROUPS}"
POSIX_RESEARCHERS = f"cn=posix-researchers,{GROUPS}"


@pytest.fixture(scope="module")
def slapd():
    if shutil.which("slapd") is None and not Path("/usr/sbin/slapd").exists():
        pytest.skip("slapd is not installed (make install-test installs it)")
    server = SlapdServer(Path(tempfile.mkdtemp(prefix="uws-slapd-")))
    server.start()
    yield server
    server.stop()


def make_auth(slapd, **config):
    settings = dict(
        server_address="127.0.0.1",
        server_port=slapd.port,
        lookup_dn=True,
        search_bind_dn=SEARCH_DN,
        search_bind_password=SEARCH_PASSWORD,
        user_search_base=PEOPLE,
        group_search_base=GROUPS,
        allowed_groups=[RESEARCHERS],
        admin_groups=[HUBADMINS],
        connect_timeout_seconds=2,
    )
    settings.update(config)
    return ldap.WorkspaceLDAPAuthenticator(**settings)


async def auth_user(auth, username, password):
    """JupyterHub's own path: authenticate, normalize, block/allow checks, admin."""
    return await auth.get_authenticated_user(None, {"username": username, "password": password})


async def test_search_and_bind_with_attributes_and_groups(slapd):
    auth = make_auth(slapd)
    model = await auth_user(auth, "ldapalice", "alice-password")
    assert model["name"] == "ldapalice"
    assert model["admin"] is False
    assert model["groups"] == ["researchers"]
    info = model["user_info"]
    assert info["email"] == "alice@example.org" and info["display_name"] == "Alice Ldap"
    assert len(info["external_ids"]["ldap"]) == 36  # entryUUID
    state = model["auth_state"]["ldap"]
    assert state == {
        "dn": user_dn("ldapalice"),
        "uid": "ldapalice",
        "uid_number": 20001,
        "gid_number": 30000,
        "home": "/home/ldapalice",
        "email": "alice@example.org",
        "groups": [RESEARCHERS],
    }


async def test_wrong_password_unknown_user_and_empty_password(slapd):
    auth = make_auth(slapd)
    assert await auth_user(auth, "ldapalice", "wrong") is None
    assert await auth_user(auth, "nosuchuser", "alice-password") is None
    # an empty password would be an anonymous bind, which LDAP accepts
    assert await auth_user(auth, "ldapalice", "") is None
    # same password, other person: each name binds as its own DN
    assert (await auth_user(auth, "ldapeve", "alice-password"))["auth_state"]["ldap"]["uid_number"] == 20005


async def test_allowed_and_admin_groups(slapd):
    auth = make_auth(slapd)
    # bob binds fine but is in no allowed group
    assert await auth_user(auth, "ldapbob", "bob-password") is None
    carol = await auth_user(auth, "ldapcarol", "carol-password")
    assert carol["admin"] is True and set(carol["groups"]) == {"researchers", "hubadmins"}
    # posixGroup membership (memberUid) counts too
    assert await auth_user(auth, "ldapdave", "dave pass (with) *stars*") is None
    auth = make_auth(slapd, allowed_groups=[POSIX_RESEARCHERS])
    dave = await auth_user(auth, "ldapdave", "dave pass (with) *stars*")
    assert dave["name"] == "ldapdave" and dave["auth_state"]["ldap"]["groups"] == [POSIX_RESEARCHERS]
    # allowed_users and allow_all widen it
    assert await auth_user(make_auth(slapd, allowed_users={"ldapbob"}), "ldapbob", "bob-password")
    assert await auth_user(make_auth(slapd, allow_all=True), "ldapbob", "bob-password")
    # DNs compare whatever their case and spacing
    auth = make_auth(slapd, allowed_groups=["CN=Researchers, OU=groups, DC=example, DC=org"])
    assert await auth_user(auth, "ldapalice", "alice-password")


async def test_bind_dn_template_without_a_search_account(slapd):
    auth = make_auth(
        slapd,
        lookup_dn=False,
        search_bind_dn="",
        search_bind_password="",
        bind_dn_template=[f"uid={{username}},ou=guests,{slapd_base()}", f"uid={{username}},{PEOPLE}"],
    )
    model = await auth_user(auth, "ldapcarol", "carol-password")
    assert model["auth_state"]["ldap"]["dn"] == user_dn("ldapcarol") and model["admin"] is True
    assert await auth_user(auth, "ldapcarol", "wrong") is None


def slapd_base() -> str:
    return PEOPLE.split(",", 1)[1]


async def test_names_cannot_inject_filters(slapd):
    auth = make_auth(slapd)
    assert await auth_user(auth, "ldapalice)(uid=*", "alice-password") is None
    assert await auth_user(auth, "*", "alice-password") is None
    # even with a permissive name rule, the filter is escaped
    auth = make_auth(slapd, valid_username_regex=r".*", allow_all=True)
    assert await auth_user(auth, "*", "alice-password") is None
    assert await auth_user(auth, "ldapali*", "alice-password") is None
    assert ldap.user_search_filter("({attribute}={username})", "uid", "a*)(b") == r"(uid=a\2a\29\28b)"


async def test_directory_down_fails_closed(slapd):
    auth = make_auth(slapd, server_port=free_port())
    with pytest.raises(ldap.DirectoryUnavailable) as e:
        await auth_user(auth, "ldapalice", "alice-password")
    assert e.value.status_code == 503
    assert "The directory (LDAP) is not available right now" in e.value.jupyterhub_message
    # a wrong password for the hub's own search account is a configuration error, said so
    auth = make_auth(slapd, search_bind_password="wrong")
    with pytest.raises(ldap.DirectoryUnavailable) as e:
        await auth_user(auth, "ldapalice", "alice-password")
    assert "refused the hub's own account" in e.value.jupyterhub_message


def test_dn_key():
    assert ldap.dn_key("CN=Researchers, OU=groups,dc=Example,DC=org") == "cn=researchers,ou=groups,dc=example,dc=org"


# ---------------------------------------------------------------- on a real hub
READER_TOKEN = secrets.token_hex(16)


def ldap_config(slapd) -> str:
    return f"""
c.JupyterHub.authenticator_class = "uws-ldap"
c.WorkspaceLDAPAuthenticator.server_address = "127.0.0.1"
c.WorkspaceLDAPAuthenticator.server_port = {slapd.port}
c.WorkspaceLDAPAuthenticator.lookup_dn = True
c.WorkspaceLDAPAuthenticator.search_bind_dn = "{SEARCH_DN}"
c.WorkspaceLDAPAuthenticator.search_bind_password = "{SEARCH_PASSWORD}"
c.WorkspaceLDAPAuthenticator.user_search_base = "{PEOPLE}"
c.WorkspaceLDAPAuthenticator.group_search_base = "{GROUPS}"
c.WorkspaceLDAPAuthenticator.allowed_groups = ["{RESEARCHERS}"]
c.WorkspaceLDAPAuthenticator.admin_groups = ["{HUBADMINS}"]
c.WorkspaceLDAPAuthenticator.pass_attributes_to_jobs = True
c.Authenticator.enable_auth_state = True
c.Authenticator.manage_groups = True
c.UWSHub.job_types = {{"printenv": {PRINTENV_JOB_TYPE!r}}}
c.JupyterHub.services.append({{"name": "auth-state-reader", "api_token": "{READER_TOKEN}"}})
c.JupyterHub.load_roles.append({{"name": "auth-state-reader", "scopes": ["admin:auth_state", "read:users"],
                                 "services": ["auth-state-reader"]}})
"""


@pytest.fixture(scope="module")
def ldap_hub(make_hub, slapd):
    return make_hub(ldap_config(slapd), env={"JUPYTERHUB_CRYPT_KEY": secrets.token_hex(32)})


def test_login_form_against_ldap(ldap_hub):
    result = login(ldap_hub, "ldapalice", "alice-password")
    assert result.ok, result
    me = whoami(ldap_hub, result.session)
    assert me["name"] == "ldapalice" and me["admin"] is False
    assert me["groups"] == ["researchers"]
    assert me["user_info"]["display_name"] == "Alice Ldap"
    # the attributes the spawner can use are in the (encrypted) auth_state
    user = ldap_hub.api("GET", "users/ldapalice", READER_TOKEN, expect=200)
    assert user["auth_state"]["ldap"]["uid_number"] == 20001
    assert user["auth_state"]["ldap"]["home"] == "/home/ldapalice"
    # refused: wrong password, not in an allowed group
    assert login(ldap_hub, "ldapalice", "wrong").error == "Invalid username or password"
    assert login(ldap_hub, "ldapbob", "bob-password").error == "Invalid username or password"
    assert "LDAP: ldapbob is in none of the allowed groups" in ldap_hub.log_text()
    # the admin group makes admins
    carol = login(ldap_hub, "ldapcarol", "carol-password")
    assert whoami(ldap_hub, carol.session)["admin"] is True


def test_jobs_get_the_directory_attributes(ldap_hub):
    assert login(ldap_hub, "ldapcarol", "carol-password").ok
    token = ldap_hub.api("POST", "users/ldapcarol/tokens", json={"note": "test"}, expect=201)["token"]
    env = job_env(ldap_hub, token)
    assert env["UWS_LDAP_UID_NUMBER"] == "20003"
    assert env["UWS_LDAP_GID_NUMBER"] == "30000"
    assert env["UWS_LDAP_HOME"] == "/home/ldapcarol"
    assert env["UWS_LDAP_EMAIL"] == "carol@example.org"
    assert env["UWS_LDAP_DN"] == user_dn("ldapcarol")


def test_an_entry_made_again_for_someone_else_gets_nothing_of_the_user(ldap_hub, slapd):
    """A directory gives a departed person's ``uid`` to a newcomer by deleting the entry
    and making it again (a new ``entryUUID``): the newcomer's login is refused, saying
    what to do, instead of making them the hub user of that name, with the first
    person's workspaces, jobs and tokens. (Last: ldapeve's entry is a new one afterwards.)"""
    first = login(ldap_hub, "ldapeve", "alice-password")
    assert first.ok, first
    before = ldap_hub.api("GET", "users/ldapeve", expect=200)["user_info"]
    slapd.make_again("ldapeve")
    again = login(ldap_hub, "ldapeve", "alice-password")
    assert not again.ok
    assert "belongs to another person on this hub" in (again.error or ""), again
    assert ldap_hub.api("GET", "users/ldapeve", expect=200)["user_info"] == before
    assert "Login refused for ldapeve: their ldap id at the identity provider is" in ldap_hub.log_text()


def test_a_person_who_left_the_directory_is_logged_out(make_hub, slapd):
    """A person whose entry was deleted from the directory kept their browser sessions for
    as long as those lasted (14 days by default): the hub asks the directory again (with
    its search account) at each refresh of the user (``auth_refresh_age``), and ends them."""
    hub = make_hub(
        ldap_config(slapd) + "c.Authenticator.auth_refresh_age = 1\n",
        env={"JUPYTERHUB_CRYPT_KEY": secrets.token_hex(32)},
    )
    session = login(hub, "ldapeve", "alice-password").session
    assert whoami(hub, session)["name"] == "ldapeve"
    slapd.remove("ldapeve")
    try:
        wait_for(lambda: whoami(hub, session) is None, 30, what="the session to end")
        assert "LDAP: ldapeve is no longer in the directory: their sessions end" in hub.log_text()
        assert not login(hub, "ldapeve", "alice-password").ok
    finally:
        slapd.add("ldapeve")


def test_a_moved_entry_without_a_stable_id_still_logs_its_person_in(make_hub, slapd):
    """An entry without ``id_attribute`` (Active Directory on the default ``entryUUID``,
    389-ds before 2.0) had its DN stored as its stable id: once the entry was renamed or
    moved to another OU, its own person's login was refused and their sessions ended."""
    hub = make_hub(
        ldap_config(slapd)
        + f"""
c.WorkspaceLDAPAuthenticator.id_attribute = "employeeNumber"
c.WorkspaceLDAPAuthenticator.allowed_groups = ["{POSIX_RESEARCHERS}"]
""",
        env={"JUPYTERHUB_CRYPT_KEY": secrets.token_hex(32)},
    )
    first = login(hub, "ldapdave", "dave pass (with) *stars*")
    assert first.ok, first
    moved = slapd.rename(user_dn("ldapdave"), "cn=Dave Ldap")
    try:
        again = login(hub, "ldapdave", "dave pass (with) *stars*")
        assert again.ok, again
        info = whoami(hub, again.session)["user_info"]
        assert info["external_ids"] == {} and info["ldap_dn"] == moved
        assert "Login refused for ldapdave" not in hub.log_text()
    finally:
        slapd.rename(moved, "uid=ldapdave")


def test_a_search_account_that_cannot_read_people_logs_nobody_out(make_hub):
    """A directory whose people's entries only they may read (the search account reads
    groups): login, with ``bind_dn_template``, reads the entry as the user and lets them in,
    but the refresh, which reads it with the search account, took it for gone and logged
    everyone out at every ``auth_refresh_age``."""
    if shutil.which("slapd") is None and not Path("/usr/sbin/slapd").exists():
        pytest.skip("slapd is not installed (make install-test installs it)")
    private = SlapdServer(Path(tempfile.mkdtemp(prefix="uws-slapd-")), people_private=True)
    private.start()
    try:
        hub = make_hub(
            ldap_config(private)
            + f"""
c.WorkspaceLDAPAuthenticator.lookup_dn = False
c.WorkspaceLDAPAuthenticator.bind_dn_template = ["uid={{username}},{PEOPLE}"]
c.Authenticator.auth_refresh_age = 1
""",
            env={"JUPYTERHUB_CRYPT_KEY": secrets.token_hex(32)},
        )
        session = login(hub, "ldapalice", "alice-password").session
        assert whoami(hub, session)["name"] == "ldapalice"
        time.sleep(1.5)  # past auth_refresh_age: the next request refreshes the user
        assert whoami(hub, session)["name"] == "ldapalice"
        assert "no longer in the directory" not in hub.log_text()
    finally:
        private.stop()
