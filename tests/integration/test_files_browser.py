"""The workspace page's file view in a real Chromium (Debian's, driven by
Playwright): uploads that ask before they replace a file (files, a folder, a
drop), new folders, rename and move, delete, folders as zip files, the text
view's edit and save, Back after opening a folder, hidden files, and what a
viewer sees (no control that writes). Each through the page only, checked on
disk and in what the page shows."""

from __future__ import annotations

import io
import re
import uuid
import zipfile
from pathlib import Path

import pytest
from playwright.sync_api import expect

from .. import browserutil
from ..helpers import MULTIUSER_CONFIG

pytestmark = pytest.mark.browser

PASSWORD = "a long password for the file view"


@pytest.fixture(scope="module")
def fhub(make_hub, system_users):
    hub = make_hub(MULTIUSER_CONFIG)
    for name in ("uwsalice", "uwsbob", "uwscarol"):
        hub.api("POST", "accounts", json={"username": name, "password": PASSWORD}, expect=201)
    hub.tokens = {name: hub.add_user(name) for name in ("uwsalice", "uwsbob", "uwscarol")}
    return hub


@pytest.fixture(scope="module")
def alice_page(fhub, browser):
    context, page = browserutil.login(fhub, browser, "uwsalice", PASSWORD)
    yield page
    context.close()


@pytest.fixture
def ws(fhub):
    """A new workspace of alice's with a README and a folder."""
    ws = fhub.api(
        "POST",
        "workspaces",
        fhub.tokens["uwsalice"],
        expect=201,
        json={
            "name": f"files {uuid.uuid4().hex[:6]}",
            "files": [{"path": "README.md", "content": "# hello\n"}, {"path": "data/a.csv", "content": "a,b\n1,2\n"}],
        },
    )
    ws["dir"] = fhub.workspaces_root / "uwsalice" / ws["slug"]
    return ws


def visit(page, hub, ws, query: str = ""):
    page.goto(f"{hub.url}/hub/workspaces/{ws['id']}{query}")
    expect(page.locator("#files tbody tr").first).to_be_visible()


def shows(page, names: list[str]) -> None:
    """The file view lists these names, in this order (waiting for it to)."""
    expect(page.locator("#files tbody .file-entry")).to_have_text(names)


def row(page, name: str):
    return page.locator("#files tbody tr", has=page.locator(".file-entry", has_text=re.compile(rf"^{re.escape(name)}")))


def answer_dialogs(page, answers: list[bool]) -> list[str]:
    """Answer the page's next confirm() questions in turn; returns the questions asked."""
    asked = []

    def on_dialog(dialog):
        asked.append(dialog.message)
        answer = answers.pop(0)
        if not answers:
            page.remove_listener("dialog", on_dialog)
        if answer:
            dialog.accept()
        else:
            dialog.dismiss()

    page.on("dialog", on_dialog)
    return asked


