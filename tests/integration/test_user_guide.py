"""The user guide's screenshots (docs/images/), taken in Chromium against the
hub as `make run` starts it (the repository's jupyterhub_config.py: local
accounts, single-account mode, JupyterLab and the example web apps, each
launched from the page in a new workspace), so they
stay current: each page is checked to render what the guide says it shows
before it is photographed, and the guide shows exactly the pictures taken here.

A picture replaces the one in docs/images/ only when the page looks different
(browserutil.save_screenshot; delete a picture to have it taken again): commit
the ones a change of the pages rewrites.
"""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import expect

from .. import browserutil
from ..helpers import ADMIN_PASSWORD
from ..hubutil import REPO

pytestmark = pytest.mark.browser

IMAGES = REPO / "docs" / "images"
#: pictures another browser test takes (with UWS_SAVE_SCREENSHOTS=1), where its
#: page is set up: a batch job's live log (test_batch_pages.py)
TAKEN_ELSEWHERE = {"batch-log.png"}
#: what the example dashboard (uws_hub/serverconfig/examples/dashboard.ipynb) shows first
SUM_6 = "Sum of the squares of 1 to 6: 91"
COLLEAGUE = "colleague"


@pytest.fixture(scope="module")
def guide_hub(make_hub, workspaces_root):
    """uws-hub with the repository's own jupyterhub_config.py, with quotas (and
    the tests' admin service beside it, to create a colleague's account)."""
    root = workspaces_root / "user-guide"
    root.mkdir()
    hub = make_hub(
        f"""
load_subconfig({str(REPO / "jupyterhub_config.py")!r})  # noqa
c.UWSHub.workspaces_root = {str(root)!r}
# quotas to show (the shipped configuration sets none)
c.UWSHub.quota_disk_bytes = "10G"
c.UWSHub.quota_core_hours = 500
c.UWSHub.quota_concurrent_jobs = 3
""",
        start=False,
        root=root,
    )
    hub.env["UWS_BIND_URL"] = hub.url
    hub.start()
    hub.api("POST", "accounts", json={"username": COLLEAGUE, "password": "a colleague's long password"}, expect=201)
    return hub


def shoot(page, name: str, taken: set[str]) -> None:
    browserutil.save_screenshot(page, IMAGES / name)
    taken.add(name)


def new_workspace(page, hub, name: str, description: str = "") -> str:
    """A new workspace made on the workspaces page; returns its page's URL."""
    page.goto(hub.url + "/hub/workspaces")
    page.fill("#ws-name", name)
    page.fill("#ws-description", description)
    page.click("#create-button")
    page.wait_for_url(re.compile(r".*/hub/workspaces/\d+$"))
    expect(page.locator("h1")).to_have_text(name)
    return page.url


