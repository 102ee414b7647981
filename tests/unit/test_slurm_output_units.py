"""The SLURM output folders the hub makes as root (:mod:`uws_hub.spawners.slurm.output`):
links and names an account puts in the folders it may write in. The account is
``nobody`` (its folders chowned to it), the hub root, as it is where jobs run as the
users' accounts."""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import threading

import pytest

from uws_hub.spawners.slurm.output import keep_tail, make_account_folder, read_tail, remove_output

from ..helpers import folder_made_first_by_nobody

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the hub makes these folders as root")
LOG = logging.getLogger("test")


@pytest.fixture
def nobody() -> pwd.struct_passwd:
    return pwd.getpwnam("nobody")


@pytest.fixture
def log_dir(tmp_path, nobody):
    """``job_log_dir`` with nobody's folder in it (``slurm/nobody``), and a folder of root's
    only, elsewhere, with a secret in it."""
    logs = tmp_path / "logs"
    (logs / "slurm" / "nobody").mkdir(parents=True)
    os.chown(logs / "slurm" / "nobody", nobody.pw_uid, nobody.pw_gid)
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "secret").write_text("root's secret\n")
    os.chmod(private / "secret", 0o600)
    return logs


def test_a_folder_the_account_swaps_for_a_link_has_nothing_made_or_chmodded_where_it_points(tmp_path, log_dir, nobody):
    """A server's output folder configured in the account's (``output_dir =
    "{job_log_dir}/slurm/{username}/servers/{job_id}"``): the hub made and chmodded the
    folders on the way by their paths, so the account, swapping ``servers`` for a link to
    a folder of root's only, had it made 0711 (passable: its files readable by their
    modes) and a folder of the account's made in it. Walked by descriptor, the link is
    refused; where it points stays as it was."""
    private = tmp_path / "private"
    (log_dir / "slurm" / "nobody" / "servers").symlink_to(private)
    os.lchown(log_dir / "slurm" / "nobody" / "servers", nobody.pw_uid, nobody.pw_gid)
    directory = log_dir / "slurm" / "nobody" / "servers" / "7"
    with pytest.raises(OSError):
        make_account_folder(str(directory), str(log_dir), nobody, LOG)
    assert os.stat(private).st_mode & 0o777 == 0o700
    assert os.listdir(private) == ["secret"]


def test_a_holder_record_the_account_links_to_a_file_of_roots_reads_nothing_of_it(tmp_path, log_dir, nobody, caplog):
    """In a folder of the account's (``{job_log_dir}/slurm/{username}/{job_id}``), the
    record of the hub user beside the output folder (``.<name>.holder``) is where the
    account can put a link: the hub read the file it pointed at (a secret of root's) as
    the hub user the folder was for, and logged its first line. Opened without following
    a link, it is no record; the hub writes its own in its place."""
    account_folder = log_dir / "slurm" / "nobody"
    (account_folder / "7").mkdir()
    os.chown(account_folder / "7", nobody.pw_uid, nobody.pw_gid)
    (account_folder / ".7.holder").symlink_to(tmp_path / "private" / "secret")
    os.lchown(account_folder / ".7.holder", nobody.pw_uid, nobody.pw_gid)
    with caplog.at_level(logging.INFO):
        make_account_folder(str(account_folder / "7"), str(log_dir), nobody, LOG, holder="42:ann")
    assert "secret" not in caplog.text
    assert (tmp_path / "private" / "secret").read_text() == "root's secret\n"
    assert (account_folder / ".7.holder").read_text() == "42:ann\n"
    assert not (account_folder / ".7.holder").is_symlink()
    assert os.listdir(account_folder / "7") == []  # (not set aside: still the account's)


def test_a_holder_records_temporary_name_taken_by_a_link_to_a_file_of_roots_writes_nothing_there(
    tmp_path, log_dir, nobody
):
    """The record was written to ``.<name>.holder.tmp``, opened with ``O_TRUNC`` at a name
    the account could take first in its folder: a hard link to a file of root's (where
    ``fs.protected_hardlinks`` is off) had root empty that file and write the record in
    it. Written to a new file of a name of its own, the record touches nothing found there."""
    account_folder = log_dir / "slurm" / "nobody"
    secret = tmp_path / "private" / "secret"
    os.link(secret, account_folder / ".7.holder.tmp")
    make_account_folder(str(account_folder / "7"), str(log_dir), nobody, LOG, holder="42:ann")
    assert secret.read_text() == "root's secret\n"
    assert (account_folder / ".7.holder").read_text() == "42:ann\n"