def test_upload_asks_before_it_replaces_a_file(fhub, alice_page, ws, tmp_path):
    page = alice_page
    visit(page, fhub, ws)
    new_readme, other = tmp_path / "README.md", tmp_path / "other.txt"
    new_readme.write_text("# replaced\n")
    other.write_text("other\n")

    # README.md is listed here: asked once; "Cancel" keeps it and uploads the rest
    asked = answer_dialogs(page, [False])
    page.set_input_files("#upload-file", [str(new_readme), str(other)])
    page.click("#upload-form button[type=submit]")
    expect(page.locator("#files-status")).to_have_text("Uploaded 1 file to /; kept 1 existing file.")
    assert asked == [
        "A file named README.md is already in /:\nREADME.md\n\nReplace it? "
        "(Cancel keeps it and uploads the other files.)"
    ]
    assert (ws["dir"] / "README.md").read_text() == "# hello\n" and (ws["dir"] / "other.txt").read_text() == "other\n"
    expect(page.locator("#files tbody")).to_contain_text("other.txt")

    # "OK" replaces it
    answer_dialogs(page, [True])
    page.set_input_files("#upload-file", [str(new_readme)])
    page.click("#upload-form button[type=submit]")
    expect(page.locator("#files-status")).to_have_text("Uploaded 1 file to /.")
    assert (ws["dir"] / "README.md").read_text() == "# replaced\n"
    expect(page.locator("#upload-progress")).to_be_hidden()

    # a folder, with a file that is there already (not in the listing: asked when the hub says so)
    folder = tmp_path / "data"
    (folder / "deeper").mkdir(parents=True)
    (folder / "a.csv").write_text("new,table\n")
    (folder / "deeper" / "b.txt").write_text("b\n")
    asked = answer_dialogs(page, [False])
    page.set_input_files("#upload-folder", str(folder))
    page.click("#upload-form button[type=submit]")
    expect(page.locator("#files-status")).to_have_text("Uploaded 1 file to /; kept 1 existing file.")
    assert asked == ["/data/a.csv already exists. Replace it?"]
    assert (ws["dir"] / "data" / "a.csv").read_text() == "a,b\n1,2\n"
    assert (ws["dir"] / "data" / "deeper" / "b.txt").read_text() == "b\n"

    # dropped on the file view: files go into the folder shown, with a progress bar on the way
    page.click("#files tbody .file-entry:text-is('data/')")
    expect(page.locator("#files-here")).to_have_text("data")
    page.evaluate("""() => {
        // a slow network: the progress bar is seen while the bytes go
        window.__progress = [];
        new MutationObserver(() => window.__progress.push(
            document.getElementById("upload-progress-bar").getAttribute("aria-valuenow"))).observe(
            document.getElementById("upload-progress-bar"), {attributes: true});
        const dt = new DataTransfer();
        dt.items.add(new File(["x".repeat(3 * 1024 * 1024)], "big.bin"));
        dt.items.add(new File(["dropped\\n"], "dropped.txt"));
        const section = document.getElementById("files-section");
        section.dispatchEvent(new DragEvent("dragover", {dataTransfer: dt, bubbles: true, cancelable: true}));
        section.dispatchEvent(new DragEvent("drop", {dataTransfer: dt, bubbles: true, cancelable: true}));
    }""")
    expect(page.locator("#files-status")).to_have_text("Uploaded 2 files to /data.")
    assert (ws["dir"] / "data" / "dropped.txt").read_text() == "dropped\n"
    assert (ws["dir"] / "data" / "big.bin").stat().st_size == 3 * 1024 * 1024
    progress = page.evaluate("window.__progress")
    assert progress and progress[-1] == "100", progress
    expect(page.locator("#files tbody")).to_contain_text("dropped.txt")


def test_new_folder_rename_move_and_delete(fhub, alice_page, ws):
    page = alice_page
    visit(page, fhub, ws)
    # a new folder, by keyboard: the dialog's field has the focus, Enter makes it
    page.click("#files-new-folder")
    expect(page.locator("#files-name-input")).to_be_focused()
    expect(page.locator("label[for=files-name-input]")).to_have_text("Name")
    page.keyboard.type("results")
    page.keyboard.press("Enter")
    expect(page.locator("#files-status")).to_have_text("Made the folder results")
    assert (ws["dir"] / "results").is_dir()
    expect(row(page, "results/").locator(".file-entry")).to_be_focused()
    page.click("#files-new-folder")
    page.fill("#files-name-input", "results")
    page.click("#files-name-submit")
    expect(page.locator("#files-name-error")).to_have_text("'results' already exists")
    page.click("#files-name-cancel")

    # rename: the name is selected, the folders before it are not
    row(page, "README.md").locator(".files-rename").click()
    expect(page.locator("#files-name-input")).to_have_value("README.md")
    page.fill("#files-name-input", "NOTES.md")
    page.click("#files-name-submit")
    expect(page.locator("#files-status")).to_have_text("Renamed README.md to NOTES.md")
    assert (ws["dir"] / "NOTES.md").read_text() == "# hello\n" and not (ws["dir"] / "README.md").exists()
    expect(row(page, "NOTES.md").locator(".file-entry")).to_be_focused()

    # move: a path in another folder
    row(page, "NOTES.md").locator(".files-rename").click()
    page.fill("#files-name-input", "results/NOTES.md")
    page.click("#files-name-submit")
    expect(page.locator("#files-status")).to_have_text("Moved NOTES.md to /results/NOTES.md")
    assert (ws["dir"] / "results" / "NOTES.md").exists()
    shows(page, ["data/", "results/"])

    # delete a file (asked first; "Cancel" keeps it), then a folder with everything in it
    page.click("#files tbody .file-entry:text-is('results/')")
    asked = answer_dialogs(page, [False, True])
    row(page, "NOTES.md").locator(".files-delete").click()
    expect(page.locator("#files tbody")).to_contain_text("NOTES.md")
    row(page, "NOTES.md").locator(".files-delete").click()
    expect(page.locator("#files-status")).to_have_text("Deleted NOTES.md")
    assert asked == ["Delete NOTES.md?", "Delete NOTES.md?"]
    assert not (ws["dir"] / "results" / "NOTES.md").exists()
    expect(page.locator("#files-empty")).to_have_text("This folder is empty.")
    page.click("#files-trail .files-crumb")
    asked = answer_dialogs(page, [True])
    row(page, "data/").locator(".files-delete").click()
    expect(page.locator("#files-status")).to_have_text("Deleted data")
    assert asked == ["Delete the folder data and everything in it?"]
    assert sorted(p.name for p in ws["dir"].iterdir()) == ["results"]


