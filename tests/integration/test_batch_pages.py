"""Batch jobs on the workspace page, in a real Chromium: the launch form made from a job
type's declared parameters, the API's 422 shown at the field it names, the log followed
live as the job writes it, a result downloaded, Cancel and Delete; a viewer sees the jobs
and nothing to act with."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
from playwright.sync_api import expect

from ..browserutil import axe_violations, login
from ..helpers import MINIMAL_CMD, MULTIUSER_CONFIG
from ..hubutil import REPO

pytestmark = pytest.mark.browser

PASSWORD = "a long password for batch pages"

#: counts the lines of each file under a folder, one log line per file, then waits for
#: ``go-<job id>`` in the workspace (so the test sees the log while the job runs) and
#: writes the counts to ``counts.<format>`` in its results folder (no braces: they would be
#: placeholders)
COUNT = r"""
import os, sys, time
folder, fmt = sys.argv[1:3]
header = "--header" in sys.argv[3:]
sep = "," if fmt == "csv" else "\t"
rows = []
for root, dirs, files in os.walk(folder):
    dirs[:] = sorted(d for d in dirs if d != "results")
    for name in sorted(files):
        path = os.path.join(root, name)
        if name.startswith("go-"):
            continue
        with open(path, "rb") as f:
            n = sum(1 for _ in f)
        rel = os.path.relpath(path, folder)
        print("%s: %d lines" % (rel, n), flush=True)
        rows.append(rel + sep + str(n))
go = os.path.join(os.environ["UWS_WORKSPACE_DIR"], "go-" + os.environ["UWS_JOB_ID"])
for _ in range(1200):
    if os.path.exists(go):
        break
    time.sleep(0.1)
with open(os.path.join(os.environ["UWS_RESULTS_DIR"], "counts." + fmt), "w") as out:
    out.write(("file" + sep + "lines\n" if header else "") + "\n".join(rows) + "\n")