def test_a_job_log_dir_that_is_an_admins_link_is_followed(tmp_path, nobody):
    """``job_log_dir`` a link of root's in a folder of root's (an admin's): followed, as
    before; the folders below it are made and the account's handed over."""
    real = tmp_path / "real-logs"
    real.mkdir()
    (tmp_path / "logs").symlink_to(real)
    make_account_folder(str(tmp_path / "logs" / "slurm" / "nobody"), str(tmp_path / "logs"), nobody, LOG)
    assert os.stat(real / "slurm").st_mode & 0o777 == 0o711
    assert os.stat(real / "slurm" / "nobody").st_uid == nobody.pw_uid


def test_a_former_accounts_folder_is_set_aside_without_replacing_an_earlier_one(log_dir, nobody, caplog):
    """A folder of another uid (a former account of the name) is renamed aside to a name
    that is free (renamed without replacing what has the name: an earlier set-aside
    stays), and the account gets a new folder of its own."""
    account_folder = log_dir / "slurm" / "nobody"
    os.chown(account_folder, 4321, 4321)
    (account_folder / "job-1.log").write_text("the former account's output")
    (log_dir / "slurm" / ".former-uid4321-nobody").mkdir()
    (log_dir / "slurm" / ".former-uid4321-nobody" / "job-0.log").write_text("an earlier one's")
    make_account_folder(str(account_folder), str(log_dir), nobody, LOG)
    assert (log_dir / "slurm" / ".former-uid4321-nobody" / "job-0.log").read_text() == "an earlier one's"
    assert (log_dir / "slurm" / ".former-uid4321-nobody-2" / "job-1.log").read_text() == ("the former account's output")
    assert os.stat(account_folder).st_uid == nobody.pw_uid and os.listdir(account_folder) == []
    assert "moved it to " + str(log_dir / "slurm" / ".former-uid4321-nobody-2") in caplog.text


def test_the_tail_of_an_output_the_job_made_a_fifo_is_nothing_and_the_hub_goes_on(tmp_path):
    """Read by the hub itself (a hub not root: its jobs run as its account), a job's
    output file the job replaced with a FIFO was opened on the hub's event loop, which
    waited for a writer that never came: the whole hub hung at the job's end. Opened
    without waiting, what is no regular file has no tail."""
    fifo = tmp_path / "job-1.log"
    os.mkfifo(fifo)
    result: list[str] = []
    reader = threading.Thread(
        target=lambda: result.append(asyncio.run(read_tail(None, str(fifo), as_user={}, prefix=[]))),  # type: ignore[arg-type]
        daemon=True,
    )
    reader.start()
    reader.join(60)
    if reader.is_alive():  # (the hub's loop hangs: let the thread go)
        with open(fifo, "w"):
            pass
    assert result == [""]


def test_the_tail_of_an_output_the_job_made_a_link_is_nothing(tmp_path):
    """Nor is a link (to a file of the hub's) followed: no output of SLURM's is one."""
    (tmp_path / "hubs").write_text("the hub's own file\n")
    (tmp_path / "job-1.log").symlink_to(tmp_path / "hubs")
    assert asyncio.run(read_tail(None, str(tmp_path / "job-1.log"), as_user={}, prefix=[])) == ""  # type: ignore[arg-type]


def test_the_tail_of_an_output_is_read(tmp_path):
    (tmp_path / "job-1.log").write_text("".join(f"line {i}\n" for i in range(5000)))
    text = asyncio.run(read_tail(None, str(tmp_path / "job-1.log"), as_user={}, prefix=[], max_bytes=100))  # type: ignore[arg-type]
    assert text.endswith("line 4999") and "line 4000" not in text


