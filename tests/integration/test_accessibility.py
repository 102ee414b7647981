"""uws-hub's pages as people use them, in a real Chromium: axe-core finds no
critical or serious problem on any page (light and dark), the keyboard reaches
and sees everything, a phone never scrolls sideways, and the small things
(times people can read, where am I in the navigation, a real password form)."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field

import pytest
from playwright.sync_api import expect

from ..browserutil import PHONE, axe_violations, login
from ..helpers import ADMIN_PASSWORD, MULTIUSER_CONFIG

pytestmark = pytest.mark.browser

PASSWORD = "a long password for pages"
PEOPLE = {"uwsalice": "Alice Liddell", "uwsbob": "Bob Builder", "uwscarol": "Carol Danvers"}
LONG_NAME = "A workspace with a rather long name that goes on and on, past any phone's width: " + "x" * 40


@dataclass
class Site:
    """A hub with people, workspaces, a running and a failed job, shares and an invitation."""

    hub: object
    tokens: dict
    ws: dict = field(default_factory=dict)
    jobs: dict = field(default_factory=dict)

    def password(self, who: str) -> str:
        return ADMIN_PASSWORD if who == "uwsadmin" else PASSWORD


@pytest.fixture(scope="module")
def site(make_hub, system_users):
    hub = make_hub(MULTIUSER_CONFIG + "c.WorkspaceLocalAuthenticator.allow_signup = True\n")
    for name, display in PEOPLE.items():
        hub.api(
            "POST",
            "accounts",
            json={"username": name, "password": PASSWORD, "display_name": display, "email": f"{name}@example.org"},
            expect=201,
        )
    site = Site(hub, {name: hub.add_user(name) for name in PEOPLE})
    alice = site.tokens["uwsalice"]
    hub.api("PUT", "quotas/uwsalice", json={"override": {"disk_bytes": 10 * 1024**2, "concurrent_jobs": 3}}, expect=200)
    files = [{"path": "README.md", "content": "# hello\n"}, {"path": "data/values.csv", "content": "a,b\n1,2\n"}]
    for key, name in [("running", "Analysis"), ("long", LONG_NAME), ("failed", "Failed job here")]:
        site.ws[key] = hub.api(
            "POST",
            "workspaces",
            alice,
            json={"name": name, "description": f"the {key} one", "files": files},
            expect=201,
        )
    hub.api(
        "POST",
        f"workspaces/{site.ws['running']['id']}/shares",
        alice,
        json={"user": "uwsbob", "level": "editor"},
        expect=201,
    )
    hub.api(
        "POST",
        f"workspaces/{site.ws['long']['id']}/shares",
        alice,
        json={"user": "uwsbob", "kind": "copy", "name": "Bob's copy"},
        expect=201,
    )
    job = hub.api("POST", f"workspaces/{site.ws['failed']['id']}/jobs", alice, json={"job_type": "broken"}, expect=202)
    site.jobs["failed_job"] = hub.wait_job(job["id"], alice, {"failed"})
    job = hub.api(
        "POST", f"workspaces/{site.ws['running']['id']}/jobs", alice, json={"job_type": "minimal"}, expect=202
    )
    assert hub.wait_job(job["id"], alice, {"running", "failed"})["status"] == "running"
    # a finished batch job beside it, and one whose parameters were refused (the page's form)
    batch = hub.api(
        "POST",
        f"workspaces/{site.ws['running']['id']}/jobs",
        alice,
        json={"job_type": "echo", "parameters": {"text": "hello from a batch job"}},
        expect=202,
    )
    site.jobs["running_job"] = job
    site.jobs["batch_job"] = hub.wait_job(batch["id"], alice, {"completed"})
    yield site
    hub.api("POST", f"jobs/{job['id']}/stop", alice)


def open_share_dialog(page):
    page.click("#share-open")
    page.fill("#share-search", "b")
    expect(page.locator(".share-result").first).to_be_visible()


def fail_to_log_in(page):
    page.fill("#username_input", "uwsalice")
    page.fill("#password_input", "not her password")
    page.click("#login_submit")
    expect(page.locator(".login_error")).to_be_visible()


def open_batch_log(page):
    page.locator(".batch-job .batch-log-toggle").first.click()
    expect(page.locator(".batch-job .batch-log").first).to_contain_text("hello from a batch job")


def refuse_batch_parameters(page):
    page.fill("#bp-text", "x" * 5000)
    page.click("#batch-launch")
    expect(page.locator("#bp-text-error")).to_contain_text("at most 4096 characters")


def open_failure_log(page):
    page.click("#failure-log summary")
    expect(page.locator("#failure-output")).not_to_contain_text("Loading")


def open_job_log(page):
    page.click("#job-log summary")
    expect(page.locator("#job-output")).not_to_contain_text("Loading")


def open_password_form(page):
    page.locator("#accounts tr[data-username=uwsalice] .account-password").click()
    expect(page.locator("#password-dialog")).to_be_visible()


#: every page of uws-hub, as (name, who, path, what to do on it first); None: logged out
PAGES = [
    ("login", None, "/hub/login", None),
    ("login refused", None, "/hub/login", fail_to_log_in),
    ("signup", None, "/hub/signup", None),
    ("home", "uwsalice", "/hub/home", None),
    ("workspaces", "uwsalice", "/hub/workspaces", None),
    ("workspace with a running job", "uwsalice", "/hub/workspaces/{running}", None),
    ("workspace with a failed job", "uwsalice", "/hub/workspaces/{failed}", None),
    ("workspace with a long name", "uwsalice", "/hub/workspaces/{long}", None),
    ("failure with its log", "uwsalice", "/hub/workspaces/{failed}", open_failure_log),
    ("batch job with its log", "uwsalice", "/hub/workspaces/{running}", open_batch_log),
    ("batch parameters refused", "uwsalice", "/hub/workspaces/{running}", refuse_batch_parameters),
    ("share dialog", "uwsalice", "/hub/workspaces/{long}", open_share_dialog),
    ("jobs", "uwsalice", "/hub/jobs", None),
    ("running job", "uwsalice", "/hub/jobs/{running_job}", None),
    ("failed job with its log", "uwsalice", "/hub/jobs/{failed_job}", open_job_log),
    ("batch job", "uwsalice", "/hub/jobs/{batch_job}", None),
    ("token", "uwsalice", "/hub/token", None),
    ("not found", "uwsalice", "/hub/workspaces/999999", None),
    ("shared with me", "uwsbob", "/hub/shared", None),
    ("workspace as an editor", "uwsbob", "/hub/workspaces/{running}", None),
    ("all workspaces", "uwsadmin", "/hub/admin/workspaces", None),
    ("all jobs", "uwsadmin", "/hub/jobs?all=1", None),
    ("quotas and usage", "uwsadmin", "/hub/admin/quotas", None),
    ("local accounts", "uwsadmin", "/hub/admin/accounts", None),
    ("password form", "uwsadmin", "/hub/admin/accounts", open_password_form),
]


def visit_every_page(site, browser, **context_options):
    """Open every page in ``PAGES`` (logged in as its person); yield (name, page) on each."""
    contexts = {}
    try:
        for name, who, path, action in PAGES:
            if who not in contexts:
                if who is None:
                    context = browser.new_context(**context_options)
                    context.new_page().set_default_timeout(30_000)
                    contexts[who] = context, context.pages[0]
                else:
                    contexts[who] = login(site.hub, browser, who, site.password(who), **context_options)
            page = contexts[who][1]
            page.goto(site.hub.url + path.format(**{k: item["id"] for k, item in {**site.ws, **site.jobs}.items()}))
            page.wait_for_load_state("networkidle")
            if action is not None:
                action(page)
            yield name, page
    finally:
        for context, _ in contexts.values():
            context.close()


#: axe's rules of lesser impact that the pages keep too: one <main>, content in
#: landmarks, a way past the navigation, headers that say what their column holds
MORE_RULES = ("landmark-one-main", "region", "bypass", "empty-table-header", "page-has-heading-one")


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_axe_finds_no_serious_problem_on_any_page(site, browser, scheme):
    """axe-core (from npm) on every page, in the browser's light or dark colour scheme."""
    found = {}
    for name, page in visit_every_page(site, browser, color_scheme=scheme):
        assert page.evaluate("document.documentElement.dataset.bsTheme") == scheme
        problems = axe_violations(page, rules=MORE_RULES)
        if problems:
            found[name] = problems
    assert not found, "axe-core's critical and serious violations:\n" + "\n".join(
        f"[{name}] {line}" for name, lines in found.items() for line in lines
    )


