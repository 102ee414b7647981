"""The browser flow of a new user, in a real Chromium (Debian's, driven by
Playwright), against the hub as `make run` starts it: the repository's
jupyterhub_config.py, single-account mode, the first admin's printed password."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from ..browserutil import login
from ..hubutil import REPO, Hub, wait_for

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def run_hub(tmp_path_factory, workspaces_root):
    """uws-hub with the repository's own jupyterhub_config.py, on free ports."""
    workdir = tmp_path_factory.mktemp("run-hub")
    root = workspaces_root / "run-hub"
    config = f"""
c = get_config()  # noqa
load_subconfig({str(REPO / "jupyterhub_config.py")!r})  # noqa
c.JupyterHub.hub_port = {{hub_port}}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{{api_port}}"
c.UWSHub.workspaces_root = {str(root)!r}
"""
    hub = Hub(workdir, "", db_url="unused", base_config=False)
    hub.config_file.write_text(config.format(hub_port=hub.hub_port, api_port=hub.api_port))
    hub.env["UWS_BIND_URL"] = hub.url
    hub.env.pop("UWS_ADMIN_PASSWORD", None)
    hub.workspaces_root = root
    hub.start()
    yield hub
    hub.stop()


def printed_password(hub: Hub) -> str:
    match = re.search(r"Created the first admin account: user 'admin', password '([^']+)'", hub.log_text())
    assert match, "the first start must print the admin's password:\n" + hub.log_tail()
    return match.group(1)


def test_new_user_flow_in_the_browser(run_hub, browser):
    hub = run_hub
    password = printed_password(hub)
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(30_000)

    # log in; land on My workspaces
    page.goto(hub.url + "/hub/login")
    page.fill("#username_input", "admin")
    page.fill("#password_input", "not the password")
    page.click("#login_submit")
    expect(page.locator("#login-main")).to_contain_text("Invalid username or password")
    page.fill("#username_input", "admin")
    page.fill("#password_input", password)
    page.click("#login_submit")
    page.wait_for_url(re.compile(r".*/hub/workspaces$"))
    expect(page.locator("h1")).to_have_text("My workspaces")
    expect(page.locator("nav")).to_contain_text("Workspaces")

    # create a workspace
    page.fill("#ws-name", "Browser test")
    page.fill("#ws-description", "made in Chromium")
    page.click("#create-button")
    page.wait_for_url(re.compile(r".*/hub/workspaces/\d+$"))
    expect(page.locator("h1")).to_have_text("Browser test")
    expect(page.locator("#ws-status")).to_have_text("idle")

    # upload a file from the page
    upload = Path(hub.workdir) / "from-page.txt"
    upload.write_text("uploaded from the page\n")
    page.set_input_files("#upload-file", str(upload))
    page.click("#upload-form button[type=submit]")
    expect(page.locator("#files")).to_contain_text("from-page.txt")

    # launch JupyterLab and watch it go to running
    page.click("#launch-job")
    expect(page.locator("#job-status")).to_have_text(re.compile("pending|queued|running"))
    seen = set()

    def running():
        seen.add(page.locator("#job-status").inner_text())
        return "running" in seen

    wait_for(running, 60, interval=0.1, what="the job to show running")
    assert seen <= {"pending", "queued", "running"}, seen

    # deleting is refused while it runs, with a clear message
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#delete-workspace")
    expect(page.locator("#error")).to_contain_text("stop it before deleting")

    # open it: JupyterLab, rooted at the workspace
    with context.expect_page() as new_page:
        page.click("#open-job")
    lab = new_page.value
    lab.set_default_timeout(60_000)
    lab.wait_for_url(re.compile(r".*/user/admin/browser-test/lab.*"))
    expect(lab.locator(".jp-DirListing-content")).to_contain_text("from-page.txt")
    # create a file in JupyterLab: it lands in the workspace directory
    lab.locator(".jp-LauncherCard[title='Create a new text file']").click()
    directory = hub.workspaces_root / "admin" / "browser-test"
    wait_for(lambda: (directory / "untitled.txt").exists(), 30, what="JupyterLab's new file in the workspace")
    # JupyterLab's news plugin is off (UWSHub.jupyterlab_news): no "Would you like to get
    # notified about official Jupyter news?" on a newcomer's first JupyterLab
    config = lab.evaluate("JSON.parse(document.getElementById('jupyter-config-data').textContent)")
    assert "@jupyterlab/apputils-extension:announcements" in config["disabledExtensions"], config
    expect(lab.locator("body")).not_to_contain_text("Jupyter news")
    lab.close()

    # stop it from the workspace page; it completes
    page.click("#stop-job")
    expect(page.locator("#no-job")).to_be_visible(timeout=30_000)
    expect(page.locator("#jobs tbody tr").first.locator(".job-status")).to_have_text("completed")

    # delete it
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#delete-workspace")
    page.wait_for_url(re.compile(r".*/hub/workspaces$"))
    wait_for(lambda: not directory.exists(), 15, what="the workspace directory to go")
    page.reload()
    expect(page.locator("body")).not_to_contain_text("Browser test")
    context.close()


def test_admin_page_lists_all_workspaces(run_hub, browser):
    context = browser.new_context()
    page = context.new_page()
    page.goto(run_hub.url + "/hub/login")
    page.fill("#username_input", "admin")
    page.fill("#password_input", printed_password(run_hub))
    page.click("#login_submit")
    page.wait_for_url(re.compile(r".*/hub/workspaces$"))
    page.fill("#ws-name", "Listed for the admin")
    page.click("#create-button")
    page.wait_for_url(re.compile(r".*/hub/workspaces/\d+$"))
    # JupyterHub's home page points at the workspaces (its "Start My Server" cannot start anything here)
    page.goto(run_hub.url + "/hub/home")
    expect(page.locator("#uws-home")).to_contain_text("your workspaces")
    expect(page.locator("body")).not_to_contain_text("Start My Server")
    page.click("text=All workspaces")
    page.wait_for_url(re.compile(r".*/hub/admin/workspaces$"))
    expect(page.locator("#all-workspaces")).to_contain_text("Listed for the admin")
    context.close()


def test_a_newcomer_runs_the_example_batch_job_from_the_page(run_hub, browser):
    """The shipped example batch job type (count lines into a CSV), from the workspace
    page's form to its log and its result downloaded."""
    hub = run_hub
    context, page = login(hub, browser, "admin", printed_password(hub))
    page.fill("#ws-name", "Counting lines")
    page.click("#create-button")
    page.wait_for_url(re.compile(r".*/hub/workspaces/\d+$"))
    (hub.workspaces_root / "admin" / "counting-lines" / "notes.txt").write_text("one\ntwo\n")
    page.locator("#batch-type").select_option("count-lines")
    expect(page.locator("#batch-form").get_by_label("Folder", exact=True)).to_have_value(".")
    page.click("#batch-launch")
    job = page.locator(".batch-job").first
    expect(job.locator(".batch-status")).to_have_text("completed", timeout=60_000)
    expect(job.locator(".batch-log")).to_contain_text("notes.txt: 2 lines")
    with page.expect_download() as download:
        job.locator(".batch-result").click()
    rows = Path(download.value.path()).read_text().splitlines()
    assert rows[0] == "path,lines,bytes" and "notes.txt,2,8" in rows, rows
    context.close()