@pytest.mark.parametrize("same_uid", [False, True], ids=["another uid", "the same uid"])
def test_a_former_accounts_folder_set_aside_is_closed_to_a_new_account_of_its_uid(log_dir, nobody, same_uid):
    """A folder set aside stayed its former account's uid: a new account of that uid (the
    same account made again for another hub user; ``useradd`` giving the freed uid to the
    next account) entered it by its name and read the former one's output. Set aside, it
    is root's, 0700; what is in it stays as it was."""
    account_folder = log_dir / "slurm" / "nobody"
    former_uid = nobody.pw_uid if same_uid else 4321
    os.chown(account_folder, former_uid, former_uid)
    (account_folder / "job-3-17.log").write_text("the former's server's token")
    (log_dir / "slurm" / ".nobody.holder").write_text("1@former\n")
    make_account_folder(str(account_folder), str(log_dir), nobody, LOG, holder="2@new")
    aside = log_dir / "slurm" / f".former-uid{former_uid}-nobody"
    assert (os.stat(aside).st_uid, os.stat(aside).st_mode & 0o777) == (0, 0o700)
    assert (aside / "job-3-17.log").read_text() == "the former's server's token"
    assert os.stat(account_folder).st_uid == nobody.pw_uid and os.listdir(account_folder) == []
    assert (log_dir / "slurm" / ".nobody.holder").read_text() == "2@new\n"


def test_a_deleted_jobs_output_is_not_removed_through_a_link_of_the_account(tmp_path, nobody, caplog):
    """A ``batch_output_dir`` in a folder the account writes in (``/scratch/{username}/uws``):
    the output of a deleted job was removed by its path, so the account, with a link in
    place of ``uws``, had root remove the file of that name wherever it pointed (another
    account's output, another hub's of the same job id). Nothing is removed through it."""
    scratch = tmp_path / "scratch" / "nobody"
    scratch.mkdir(parents=True)
    os.chown(scratch, nobody.pw_uid, nobody.pw_gid)
    others = tmp_path / "others"
    others.mkdir()
    (others / "job-7.log").write_text("another account's output")
    (scratch / "uws").symlink_to(others)
    os.lchown(scratch / "uws", nobody.pw_uid, nobody.pw_gid)
    remove_output(str(scratch / "uws" / "job-7.log"), LOG)
    assert (others / "job-7.log").read_text() == "another account's output"
    assert "is a link, no folder or gone" in caplog.text
    (scratch / "uws").unlink()
    (scratch / "uws").mkdir()
    (scratch / "uws" / "job-7.log").write_text("the job's output")
    remove_output(str(scratch / "uws" / "job-7.log"), LOG)
    assert os.listdir(scratch / "uws") == []


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_holder_record_the_account_made_a_folder_leaves_no_descriptor_open(tmp_path, log_dir, nobody):
    """A ``batch_output_dir`` in a folder of the account's (``/scratch/{username}/uws``):
    the record ``.uws.holder`` beside it is where the account makes what it likes. A
    folder there was opened, and its opening as a text file failed (``IsADirectoryError``)
    with its descriptor left open in the hub: one more at each of the account's launches,
    till the hub (root) could open nothing. No record is read from it, and none is left open."""
    scratch = tmp_path / "scratch" / "nobody"
    (scratch / "uws").mkdir(parents=True)
    (scratch / ".uws.holder").mkdir()
    for folder in (scratch, scratch / "uws", scratch / ".uws.holder"):
        os.chown(folder, nobody.pw_uid, nobody.pw_gid)
    before = open_fds()
    for _ in range(3):
        try:
            make_account_folder(str(scratch / "uws"), str(log_dir), nobody, LOG, holder="42:ann")
        except IsADirectoryError:
            pass  # (the record cannot be written in its place: the account's own launch fails)
    assert open_fds() == before
    assert os.stat(scratch / "uws").st_uid == nobody.pw_uid


def test_the_tail_of_an_output_the_job_made_a_folder_is_nothing_and_leaves_no_descriptor_open(tmp_path):
    """Read by the hub itself, an output the job made a folder was opened, and its opening
    as a file failed with its descriptor left open: one more at each read."""
    (tmp_path / "job-1.log").mkdir()
    before = open_fds()
    for _ in range(3):
        assert asyncio.run(read_tail(None, str(tmp_path / "job-1.log"), as_user={}, prefix=[])) == ""  # type: ignore[arg-type]
    assert open_fds() == before


