"""What a client may send: printable text and bounded integers.

Every string a request stores or looks something up by is :data:`Text` (one
line) or :data:`MultilineText` (newlines and tabs too): no NUL, which
PostgreSQL cannot store (a 500 where SQLite stored it), and no other control
character, which would reach every page and terminal that shows the string
(``ESC[...`` rewrites a terminal; ``BEL`` rings it). Every integer a client
sends in a URL is read by :func:`query_int`, with bounds, before it reaches
SQL (past 2**63 the database drivers overflow; PostgreSQL will not compare an
INTEGER column with a number past 2**31) or arithmetic.

The request models of :mod:`uws_hub.apihandlers` use these types;
``tests/integration/test_bad_input.py`` checks that every string field of every request
model does, so a new model cannot forget.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Annotated, Any

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

from .errors import BadRequest

#: the largest id of a workspace, job or share (their id columns are SQL INTEGERs)
MAX_ID = 2**31 - 1
#: the largest offset a list accepts, far beyond any list's length
MAX_OFFSET = 2**31 - 1
#: the largest id a database row can have (SQL BIGINT)
MAX_SQL_INT = 2**63 - 1

#: an optional sign and at most 19 digits (2**63 has 19): Python's int() would
#: also take spaces, underscores and thousands of digits
_INT_PATTERN = re.compile(r"^[+-]?[0-9]{1,19}$")
#: white space a multi-line text may hold
_LINE_SPACE = frozenset("\t\n\r")


def _refuse_controls(value: str, allowed: frozenset[str]) -> str:
    for position, char in enumerate(value):
        if char not in allowed and unicodedata.category(char) == "Cc":
            raise PydanticCustomError(
                "control_character",
                # pydantic fills in the context's values as they are, with no format spec
                "must not contain control characters (found U+{code} at position {position})",
                {"code": f"{ord(char):04X}", "position": position},
            )
    return value


def _single_line(value: str) -> str:
    return _refuse_controls(value, frozenset())


def _multiline(value: str) -> str:
    return _refuse_controls(value, _LINE_SPACE)


#: a string on one line without control characters: names, ids, user and group names, e-mail addresses
Text = Annotated[str, AfterValidator(_single_line)]
#: a string without control characters other than tabs and line breaks: descriptions
MultilineText = Annotated[str, AfterValidator(_multiline)]


def unicode_text(value: Any) -> Any:
    """``value``, parsed JSON, if its every string and key is Unicode text; else a 400.

    JSON may escape half of a UTF-16 surrogate pair alone (``"\\ud800"``); Python's
    json reads it as a lone surrogate, which is no character and which no UTF-8
    can carry: the database, a file, a command line or an answer holding it failed
    (a 500, after part of the work was done). Refused as the body is read, for
    every field at once, as the other control characters are by :data:`Text`.
    """
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(
            "The request body escapes half of a UTF-16 surrogate pair alone (\\ud800 to \\udfff),"
            " which is no character: send a character as itself, or as its whole pair"
        ) from None
    return value


def shorten(value: str, length: int = 40) -> str:
    """``value`` for an error message: a huge value is not echoed whole."""
    return value if len(value) <= length else value[:length] + "..."


def query_int(value: str | None, name: str, *, default: int, minimum: int, maximum: int) -> int:
    """An integer of the URL (``?name=value``, a header): ``default`` when
    absent, else an integer from ``minimum`` to ``maximum`` or a 400 saying so."""
    if value is None:
        return default
    if _INT_PATTERN.match(value):
        number = int(value)
        if minimum <= number <= maximum:
            return number
    raise BadRequest(f"{name} must be an integer from {minimum} to {maximum}, not {shorten(value)!r}")


def query_bool(value: str | None, name: str) -> bool:
    """A yes or no of the URL (``?name=1``): absent, ``0`` or ``false`` is no, ``1`` or
    ``true`` is yes, anything else a 400 saying so."""
    if value is None or value in ("0", "false"):
        return False
    if value in ("1", "true"):
        return True
    raise BadRequest(f"{name} must be 1 or 0 (true or false), not {shorten(value)!r}")
