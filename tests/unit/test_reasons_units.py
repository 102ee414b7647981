"""A job's reason in plain words (uws_hub.reasons): how a process ended, time-outs,
one line, no credentials."""

from __future__ import annotations

from tornado import web

from uws_hub.reasons import MAX_REASON_CHARS, exit_reason, from_exception, no_answer, one_line


def test_exit_reasons():
    assert exit_reason("The server", 1) == "The server exited with status 1"
    # Popen's way of saying a signal ended it
    assert exit_reason("The server", -9) == "The server was killed by signal 9 (SIGKILL) — out of memory?"
    assert exit_reason("The server", -15) == "The server was killed by signal 15 (SIGTERM)"
    # a shell's way (128 + the signal)
    assert exit_reason("The command", 137) == "The command exited with status 137 (signal 9, SIGKILL) — out of memory?"
    assert exit_reason("The command", signal=11) == "The command was killed by signal 11 (SIGSEGV)"
    assert exit_reason("it", -9, when=" before it answered") == (
        "it was killed by signal 9 (SIGKILL) before it answered — out of memory?"
    )
    assert exit_reason("it", 3, when=" before it answered") == "it exited with status 3 before it answered"
    assert exit_reason("The command", signal=99) == "The command was killed by signal 99 (signal 99)"


def test_reasons_from_exceptions():
    # JupyterHub's own time-outs, in plain words
    assert from_exception(
        TimeoutError("Server at http://127.0.0.1:1234/user/a/b/api didn't respond in 30 seconds")
    ) == ("it did not answer within 30 s")
    # a local server that never listens on its port (uws_hub.spawners.listening)
    assert from_exception(TimeoutError("The server did not listen on 127.0.0.1:4242 within 5 s")) == (
        "it did not answer within 5 s"
    )
    assert from_exception(TimeoutError(), start_timeout=60) == "it did not start within 60 s"
    assert from_exception(web.HTTPError(400, "Bad %s", "thing")) == "Bad thing"
    assert from_exception(RuntimeError()) == "RuntimeError"
    assert no_answer("The server", 2.5) == "The server did not answer within 2.5 s"


def test_one_line_without_credentials():
    token = "0123456789abcdef0123456789abcdef"
    assert one_line(f"sbatch failed: token={token}\nmore output\n") == "sbatch failed: token=[redacted]"
    assert len(one_line("x" * 10_000)) == MAX_REASON_CHARS
    assert one_line("") == ""
