"""Each user server on its own origin: JupyterHub's ``subdomain_host``, through the real proxy.

The hub answers at ``http://hub.localhost:<port>``; alice's servers at
``http://uwsalice.hub.localhost:<port>/user/uwsalice/<workspace>/``. Clients connect
to 127.0.0.1 and send the ``Host`` header a browser would (*.localhost need no DNS), as
JupyterHub's own tests do. Checked: the job's URL (API, job page, workspace list) is on
the owner's subdomain; the proxy's routes are host routes, the one added as soon as the
server listens included; the owner uses the server there, a viewer and an editor get
what a reader gets (the app, which viewers may use, and read-only requests), a stranger
is refused and an anonymous client is sent to log in on the hub's host; the server is
reached on no other host (the hub's, another user's).
"""

from __future__ import annotations

import sys
import uuid
from http.cookies import SimpleCookie
from urllib.parse import quote, urljoin, urlsplit

import pytest
import requests

from ..hubutil import REPO

OWNER, VIEWER, EDITOR, STRANGER = "uwsalice", "uwsbob", "uwscarol", "uwsnoshare"
DOMAIN = "hub.localhost"
PASSWORD = "a long password for subdomains"
#: a web app that viewers may use (tests/echo_app.py), served by jupyterhub-singleuser
#: with only Jupyter Server's and the app's extensions (no JupyterLab: quicker to start)
ECHO = {
    "display_name": "Echo",
    "env": {"JUPYTERHUB_SINGLEUSER_LOAD_OTHER_EXTENSIONS": "0"},
    "app": {
        "command": [sys.executable, str(REPO / "tests" / "echo_app.py"), "{port}", "{base_url}", "{workspace}"],
        "viewers": True,
    },
}


@pytest.fixture(scope="module")
def shub(make_hub, system_users, group_prefix):
    hub = make_hub(
        f"""
c.UWSHub.system_users = True
c.UWSHub.share_posix_group_prefix = {group_prefix!r}
c.UWSHub.job_types = {{"echo": {ECHO!r}}}
# JupyterHub's advice with subdomain_host: cookies a server's page cannot toss to the hub
c.JupyterHub.cookie_host_prefix_enabled = True
c.HubMAPCompat.enabled = True
c.HubMAPCompat.job_type_ids = {{"echo_app": "echo"}}
""",
        start=False,
    )
    with open(hub.config_file, "a") as f:
        f.write(f'c.JupyterHub.subdomain_host = "http://{DOMAIN}:{hub.port}"\n')
    hub.start()
    hub.origin = f"http://{DOMAIN}:{hub.port}"
    for name in (OWNER, VIEWER, EDITOR, STRANGER):
        hub.api("POST", "accounts", json={"username": name, "password": PASSWORD}, expect=201)
    hub.tokens = {name: hub.add_user(name) for name in (OWNER, VIEWER, EDITOR, STRANGER)}
    return hub


def get(hub, url: str, token: str | None = None, method: str = "GET", **kw) -> requests.Response:
    """``url`` (on any host) through the proxy: to 127.0.0.1 with the URL's Host header."""
    parts = urlsplit(url)
    headers = {"Host": parts.netloc, **({"Authorization": f"token {token}"} if token else {})}
    target = f"{hub.url}{parts.path}" + (f"?{parts.query}" if parts.query else "")
    return requests.request(method, target, headers=headers, allow_redirects=False, timeout=60, **kw)


class Browser:
    """A browser's cookies: each kept for the host that set it, or for its ``Domain`` and
    that domain's subdomains (as JupyterHub sets its session id with subdomain_host)."""

    def __init__(self, hub):
        self.hub = hub
        self.cookies: dict[tuple[str, str], tuple[str, bool]] = {}  # (name, domain): (value, host only)

    def send(self, url: str, method: str = "GET", **kw) -> requests.Response:
        host = urlsplit(url).hostname or ""
        jar = {
            name: value
            for (name, domain), (value, only) in self.cookies.items()
            if host == domain or (not only and host.endswith("." + domain))
        }
        r = get(self.hub, url, method=method, cookies=jar, **kw)
        for header in r.raw.headers.getlist("Set-Cookie"):
            for name, morsel in SimpleCookie(header).items():
                domain = morsel["domain"].lstrip(".") or host
                if morsel["max-age"] == "0" or "1970" in morsel["expires"]:
                    self.cookies.pop((name, domain), None)
                else:
                    self.cookies[(name, domain)] = (morsel.value, not morsel["domain"])
        return r

    def follow(self, url: str) -> tuple[requests.Response, str]:
        """GET ``url``, following redirects (from host to host): the answer, and where it came from."""
        for _ in range(10):
            r = self.send(url)
            if r.status_code not in (301, 302, 303, 307):
                return r, url
            url = urljoin(url, r.headers["Location"])
        raise AssertionError(f"too many redirects, at {url}")


