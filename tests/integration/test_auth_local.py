"""Local accounts on a real hub: admin bootstrap, login, wrong passwords,
lockout, disabled accounts, the admins' accounts API and page, sign-up."""

from __future__ import annotations

import html
import re
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from .. import browserutil
from ..authutil import login, submit_login, whoami
from ..helpers import ADMIN_PASSWORD, MINIMAL_CMD, launch
from ..hubutil import wait_for

INVALID = "Invalid username or password"

JOB_TYPES = {"minimal": {"display_name": "Minimal test server", "cmd": MINIMAL_CMD}}
LOCAL_CONFIG = """
c.Authenticator.admin_users = {"boss"}
c.WorkspaceLocalAuthenticator.bcrypt_rounds = 4
c.WorkspaceLocalAuthenticator.max_failed_logins = 3
c.WorkspaceLocalAuthenticator.lockout_seconds = 4
"""

#: user admins who are not admins: keeper holds admin:users, labkeeper only on
#: the group lab (with a second admin, labboss, in it), onekeeper only on labber;
#: labops, in lab, administers the group's servers through the group's role
USER_ADMINS_CONFIG = """
c.Authenticator.admin_users = {"boss", "labboss"}
c.JupyterHub.load_groups = {"lab": {"users": ["labboss", "labber", "labops"]}, "ops": {"users": ["labops"]}}
c.JupyterHub.load_roles.extend([
    {"name": "user-keeper", "scopes": ["admin:users", "list:users", "read:users"], "users": ["keeper"]},
    {"name": "lab-keeper", "scopes": ["admin:users!group=lab"], "users": ["labkeeper"]},
    {"name": "one-keeper", "scopes": ["admin:users!user=labber"], "users": ["onekeeper"]},
    {"name": "lab-ops", "scopes": ["admin:servers!group=lab"], "groups": ["ops"]},
])
"""


@pytest.fixture(scope="module")
def local_hub(make_hub):
    return make_hub(LOCAL_CONFIG + USER_ADMINS_CONFIG)


def new_account(hub, token: str | None = None, **extra) -> tuple[str, str]:
    name = f"loc{uuid.uuid4().hex[:8]}"
    password = f"pw-{uuid.uuid4().hex[:12]}"
    hub.api("POST", "accounts", token, json={"username": name, "password": password, **extra}, expect=201)
    return name, password


def test_admin_bootstrap(local_hub):
    """The admin named in config gets an account with $UWS_ADMIN_PASSWORD at first start."""
    assert "Created the admin account 'boss' (password from $UWS_ADMIN_PASSWORD)" in local_hub.log_text()
    result = login(local_hub, "boss", ADMIN_PASSWORD)
    assert result.ok, result
    me = whoami(local_hub, result.session)
    assert me["name"] == "boss" and me["admin"] is True
    account = local_hub.api("GET", "accounts/boss", expect=200)
    assert account["admin"] is True and account["disabled"] is False


def test_login_and_wrong_password(local_hub):
    name, password = new_account(local_hub, display_name="Ada Lovelace", email="ada@example.org")
    bad = login(local_hub, name, password + "x")
    assert not bad.ok and bad.response.status_code == 403 and bad.error == INVALID
    unknown = login(local_hub, "nobody-" + name, password)
    assert not unknown.ok and unknown.error == INVALID
    good = login(local_hub, name, password)
    assert good.ok, good
    me = whoami(local_hub, good.session)
    assert me["name"] == name
    # the identity the admin gave is JupyterHub's user_info, shown on the pages
    assert me["user_info"]["display_name"] == "Ada Lovelace"
    assert me["user_info"]["email"] == "ada@example.org"
    assert me["user_info"]["external_ids"] == {"local": name}
    page = good.session.get(local_hub.url + "/hub/workspaces", timeout=30)
    assert re.search(r'id="uws-user"[^>]*title="ada@example.org"[^>]*>Ada Lovelace', page.text), page.text
    log = local_hub.log_text()
    assert f"Login refused for {name}: wrong password" in log
    assert f"Login refused for nobody-{name}: no such account" in log


#: a log line of the hub's, as a name typed at login (lower case: the hub lower-cases names)
FORGED = "[i 2026-12-06 00:00:00.000 uwshub accounts:91] boss created the local account mallory"


def test_a_name_forges_no_line_of_the_hubs_log(local_hub):
    """A name typed at login went into the hub's log lines as it was. The log's formatter
    indents what follows a newline, but not what follows a carriage return (where a terminal
    starts the line over, and Python's and many tools' line splitting starts a new one), a
    NEL or a line separator: those started a line of the attacker's (``Login refused for
    x``, then an account the boss never made). Each value a log line is made with is written
    on one line, whichever code logs it."""
    login(local_hub, f"x{uuid.uuid4().hex[:6]}\r{FORGED}", "a password")
    log = local_hub.log_text()
    assert not [line for line in log.splitlines() if line.lower().startswith(FORGED[:30])], FORGED
    assert f"\\r{FORGED}: no such account" in log


