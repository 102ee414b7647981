"""``uws-singleuser``: the jobs' Jupyter server — JupyterHub's ``jupyterhub-singleuser``,
started without the grammar that jsonschema would compile as it is imported, and
exiting once its server has stopped.

Jupyter Server imports jsonschema (through jupyter_events), which imports
``rfc3987_syntax`` when it is installed, and that module builds a parser of RFC
3987 at import: over half of the server's start (2.5 s of CPU → 1.1 s without it
on the test machine), time every launch of JupyterLab or of a web app waits.
Importing :mod:`uws_hub` leaves that module out (see ``uws_hub/__init__.py``);
everything else — arguments, environment, the ``jupyterhub.singleuser``
extension — is ``jupyterhub-singleuser``'s.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

from jupyterhub.singleuser import main as jupyterhub_singleuser


def main(argv: list[str] | None = None, **kwargs: Any) -> None:
    """Run the server until it stops; then end the file workers it left waiting.

    Jupyter Server runs file operations (the contents API) in AnyIO's worker threads,
    which are not daemon threads: AnyIO ends each when the task that first used it
    ends. A stop (SIGTERM) ends the event loop with the requests under way left
    unfinished, so a request the loop was serving then never ends, nor its worker,
    and Python waits for that thread at exit: the server's process lived on until the
    hub's SIGKILL, ``term_timeout`` (30 s) later — a stopped JupyterLab job stayed
    ``stopping`` that long (under load, often: JupyterLab reads files as it closes).
    Each worker is told to end once its current call is done (a file being written
    is written whole), as AnyIO does at its task's end.
    """
    try:
        jupyterhub_singleuser(argv, **kwargs)
    finally:
        _end_file_workers()


def _end_file_workers() -> None:
    """Tell every AnyIO worker thread of this process to end after its current call."""
    try:
        from anyio._backends._asyncio import WorkerThread
    except ImportError:  # another AnyIO: nothing of ours to end
        return
    for thread in threading.enumerate():
        if isinstance(thread, WorkerThread):
            try:
                thread.stop()
            except queue.Full:  # told already, and busy: it ends after its call
                pass


if __name__ == "__main__":
    main()