#: what a finger presses: every control, and the links of tables and the breadcrumb
TOUCH_TARGETS = (
    "button, .btn, select, textarea, input:not([type=hidden]):not([type=checkbox]):not([type=radio]),"
    " .nav-link, td a, .breadcrumb-item a"
)
TOO_SMALL = """selector => {
    const small = [];
    for (const el of document.querySelectorAll(selector)) {
        const r = el.getBoundingClientRect();
        if (!r.width || !r.height || getComputedStyle(el).visibility === "hidden") continue;
        if (r.height < 43.5) small.push(el.outerHTML.slice(0, 80) + " is " + Math.round(r.height) + " px");
    }
    return small;
}"""


def test_on_a_phone_no_page_scrolls_sideways_and_every_control_is_a_touch_target(site, browser):
    """At 390x844 (one walk through every page for both checks):

    - nothing is wider than the screen: tables scroll in their own box;
    - every control is at least 44 px tall, long workspace names wrap inside the
      screen, and the share dialog is all on it."""
    wide = {}
    small = {}
    for name, page in visit_every_page(site, browser, **PHONE):
        # a mobile browser zooms out to show a page wider than the screen (innerWidth grows
        # with it): compare with the phone's width itself
        width = page.evaluate("document.scrollingElement.scrollWidth")
        if width > min(PHONE["viewport"]["width"], page.evaluate("window.innerWidth")):
            wide[name] = width
        found = page.evaluate(TOO_SMALL, TOUCH_TARGETS)
        if found:
            small[name] = found
        if name == "workspaces":
            page.click(".navbar-toggler")
            expect(page.locator("#thenavbar .nav-link").first).to_be_visible()
            small.update({"navigation": page.evaluate(TOO_SMALL, "#thenavbar .nav-link, #thenavbar .btn")})
            link = page.locator("#workspaces a", has_text=LONG_NAME[:20])
            assert within_screen(link), link.bounding_box()
        if name == "workspace with a long name":
            assert within_screen(page.locator("h1")), page.locator("h1").bounding_box()
        if name == "share dialog":
            assert within_screen(page.locator("#share-dialog")), page.locator("#share-dialog").bounding_box()
    small = {name: found for name, found in small.items() if found}
    assert not wide and not small, f"pages wider than the phone's 390 px: {wide}; controls under 44 px tall: {small}"