def downloaded_zip(page, control) -> tuple[str, dict[str, bytes]]:
    """Click ``control`` (a locator) and unzip what it downloads: its file name, and its
    members' names and contents."""
    with page.expect_download() as download:
        control.click()
    with zipfile.ZipFile(io.BytesIO(Path(download.value.path()).read_bytes())) as z:
        return download.value.suggested_filename, {name: z.read(name) for name in z.namelist()}


def test_a_folder_downloads_as_a_zip_file(fhub, alice_page, ws):
    page = alice_page
    visit(page, fhub, ws)
    name, members = downloaded_zip(page, row(page, "data/").locator(".files-zip-one"))
    assert (name, members) == ("data.zip", {"data/": b"", "data/a.csv": b"a,b\n1,2\n"})
    # the folder shown (here the whole workspace)
    name, members = downloaded_zip(page, page.locator("#files-zip"))
    top = ws["slug"]
    assert name == f"{top}.zip"
    assert sorted(members) == [f"{top}/", f"{top}/README.md", f"{top}/data/", f"{top}/data/a.csv"]


def test_a_text_file_is_edited_and_saved(fhub, alice_page, ws):
    page = alice_page
    visit(page, fhub, ws)
    page.click("#files tbody .file-entry:text-is('README.md')")
    expect(page.locator("#files-text-dialog")).to_be_visible()
    expect(page.locator("#files-text")).to_have_value("# hello\n")
    expect(page.locator("#files-text")).to_be_focused()
    expect(page.locator("#files-text-save")).to_be_disabled()
    page.fill("#files-text", "# hello\nedited in the page\n")
    expect(page.locator("#files-text-status")).to_have_text("Unsaved changes")
    page.click("#files-text-save")
    expect(page.locator("#files-text-status")).to_have_text("Saved")
    assert (ws["dir"] / "README.md").read_text() == "# hello\nedited in the page\n"

    # a job changes it meanwhile: the page's save does not overwrite that
    (ws["dir"] / "README.md").write_text("# written by a job\n")
    page.fill("#files-text", "# hello\nedited again\n")
    page.click("#files-text-save")
    expect(page.locator("#files-text-error")).to_contain_text("'README.md' changed since it was read")
    assert (ws["dir"] / "README.md").read_text() == "# written by a job\n"
    answer_dialogs(page, [True])  # close without saving
    page.keyboard.press("Escape")
    expect(page.locator("#files-text-dialog")).to_be_hidden()
    expect(row(page, "README.md").locator(".file-entry")).to_be_focused()

    # what is no text says so, and offers the download
    (ws["dir"] / "data" / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    page.click("#files tbody .file-entry:text-is('data/')")
    page.click("#files tbody .file-entry:text-is('image.png')")
    expect(page.locator("#files-text-error")).to_contain_text("'data/image.png' is not UTF-8 text")
    expect(page.locator("#files-text")).to_be_hidden()
    expect(page.locator("#files-text-download")).to_be_focused()
    page.click("#files-text-close")


def test_back_after_opening_a_folder(fhub, alice_page, ws):
    page = alice_page
    (ws["dir"] / "data" / "sub").mkdir()
    (ws["dir"] / "data" / "sub" / "deep.txt").write_text("deep\n")
    visit(page, fhub, ws)
    # by keyboard: the focus moves into the opened folder
    page.focus("#files tbody .file-entry:text-is('data/')")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"\?folder=data$"))
    expect(page.locator("#files tbody .file-entry").first).to_be_focused()
    shows(page, ["sub/", "a.csv"])
    page.click("#files tbody .file-entry:text-is('sub/')")
    expect(page).to_have_url(re.compile(r"\?folder=data%2Fsub$"))
    expect(page.locator("#files-trail")).to_have_text(re.compile(rf"{re.escape(ws['name'])}\s*data\s*sub"))
    shows(page, ["deep.txt"])

    page.go_back()
    expect(page).to_have_url(re.compile(r"\?folder=data$"))
    expect(page.locator("#files-here")).to_have_text("data")
    page.go_back()
    expect(page).to_have_url(re.compile(rf"/workspaces/{ws['id']}$"))
    expect(page.locator("#files tbody")).to_contain_text("README.md")
    page.go_forward()
    expect(page.locator("#files-here")).to_have_text("data")
    # the path trail leads back up; a reload (or a bookmark) opens the same folder
    page.goto(f"{fhub.url}/hub/workspaces/{ws['id']}?folder=data/sub")
    expect(page.locator("#files tbody")).to_contain_text("deep.txt")
    page.click(f"#files-trail .files-crumb:text-is('{ws['name']}')")
    expect(page.locator("#files tbody")).to_contain_text("README.md")
    expect(page).to_have_url(re.compile(rf"/workspaces/{ws['id']}$"))