print("done", flush=True)
"""

JOB_TYPES = {
    "minimal": {"display_name": "Minimal test server", "cmd": MINIMAL_CMD},
    "count": {
        "interactive": False,
        "display_name": "Count lines",
        "description": "Counts the lines of each file in a folder and writes them to a table.",
        "cmd": [sys.executable, "-c", COUNT, "{folder}", "{format}", ["--header", "{header}"], ["{rounds}"]],
        "parameters": {
            "folder": {"type": "path", "label": "Folder to count", "default": ".", "help": "The folder to count in"},
            "format": {"type": "choice", "choices": ["csv", "tsv"], "default": "csv"},
            "header": {"type": "bool", "default": True, "help": "Start the table with a header line"},
            "rounds": {"type": "int", "min": 1, "max": 5, "help": "How often to count"},
            "label": {"type": "string", "help": "A name for the run"},
        },
    },
}

CONFIG = MULTIUSER_CONFIG + f"c.UWSHub.job_types = {JOB_TYPES!r}\n"


@pytest.fixture(scope="module")
def site(make_hub, system_users):
    hub = make_hub(CONFIG)
    for name in ("uwsalice", "uwsbob"):
        hub.api("POST", "accounts", json={"username": name, "password": PASSWORD}, expect=201)
    alice = hub.add_user("uwsalice")
    files = [{"path": "a.txt", "content": "1\n2\n3\n"}, {"path": "data/b.txt", "content": "x\n" * 5}]
    ws = hub.api("POST", "workspaces", alice, json={"name": "Counting", "files": files}, expect=201)
    hub.api("POST", f"workspaces/{ws['id']}/shares", alice, json={"user": "uwsbob", "level": "viewer"}, expect=201)
    return hub, alice, ws


def release(hub, token, ws, job_id):
    """Let the job finish: the file it waits for, put into the workspace."""
    hub.api("PUT", f"workspaces/{ws['id']}/files/go-{job_id}", token, data=b"go", expect=201)


def test_launch_from_the_form_follow_the_log_and_download_the_result(site, browser, tmp_path):
    hub, alice, ws = site
    context, page = login(hub, browser, "uwsalice", PASSWORD, viewport={"width": 1000, "height": 900})
    page.goto(f"{hub.url}/hub/workspaces/{ws['id']}")
    form = page.locator("#batch-form")

    # the form is made from the declared parameters, each field labelled (by its label, or
    # its name made readable), with its help
    expect(page.locator("#batch-type-help")).to_have_text(JOB_TYPES["count"]["description"])
    expect(form.get_by_label("Folder to count", exact=True)).to_have_value(".")
    expect(form.get_by_label("Format", exact=True)).to_have_value("csv")
    expect(form.get_by_label("Header", exact=True)).to_be_checked()
    expect(form.get_by_label("Rounds", exact=True)).to_have_attribute("type", "number")
    expect(form.get_by_label("Rounds", exact=True)).to_have_attribute("max", "5")
    expect(form.get_by_label("Label", exact=True)).to_have_value("")
    expect(page.locator("#bp-header-help")).to_have_text("Start the table with a header line.")
    expect(page.locator("#bp-rounds-help")).to_have_text("How often to count. From 1 to 5.")
    expect(page.locator("[data-param=format]")).to_have_text("Format" + "csv" + "tsv")
    # the interactive launch form offers the interactive job types only
    expect(page.locator("#job-type-select option")).to_have_text(["Minimal test server"])

    # refused: the API's 422 is shown next to each field it names, and the first gets the focus
    form.get_by_label("Folder to count", exact=True).fill("../outside")
    form.get_by_label("Rounds", exact=True).fill("9")
    page.click("#batch-launch")
    expect(page.locator("#bp-folder-error")).to_contain_text("must stay inside the workspace")
    expect(page.locator("#bp-rounds-error")).to_have_text("must be at most 5 (got 9)")
    expect(form.get_by_label("Folder to count", exact=True)).to_have_attribute("aria-invalid", "true")
    expect(form.get_by_label("Folder to count", exact=True)).to_be_focused()
    expect(page.locator("#bp-label-error")).to_have_text("")
    assert not axe_violations(page, within="#batch")
    assert not page.locator(".batch-job").count(), "a refused launch shows no job"

    # launched: the job shows, its log follows what it prints while it runs
    form.get_by_label("Folder to count", exact=True).fill(".")
    form.get_by_label("Rounds", exact=True).fill("2")
    form.get_by_label("Label", exact=True).fill("first; $(id)")
    page.click("#batch-launch")
    job = page.locator(".batch-job").first
    expect(job.locator(".batch-title")).to_be_focused()
    expect(job.locator(".batch-name")).to_contain_text("Count lines")
    # its parameters as the form names them
    expect(job.locator(".batch-params")).to_contain_text('Label: "first; $(id)"')
    expect(job.locator(".batch-params")).to_contain_text("Rounds: 2")
    expect(job.locator(".batch-params")).to_contain_text('Folder to count: "."')
    job_id = int(job.get_attribute("data-job-id"))
    log = job.locator(".batch-log")
    expect(log).to_contain_text("a.txt: 3 lines", timeout=60_000)
    expect(log).to_contain_text("data/b.txt: 5 lines")
    expect(job.locator(".batch-status")).to_have_text("running")
    expect(log).not_to_contain_text("done")
    expect(job.locator(".batch-delete")).to_be_hidden()
    if os.environ.get("UWS_SAVE_SCREENSHOTS"):
        images = REPO / "docs" / "images"
        images.mkdir(exist_ok=True)
        page.locator("#batch").screenshot(path=str(images / "batch-log.png"))

    # it ends: the log grows by its last line, the status says so, the result is listed
    release(hub, alice, ws, job_id)
    expect(log).to_contain_text("done")
    expect(job.locator(".batch-status")).to_have_text("completed")
    expect(page.locator("#batch-announce")).to_contain_text(f"Batch job {job_id} completed")
    result = job.locator(".batch-result")
    expect(result).to_have_text(f"results/{job_id}/counts.csv")
    with page.expect_download() as download:
        result.click()
    saved = Path(download.value.path())
    assert saved.read_text() == "file,lines\na.txt,3\ndata/b.txt,5\n"
    expect(job.locator(".batch-cancel")).to_be_hidden()
    # the Files panel, listed before the job, shows what it wrote without a reload
    expect(page.locator("#files tr[data-path='results']")).to_have_count(1)

    # a reload shows the same job, its result and its whole log
    page.reload()
    job = page.locator(f".batch-job[data-job-id='{job_id}']")
    expect(job.locator(".batch-status")).to_have_text("completed")
    expect(job.locator(".batch-result")).to_have_text(f"results/{job_id}/counts.csv")
    job.locator(".batch-log-toggle").click()
    expect(job.locator(".batch-log")).to_have_text("a.txt: 3 lines\ndata/b.txt: 5 lines\ndone\n")
    whole = page.request.get(hub.url + job.locator(".batch-log-file").get_attribute("href"))
    assert whole.text() == "a.txt: 3 lines\ndata/b.txt: 5 lines\ndone\n"

    # another one, cancelled while it runs; then deleted (its log goes, its results stay)
    form.get_by_label("Header", exact=True).uncheck()
    page.click("#batch-launch")
    expect(page.locator(".batch-job")).to_have_count(2)
    second = page.locator(".batch-job").first
    expect(second.locator(".batch-log")).to_contain_text("a.txt: 3 lines", timeout=60_000)
    second_id = int(second.get_attribute("data-job-id"))
    assert second_id > job_id
    expect(second.locator(".batch-params")).to_contain_text("Header: false")
    second.locator(".batch-cancel").click()
    expect(second.locator(".batch-status")).to_have_text("cancelled", timeout=60_000)
    page.once("dialog", lambda dialog: dialog.accept())
    second.locator(".batch-delete").click()
    expect(page.locator(f".batch-job[data-job-id='{second_id}']")).to_have_count(0)
    hub.api("GET", f"jobs/{second_id}", alice, expect=404)
    expect(page.locator(".batch-job")).to_have_count(1)
    context.close()


def test_a_viewer_sees_batch_jobs_and_nothing_to_act_with(site, browser):
    hub, alice, ws = site
    job = hub.api("POST", f"workspaces/{ws['id']}/jobs", alice, json={"job_type": "count"}, expect=202)
    hub.wait_job(job["id"], alice, {"running"})
    context, page = login(hub, browser, "uwsbob", PASSWORD)
    page.goto(f"{hub.url}/hub/workspaces/{ws['id']}")
    entry = page.locator(f".batch-job[data-job-id='{job['id']}']")
    expect(entry.locator(".batch-status")).to_have_text("running")
    # the status changes live on the viewer's page too
    release(hub, alice, ws, job["id"])
    expect(entry.locator(".batch-status")).to_have_text("completed", timeout=60_000)
    expect(entry.locator(".batch-result")).to_have_text(re.compile(r"counts\.csv$"))
    assert page.locator("#batch-form").count() == 0
    assert page.locator(".batch-cancel, .batch-delete").count() == 0
    # a job's log is its owner's (and admins'): no log view for a collaborator
    assert page.locator(".batch-log-toggle, .batch-log, .batch-log-file").count() == 0
    assert not axe_violations(page, within="#batch")
    context.close()


def test_a_batch_jobs_page_shows_its_parameters_how_it_ended_and_its_log(site, browser):
    """The job page (from the Jobs list) of a batch job says what it was asked to do and
    how its command ended; its owner opens its log there, a viewer has no log."""
    hub, alice, ws = site
    job = hub.api(
        "POST",
        f"workspaces/{ws['id']}/jobs",
        alice,
        json={"job_type": "count", "parameters": {"format": "tsv", "label": "page run"}},
        expect=202,
    )
    hub.wait_job(job["id"], alice, {"running"})
    release(hub, alice, ws, job["id"])
    hub.wait_job(job["id"], alice, {"completed"})
    context, page = login(hub, browser, "uwsalice", PASSWORD)
    try:
        page.goto(f"{hub.url}/hub/jobs")
        page.click(f"#job-list tr[data-job-id='{job['id']}'] a >> text='{job['id']}'")
        batch = page.locator("#job-batch")
        expect(batch.locator("tr", has_text="format")).to_contain_text("tsv")
        expect(batch.locator("tr", has_text="label")).to_contain_text("page run")
        # named as the launch form names them
        expect(batch.get_by_role("rowheader", name="Folder to count", exact=True)).to_be_visible()
        expect(batch.get_by_role("rowheader", name="Format", exact=True)).to_be_visible()
        expect(page.locator("#job-exit-code")).to_have_text("0")
        page.click("#job-log summary")
        expect(page.locator("#job-output")).to_contain_text("a.txt: 3 lines")
        assert not axe_violations(page)
    finally:
        context.close()
    context, page = login(hub, browser, "uwsbob", PASSWORD)
    try:
        page.goto(f"{hub.url}/hub/jobs/{job['id']}")
        expect(page.locator("#job-exit-code")).to_have_text("0")
        assert page.locator("#job-log").count() == 0
    finally:
        context.close()