def test_job_tables_stay_readable_on_a_phone(site, browser):
    """At 390x844 a job table scrolls in its own box with its columns readable: a failure's
    reason is not squeezed to a word a line, nor a job's number stretched to a name's width."""
    context, page = login(site.hub, browser, "uwsalice", PASSWORD, **PHONE)
    try:
        for path, table in ((f"/hub/workspaces/{site.ws['failed']['id']}", "#jobs"), ("/hub/jobs", "#job-list")):
            page.goto(site.hub.url + path)
            row = page.locator(f"{table} tbody tr[data-job-id='{site.jobs['failed_job']['id']}']")
            expect(row.locator("td").last).to_contain_text("exited with status 3")
            reason, number = row.locator("td").last.bounding_box(), row.locator("td").first.bounding_box()
            assert reason["width"] >= 250, f"{path}: the reason is {reason['width']} px wide"
            assert number["width"] <= 80, f"{path}: the job's number is {number['width']} px wide"
    finally:
        context.close()


def within_screen(locator) -> bool:
    box = locator.bounding_box()
    width, height = PHONE["viewport"]["width"], PHONE["viewport"]["height"]
    return (
        box["x"] >= 0
        and box["x"] + box["width"] <= width
        and box["y"] >= 0
        and box["y"] + box["height"] <= (height if locator.evaluate("el => el.tagName") == "DIALOG" else float("inf"))
    )


