"""A minimal single-user server for tests and benchmarks of many jobs at once.

It speaks only the part of JupyterHub's single-user protocol that the hub
needs to see it up (it listens where ``JUPYTERHUB_SERVICE_URL`` says and
answers every GET), so that 2 cores can run hundreds of them. It does no
authentication: use it only on test hubs. ``GET .../uws-test-alloc/<MB>`` makes
it allocate that much memory (and exit with status 1 if it cannot).
``UWS_TEST_STOP_SECONDS`` (benchmarks/slurm_poll.py's ``--server-stop-seconds``)
makes it take that long to exit after a SIGTERM, as a server that shuts down its
kernels does (without it, SIGTERM ends it at once). ``UWS_TEST_LISTEN_SECONDS``
makes it wait that long before it listens, and ``UWS_TEST_ANSWER_SECONDS`` makes
it listen at once but answer only that long after it started: a test can stop its
job at either point of the start (tests/integration/test_stop_during_start.py).
``UWS_TEST_HOLD_DIR`` makes it ignore SIGTERM till a file named by its job's id
(``UWS_JOB_ID``) exists in that folder: a test holds its job ``stopping`` while
another request waits for the stop (tests/integration/test_hubmap.py).
"""

import asyncio
import json
import os
import signal
import time
from datetime import datetime
from importlib.metadata import version
from urllib.parse import urlparse

from tornado import ioloop, web

# read from the installed metadata: importing jupyterhub would slow every start
JUPYTERHUB_VERSION = version("jupyterhub")
#: when it answers its first request
ANSWER_AT = time.monotonic() + float(os.environ.get("UWS_TEST_ANSWER_SECONDS") or 0)


class Answer(web.RequestHandler):
    def set_default_headers(self):
        # as jupyterhub-singleuser does, so the hub does not warn about an old server
        self.set_header("X-JupyterHub-Version", JUPYTERHUB_VERSION)

    async def get(self, path):
        if (wait := ANSWER_AT - time.monotonic()) > 0:
            await asyncio.sleep(wait)
        if "/uws-test-alloc/" in path:
            # the limits tests: allocate this many MB; a server over its memory ends, as a real one would
            try:
                data = bytearray(int(path.rsplit("/", 1)[1]) * 1024 * 1024)
            except MemoryError:
                print("MemoryError: the test server could not allocate", flush=True)
                os._exit(1)
            self.write(str(len(data)))
            return
        self.write(json.dumps({"path": self.request.path, "job": os.environ.get("UWS_JOB_ID")}))


def main():
    url = urlparse(os.environ["JUPYTERHUB_SERVICE_URL"])
    time.sleep(float(os.environ.get("UWS_TEST_LISTEN_SECONDS") or 0))
    if hold_dir := os.environ.get("UWS_TEST_HOLD_DIR"):
        release = os.path.join(hold_dir, os.environ["UWS_JOB_ID"])
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

        def leave_when_released():
            if os.path.exists(release):
                os._exit(0)

        # checks from the start (the file is made only once the job was asked to stop); before
        # it listens: the hub may take a server that listens for running, and stop it at once
        ioloop.PeriodicCallback(leave_when_released, 200).start()
    web.Application([(r"(.*)", Answer)]).listen(url.port, url.hostname)
    stop_seconds = float(os.environ.get("UWS_TEST_STOP_SECONDS") or 0)
    if stop_seconds > 0:
        loop = ioloop.IOLoop.current()

        # the handler only schedules: the exit comes from the loop, stop_seconds later
        def exit_later(*_):
            def leave():
                print(f"[minimal] exiting {stop_seconds:g} s after SIGTERM", flush=True)
                os._exit(0)

            loop.add_callback_from_signal(loop.call_later, stop_seconds, leave)

        signal.signal(signal.SIGTERM, exit_later)
    # the line Jupyter Server logs once it listens, in its format: benchmarks/launch.py times it
    now = datetime.now()
    print(f"[I {now:%Y-%m-%d %H:%M:%S}.{now.microsecond // 1000:03d} minimal] is running at {url.geturl()}", flush=True)
    try:
        ioloop.IOLoop.current().start()
    except KeyboardInterrupt:
        # SIGINT (JupyterHub's stop) ends it quietly, as jupyterhub-singleuser does
        pass


if __name__ == "__main__":
    main()
