"""The hub's job log folder is the hub's alone, or the hub does not start."""

from __future__ import annotations

import os

import pytest

from ..helpers import folder_made_first_by_nobody

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a folder of another account's needs root to make")

NOBODY = 65534


@pytest.mark.expect_log_errors("job log folder")
def test_a_job_log_folder_another_account_made_first_stops_the_start(make_hub, tmp_path):
    """``/tmp/uws-job-logs`` made by a local account before the hub (sticky ``/tmp``)
    was used as it was: its owner read every job's log, tokens and all, and swapped its
    files. The hub refuses to start, saying which folder, whose it is and what to do."""
    logs = folder_made_first_by_nobody(tmp_path, "uws-job-logs")
    hub = make_hub(f"c.UWSHub.job_log_dir = {str(logs)!r}\n", start=False)
    with pytest.raises(AssertionError, match="uws-hub exited"):
        hub.start()
    said = hub.log_text()
    assert f"The job log folder {logs} (UWSHub.job_log_dir) is owned by" in said and f"(uid {NOBODY})" in said
    assert "chown" in said
    assert os.listdir(logs) == [] and os.stat(logs).st_uid == NOBODY

    # once it is the hub's account's and no one else may write in it, the hub starts
    os.chown(logs, 0, 0)
    hub.start()
    assert os.stat(logs).st_mode & 0o777 == 0o755  # (an admin's folder: left as it was)


def test_the_default_job_log_folder_is_made_by_the_hub_its_own_alone(make_hub):
    """The default ``job_log_dir`` (``uws-job-logs`` in the folder the hub starts in, as
    ``make run`` has it) is made by the hub at its start, 0700, and the hub starts."""
    hub = make_hub("")
    logs = hub.workdir / "uws-job-logs"
    st = os.stat(logs)
    assert st.st_uid == os.geteuid() and st.st_mode & 0o7777 == 0o700