# ---------------------------------------------------------------- keyboard
FOCUS_RING = """() => {
    const el = document.activeElement;
    const s = getComputedStyle(el);
    return {
        ring: s.outlineStyle !== "none" && parseFloat(s.outlineWidth) >= 2,
        what: el === document.body ? "body" : el.outerHTML.slice(0, 90),
    };
}"""


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_skip_link_and_a_visible_focus_on_every_control(site, browser, scheme):
    """The first Tab reaches "Skip to main content", which moves focus to the page's
    content; every control that Tab reaches shows a focus ring (the dark-mode toggle too)."""
    context, page = login(site.hub, browser, "uwsalice", PASSWORD, color_scheme=scheme)
    # what the page asks of the files API: the skip link is a move within the page (a
    # popstate), which the file view took for Back and answered by listing the folder
    # again and moving the focus into it, once the listing came (the later, the likelier
    # the check below had already seen <main> focused)
    listings = []
    page.on("request", lambda request: listings.append(request.url) if "/files" in request.url else None)
    try:
        for path in (f"/hub/workspaces/{site.ws['running']['id']}", "/hub/workspaces", "/hub/shared", "/hub/jobs"):
            page.goto(site.hub.url + path)
            page.wait_for_load_state("networkidle")
            page.keyboard.press("Tab")
            skip = page.locator(".uws-skip-link")
            expect(skip).to_be_focused()
            assert skip.bounding_box()["width"] > 20, "the skip link shows when focused"
            listings.clear()
            page.keyboard.press("Enter")
            expect(page.locator("main#uws-main")).to_be_focused()
            # a request of the page's own, after what the Enter made it ask: by its answer
            # Playwright has reported those; the focus stays where the link put it
            assert page.evaluate("fetch(window.location.pathname).then(r => r.status)") == 200
            assert listings == [], f"the skip link made {path} list its files again"
            expect(page.locator("main#uws-main")).to_be_focused()
            # every stop of Tab, from the top, shows where it is
            page.goto(site.hub.url + path)
            page.wait_for_load_state("networkidle")
            seen, missing = [], []
            for _ in range(80):
                page.keyboard.press("Tab")
                state = page.evaluate(FOCUS_RING)
                if state["what"] == "body" or (seen and state["what"] == seen[0]):
                    break
                seen.append(state["what"])
                if not state["ring"]:
                    missing.append(state["what"])
            assert any('id="dark-theme-toggle"' in what for what in seen), seen
            assert not missing, f"focused without a visible focus ring on {path}: {missing}"
    finally:
        context.close()


def new_workspace(site, token, **body):
    body = {"name": f"keys {uuid.uuid4().hex[:6]}", **body}
    return site.hub.api("POST", "workspaces", token, json=body, expect=201)


