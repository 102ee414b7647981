"""Local accounts on a real hub: admin bootstrap, login, wrong passwords,
lockout, disabled accounts, the admins' accounts API and page, sign-up."""

from __future__ import annotations

import re
import time
import uuid

import pytest

from . import browserutil
from .authutil import login, whoami
from .conftest import ADMIN_PASSWORD
from .hubutil import wait_for

INVALID = "Invalid username or password"

LOCAL_CONFIG = """
c.Authenticator.admin_users = {"boss"}
c.WorkspaceLocalAuthenticator.bcrypt_rounds = 4
c.WorkspaceLocalAuthenticator.max_failed_logins = 3
c.WorkspaceLocalAuthenticator.lockout_seconds = 4
"""


@pytest.fixture(scope="module")
def local_hub(make_hub):
    return make_hub(LOCAL_CONFIG)


def new_account(hub, **extra) -> tuple[str, str]:
    name = f"loc{uuid.uuid4().hex[:8]}"
    password = f"pw-{uuid.uuid4().hex[:12]}"
    hub.api("POST", "accounts", json={"username": name, "password": password, **extra}, expect=201)
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


def test_admin_resets_a_password(local_hub):
    name, password = new_account(local_hub)
    local_hub.api("PATCH", f"accounts/{name}", json={"password": "a-new-password"}, expect=200)
    assert not login(local_hub, name, password).ok
    assert login(local_hub, name, "a-new-password").ok


def test_accounts_api_rules(local_hub):
    name, password = new_account(local_hub)
    hub = local_hub
    r = hub.request("POST", "accounts", hub.admin_token, json={"username": "shorty", "password": "short"})
    assert r.status_code == 422 and "at least 8 characters" in r.json()["message"]
    r = hub.request("POST", "accounts", hub.admin_token, json={"username": name, "password": "long-enough"})
    assert r.status_code == 409 and "exists already" in r.json()["message"]
    r = hub.request("POST", "accounts", hub.admin_token, json={"username": "../etc", "password": "long-enough"})
    assert r.status_code == 422 and "Invalid user name" in r.json()["message"]
    r = hub.request("POST", "accounts", hub.admin_token, json={"username": "x1", "password": "long-enough", "role": "x"})
    assert r.status_code == 422
    assert hub.request("GET", "accounts/no-such-account", hub.admin_token).status_code == 404
    r = hub.request("PATCH", f"accounts/{name}", hub.admin_token, json={"password": "short"})
    assert r.status_code == 422
    # the list shows the accounts, paginated like JupyterHub's lists
    listing = hub.api("GET", "accounts?limit=500", expect=200)
    assert name in [a["username"] for a in listing["items"]]
    assert listing["_pagination"]["total"] >= 2
    # a user (not an admin) may not manage accounts, even their own
    token = hub.api("POST", f"users/{name}/tokens", json={"note": "x"}, expect=201)["token"]
    assert hub.request("GET", "accounts", token).status_code == 403
    assert hub.request("PATCH", f"accounts/{name}", token, json={"disabled": False}).status_code in (403, 404)
    assert hub.request("POST", "accounts", token, json={"username": "mine", "password": "long-enough"}).status_code == 403


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
    import requests

    s = requests.Session()
    s.get(hub.url + "/hub/signup", timeout=30)
    xsrf = s.cookies.get("_xsrf", path="/hub/")
    form = {"username": "newbie", "password": "newbie-password", "password2": "newbie-password", "_xsrf": xsrf}
    r = s.post(hub.url + "/hub/signup", data={**form, "password2": "other"}, timeout=30)
    assert r.status_code == 400 and "The passwords differ" in r.text
    r = s.post(hub.url + "/hub/signup", data=form, timeout=30)
    assert r.status_code == 201 and "An administrator must enable it" in r.text
    r = s.post(hub.url + "/hub/signup", data=form, timeout=30)
    assert r.status_code == 400 and "exists already" in r.text
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

    page.once("dialog", lambda dialog: dialog.accept("grace-new-password"))
    row.locator(".account-password").click()
    wait_for(lambda: login(local_hub, name, "grace-new-password").ok, 10, what="the new password")

    # the new user sees their display name in the navigation
    other = browser.new_context().new_page()
    other.goto(local_hub.url + "/hub/login")
    other.fill("#username_input", name)
    other.fill("#password_input", "grace-new-password")
    other.click("#login_submit")
    other.wait_for_url(re.compile(r".*/hub/workspaces$"))
    expect(other.locator("#uws-user")).to_contain_text("Grace Hopper")
