"""Unit tests of credential redaction (uws_hub.redaction), with no hub: the forms
a token takes in job output and log lines, and readable text that stays."""

from __future__ import annotations

import logging
import random
import sys
import uuid

import pytest

from uws_hub import redaction
from uws_hub.redaction import RedactedLogRecord, install_log_redaction, redact

TOKEN = uuid.uuid4().hex  # what JupyterHub's API and OAuth tokens look like
URLSAFE = "Xq3vN0bR7tK2pL9sW4yZ8mC1dF6gH5jA0eU3iO2rT7k"  # secrets.token_urlsafe(32)


@pytest.mark.parametrize(
    "text, expected",
    [
        (f"JUPYTERHUB_API_TOKEN={TOKEN}", "JUPYTERHUB_API_TOKEN=[redacted]"),
        (f"{{'JPY_API_TOKEN': '{TOKEN}', 'HOME': '/a'}}", "{'JPY_API_TOKEN': '[redacted]', 'HOME': '/a'}"),
        ('{"token": "abc", "user": "alice"}', '{"token": "[redacted]", "user": "alice"}'),
        ("MY_SECRET=hunter2 PASSWORD=swordfish USER=alice", "MY_SECRET=[redacted] PASSWORD=[redacted] USER=alice"),
        (f"Authorization: token {TOKEN}", "Authorization: token [redacted]"),
        (f"Authorization: Bearer {URLSAFE}", "Authorization: Bearer [redacted]"),
        ("UWS-Authorization: Token short", "UWS-Authorization: Token [redacted]"),
        (f"GET /hub/api/user?token={TOKEN}&x=1 (127.0.0.1)", "GET /hub/api/user?token=[redacted]&x=1 (127.0.0.1)"),
        ("/user/a/oauth_callback?code=abc&state=def", "/user/a/oauth_callback?code=[redacted]&state=[redacted]"),
        ("POST /hub/login?_xsrf=2|abc|def", "POST /hub/login?_xsrf=[redacted]"),
        (f"-> /hub/login?next=%2Fhub%3Ftoken%3D{TOKEN}", "-> /hub/login?next=%2Fhub%3Ftoken%3D[redacted]"),
        (
            "-> /hub/login?next=%2Fhub%3Fx%3D1%26access_token%3Dshort%26y%3D2",
            "-> /hub/login?next=%2Fhub%3Fx%3D1%26access_token%3D[redacted]%26y%3D2",
        ),
        (f"the token is {TOKEN}.", "the token is [redacted]."),
        (f"cookie {URLSAFE}", "cookie [redacted]"),
        ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc-DEF_123 end", "jwt [redacted] end"),
        ("b64 dGhpcyBpcyBhIHNlY3JldCB0b2tlbiBmb3IgdGVzdHM+Lw== end", "b64 [redacted] end"),
    ],
)
def test_credentials_are_redacted(text, expected):
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "The server failed to start: it exited with status 4 before it answered",
        'Traceback (most recent call last):\n  File "/usr/lib/python3.11/site-packages/jupyterhub/handlers/base.py"',
        "/srv/Data2024/ProjectAlpha/Results/Experiment12/run",
        "SLURM job 1234 of uws-1a2b3c4d-17 is RUNNING on node c1",
        "PATH=/usr/local/bin:/usr/bin HOME=/home/alice",
        "202 POST /hub/api/workspaces/3/jobs (alice@127.0.0.1) 12.34ms",
        "a-long-lowercase-identifier-without-any-capitals-in-it",
        "",
    ],
)
def test_readable_text_stays(text):
    assert redact(text) == text


def test_redaction_is_idempotent():
    once = redact(f"JUPYTERHUB_API_TOKEN={TOKEN} ?token={TOKEN} Authorization: token {TOKEN}")
    assert TOKEN not in once
    assert redact(once) == once


@pytest.fixture
def redacting():
    """Every log record of the test redacted (:func:`install_log_redaction`), as in the hub."""
    previous = logging.getLogRecordFactory()
    install_log_redaction(logging.getLogger("test"))
    yield
    logging.setLogRecordFactory(previous)


def test_log_records_are_redacted_whatever_the_logger(caplog, redacting):
    other = logging.getLogger("some.library")
    with caplog.at_level(logging.DEBUG):
        other.debug("env: %s", {"JUPYTERHUB_API_TOKEN": TOKEN})
        try:
            raise RuntimeError(f"GET http://h/?token={TOKEN} failed")
        except RuntimeError:
            other.exception("request %s failed", f"/x?token={TOKEN}")
    assert caplog.records and all(isinstance(r, RedactedLogRecord) for r in caplog.records)
    assert TOKEN not in caplog.text
    assert "'JUPYTERHUB_API_TOKEN': '[redacted]'" in caplog.text
    assert "RuntimeError: GET http://h/?token=[redacted] failed" in caplog.text


def test_a_log_records_arguments_start_no_line(caplog, redacting):
    """A newline (or another control character) in a value a record is formatted with
    forges no line of the log: strings, exceptions, lists and mappings are written on one
    line; numbers stay numbers, and the format (the hub's code) may span lines."""
    forged = "x\n[I 2026-12-06 17:00:00.000 UWSHub log:192] 200 GET admin (admin@127.0.0.1)\r\x1b[2K\x85\u2028"
    log = logging.getLogger("some.library")
    with caplog.at_level(logging.INFO):
        log.warning("Login refused for %s: %r; %s %s %d %.1f", forged, forged, ValueError(forged), [forged], 7, 2.5)
        log.warning("%(name)s", {"name": forged})
        log.warning(ValueError(forged))
        log.info("Loaded users:\n%s", "a")
    lines = caplog.text.splitlines()
    assert not [line for line in lines if "[I 2026" in line and not line.startswith("WARNING")], lines
    escaped = "x\\n[I 2026-12-06 17:00:00.000 UWSHub log:192] 200 GET admin (admin@127.0.0.1)\\r\\x1b[2K\\x85\\u2028"
    first = caplog.records[0].getMessage()
    assert first == f"Login refused for {escaped}: {forged!r}; {escaped} ['{escaped}'] 7 2.5", first
    assert [r.getMessage() for r in caplog.records[1:]] == [escaped, escaped, "Loaded users:\na"]