def test_launch_and_stop_by_keyboard(site, browser):
    """Launch moves focus to the job's status line (the form is gone), the next Tabs reach
    Open and Stop; after Stop, focus lands on "No job is running", not the page's top."""
    alice = site.tokens["uwsalice"]
    ws = new_workspace(site, alice)
    context, page = login(site.hub, browser, "uwsalice", PASSWORD)
    try:
        page.goto(f"{site.hub.url}/hub/workspaces/{ws['id']}")
        page.select_option("#job-type-select", "minimal")
        page.focus("#launch-job")
        page.keyboard.press("Enter")
        expect(page.locator("#job-line")).to_be_focused()
        assert page.locator("#job-line").get_attribute("aria-live") == "polite"
        expect(page.locator("#job-status")).to_have_text("running", timeout=60_000)
        expect(page.locator("#job-line")).to_be_focused()
        page.keyboard.press("Tab")
        expect(page.locator("#open-job")).to_be_focused()
        page.keyboard.press("Tab")
        expect(page.locator("#stop-job")).to_be_focused()
        page.keyboard.press("Enter")
        expect(page.locator("#no-job")).to_be_visible(timeout=30_000)
        expect(page.locator("#no-job")).to_be_focused()
    finally:
        context.close()


def test_pick_a_share_recipient_by_keyboard(site, browser):
    """In the share dialog: Down from the search into the results, Up and Down between
    them, Enter picks one; focus goes on to the next choice (how to share)."""
    alice = site.tokens["uwsalice"]
    ws = new_workspace(site, alice)
    context, page = login(site.hub, browser, "uwsalice", PASSWORD)
    try:
        page.goto(f"{site.hub.url}/hub/workspaces/{ws['id']}")
        page.focus("#share-open")
        page.keyboard.press("Enter")
        page.focus("#share-search")
        page.keyboard.type("uws")
        results = page.locator(".share-result")
        expect(results.nth(1)).to_be_visible()
        page.keyboard.press("ArrowDown")
        expect(results.nth(0)).to_be_focused()
        page.keyboard.press("ArrowDown")
        expect(results.nth(1)).to_be_focused()
        page.keyboard.press("ArrowUp")
        page.keyboard.press("ArrowUp")
        expect(page.locator("#share-search")).to_be_focused()
        page.keyboard.press("ArrowDown")
        page.keyboard.press("ArrowDown")
        second = results.nth(1).inner_text()
        page.keyboard.press("Enter")
        expect(page.locator("#share-target")).to_have_text(second)
        expect(page.locator("#share-kind")).to_be_focused()
        assert page.locator("#share-target").evaluate("el => el.closest('[aria-live]') !== null")
        # and on to Share, by keyboard alone
        for _ in range(3):
            if page.evaluate("document.activeElement.id") == "share-submit":
                break
            page.keyboard.press("Tab")
        expect(page.locator("#share-submit")).to_be_focused()
        page.keyboard.press("Enter")
        expect(page.locator("#share-list tbody tr")).to_have_count(1)
    finally:
        context.close()


def test_open_a_folder_by_keyboard(site, browser):
    """Enter on a folder shows it and moves focus to its first entry; the path
    trail leads back by keyboard, and focus goes to the folder shown."""
    context, page = login(site.hub, browser, "uwsalice", PASSWORD)
    try:
        page.goto(f"{site.hub.url}/hub/workspaces/{site.ws['failed']['id']}")
        page.locator(".file-entry", has_text="data/").focus()
        page.keyboard.press("Enter")
        first = page.locator("#files tbody .file-entry").first
        expect(first).to_be_focused()
        expect(first).to_contain_text("values.csv")
        expect(page.locator("#files-here")).to_have_text("data")
        page.locator(".files-crumb").first.focus()
        page.keyboard.press("Enter")
        expect(page.locator("#files tbody .file-entry").first).to_be_focused()
        expect(page.locator("#files tbody")).to_contain_text("data/")
    finally:
        context.close()