def test_names_with_control_characters_are_refused(local_hub):
    """A user name with a control character (a NUL, a newline, a carriage return, NEL, a
    line separator) is refused wherever users are made or renamed: it has no system
    account (``getpwnam`` refuses a NUL), PostgreSQL cannot store a NUL (JupyterHub's
    ``POST /users`` was a 500 there), and JupyterHub's own log lines (its request lines)
    put the name into their text as it is, where a carriage return starts a forged line."""
    name = f"z{uuid.uuid4().hex[:6]}"
    local_hub.api("POST", "users", json={"usernames": [name]}, expect=201)
    for bad in ("a\x00b", "a\rb", "a\nb", "a\x85b", "a\u2028b", "a\x1bb"):
        r = local_hub.request("POST", "users", local_hub.admin_token, json={"usernames": [f"{name}{bad}"]})
        # (a NUL: refused with every NUL sent to JupyterHub's handlers, uws_hub.hubhandlers)
        message = r.json()["message"]
        assert r.status_code == 400 and ("Invalid username" in message or "NUL" in message), r.text
        r = local_hub.request("PATCH", f"users/{name}", local_hub.admin_token, json={"name": f"{name}{bad}"})
        assert r.status_code == 400, r.text
    assert local_hub.api("GET", f"users/{name}", expect=200)["name"] == name
    local_hub.api("DELETE", f"users/{name}", expect=204)


#: look-alikes of a name (made of plain Latin letters, ending in "q"), and why each is refused
LOOK_ALIKES = {
    "fullwidth": (lambda n: "\uff5a" + n[1:], "not in Unicode's normal form"),
    "cyrillic": (lambda n: "\u0430" + n, "it mixes the letters of scripts (cyrillic, latin)"),
    "invisible": (lambda n: n + "\u200b", "it holds an invisible character"),
    "combining": (lambda n: n + "\u0308", "it holds a combining mark"),
    "decomposed": (lambda n: n + "e\u0301", "not in Unicode's normal form"),
}


@pytest.mark.parametrize("kind", list(LOOK_ALIKES))
def test_look_alike_names_are_refused_wherever_users_are_made(local_hub, signup_hub, kind):
    """``ａlice`` (fullwidth), ``аlice`` (a Cyrillic а), ``alice`` with an invisible character
    or a combining mark are other users than ``alice``, whom nobody tells apart on a page,
    in a share dialog or in a log. Refused, saying why, wherever a user or an account is
    made or renamed: JupyterHub's API (one user, several, a rename), the local accounts
    API, sign-up and a login; a caller who may not make users learns nothing."""
    name = f"z{uuid.uuid4().hex[:6]}q"
    make, why = LOOK_ALIKES[kind]
    bad = make(name)
    local_hub.api("POST", "users", json={"usernames": [name]}, expect=201)
    answers = [
        (400, local_hub.request("POST", "users", local_hub.admin_token, json={"usernames": [bad]})),
        (400, local_hub.request("POST", f"users/{bad}", local_hub.admin_token)),
        (400, local_hub.request("PATCH", f"users/{name}", local_hub.admin_token, json={"name": bad})),
        # (as the accounts API answers every name it refuses)
        (
            422,
            local_hub.request("POST", "accounts", local_hub.admin_token, json={"username": bad, "password": "p" * 12}),
        ),
    ]
    for status, r in answers:
        assert r.status_code == status and why in r.json()["message"], r.text
    r = signup(signup_hub, bad, "a long enough password")
    assert r.status_code == 400 and why in html.unescape(signup_message(r) or ""), r.text
    assert not login(local_hub, bad, "p" * 12).ok
    # a caller who may not make users is refused for that, before the name is looked at
    token = local_hub.add_user(f"y{uuid.uuid4().hex[:6]}")
    assert local_hub.request("POST", f"users/{bad}", token).status_code == 403
    assert local_hub.request("POST", f"users/{bad}").status_code == 403
    for hub in (local_hub, signup_hub):
        assert hub.request("GET", f"users/{bad}", hub.admin_token).status_code == 404
    assert local_hub.api("GET", f"users/{name}", expect=200)["name"] == name
    local_hub.api("DELETE", f"users/{name}", expect=204)


def test_names_people_have_are_not_taken_for_look_alikes(local_hub):
    """Names of one script, as JupyterHub makes them (lower case), pass: Japanese names
    with the iteration mark (佐々木) or the prolonged sound mark (ターナー), whose Unicode
    names do not begin with their script's, were refused as mixing scripts; a German ß
    and the Greek final ς, which case folding changes (and JupyterHub's lower case
    keeps), as not in normal form."""
    tag = str(uuid.uuid4().int)[:6]  # (digits: no script of their own)
    names = [f"佐々木{tag}", f"ターナー{tag}", f"νίκος{tag}", f"strauß{tag}"]
    local_hub.api("POST", "users", json={"usernames": names[:2]}, expect=201)
    local_hub.api("POST", f"users/{names[2]}", expect=201)
    local_hub.api("POST", f"users/x{tag}", expect=201)
    local_hub.api("PATCH", f"users/x{tag}", json={"name": names[3]}, expect=200)
    for name in names:
        assert local_hub.api("GET", f"users/{name}", expect=200)["name"] == name
        local_hub.api("DELETE", f"users/{name}", expect=204)


def test_look_alike_names_are_refused_whatever_the_authenticator(make_hub):
    """JupyterHub's API asks the authenticator about a new name (and about a single user's
    only once it has made them, with a 400 that says nothing of why): with an
    authenticator of another project's, a look-alike is refused all the same, saying why."""
    hub = make_hub(LOCAL_CONFIG + 'c.JupyterHub.authenticator_class = "dummy"\n')
    name = f"z{uuid.uuid4().hex[:6]}q"
    hub.api("POST", "users", json={"usernames": [name]}, expect=201)
    for make, why in LOOK_ALIKES.values():
        bad = make(name)
        for r in (
            hub.request("POST", "users", hub.admin_token, json={"usernames": [bad]}),
            hub.request("POST", f"users/{bad}", hub.admin_token),
            hub.request("PATCH", f"users/{name}", hub.admin_token, json={"name": bad}),
        ):
            assert r.status_code == 400 and why in r.json()["message"], r.text
        assert hub.request("GET", f"users/{bad}", hub.admin_token).status_code == 404