def log_in(hub, name: str) -> Browser:
    """A browser where ``name`` logged in on the hub's own host (its login form)."""
    browser = Browser(hub)
    browser.send(f"{hub.origin}/hub/login")
    [xsrf] = [value for (cookie, _), (value, _) in browser.cookies.items() if cookie.endswith("_xsrf")]
    r = browser.send(
        f"{hub.origin}/hub/login", method="POST", data={"username": name, "password": PASSWORD, "_xsrf": xsrf}
    )
    assert r.status_code == 302 and "/hub/login" not in r.headers["Location"], (r.status_code, r.text[:300])
    return browser


@pytest.fixture(scope="module")
def live(shub):
    """alice's running echo job, in a workspace shared with bob (viewer) and carol (editor)."""
    owner = shub.tokens[OWNER]
    ws = shub.api("POST", "workspaces", owner, json={"name": f"sub {uuid.uuid4().hex[:6]}"}, expect=201)
    for name, level in ((VIEWER, "viewer"), (EDITOR, "editor")):
        shub.api("POST", f"workspaces/{ws['id']}/shares", owner, json={"user": name, "level": level}, expect=201)
    job = shub.api("POST", f"workspaces/{ws['id']}/jobs", owner, json={"job_type": "echo"}, expect=202)
    job = shub.wait_job(job["id"], owner, {"running", "failed"}, timeout=90)
    assert job["status"] == "running", job["reason"]
    yield {"ws": ws, "job": job, "server": f"http://{OWNER}.{DOMAIN}:{shub.port}/user/{OWNER}/{ws['slug']}/"}
    shub.api("POST", f"jobs/{job['id']}/stop", owner)
    shub.wait_job(job["id"], owner, {"completed", "cancelled", "failed"})


def test_the_jobs_address_is_on_the_owners_subdomain(shub, live):
    server, job, owner = live["server"], live["job"], shub.tokens[OWNER]
    assert job["url"] == server + "app/"
    assert shub.api("GET", f"workspaces/{live['ws']['id']}", owner, expect=200)["active_job"]["url"] == job["url"]
    # the job's page links to it, on the hub's origin, for its owner logged in there
    page = log_in(shub, OWNER).send(f"{shub.origin}/hub/jobs/{job['id']}")
    assert page.status_code == 200 and f'href="{job["url"]}"' in page.text, page.text[:300]
    # HuBMAP's portal opens url_domain + url_path
    r = shub.request("GET", f"/hub/api/hubmap/jobs/{job['id']}", headers={"UWS-Authorization": f"Token {owner}"})
    [hubmap_job] = r.json()["data"]["jobs"]
    connection = hubmap_job["job_details"]["current_job_details"]["connection_details"]
    assert connection == {
        "url_domain": f"http://{OWNER}.{DOMAIN}:{shub.port}",
        "url_path": urlsplit(server).path + "app/",
    }
    # every route of the user's server is a host route on the owner's subdomain
    routes = shub.api("GET", "proxy", expect=200)
    users = {spec: route for spec, route in routes.items() if route.get("data", {}).get("user")}
    assert list(users) == [f"{OWNER}.{DOMAIN}/user/{OWNER}/{live['ws']['slug']}/"], routes


def test_the_owner_uses_the_server_and_a_stranger_and_anonymous_do_not(shub, live):
    server, owner = live["server"], shub.tokens[OWNER]
    r = get(shub, server + "app/", owner)
    assert r.status_code == 200 and r.json()["argv"][1] == f"/user/{OWNER}/{live['ws']['slug']}/app/", r.text
    assert get(shub, server + "api/kernels", owner, method="POST").status_code == 201
    assert get(shub, server + "api/contents", owner).status_code == 200
    r = get(shub, server + "app/", shub.tokens[STRANGER])
    assert r.status_code == 403, r.status_code
    # anonymous: to the hub's own host to log in
    r = get(shub, server + "app/")
    assert r.status_code == 302, r.status_code
    assert r.headers["Location"].startswith(f"{shub.origin}/hub/api/oauth2/authorize?"), r.headers["Location"]


def test_a_viewer_and_an_editor_get_what_a_reader_gets(shub, live):
    server = live["server"]
    for name in (VIEWER, EDITOR):
        token = shub.tokens[name]
        assert get(shub, server + "app/", token).status_code == 200, name
        assert get(shub, server + "api/contents", token).status_code == 200, name
        assert get(shub, server + "api/kernels", token, method="POST").status_code == 403, name
        r = get(
            shub,
            server + "api/contents/x.txt",
            token,
            method="PUT",
            json={"type": "file", "format": "text", "content": "no"},
        )
        assert r.status_code == 403, name