# ---------------------------------------------------------------- screen readers
def test_job_status_is_announced_and_quota_bars_have_values(site, browser):
    context, page = login(site.hub, browser, "uwsalice", PASSWORD)
    try:
        usage = site.hub.api("GET", "quotas/uwsalice", site.tokens["uwsalice"], expect=200)["usage"]
        disk = page.locator("#quota-disk [role=progressbar]")
        expect(disk).to_have_attribute("aria-valuemax", str(10 * 1024**2))
        expect(disk).to_have_attribute("aria-valuenow", str(usage["disk_bytes"]))
        expect(disk).to_have_attribute("aria-valuetext", re.compile(r"^[\d.]+ (B|KiB|MiB) of 10\.0 MiB$"))
        jobs = page.locator("#quota-jobs [role=progressbar]")
        expect(jobs).to_have_attribute("aria-valuemax", "3")
        expect(jobs).to_have_attribute("aria-valuenow", str(usage["active_jobs"]))
        # no limit: no value, the words say so
        core = page.locator("#quota-core [role=progressbar]")
        expect(core).to_have_attribute("aria-valuetext", re.compile(r"\(no limit\)$"))
        assert core.get_attribute("aria-valuemax") is None

        page.goto(f"{site.hub.url}/hub/workspaces/{site.ws['running']['id']}")
        status = page.locator("#job-status")
        expect(status).to_have_text("running")
        assert status.evaluate("el => el.closest('[aria-live=polite]').id") == "job-line"
        expect(page.locator("#job-progress")).to_have_attribute("role", "status")
    finally:
        context.close()


# ---------------------------------------------------------------- small things
def test_times_in_the_readers_time_zone_and_words(site, browser):
    """Times read "… ago" in the reader's language, with the exact local time on hover."""
    context, page = login(site.hub, browser, "uwsalice", PASSWORD, timezone_id="Asia/Tokyo", locale="en-GB")
    try:
        for path, where in (
            (f"/hub/workspaces/{site.ws['failed']['id']}", "#jobs"),
            ("/hub/workspaces", "#workspaces"),
            ("/hub/jobs", "#job-list"),
        ):
            page.goto(site.hub.url + path)
            times = page.locator(f"{where} time")
            expect(times.first).to_be_visible()
            for i in range(times.count()):
                t = times.nth(i)
                assert re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+Z", t.get_attribute("datetime")), t.get_attribute(
                    "datetime"
                )
                assert re.fullmatch(r"(now|\d+ (seconds?|minutes?|hours?) ago)", t.inner_text()), t.inner_text()
                assert "GMT+9" in t.get_attribute("title") and "Japan" not in t.get_attribute("title"), t.get_attribute(
                    "title"
                )
        # the jobs table written by the page's script too (after a job's end)
        page.goto(f"{site.hub.url}/hub/workspaces/{site.ws['failed']['id']}")
        page.locator(".file-entry", has_text="README.md").wait_for()
        modified = page.locator("#files time").first
        assert "GMT+9" in modified.get_attribute("title")
    finally:
        context.close()


def test_navigation_marks_the_current_page_and_reaches_local_accounts(site, browser):
    context, page = login(site.hub, browser, "uwsadmin", ADMIN_PASSWORD)
    try:
        current = page.locator("#thenavbar [aria-current=page]")
        page.goto(f"{site.hub.url}/hub/workspaces/{site.ws['running']['id']}")
        expect(current).to_have_count(1)
        expect(current).to_have_text("Workspaces")
        page.click("#thenavbar >> text=Accounts")
        page.wait_for_url(re.compile(r".*/hub/admin/accounts$"))
        expect(current).to_have_text("Accounts")
        page.click("#thenavbar >> text=Token")
        expect(current).to_have_text("Token")
    finally:
        context.close()
    # not for people who do not manage accounts
    context, page = login(site.hub, browser, "uwsalice", PASSWORD)
    try:
        expect(page.locator("#thenavbar")).to_contain_text("Shared with me")
        expect(page.locator("#nav-local-accounts")).to_have_count(0)
    finally:
        context.close()