def test_lockout_after_repeated_failures(local_hub):
    name, password = new_account(local_hub)
    for _ in range(3):
        assert login(local_hub, name, "wrong-password").error == INVALID
    # locked: the right password gets the same answer; the log says why
    locked = login(local_hub, name, password)
    assert not locked.ok and locked.error == INVALID
    assert f"Local account {name} locked for 4 s after 3 failed logins" in local_hub.log_text()
    assert f"Login refused for {name}: account locked" in local_hub.log_text()
    account = local_hub.api("GET", f"accounts/{name}", expect=200)
    assert account["locked"] is True and account["locked_until"]
    # the lock ends by itself
    time.sleep(4.2)
    assert login(local_hub, name, password).ok
    assert local_hub.api("GET", f"accounts/{name}", expect=200)["locked"] is False
    # ... or when an admin unlocks it
    for _ in range(3):
        login(local_hub, name, "wrong-password")
    assert not login(local_hub, name, password).ok
    local_hub.api("PATCH", f"accounts/{name}", json={"unlock": True}, expect=200)
    assert login(local_hub, name, password).ok


#: logins' password checks hang while GATE exists (as a flood of long passwords holds them):
#: each appends a line to GATE.entered first
HUNG_BCRYPT = """
import os, time
from uws_hub.authenticators.local import WorkspaceLocalAuthenticator
_matches = WorkspaceLocalAuthenticator._matches

def _hung_matches(password, password_hash):
    if os.path.exists(GATE):
        with open(GATE + ".entered", "a") as f:
            f.write("in\\n")
        deadline = time.monotonic() + 300
        while os.path.exists(GATE) and time.monotonic() < deadline:
            time.sleep(0.05)
    return _matches(password, password_hash)

WorkspaceLocalAuthenticator._matches = staticmethod(_hung_matches)

_in_password_thread = getattr(WorkspaceLocalAuthenticator, "_unwrapped", WorkspaceLocalAuthenticator.in_password_thread)

async def _asking(self, func, *args, **kwargs):
    # (each password check asked for: GATE.asked; the config is read twice)
    with open(GATE + ".asked", "a") as f:
        f.write("asked\\n")
    return await _in_password_thread(self, func, *args, **kwargs)

WorkspaceLocalAuthenticator._unwrapped = _in_password_thread
WorkspaceLocalAuthenticator.in_password_thread = _asking
"""


def test_a_flood_of_logins_holds_none_of_the_hubs_own_threads(make_hub, tmp_path):
    """Each login hashes its password (bcrypt, a good fraction of a second) in a thread: in
    the event loop's default pool (six threads on two cores), where an anonymous flood of
    logins took every thread and the hub's own work there (an account looked up, its file
    work) waited behind the flood. Password checks have threads of their own
    (``password_check_threads``) and a bounded line (``max_waiting_password_checks``):
    past it a login is answered at once, 429, saying why; a new password alike. The line
    is the anonymous requests': a user admin's new passwords have a line of their own
    (the flood's refused them all for as long as it lasted)."""
    gate = tmp_path / "gate"
    entered = Path(f"{gate}.entered")
    asked = Path(f"{gate}.asked")
    changes: list = []
    hub = make_hub(
        LOCAL_CONFIG
        + "c.WorkspaceLocalAuthenticator.password_check_threads = 2\n"
        + "c.WorkspaceLocalAuthenticator.max_waiting_password_checks = 3\n"
        + "c.WorkspaceLocalAuthenticator.allow_signup = True\n"
        + f"GATE = {str(gate)!r}\n"
        + HUNG_BCRYPT
    )
    name, _ = new_account(hub)
    sessions = [requests.Session() for _ in range(20)]
    for session in sessions:
        session.get(hub.url + "/hub/login", timeout=30)
    signup = requests.Session()
    signup.get(hub.url + "/hub/signup", timeout=30)
    gate.touch()
    pool = ThreadPoolExecutor(len(sessions) + 6)
    try:
        # anonymous: names with no account, long passwords (the same work as a real check)
        flood = [pool.submit(submit_login, hub, s, f"nobody{i}", "x" * 5000) for i, s in enumerate(sessions)]
        # 2 checks hang in their threads, 3 wait in line: the other 15 are answered at once
        wait_for(lambda: sum(f.done() for f in flood) >= 15, 60, what="the logins past the line answered")
        refused = [f.result() for f in flood if f.done()]
        assert len(refused) == 15
        for result in refused:
            assert (result.response.status_code, result.error) == (429, "Too many login attempts, try again shortly")
        # the hub's own work in the default pool goes on (before: every thread held, a timeout)
        assert hub.api("GET", f"accounts/{name}", expect=200)["username"] == name
        # a user admin's new passwords wait in a line of their own (the anonymous flood's
        # refused them all for as long as it lasted): 2 for the threads, 3 in line, the 6th
        # refused, through the API with when to retry
        patch = {"password": "another-password"}
        before = len(asked.read_text().splitlines())
        changes = [pool.submit(hub.request, "PATCH", f"accounts/{name}", hub.admin_token, json=patch) for _ in range(6)]
        wait_for(lambda: len(asked.read_text().splitlines()) == before + 6, 60, what="the new passwords asked for")
        wait_for(lambda: any(f.done() for f in changes), 60, what="the new password past the line")
        (r,) = [f.result() for f in changes if f.done()]
        assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0, r.text
        assert r.json()["message"] == "Too many passwords are being checked, try again shortly"
        # and a sign-up: its form says so
        form = {"username": "newbie", "password": "newbie-password", "password2": "newbie-password"}
        r = signup.post(
            hub.url + "/hub/signup", data={**form, "_xsrf": signup.cookies.get("_xsrf", path="/hub/")}, timeout=30
        )
        assert r.status_code == 429 and "Too many passwords are being checked, try again shortly" in r.text
        assert 'id="signup-form"' in r.text
        assert entered.read_text().count("in") == 2  # no more than the password threads hashed
        assert sum(f.done() for f in flood) == 15
    finally:
        gate.unlink(missing_ok=True)
        answers = [f.result(timeout=120) for f in flood]
        changed = [f.result(timeout=120) for f in changes]
        pool.shutdown()
    # once the checks answer, the logins in line are checked: wrong, as they were
    assert sorted(a.response.status_code for a in answers) == [403] * 5 + [429] * 15
    # and the new passwords in line are set
    assert sorted(r.status_code for r in changed) == [200] * 5 + [429]