def test_the_guides_pages_render_and_are_photographed(guide_hub, browser, tmp_path):
    hub = guide_hub
    taken: set[str] = set()
    context = browser.new_context(viewport=browserutil.SCREENSHOT_SIZE)
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        # the login page
        page.goto(hub.url + "/hub/login")
        expect(page.locator("#login_submit")).to_be_visible()
        expect(page.locator("#username_input")).to_be_visible()
        shoot(page, "login.png", taken)
        page.fill("#username_input", "admin")
        page.fill("#password_input", ADMIN_PASSWORD)
        page.click("#login_submit")
        page.wait_for_url(re.compile(r".*/hub/workspaces$"))

        # My workspaces: the quota bars, the form, the list
        new_workspace(page, hub, "Field survey 2024", "GPS tracks and the cleaning notebooks")
        url = new_workspace(page, hub, "Thesis analysis", "Chapter 3: the regression models")
        page.goto(hub.url + "/hub/workspaces")
        expect(page.locator("h1")).to_have_text("My workspaces")
        expect(page.locator("#workspaces")).to_contain_text("Field survey 2024")
        expect(page.locator("#workspaces")).to_contain_text("Thesis analysis")
        expect(page.locator("#quota-disk .quota-text")).not_to_be_empty()
        expect(page.locator("#quota-core .quota-text")).to_have_text("0 of 500")
        shoot(page, "workspaces.png", taken)

        # a file uploaded from the page, then a launch, while it starts: the
        # status and the progress bar
        page.goto(url)
        upload = tmp_path / "regression.ipynb"
        upload.write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
        page.set_input_files("#upload-file", str(upload))
        page.click("#upload-form button[type=submit]")
        expect(page.locator("#files")).to_contain_text("regression.ipynb", timeout=30_000)
        expect(page.locator("#job-type-description")).to_contain_text("JupyterLab")
        page.click("#launch-job")
        expect(page.locator("#job-progress-bar")).to_be_visible()
        shoot(page, "launch.png", taken)
        expect(page.locator("#job-status")).to_have_text("running", timeout=60_000)

        # the running JupyterLab, rooted at the workspace
        with context.expect_page() as opened:
            page.click("#open-job")
        lab = opened.value
        lab.set_default_timeout(60_000)
        lab.wait_for_url(re.compile(r".*/user/admin/thesis-analysis/lab.*"))
        expect(lab.locator(".jp-LauncherCard").first).to_be_visible(timeout=60_000)
        expect(lab.locator(".jp-DirListing-content")).to_contain_text("regression.ipynb", timeout=60_000)
        # JupyterLab's first start asks nothing about news (UWSHub.jupyterlab_news)
        expect(lab.locator(".jp-Notification-Toast-Close")).to_have_count(0)
        shoot(lab, "jupyterlab.png", taken)
        lab.close()
        page.click("#stop-job")
        expect(page.locator("#no-job")).to_be_visible(timeout=30_000)

        # the share dialog, after sharing with a colleague as a viewer
        page.click("#share-open")
        page.fill("#share-search", COLLEAGUE)
        page.locator(".share-result").first.click()
        page.select_option("#share-level", "viewer")
        page.click("#share-submit")
        expect(page.locator("#share-list .share-who")).to_have_text(COLLEAGUE)
        expect(page.locator("#share-list .share-level-select")).to_have_value("viewer")
        shoot(page, "sharing.png", taken)
        page.click("#share-close")

        # the quotas page (admins'): usage by user, and an override
        page.goto(hub.url + "/hub/admin/quotas")
        expect(page.locator("#usage")).to_contain_text("admin")
        expect(page.locator("#override-form")).to_be_visible()
        shoot(page, "quotas.png", taken)

        # a Voilà dashboard launched from the page in a new workspace (the example notebook)
        new_workspace(page, hub, "Dashboard", "The example Voilà dashboard")
        dashboard = browserutil.launch_and_open(page, "voila")
        expect(dashboard.get_by_text(SUM_6)).to_be_visible(timeout=90_000)
        expect(dashboard.locator(".widget-slider")).to_be_visible()
        shoot(dashboard, "voila.png", taken)
        dashboard.close()
        page.click("#stop-job")
        expect(page.locator("#no-job")).to_be_visible(timeout=30_000)

        # a Streamlit app, likewise (the example script)
        new_workspace(page, hub, "Streamlit app", "The example Streamlit app")
        app = browserutil.launch_and_open(page, "streamlit")
        expect(app.get_by_text("Hello, world!")).to_be_visible(timeout=90_000)
        shoot(app, "streamlit.png", taken)
        app.close()
    finally:
        context.close()

    # the guide shows exactly these pictures (so none goes stale unnoticed), and
    # docs/images/ holds no other (its folders are the change notes' own, docs/changes/)
    shown = set()
    for doc in (REPO / "docs").glob("*.md"):
        shown |= set(re.findall(r"\]\(images/([^)\s]+)\)", doc.read_text()))
    assert shown == taken | TAKEN_ELSEWHERE
    assert {p.name for p in IMAGES.iterdir() if p.is_file()} == taken | TAKEN_ELSEWHERE