@pytest.mark.parametrize("planted", ["link", "hard link"])
def test_a_servers_kept_tail_is_written_through_no_link_of_the_accounts_nor_into_a_file_of_roots(
    tmp_path, nobody, planted, caplog
):
    """The hub keeps the end of a server's output in its own log file of the job, in
    ``job_log_dir``: opened by its path (``O_TRUNC``), a ``job_log_dir`` that is an
    admin's link into a folder of an account's (``/var/lib/x -> /home/alice/dir``) let
    the account, with a link of its own for ``dir``, have root empty and write (with the
    output the job printed) the file of that name wherever it pointed; or, with a hard
    link to a file of root's at the log's name (``fs.protected_hardlinks`` off), that
    file. Its folder is walked by descriptor, and a file found there that is not the
    hub's alone is left as it is."""
    alice = tmp_path / "alice"
    (alice / "dir").mkdir(parents=True)
    os.chown(alice, nobody.pw_uid, nobody.pw_gid)
    os.chown(alice / "dir", nobody.pw_uid, nobody.pw_gid)
    (tmp_path / "logs").symlink_to(alice / "dir")  # (the admin's: root's, in a folder of root's)
    secret = tmp_path / "private" / "secret"
    secret.parent.mkdir()
    secret.write_text("root's secret\n")
    if planted == "link":
        (alice / "dir").rename(alice / "was-dir")
        (alice / "dir").symlink_to(secret.parent)
        os.lchown(alice / "dir", nobody.pw_uid, nobody.pw_gid)
        target = secret.parent / "job-1.log"
        target.write_text("another hub's log\n")
    else:
        target = secret
        os.link(secret, alice / "dir" / "job-1.log")
    before = target.read_text()
    keep_tail(str(tmp_path / "logs" / "job-1.log"), "* * * * * root the job's own line", LOG)
    assert target.read_text() == before
    assert "Cannot write" in caplog.text


def test_a_servers_kept_tail_replaces_the_hubs_own_earlier_one(tmp_path):
    (tmp_path / "job-1.log").write_text("an earlier, longer tail\n")
    keep_tail(str(tmp_path / "job-1.log"), "the tail", LOG)
    keep_tail(str(tmp_path / "job-2.log"), "another", LOG)
    assert (tmp_path / "job-1.log").read_text() == "the tail\n"
    assert (tmp_path / "job-2.log").read_text() == "another\n"
    assert os.stat(tmp_path / "job-2.log").st_mode & 0o777 == 0o600


def test_an_admins_job_log_dir_keeps_its_mode_and_the_hubs_own_is_made_passable(tmp_path, nobody):
    """An admin's ``job_log_dir`` such as ``/var/log`` (root's, 0755) was made 0711, its
    readers shut out; the hub's own (made 0700 at its start) is made passable (0711)."""
    admins = tmp_path / "var-log"
    admins.mkdir()
    admins.chmod(0o755)
    make_account_folder(str(admins / "slurm" / "nobody"), str(admins), nobody, LOG)
    assert os.stat(admins).st_mode & 0o7777 == 0o755
    assert os.stat(admins / "slurm").st_mode & 0o777 == 0o711
    own = tmp_path / "uws-job-logs"
    own.mkdir(mode=0o700)
    make_account_folder(str(own / "slurm" / "nobody"), str(own), nobody, LOG)
    assert os.stat(own).st_mode & 0o7777 == 0o711


def test_a_batch_output_root_another_account_made_first_is_refused(tmp_path, nobody):
    """A ``batch_output_dir`` outside ``job_log_dir`` (``/tmp/uws-out/{username}``) whose
    folder an account made first: it could rename every account's output folder in it.
    The account's own jobs may still use it (as ``/scratch/{username}/uws``)."""
    root = folder_made_first_by_nobody(tmp_path, "uws-out")
    daemon = pwd.getpwnam("daemon")  # (the job's: another account's than the folder's)
    with pytest.raises(PermissionError):
        make_account_folder(str(root / "daemon"), str(tmp_path / "logs"), daemon, LOG)
    assert os.listdir(root) == []
    make_account_folder(str(root / "nobody"), str(tmp_path / "logs"), nobody, LOG)  # (its own)
    assert os.stat(root / "nobody").st_uid == nobody.pw_uid