def test_parallel_logins_check_no_more_wrong_passwords_than_the_limit(make_hub):
    """12 logins at once, 11 wrong and 1 right: at most the limit of wrong
    passwords is checked, the account locks, and the right password, sent once
    the limit is reached, neither logs in nor ends the lock."""
    # hashes slow enough (cost 11) for the hub to check several logins at the same time
    hub = make_hub(
        LOCAL_CONFIG + "c.WorkspaceLocalAuthenticator.bcrypt_rounds = 11\n"
        "c.WorkspaceLocalAuthenticator.lockout_seconds = 600\n"
    )
    limit = 3
    name, password = new_account(hub)
    sessions = [requests.Session() for _ in range(12)]
    for session in sessions:
        session.get(hub.url + "/hub/login", timeout=30)
    start = threading.Barrier(len(sessions))
    outcomes: dict[int, object] = {}

    def limit_reached() -> bool:
        account = hub.api("GET", f"accounts/{name}", expect=200)
        return account["locked"] or account["failed_logins"] >= limit

    def attempt(i: int) -> None:
        right = i == len(sessions) - 1
        try:
            start.wait()
            if right:
                wait_for(limit_reached, 60, interval=0.05, what="the limit of failed logins")
            outcomes[i] = submit_login(hub, sessions[i], name, password if right else f"wrong-{i}")
        except Exception as e:  # reported below
            outcomes[i] = e

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(len(sessions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(not isinstance(o, Exception) for o in outcomes.values()), outcomes
    assert len(outcomes) == len(sessions)
    right = outcomes[len(sessions) - 1]
    assert not right.ok and right.error == INVALID
    assert not any(o.ok for o in outcomes.values())

    account = hub.api("GET", f"accounts/{name}", expect=200)
    assert account["locked"] is True
    # the wrong passwords the hub checked: the log's lines, and the failure count
    assert hub.log_text().count(f"Login refused for {name}: wrong password") == limit
    assert account["failed_logins"] == limit
    # the lock holds for the right password, until an admin ends it
    assert not login(hub, name, password).ok
    assert hub.api("GET", f"accounts/{name}", expect=200)["locked"] is True
    hub.api("PATCH", f"accounts/{name}", json={"unlock": True}, expect=200)
    assert login(hub, name, password).ok


def test_failures_below_the_limit_are_forgotten_after_a_success(local_hub):
    name, password = new_account(local_hub)
    for _ in range(2):
        login(local_hub, name, "wrong-password")
    assert login(local_hub, name, password).ok
    for _ in range(2):
        login(local_hub, name, "wrong-password")
    assert login(local_hub, name, password).ok


def test_disabled_user_cannot_log_in_and_is_logged_out(local_hub):
    name, password = new_account(local_hub)
    session = login(local_hub, name, password).session
    assert whoami(local_hub, session)["name"] == name
    token = local_hub.api("POST", f"users/{name}/tokens", json={"note": "theirs"}, expect=201)["token"]
    assert local_hub.request("GET", "workspaces", token).status_code == 200

    account = local_hub.api("PATCH", f"accounts/{name}", json={"disabled": True}, expect=200)
    assert account["disabled"] is True
    # the session and the API tokens end at once
    assert whoami(local_hub, session) is None
    assert local_hub.request("GET", "workspaces", token).status_code == 403
    # and the right password no longer logs in
    refused = login(local_hub, name, password)
    assert not refused.ok and refused.error == INVALID
    assert f"Login refused for {name}: account disabled" in local_hub.log_text()

    local_hub.api("PATCH", f"accounts/{name}", json={"disabled": False}, expect=200)
    assert login(local_hub, name, password).ok


def test_admin_resets_a_password(make_hub):
    """A reset ends what the old password gave (an intruder's, after whose visit an admin
    resets it): the browser sessions, and the API tokens, which the intruder could mint
    from a session (earlier versions left both). The user's running servers, and their
    own tokens, go on (a token noted as a server's is no server's)."""
    hub = make_hub(LOCAL_CONFIG + USER_ADMINS_CONFIG + f"\nc.UWSHub.job_types = {JOB_TYPES!r}\n")
    name, password = new_account(hub)
    session = login(hub, name, password).session
    assert whoami(hub, session)["name"] == name
    minted = hub.api("POST", f"users/{name}/tokens", json={"note": "Server at /user/x/"}, expect=201)["token"]
    job = hub.wait_job(launch(hub, minted)["id"], minted, {"running"})
    [server] = [
        t for t in hub.api("GET", f"users/{name}/tokens", expect=200)["api_tokens"] if t["note"] != "Server at /user/x/"
    ]
    assert server["note"].startswith(f"Server at /user/{name}/")
    hub.api("PATCH", f"accounts/{name}", json={"password": "a-new-password"}, expect=200)
    assert whoami(hub, session) is None
    assert hub.request("GET", "workspaces", minted).status_code == 403
    left = hub.api("GET", f"users/{name}/tokens", expect=200)["api_tokens"]
    assert [t["id"] for t in left] == [server["id"]]
    assert hub.api("GET", f"jobs/{job['id']}", expect=200)["status"] == "running"
    assert not login(hub, name, password).ok
    fresh = login(hub, name, "a-new-password")
    assert fresh.ok and whoami(hub, fresh.session)["name"] == name


def test_accounts_api_rules(local_hub):
    name, password = new_account(local_hub)
    hub = local_hub
    r = hub.request("POST", "accounts", hub.admin_token, json={"username": "shorty", "password": "short"})
    assert r.status_code == 422 and "at least 8 characters" in r.json()["message"]
    r = hub.request("POST", "accounts", hub.admin_token, json={"username": name, "password": "long-enough"})
    assert r.status_code == 409 and "exists already" in r.json()["message"]
    r = hub.request("POST", "accounts", hub.admin_token, json={"username": "../etc", "password": "long-enough"})
    assert r.status_code == 422 and "Invalid user name" in r.json()["message"]
    r = hub.request(
        "POST", "accounts", hub.admin_token, json={"username": "x1", "password": "long-enough", "role": "x"}
    )
    assert r.status_code == 422
    assert hub.request("GET", "accounts/no-such-account", hub.admin_token).status_code == 404
    r = hub.request("PATCH", f"accounts/{name}", hub.admin_token, json={"password": "short"})
    assert r.status_code == 422
    # the list shows the accounts, paginated like JupyterHub's lists
    listing = hub.api("GET", "accounts?limit=500", expect=200)
    assert name in [a["username"] for a in listing["items"]]
    assert listing["_pagination"]["total"] >= 2
    # timestamps as in every answer of the hub: UTC, ending in Z
    account = next(a for a in listing["items"] if a["username"] == name)
    assert account["created_at"].endswith("Z") and account["updated_at"].endswith("Z")
    # a user (not an admin) may not manage accounts, even their own
    token = hub.api("POST", f"users/{name}/tokens", json={"note": "x"}, expect=201)["token"]
    assert hub.request("GET", "accounts", token).status_code == 403
    assert hub.request("PATCH", f"accounts/{name}", token, json={"disabled": False}).status_code in (403, 404)
    assert (
        hub.request("POST", "accounts", token, json={"username": "mine", "password": "long-enough"}).status_code == 403
    )


# ---------------------------------------------------------------- user admins (JupyterHub's rules)
ONLY_ADMINS_GRANT = "Only admins can grant admin permissions"
ONLY_ADMINS_MODIFY = "Only admins can modify other admins"
ONLY_ADMINS_MODIFY_RIGHTS = "Only admins can modify users who hold rights you do not"
#: every change the accounts API makes to an account
ACCOUNT_CHANGES = [
    {"password": "taken-over-password"},
    {"disabled": True},
    {"unlock": True},
    {"email": "intruder@example.org"},
    {"display_name": "Intruder"},
    {},
]


def new_admin(hub, group: str | None = None) -> tuple[str, str]:
    """A new admin with a local account, made by a real admin (boss), optionally in ``group``."""
    name, password = new_account(hub, token=hub.add_user("boss"), admin=True)
    assert hub.api("GET", f"accounts/{name}", expect=200)["admin"] is True
    if group:
        hub.api("POST", f"groups/{group}/users", json={"users": [name]}, expect=200)
    return name, password


def refusal(r) -> tuple[int, str]:
    return r.status_code, r.json().get("message")


def test_a_user_admin_cannot_create_an_admin(local_hub):
    hub = local_hub
    keeper = hub.add_user("keeper")
    name = f"loc{uuid.uuid4().hex[:8]}"
    r = hub.request("POST", "accounts", keeper, json={"username": name, "password": "long-enough", "admin": True})
    assert refusal(r) == (403, ONLY_ADMINS_GRANT)
    assert hub.request("GET", f"accounts/{name}", hub.admin_token).status_code == 404
    assert hub.request("GET", f"users/{name}", hub.admin_token).status_code == 404
    # a non-admin account is theirs to make
    account = hub.api("POST", "accounts", keeper, json={"username": name, "password": "long-enough"}, expect=201)
    assert account["admin"] is False


@pytest.mark.parametrize("change", ACCOUNT_CHANGES, ids=lambda c: ",".join(c) or "empty")
def test_a_user_admin_cannot_change_an_admin(local_hub, change):
    hub = local_hub
    name, password = new_admin(hub)
    before = hub.api("GET", f"accounts/{name}", expect=200)
    r = hub.request("PATCH", f"accounts/{name}", hub.add_user("keeper"), json=change)
    assert refusal(r) == (403, ONLY_ADMINS_MODIFY)
    after = hub.api("GET", f"accounts/{name}", expect=200)
    assert after == before
    assert login(hub, name, password).ok


def test_a_user_admin_cannot_give_an_admin_without_an_account_a_password(local_hub):
    """An admin made through JupyterHub's API has no local account: making one
    for them is changing an admin."""
    hub = local_hub
    name = f"hubadmin{uuid.uuid4().hex[:6]}"
    hub.api("POST", f"users/{name}", hub.add_user("boss"), json={"admin": True}, expect=201)
    r = hub.request(
        "POST", "accounts", hub.add_user("keeper"), json={"username": name, "password": "taken-over-password"}
    )
    assert refusal(r) == (403, ONLY_ADMINS_MODIFY)
    assert hub.request("GET", f"accounts/{name}", hub.admin_token).status_code == 404
    assert not login(hub, name, "taken-over-password").ok
    # a real admin may
    hub.api(
        "POST", "accounts", hub.add_user("boss"), json={"username": name, "password": "their-own-password"}, expect=201
    )
    assert login(hub, name, "their-own-password").ok


def test_a_user_admin_still_manages_other_users(local_hub):
    hub = local_hub
    keeper = hub.add_user("keeper")
    name, password = new_account(hub, token=keeper)
    for change in ACCOUNT_CHANGES:
        hub.api("PATCH", f"accounts/{name}", keeper, json=change, expect=200)
    assert hub.api("GET", f"accounts/{name}", keeper, expect=200)["disabled"] is True
    hub.api("PATCH", f"accounts/{name}", keeper, json={"disabled": False}, expect=200)
    assert login(hub, name, "taken-over-password").ok
    assert name in [a["username"] for a in hub.api("GET", "accounts?limit=500", keeper, expect=200)["items"]]


def test_an_admin_manages_admins(local_hub):
    hub = local_hub
    boss = hub.add_user("boss")
    name, password = new_admin(hub)
    for change in ACCOUNT_CHANGES:
        hub.api("PATCH", f"accounts/{name}", boss, json=change, expect=200)
    account = hub.api("PATCH", f"accounts/{name}", boss, json={"disabled": False}, expect=200)
    assert (account["admin"], account["email"], account["display_name"]) == (True, "intruder@example.org", "Intruder")
    assert login(hub, name, "taken-over-password").ok


def test_nobody_disables_their_own_account(local_hub):
    """An admin or a user admin cannot disable themselves (a slip that locks them out):
    403 with the reason, and nothing changes; everything else of their own they may change,
    and another admin may disable them."""
    hub = local_hub
    name, password = new_admin(hub)
    # the user admin's own account (201; 409 when another test made it)
    made = hub.request("POST", "accounts", hub.admin_token, json={"username": "keeper", "password": "keeper-password"})
    assert made.status_code in (201, 409), made.text
    for who, token in ((name, hub.add_user(name)), ("keeper", hub.add_user("keeper"))):
        r = hub.request("PATCH", f"accounts/{who}", token, json={"disabled": True, "email": "me@example.org"})
        assert r.status_code == 403, r.text
        assert r.json()["message"] == "You cannot disable your own account: another admin can"
        account = hub.api("GET", f"accounts/{who}", token, expect=200)
        assert account["disabled"] is False and account["email"] != "me@example.org"
        assert (
            hub.api("PATCH", f"accounts/{who}", token, json={"disabled": False, "email": "me@example.org"}, expect=200)[
                "email"
            ]
            == "me@example.org"
        )
    assert login(hub, name, password).ok
    assert hub.api("PATCH", f"accounts/{name}", hub.add_user("boss"), json={"disabled": True}, expect=200)["disabled"]
    assert not login(hub, name, password).ok


def lab_accounts(hub) -> set[str]:
    members = set(hub.api("GET", "groups/lab", expect=200)["users"])
    return {a["username"] for a in hub.api("GET", "accounts?limit=500", expect=200)["items"]} & members


def test_a_group_user_admin_acts_only_on_the_group_and_not_on_its_admins(local_hub):
    hub = local_hub
    labkeeper = hub.add_user("labkeeper")
    admin, admin_password = new_admin(hub, group="lab")
    member, _ = new_account(hub)
    hub.api("POST", "groups/lab/users", json={"users": [member]}, expect=200)
    outsider, _ = new_account(hub)

    # the admin in the group is out of reach, for every change
    for change in ACCOUNT_CHANGES:
        r = hub.request("PATCH", f"accounts/{admin}", labkeeper, json=change)
        assert refusal(r) == (403, ONLY_ADMINS_MODIFY), change
    assert login(hub, admin, admin_password).ok
    # a member who is not an admin is theirs
    hub.api("PATCH", f"accounts/{member}", labkeeper, json={"password": "member-new-password"}, expect=200)
    assert login(hub, member, "member-new-password").ok
    # someone outside the group does not exist for them
    for method, body in (("GET", None), ("PATCH", {"unlock": True})):
        r = hub.request(method, f"accounts/{outsider}", labkeeper, json=body)
        assert r.status_code == 404, r.text
    # the list shows the group's accounts only
    listing = hub.api("GET", "accounts?limit=500", labkeeper, expect=200)
    assert {a["username"] for a in listing["items"]} == lab_accounts(hub)
    assert listing["_pagination"]["total"] == len(lab_accounts(hub))
    # creating needs admin:users on everyone, as JupyterHub's POST /users
    r = hub.request("POST", "accounts", labkeeper, json={"username": "labnew", "password": "long-enough"})
    assert r.status_code == 403


def test_a_user_admin_cannot_take_over_a_user_with_more_rights(local_hub):
    """A password reset is a way in: a non-admin user admin cannot change the
    account of a user whose roles (directly or through a group) grant rights the
    user admin lacks (admin:servers, a wider admin:users)."""
    hub = local_hub
    labkeeper, keeper = hub.add_user("labkeeper"), hub.add_user("keeper")
    hub.add_user("labops")
    for name in ("labops", "labkeeper"):
        if hub.request("GET", f"accounts/{name}", hub.admin_token).status_code == 404:
            hub.api("POST", "accounts", json={"username": name, "password": f"{name}-password"}, expect=201)
    # labops holds admin:servers on lab through the group ops: out of reach for lab's user admin
    for change in ACCOUNT_CHANGES:
        r = hub.request("PATCH", "accounts/labops", labkeeper, json=change)
        assert r.status_code == 403 and r.json()["message"].startswith(ONLY_ADMINS_MODIFY_RIGHTS), (change, r.text)
    assert "admin:servers!group=lab" in r.json()["message"]
    assert login(hub, "labops", "labops-password").ok
    # a user admin whose rights cover another's (keeper: admin:users on everyone) may change them
    hub.api("PATCH", "accounts/labkeeper", keeper, json={"display_name": "Lab Keeper"}, expect=200)
    # a user admin who holds those rights too may (the tests' service holds admin:servers)
    hub.api("PATCH", "accounts/labops", json={"display_name": "Lab Ops"}, expect=200)
    hub.api("PATCH", "accounts/labops", hub.add_user("boss"), json={"display_name": "Lab Ops"}, expect=200)


def test_a_user_admin_of_one_user_sees_and_changes_only_that_user(local_hub):
    hub = local_hub
    one = hub.add_user("onekeeper")
    # labber is a hub user (from load_groups) without an account: a real admin gives them one
    hub.api("POST", "accounts", json={"username": "labber", "password": "labber-password"}, expect=201)
    listing = hub.api("GET", "accounts", one, expect=200)
    assert [a["username"] for a in listing["items"]] == ["labber"] and listing["_pagination"]["total"] == 1
    assert hub.api("GET", "accounts/labber", one, expect=200)["username"] == "labber"
    hub.api("PATCH", "accounts/labber", one, json={"display_name": "Lab Ber"}, expect=200)
    for name in ("boss", "keeper"):
        assert hub.request("GET", f"accounts/{name}", one).status_code == 404
        assert hub.request("PATCH", f"accounts/{name}", one, json={"unlock": True}).status_code == 404


def page_rows(html: str) -> dict[str, str]:
    """The accounts page's table rows, by user name."""
    return dict(re.findall(r'<tr data-username="([^"]+)">(.*?)</tr>', html, re.S))


def test_the_accounts_page_offers_a_user_admin_only_what_they_may_do(local_hub):
    hub = local_hub
    # keeper and labkeeper get accounts (from a real admin) to log in to the page
    for name in ("keeper", "labkeeper"):
        if hub.request("GET", f"accounts/{name}", hub.admin_token).status_code == 404:
            hub.api("POST", "accounts", json={"username": name, "password": f"{name}-password"}, expect=201)
    member, _ = new_account(hub)

    page = login(hub, "keeper", "keeper-password").session.get(hub.url + "/hub/admin/accounts", timeout=30)
    assert page.status_code == 200, page.text
    rows = page_rows(page.text)
    assert "account-password" in rows[member] and "account-disable" in rows[member]
    for button in ("account-password", "account-disable", "account-enable", "account-unlock"):
        assert button not in rows["boss"], button
    assert ONLY_ADMINS_MODIFY in rows["boss"]
    assert 'id="create-account"' in page.text and 'id="new-admin"' not in page.text
    # the lockout in words (this hub's is 4 s: not "0.1 minutes")
    assert "3 failed logins in a row lock an account for 4 seconds." in page.text

    page = login(hub, "labkeeper", "labkeeper-password").session.get(hub.url + "/hub/admin/accounts", timeout=30)
    assert page.status_code == 200, page.text
    assert set(page_rows(page.text)) == lab_accounts(hub)
    assert 'id="create-account"' not in page.text

    page = login(hub, "boss", ADMIN_PASSWORD).session.get(hub.url + "/hub/admin/accounts", timeout=30)
    rows = page_rows(page.text)
    assert "account-password" in rows["boss"] and 'id="new-admin"' in page.text


def test_deleting_the_user_deletes_the_account(local_hub):
    name, password = new_account(local_hub)
    local_hub.api("DELETE", f"users/{name}", expect=204)
    assert local_hub.request("GET", f"accounts/{name}", local_hub.admin_token).status_code == 404
    assert not login(local_hub, name, password).ok


def test_signup_is_off_by_default(local_hub):
    r = local_hub.request("GET", "/hub/signup")
    assert r.status_code == 404
    assert "Create an account" not in local_hub.request("GET", "/hub/login").text


def test_signup_when_allowed_waits_for_approval(make_hub):
    hub = make_hub(LOCAL_CONFIG + "c.WorkspaceLocalAuthenticator.allow_signup = True\n")
    login_page = hub.request("GET", "/hub/login")
    assert 'id="signup-link"' in login_page.text

    s = requests.Session()
    s.get(hub.url + "/hub/signup", timeout=30)
    xsrf = s.cookies.get("_xsrf", path="/hub/")
    form = {"username": "newbie", "password": "newbie-password", "password2": "newbie-password", "_xsrf": xsrf}
    r = s.post(hub.url + "/hub/signup", data={**form, "password2": "other"}, timeout=30)
    assert r.status_code == 400 and "The passwords differ" in r.text
    r = s.post(hub.url + "/hub/signup", data=form, timeout=30)
    assert r.status_code == 201 and "An administrator must enable it" in r.text
    r = s.post(hub.url + "/hub/signup", data=form, timeout=30)
    assert r.status_code == 400 and SIGNUP_TAKEN in r.text
    # pending: refused until an admin enables it
    assert not login(hub, "newbie", "newbie-password").ok
    assert hub.api("GET", "accounts/newbie", expect=200)["disabled"] is True
    hub.api("PATCH", "accounts/newbie", json={"disabled": False}, expect=200)
    assert login(hub, "newbie", "newbie-password").ok


@pytest.mark.browser
def test_admin_manages_accounts_in_the_browser(local_hub, browser):
    from playwright.sync_api import expect

    name = f"web{uuid.uuid4().hex[:6]}"
    _, page = browserutil.login(local_hub, browser, "boss", ADMIN_PASSWORD)
    page.click("text=All workspaces")
    page.click("#local-accounts-link")
    page.wait_for_url(re.compile(r".*/hub/admin/accounts$"))
    expect(page.locator("#accounts")).to_contain_text("boss")

    page.fill("#new-username", name)
    page.fill("#new-display-name", "Grace Hopper")
    page.fill("#new-email", "grace@example.org")
    page.fill("#new-password", "grace-password")
    page.click("#create-account-button")
    row = page.locator(f"#accounts tr[data-username='{name}']")
    expect(row).to_contain_text("Grace Hopper")
    expect(row.locator(".account-state")).to_have_text("active")

    page.once("dialog", lambda dialog: dialog.accept())
    row.locator(".account-disable").click()
    expect(row.locator(".account-state")).to_have_text("disabled")
    assert not login(local_hub, name, "grace-password").ok
    row.locator(".account-enable").click()
    expect(row.locator(".account-state")).to_have_text("active")

    row.locator(".account-password").click()
    page.fill("#password-new", "grace-new-password")
    page.fill("#password-again", "grace-new-password")
    page.click("#password-save")
    wait_for(lambda: login(local_hub, name, "grace-new-password").ok, 10, what="the new password")

    # the new user sees their display name in the navigation
    other = browser.new_context().new_page()
    other.goto(local_hub.url + "/hub/login")
    other.fill("#username_input", name)
    other.fill("#password_input", "grace-new-password")
    other.click("#login_submit")
    other.wait_for_url(re.compile(r".*/hub/workspaces$"))
    expect(other.locator("#uws-user")).to_contain_text("Grace Hopper")


# ---------------------------------------------------------------- sign-up and existing names
SIGNUP_TAKEN = "This user name is not available: choose another."


@pytest.fixture(scope="module")
def signup_hub(make_hub):
    return make_hub(
        LOCAL_CONFIG
        + "c.WorkspaceLocalAuthenticator.allow_signup = True\n"
        + "c.WorkspaceLocalAuthenticator.signup_requires_approval = False\n"
        + 'c.Authenticator.blocked_users = {"blockedname"}\n'
    )


def signup(hub, username: str, password: str) -> requests.Response:
    s = requests.Session()
    s.get(hub.url + "/hub/signup", timeout=30)
    form = {
        "username": username,
        "password": password,
        "password2": password,
        "_xsrf": s.cookies.get("_xsrf", path="/hub/"),
    }
    return s.post(hub.url + "/hub/signup", data=form, timeout=60)


def signup_message(r: requests.Response) -> str | None:
    match = re.search(r'<p id="signup-message"[^>]*>(.*?)</p>', r.text, re.S)
    return match.group(1).strip() if match else None


def test_signup_cannot_take_over_a_hub_user(signup_hub):
    """A user made through JupyterHub's API has no local account: signing up
    with their name must not give the caller their workspaces."""
    hub = signup_hub
    victim = f"victim{uuid.uuid4().hex[:6]}"
    token = hub.add_user(victim)
    hub.api("POST", "workspaces", token, json={"name": "private results"}, expect=201)
    r = signup(hub, victim, "attacker-password")
    assert (r.status_code, signup_message(r)) == (400, SIGNUP_TAKEN)
    assert not login(hub, victim, "attacker-password").ok
    assert hub.request("GET", f"accounts/{victim}", hub.admin_token).status_code == 404


def test_signup_refuses_every_taken_name_alike(signup_hub):
    """A hub user, an account, an admin and a blocked name get the same answer,
    so that sign-up does not tell which names exist; a free name works."""
    hub = signup_hub
    hub_user = f"hubuser{uuid.uuid4().hex[:6]}"
    hub.add_user(hub_user)
    account, _ = new_account(hub)
    for name in (hub_user, account, account.upper(), "boss", "blockedname"):
        r = signup(hub, name, "a-long-password")
        assert (r.status_code, signup_message(r)) == (400, SIGNUP_TAKEN), name
    free = f"free{uuid.uuid4().hex[:6]}"
    assert signup(hub, free, "a-long-password").status_code == 201
    assert login(hub, free, "a-long-password").ok