def test_a_token_after_a_control_character_in_an_argument_is_redacted(caplog, redacting):
    """An argument's control characters are written as ``\\n``, ``\\x1b``; a token right
    after one (a command's output, an exception's message: ``ok\\n<token>``) was redacted
    while the newline was a newline, and left as it was once it was a backslash and an
    ``n`` (the token's start looked like a word's middle). Also in ``%r``."""
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc-DEF_123"
    log = logging.getLogger("some.library")
    with caplog.at_level(logging.INFO):
        for control in "\n\r\t\x1b\x85\u2028":
            log.warning("squeue said: %s %r", f"ok{control}{TOKEN}", f"ok{control}{TOKEN}")
            log.warning("got %s", ValueError(f"bad{control}{jwt}"))
    assert caplog.records
    assert TOKEN not in caplog.text and "eyJ" not in caplog.text, caplog.text
    assert caplog.records[0].getMessage() == "squeue said: ok\\n[redacted] 'ok\\n[redacted]'"
    assert caplog.records[1].getMessage() == "got bad\\n[redacted]"


def test_a_tracebacks_message_starts_no_line_but_at_its_newlines(redacting):
    """An exception's message in a traceback (``log.exception``) may be anyone's: its
    carriage returns, NELs and line separators started lines the log's formatter (which
    indents what follows a newline) did not indent; they are written as escapes."""
    forged = "[I 2026-12-06 17:00:00.000 UWSHub log:192] 200 GET admin (admin@127.0.0.1)"
    try:
        raise ValueError(f"a\r{forged}\x85{forged}\u2028{forged}\n{forged} {TOKEN}")
    except ValueError:
        record = logging.getLogger("x").makeRecord("x", logging.ERROR, "f", 1, "failed", (), sys.exc_info())
    text = logging.Formatter().format(record)
    assert f"ValueError: a\\r{forged}\\x85{forged}\\u2028{forged}\n{forged} [redacted]" in text, text
    assert not any(c in text for c in "\r\x85\u2028")


#: pieces of the random texts below: every form a credential takes above, the words and
#: letters the patterns look for in other cases and scripts (``ſ`` matches s case-insensitively,
#: ``K`` k, ``ı`` i), and what ordinary log lines hold
_PIECES = [
    TOKEN,
    URLSAFE,
    TOKEN[:31],
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig",
    "eyJ",
    "EYJ",
    "?",
    "&",
    ";",
    "%3F",
    "%26",
    "token=",
    "TOKEN=",
    "ToKeN",
    "api_key=",
    "APIKEY",
    "Authorization: token ",
    "authorization",
    "AUTH",
    "code=",
    "state=",
    "_xsrf=",
    "secret",
    "SECRET",
    "ſecret",
    "pass\u212aey",
    "Passwd",
    "PASSWORD",
    "signature",
    "session",
    "SESSION",
    "credentials",
    "ſignature",
    "to\u212aen",
    "sıgnature",
    "İ",
    "'",
    '"',
    ":",
    "=",
    " ",
    "/",
    "\\n",
    "\n",
    "é",
    "ü",
    "202 POST /hub/api/workspaces/7/jobs",
    "(ann@10.0.0.1)",
    "3.52ms",
    "x" * 31,
    "A1b2" * 8,
    "a/b/c/d" * 5,
    "+",
    "-",
    "_",
    "==",
    "0123456789abcdef",
]


def test_a_text_is_redacted_as_all_the_patterns_redact_it():
    """The search that lets most texts pass untouched (:func:`redaction._may_hold_secret`)
    never lets a text pass that any pattern would change."""
    rng = random.Random(15)
    texts = ["".join(rng.choices(_PIECES, k=rng.randint(1, 8))) for _ in range(5000)]
    fast = [redact(text) for text in texts]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(redaction, "_may_hold_secret", lambda text: True)
        assert fast == [redact(text) for text in texts]


@pytest.mark.parametrize("text", ["ſecret=hunter2", "api_\u212aey=abc", "/x?ſession=abc", "MY_TO\u212aEN=abc"])
def test_names_of_secrets_in_letters_that_match_others_case_insensitively_are_redacted(text):
    """``ſ`` is s and ``K`` (Kelvin) is k to the patterns, which ignore case, but not to
    ``str.lower``: such a text is not let through untouched."""
    assert redact(text).endswith("=[redacted]")


def test_a_line_with_nothing_like_a_credential_skips_the_substitutions(monkeypatch):
    """An access log line (every request writes one at INFO) costs two searches, not the six
    substitutions (which took ~30 µs a line)."""
    calls = []

    class Spy:
        def __init__(self, pattern):
            self.pattern = pattern

        def sub(self, *args):
            calls.append(self.pattern.pattern)
            return self.pattern.sub(*args)

    for name in ("_URL_PARAM", "_AUTHORIZATION", "_NAMED_SECRET", "_JWT", "_HEX", "_BASE64"):
        monkeypatch.setattr(redaction, name, Spy(getattr(redaction, name)))
    line = "202 POST /hub/api/workspaces/7/jobs?limit=50 (ann@10.0.0.1) 3.52ms"
    assert redact(line) == line and calls == []
    assert redact(f"{line} {TOKEN}") == f"{line} [redacted]" and len(calls) == 6
