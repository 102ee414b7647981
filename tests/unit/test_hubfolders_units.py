"""Opening the hub's folders by descriptor (:mod:`uws_hub.hubfolders`): which links are
an admin's, followed, and which are refused."""

from __future__ import annotations

import ctypes
import errno
import os

import pytest

from uws_hub import hubfolders
from uws_hub.hubfolders import open_folder

from ..helpers import folder_made_first_by_nobody

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="whose a link is matters to root")


def opened(path) -> str:
    fd = open_folder(str(path))
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def test_an_admins_links_are_followed_relative_ones_and_dot_dot_too(tmp_path):
    (tmp_path / "real" / "logs").mkdir(parents=True)
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "logs").symlink_to("../real/logs")
    (tmp_path / "top").symlink_to(tmp_path / "etc")
    assert opened(tmp_path / "top" / "logs") == str(tmp_path / "real" / "logs")
    assert opened(tmp_path / "top" / "logs" / ".." / "logs") == str(tmp_path / "real" / "logs")


@pytest.mark.parametrize("where", ["an account's folder", "a sticky folder all may write in"])
def test_a_link_of_roots_in_a_folder_others_may_write_in_is_refused(tmp_path, where):
    """Root's link in a folder an account may write in was not put there by an admin (the
    hub's, moved in by the account; a hard link to one)."""
    (tmp_path / "real").mkdir()
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "logs").symlink_to(tmp_path / "real")
    if where == "an account's folder":
        os.chown(folder, 65534, 65534)
    else:
        os.chmod(folder, 0o1777)
    with pytest.raises(OSError) as e:
        open_folder(str(folder / "logs"))
    assert e.value.errno == errno.ELOOP


def test_an_accounts_link_is_refused_and_links_in_a_loop_too(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "theirs").symlink_to(tmp_path / "real")
    os.lchown(tmp_path / "theirs", 65534, 65534)
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    for path in (tmp_path / "theirs", tmp_path / "a"):
        with pytest.raises(OSError) as e:
            open_folder(str(path))
        assert e.value.errno == errno.ELOOP


def test_missing_folders_are_made_when_asked(tmp_path):
    with pytest.raises(FileNotFoundError):
        open_folder(str(tmp_path / "x" / "y"))
    os.close(open_folder(str(tmp_path / "x" / "y"), make=0o711))
    assert (tmp_path / "x" / "y").is_dir() and os.stat(tmp_path / "x").st_mode & 0o777 == 0o711


@pytest.mark.parametrize("refusal", [errno.EPERM, errno.ENOSYS, errno.EINVAL])
def test_without_renameat2_a_rename_still_never_replaces(tmp_path, monkeypatch, refusal):
    """Where ``renameat2`` is refused (an older Docker seccomp profile says EPERM; an old
    kernel ENOSYS; NFS EINVAL) the rename is still made, and still never replaces a name
    that is there."""

    class NoRenameat2:
        @staticmethod
        def renameat2(*args):
            ctypes.set_errno(refusal)
            return -1

    monkeypatch.setattr(hubfolders, "_libc", NoRenameat2())
    (tmp_path / "a").write_text("a")
    (tmp_path / "taken").write_text("kept")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(FileExistsError):
            hubfolders.rename_noreplace(fd, "a", fd, "taken")
        assert (tmp_path / "taken").read_text() == "kept" and (tmp_path / "a").exists()
        hubfolders.rename_noreplace(fd, "a", fd, "b")
    finally:
        os.close(fd)
    assert (tmp_path / "b").read_text() == "a" and not (tmp_path / "a").exists()


def test_renameat2_refusing_otherwise_is_said(tmp_path, monkeypatch):
    class Refusing:
        @staticmethod
        def renameat2(*args):
            ctypes.set_errno(errno.EACCES)
            return -1

    monkeypatch.setattr(hubfolders, "_libc", Refusing())
    (tmp_path / "a").write_text("a")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(PermissionError):
            hubfolders.rename_noreplace(fd, "a", fd, "b")
    finally:
        os.close(fd)
    assert (tmp_path / "a").exists() and not (tmp_path / "b").exists()


NOBODY = 65534


def test_a_log_folder_another_account_made_first_is_refused_naming_it_and_its_owner(tmp_path):
    """``/tmp/uws-job-logs`` made first by a local account (in a sticky folder every
    account may write in) was the hub's job log folder, that account its owner."""
    logs = folder_made_first_by_nobody(tmp_path, "uws-job-logs")
    with pytest.raises(ValueError) as refused:
        hubfolders.prepare_own_folder(str(logs), "The job log folder", "UWSHub.job_log_dir")
    said = str(refused.value)
    assert str(logs) in said and f"uid {NOBODY}" in said and "UWSHub.job_log_dir" in said and "chown" in said


@pytest.mark.parametrize("mode", [0o770, 0o733, 0o1777])
def test_a_log_folder_of_the_hubs_that_others_may_write_in_is_refused(tmp_path, mode):
    logs = tmp_path / "logs"
    logs.mkdir()
    logs.chmod(mode)
    with pytest.raises(ValueError, match="chmod go-w"):
        hubfolders.prepare_own_folder(str(logs), "The job log folder", "UWSHub.job_log_dir")


def test_a_link_of_anothers_to_the_log_folder_is_refused(tmp_path):
    (tmp_path / "real").mkdir(mode=0o700)
    (tmp_path / "logs").symlink_to(tmp_path / "real")
    os.chown(tmp_path / "logs", NOBODY, NOBODY, follow_symlinks=False)
    with pytest.raises(ValueError, match="link"):
        hubfolders.prepare_own_folder(str(tmp_path / "logs"), "The job log folder", "UWSHub.job_log_dir")


def test_the_hubs_own_log_folder_is_made_0700_or_kept_as_it_is(tmp_path):
    hubfolders.prepare_own_folder(str(tmp_path / "made" / "logs"), "The job log folder", "UWSHub.job_log_dir")
    assert os.stat(tmp_path / "made" / "logs").st_mode & 0o7777 == 0o700
    (tmp_path / "earlier").mkdir()
    (tmp_path / "earlier").chmod(0o711)  # (an earlier hub's, passable for SLURM jobs' output)
    hubfolders.prepare_own_folder(str(tmp_path / "earlier"), "The job log folder", "UWSHub.job_log_dir")
    assert os.stat(tmp_path / "earlier").st_mode & 0o7777 == 0o711
