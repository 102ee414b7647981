"""A batch job's log read and measured by the hub (:mod:`uws_hub.jobs.logs`) through no
link an account put on its way: its folder is the account's (``batch_output_dir``),
and so may be a folder above it (``/scratch/{username}/uws``). The account is
``nobody`` (its folders and links chowned to it), the hub root."""

from __future__ import annotations

import os
import pwd

import pytest

from uws_hub.jobs.logs import logs_taking_more, open_log, read_log

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="whose a link is matters to root")


@pytest.fixture
def nobody() -> pwd.struct_passwd:
    return pwd.getpwnam("nobody")


@pytest.fixture
def swapped(tmp_path, nobody):
    """A log path through the account's folder (``scratch/nobody/out/uws/job-1.log``) where
    ``out`` is a link of the account's to a folder it cannot reach, holding a
    ``uws/job-1.log`` of its uid (a former account's of that uid, set aside)."""
    hidden = tmp_path / "root-only"
    (hidden / "uws").mkdir(parents=True)
    os.chmod(hidden, 0o700)
    (hidden / "uws" / "job-1.log").write_bytes(b"the former account's server token\n" + b"x" * (2 << 20))
    os.chown(hidden / "uws" / "job-1.log", nobody.pw_uid, nobody.pw_gid)
    account = tmp_path / "scratch" / "nobody"
    account.mkdir(parents=True)
    os.chown(account, nobody.pw_uid, nobody.pw_gid)
    (account / "out").symlink_to(hidden)
    os.lchown(account / "out", nobody.pw_uid, nobody.pw_gid)
    return account / "out" / "uws" / "job-1.log"


def test_a_log_behind_a_link_of_the_accounts_is_not_read(swapped, nobody):
    """The log was opened in its folder opened by its path: only the folder itself was not
    followed if a link, and a link above it (the account's) led the hub (root) to read
    for the job's owner a file of the account's uid it cannot reach."""
    assert open_log(str(swapped), nobody.pw_uid) is None
    assert read_log(str(swapped), nobody.pw_uid) == (b"", 0)


def test_a_log_behind_a_link_of_the_accounts_is_not_measured(swapped):
    """``lstat`` of the log's path followed the links above it: the job was failed or not
    by the size of a file it named and cannot reach (and a link into a hung file system
    held the scan of every running job)."""
    assert logs_taking_more({1: str(swapped)}, 1 << 20) == []


def test_a_log_behind_an_admins_link_is_read_and_measured(tmp_path, nobody):
    """A ``job_log_dir`` that is a link of root's, in a folder of root's: followed as before."""
    real = tmp_path / "real-logs" / "slurm" / "nobody"
    real.mkdir(parents=True)
    os.chown(real, nobody.pw_uid, nobody.pw_gid)
    (real / "job-1.log").write_bytes(b"y" * (2 << 20))
    os.chown(real / "job-1.log", nobody.pw_uid, nobody.pw_gid)
    (tmp_path / "logs").symlink_to(tmp_path / "real-logs")
    path = str(tmp_path / "logs" / "slurm" / "nobody" / "job-1.log")
    assert read_log(path, nobody.pw_uid, 0, 1) == (b"y", 2 << 20)
    assert logs_taking_more({1: path, 2: str(tmp_path / "logs" / "missing.log")}, 1 << 20) == [1]


@pytest.mark.parametrize("planted", ["link", "hard link"])
def test_a_local_jobs_log_is_opened_through_no_link_of_the_accounts_nor_into_a_file_of_roots(tmp_path, nobody, planted):
    """A local job's log, in ``job_log_dir``, was opened by its path to append the job's
    output: a ``job_log_dir`` that is an admin's link into an account's folder
    (``/var/lib/x -> /home/alice/dir``) let the account, with a link of its own for
    ``dir``, have root make the file of that name wherever it pointed (a folder whose
    files root reads as its configuration), 0600, and write its job's output in it; a
    hard link at the log's name (``fs.protected_hardlinks`` off) had the output appended
    to a file of root's. Neither is opened now; the hub's own log is, as before."""
    from uws_hub.spawners.localjob import open_log as open_local_log

    alice = tmp_path / "alice"
    (alice / "dir").mkdir(parents=True)
    os.chown(alice, nobody.pw_uid, nobody.pw_gid)
    os.chown(alice / "dir", nobody.pw_uid, nobody.pw_gid)
    (tmp_path / "logs").symlink_to(alice / "dir")  # (the admin's: root's, in a folder of root's)
    config = tmp_path / "etc"
    config.mkdir()
    (config / "passwd").write_text("root:x:0:0\n")
    if planted == "link":
        (alice / "dir").rename(alice / "was-dir")
        (alice / "dir").symlink_to(config)
        os.lchown(alice / "dir", nobody.pw_uid, nobody.pw_gid)
    else:
        os.link(config / "passwd", alice / "dir" / "job-1.log")
    with pytest.raises(OSError):
        os.close(open_local_log(str(tmp_path / "logs" / "job-1.log")))
    assert sorted(os.listdir(config)) == ["passwd"]
    assert (config / "passwd").read_text() == "root:x:0:0\n"
    assert os.stat(config / "passwd").st_mode & 0o777 == 0o644


def test_a_local_jobs_own_log_is_opened_to_append(tmp_path):
    from uws_hub.spawners.localjob import open_log as open_local_log

    (tmp_path / "job-1.log").write_text("before\n")
    fd = open_local_log(str(tmp_path / "job-1.log"))
    os.write(fd, b"after\n")
    os.close(fd)
    assert (tmp_path / "job-1.log").read_text() == "before\nafter\n"
    assert os.stat(tmp_path / "job-1.log").st_mode & 0o777 == 0o600