def test_set_a_password_in_a_form_and_not_disable_oneself(site, browser):
    """An admin sets a password typed twice, masked (different ones are refused before
    anything is sent); their own account has no Disable button."""
    from ..authutil import login as form_login

    context, page = login(site.hub, browser, "uwsadmin", ADMIN_PASSWORD)
    try:
        page.goto(f"{site.hub.url}/hub/admin/accounts")
        me = page.locator("#accounts tr[data-username=uwsadmin]")
        expect(me.locator(".account-self")).to_have_text("your account")
        expect(me.locator(".account-disable")).to_have_count(0)
        expect(page.locator("#accounts tr[data-username=uwscarol] .account-disable")).to_have_count(1)

        page.locator("#accounts tr[data-username=uwscarol] .account-password").click()
        dialog = page.locator("#password-dialog")
        expect(dialog).to_be_visible()
        expect(page.locator("#password-user")).to_have_text("uwscarol")
        assert page.locator("#password-new").get_attribute("type") == "password"
        assert page.locator("#password-again").get_attribute("type") == "password"
        page.fill("#password-new", "carol's new password")
        page.fill("#password-again", "carol's other password")
        page.click("#password-save")
        assert page.locator("#password-again").evaluate("el => el.validationMessage") == "The passwords differ"
        expect(dialog).to_be_visible()
        assert form_login(site.hub, "uwscarol", PASSWORD).ok
        page.fill("#password-again", "carol's new password")
        page.click("#password-save")
        expect(dialog).to_be_hidden()
        expect(page.locator("#notice")).to_have_text("The password of uwscarol is set.")
        assert form_login(site.hub, "uwscarol", "carol's new password").ok
    finally:
        site.hub.api("PATCH", "accounts/uwscarol", json={"password": PASSWORD}, expect=200)
        context.close()


def test_rename_and_describe_a_workspace_in_the_page(site, browser):
    """The owner renames a workspace and edits its description in place (the URL stays);
    a blank name is refused with the hub's message; an editor is not offered it."""
    alice = site.tokens["uwsalice"]
    ws = new_workspace(site, alice, description="before")
    site.hub.api("POST", f"workspaces/{ws['id']}/shares", alice, json={"user": "uwsbob", "level": "editor"}, expect=201)
    context, page = login(site.hub, browser, "uwsalice", PASSWORD)
    try:
        page.goto(f"{site.hub.url}/hub/workspaces/{ws['id']}")
        page.click("#edit-workspace")
        expect(page.locator("#edit-name")).to_be_focused()
        expect(page.locator("#edit-name")).to_have_value(ws["name"])
        expect(page.locator("#edit-description")).to_have_value("before")
        page.fill("#edit-name", "   ")
        page.click("#edit-save")
        expect(page.locator("#edit-error")).to_have_text("The name must not be empty")
        page.fill("#edit-name", "Renamed in the page")
        page.fill("#edit-description", "after\nwith a second line")
        page.locator("#edit-name").press("Enter")
        expect(page.locator("h1")).to_have_text("Renamed in the page")
        expect(page.locator("h1")).to_be_focused()
        expect(page.locator("#edit-saved")).to_have_text("Saved.")
        expect(page.locator("#ws-crumb")).to_have_text("Renamed in the page")
        expect(page.locator("#edit-workspace-form")).to_be_hidden()
        stored = site.hub.api("GET", f"workspaces/{ws['id']}", alice, expect=200)
        assert (stored["name"], stored["description"], stored["slug"]) == (
            "Renamed in the page",
            "after\nwith a second line",
            ws["slug"],
        )
        page.reload()
        expect(page.locator("h1")).to_have_text("Renamed in the page")
        # Escape closes the form unchanged, back on the button
        page.click("#edit-workspace")
        page.keyboard.type(" and more")
        page.keyboard.press("Escape")
        expect(page.locator("#edit-workspace")).to_be_focused()
        assert site.hub.api("GET", f"workspaces/{ws['id']}", alice, expect=200)["name"] == "Renamed in the page"
    finally:
        context.close()
    context, page = login(site.hub, browser, "uwsbob", PASSWORD)
    try:
        page.goto(f"{site.hub.url}/hub/workspaces/{ws['id']}")
        expect(page.locator("h1")).to_have_text("Renamed in the page")
        expect(page.locator("#edit-workspace")).to_have_count(0)
    finally:
        context.close()