def test_a_folder_of_more_entries_than_a_page_is_listed_whole(fhub, alice_page, ws):
    many = ws["dir"] / "many"
    many.mkdir()
    for i in range(450):  # the API's pages have at most 200 entries
        (many / f"f{i:03d}.txt").write_text("x")
    page = alice_page
    visit(page, fhub, ws, "?folder=many")
    expect(page.locator("#files tbody tr")).to_have_count(450)
    expect(page.locator("#files tbody tr").last).to_contain_text("f449.txt")
    expect(page.locator("#files-truncated")).to_be_hidden()


def test_hidden_files_are_shown_on_request(fhub, alice_page, ws):
    page = alice_page
    (ws["dir"] / ".config").mkdir()
    (ws["dir"] / ".secret-settings").write_text("x\n")
    visit(page, fhub, ws)
    shows(page, ["data/", "README.md"])
    expect(page.locator("label[for=files-hidden]")).to_have_text("Show hidden files (2 here)")
    page.check("#files-hidden")
    shows(page, [".config/", "data/", ".secret-settings", "README.md"])
    # remembered
    page.reload()
    expect(page.locator("#files tbody")).to_contain_text(".secret-settings")
    page.uncheck("#files-hidden")
    shows(page, ["data/", "README.md"])


def test_a_viewer_sees_no_write_controls(fhub, browser, ws):
    fhub.api(
        "POST",
        f"workspaces/{ws['id']}/shares",
        fhub.tokens["uwsalice"],
        json={"user": "uwscarol", "level": "viewer"},
        expect=201,
    )
    fhub.api(
        "POST",
        f"workspaces/{ws['id']}/shares",
        fhub.tokens["uwsalice"],
        json={"user": "uwsbob", "level": "editor"},
        expect=201,
    )
    for name, writes in (("uwscarol", False), ("uwsbob", True)):
        context, page = browserutil.login(fhub, browser, name, PASSWORD)
        try:
            visit(page, fhub, ws)
            for control in (
                "#upload-form",
                "#files-new-folder",
                ".files-rename",
                ".files-delete",
                "#files-name-dialog",
                "#files-text-save",
            ):
                assert (page.locator(control).count() > 0) == writes, (name, control)
            # reading stays: a zip, a download, the text (read-only)
            expect(page.locator("#files-zip")).to_be_visible()
            expect(row(page, "README.md").locator(".files-download")).to_be_visible()
            row(page, "README.md").locator(".files-view").click()
            expect(page.locator("#files-text")).to_have_value("# hello\n")
            if writes:
                expect(page.locator("#files-text")).to_be_editable()
            else:
                expect(page.locator("#files-text")).not_to_be_editable()
                expect(page.locator("#files-text-status")).to_have_text(
                    "Read-only: you may view this workspace, not change it."
                )
        finally:
            context.close()


def test_every_field_of_the_file_view_has_a_label(fhub, alice_page, ws):
    page = alice_page
    visit(page, fhub, ws)
    unlabelled = page.evaluate("""() => Array.from(document.querySelectorAll(
        '#files-section input, #files-section textarea, #files-section select'))
        .filter(el => !el.labels.length && !el.getAttribute('aria-label')).map(el => el.id)""")
    assert unlabelled == []


def test_a_file_named_in_bytes_no_utf8_is_shown_and_the_folder_with_it(fhub, alice_page, ws):
    """A job, or an editor's, names files as it likes, in bytes that are no UTF-8 too (the
    hub cannot open them: no URL names them). The files API listed such a name as it
    decoded it, with a lone surrogate that no URL can hold: the page's link to it
    failed, and the whole folder stayed unlisted. It is listed with U+FFFD in the name."""
    (ws["dir"] / "data" / "zz.txt").write_text("z")
    with open(bytes(ws["dir"] / "data") + b"/odd\xff.txt", "wb") as f:
        f.write(b"odd")
    listed = fhub.api("GET", f"workspaces/{ws['id']}/files?path=data", fhub.tokens["uwsalice"])["items"]
    assert sorted(e["name"] for e in listed) == ["a.csv", "odd\ufffd.txt", "zz.txt"]
    visit(alice_page, fhub, ws, "?folder=data")
    shows(alice_page, ["a.csv", "odd\ufffd.txt", "zz.txt"])
