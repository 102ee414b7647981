"""``uws-singleuser``, the default job types' server: jupyterhub-singleuser without
the IRI grammar jsonschema would compile at import (a second of every launch), that
exits once its server stopped."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from uws_hub.jobs.types import DEFAULT_JOB_TYPES, JobType


def test_the_jobs_server_starts_without_the_iri_grammar():
    code = "import sys, uws_hub.singleuser, jupyter_server.serverapp\nprint(sys.modules.get('rfc3987_syntax'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "None"


def test_it_runs_jupyterhub_singleuser_with_its_arguments():
    code = textwrap.dedent(
        """
        import uws_hub.singleuser as entry
        entry.jupyterhub_singleuser = lambda argv=None, **kwargs: print("ran", argv, kwargs)
        entry.main(["--debug"], extra=1)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "ran ['--debug'] {'extra': 1}"


def test_a_file_request_cut_by_the_stop_does_not_keep_the_process_alive(tmp_path):
    # as Jupyter Server at a SIGTERM: its loop stops while a request that used an AnyIO
    # worker thread (the contents API) is under way; the worker, not a daemon, was left
    # waiting for work forever and Python waited for it at exit (until the hub's SIGKILL)
    code = textwrap.dedent(
        """
        import asyncio, pathlib, sys
        import anyio.to_thread
        import uws_hub.singleuser as entry

        def server(argv=None, **kwargs):
            loop = asyncio.new_event_loop()
            written = pathlib.Path(sys.argv[1])

            async def request():
                await anyio.to_thread.run_sync(written.write_text, "saved")
                await asyncio.Event().wait()  # still under way when the loop stops

            loop.call_soon(loop.create_task, request())
            loop.call_later(0.5, loop.stop)
            loop.run_forever()

        entry.jupyterhub_singleuser = server
        entry.main()
        print("stopped")
        """
    )
    written = tmp_path / "file.txt"
    done = subprocess.run([sys.executable, "-c", code, str(written)], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, "stopped"), done.stderr
    assert written.read_text() == "saved"


def test_job_types_run_it_unless_they_say_otherwise():
    assert DEFAULT_JOB_TYPES["jupyterlab"]["cmd"] == ["uws-singleuser"]
    assert JobType.model_validate({"name": "app", "display_name": "An app"}).cmd == ["uws-singleuser"]