@pytest.mark.expect_log_errors(rf"User <User\({STRANGER} [^>]*> not allowed to access Server at /user/{OWNER}/")
def test_a_browser_logs_in_to_the_server_and_the_app_gets_no_login_cookie(shub, live):
    """The server's login (JupyterHub's OAuth, from host to host) as a browser does it;
    the app, the owner's code, gets none of JupyterHub's cookies of its visitor."""
    for name in (OWNER, VIEWER):
        browser = log_in(shub, name)
        r, _ = browser.follow(live["server"] + "app/")
        assert r.status_code == 200, (name, r.status_code, r.text[:300])
        server_host = urlsplit(live["server"]).hostname
        sent = [cookie for (cookie, domain) in browser.cookies if server_host.endswith(domain)]
        assert any(cookie.startswith("__Host-jupyterhub-user-") for cookie in sent), browser.cookies
        headers = r.json()["headers"]
        assert "jupyterhub" not in headers.get("Cookie", ""), (name, headers.get("Cookie"))
    # a stranger logged in is refused by the server; an anonymous browser ends at the hub's login
    r, _ = log_in(shub, STRANGER).follow(live["server"] + "app/")
    assert r.status_code == 403 and "argv" not in r.text, r.status_code
    r, url = Browser(shub).follow(live["server"] + "app/")
    assert r.status_code == 200 and url.startswith(f"{shub.origin}/hub/login?"), (r.status_code, url)


def test_the_server_is_reached_on_no_other_host(shub, live):
    """Not on the hub's own origin, nor on the hub's address, nor on another user's subdomain."""
    path = urlsplit(live["server"]).path + "app/"
    owner = shub.tokens[OWNER]
    for host in (f"{DOMAIN}:{shub.port}", f"127.0.0.1:{shub.port}", f"{VIEWER}.{DOMAIN}:{shub.port}"):
        r = get(shub, f"http://{host}{path}", owner)
        # the proxy's default route, the hub, which sends it to its own host
        assert r.status_code == 302 and r.headers["Location"] == f"{shub.origin}/hub{path}", (host, r.status_code)
    # the hub sends its logged-in owner on to the server's own origin
    r = log_in(shub, OWNER).send(f"{shub.origin}/hub{path}")
    assert r.status_code == 302 and r.headers["Location"] == live["server"] + "app/?redirects=1", r.headers


def test_a_stopped_servers_address_leads_to_its_workspace_page(shub, live):
    """A bookmark of the server, once its job ended: to the workspace's page, which keeps the address."""
    owner = shub.tokens[OWNER]
    shub.api("POST", f"jobs/{live['job']['id']}/stop", owner, expect=202)
    shub.wait_job(live["job"]["id"], owner, {"completed", "cancelled", "failed"})
    routes = shub.api("GET", "proxy", expect=200)
    assert not [spec for spec, route in routes.items() if route.get("data", {}).get("user")], routes
    deep = live["server"] + "app/some/page"
    r = get(shub, deep)
    assert r.status_code == 302, r.status_code
    assert r.headers["Location"] == f"{shub.origin}/hub{urlsplit(deep).path}", r.headers["Location"]
    browser = log_in(shub, OWNER)
    r = browser.send(r.headers["Location"])
    assert r.status_code == 303 and r.headers["Location"].startswith(f"/hub/workspaces/{live['ws']['id']}?next="), (
        r.status_code,
        r.headers.get("Location"),
    )
    page = browser.send(shub.origin + r.headers["Location"])
    assert page.status_code == 200 and f'data-next="{deep}"' in page.text, page.text[:300]
    # an address that leaves the server by dot segments (which the browser resolves) is not
    # followed: it led the page, once the server ran, to the hub's logout or another's server
    for way_out in ("../../../hub/logout", "%2e%2e/%2E%2E/other/x", "app/./../../../hub/logout"):
        page = browser.send(f"{shub.origin}/hub/workspaces/{live['ws']['id']}?next={quote(live['server'] + way_out)}")
        assert page.status_code == 200 and f'data-next="{live["server"]}"' in page.text, (way_out, page.text[:300])


def test_an_editors_own_job_is_on_the_owners_subdomain_and_theirs_to_use(shub, live):
    """An editor's launch runs as the editor, in the workspace's one server: the editor uses it fully."""
    carol, ws = shub.tokens[EDITOR], live["ws"]
    job = shub.api("POST", f"workspaces/{ws['id']}/jobs", carol, json={"job_type": "echo"}, expect=202)
    job = shub.wait_job(job["id"], carol, {"running", "failed"}, timeout=90)
    try:
        assert job["status"] == "running", job["reason"]
        assert job["url"] == live["server"] + "app/"
        assert get(shub, job["url"], carol).status_code == 200
        assert get(shub, live["server"] + "api/kernels", carol, method="POST").status_code == 201
        assert get(shub, job["url"], shub.tokens[STRANGER]).status_code == 403
    finally:
        shub.api("POST", f"jobs/{job['id']}/stop", carol)
        shub.wait_job(job["id"], carol, {"completed", "cancelled", "failed"})
