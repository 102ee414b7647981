"""User names that say who they are: no control characters, no look-alikes of other names,
whichever authenticator makes them."""

from __future__ import annotations

import unicodedata

from jupyterhub import orm as hub_orm
from jupyterhub.auth import Authenticator
from tornado import web

from ..redaction import CONTROL_CHARACTERS

#: scripts that names mix as a matter of course (UTS #39's "highly restrictive" sets):
#: Japanese (kanji with kana), Chinese (with bopomofo), Korean (with hanja), each with Latin
_MIXES = (
    {"LATIN", "CJK", "HIRAGANA", "KATAKANA"},
    {"LATIN", "CJK", "BOPOMOFO"},
    {"LATIN", "CJK", "HANGUL"},
)
#: scripts whose letters look like each other's, where a combining mark makes a look-alike
_LOOK_ALIKE_SCRIPTS = {"LATIN", "GREEK", "CYRILLIC"}
#: letters whose Unicode name does not begin with their script's (:func:`_script`): the
#: ideographic iteration and closing marks (佐々木, 〆), Han; the prolonged sound mark (ー
#: of ターナー, らーめん), kana's
_SCRIPT_OF = {"IDEOGRAPHIC": "CJK", "KATAKANA-HIRAGANA": "KATAKANA"}


def look_alike(name: str) -> str | None:
    """Why ``name`` could pass for another name, or None.

    A name is compared as it is stored, one code point after another: ``ａlice``
    (fullwidth), ``аlice`` (a Cyrillic а), ``alice`` with an invisible character or
    a combining mark, and ``alice`` are five users, whom nobody tells apart on a page,
    in a share dialog or in a log. Refused: a name that Unicode's compatibility
    normalization and lower case (NFKC, ``str.lower``) change (capitals, fullwidth and
    other variant forms, letters decomposed, ligatures); an invisible (format)
    character; letters of scripts that names do not mix (Latin with Cyrillic or
    Greek; Japanese, Chinese and Korean with Latin are fine); a combining mark on a
    Latin, Greek or Cyrillic letter (NFKC composes the marks that have a letter of
    their own). Lower case is JupyterHub's (its names are ``str.lower``-ed), which keeps
    ``ß`` and the Greek final ``ς``: case folding made them ``ss`` and ``σ``, and refused
    ``strauß`` and every Greek name ending in ``ς``."""
    normal = unicodedata.normalize("NFKC", name.lower())
    if normal != name:
        return f"it is not in Unicode's normal form (NFKC, lower case: {normal!r})"
    if any(unicodedata.category(ch) == "Cf" for ch in name):
        return "it holds an invisible character"
    scripts = {_script(ch) for ch in name if ch.isalpha()}
    if len(scripts) > 1 and not any(scripts <= mix for mix in _MIXES):
        return f"it mixes the letters of scripts ({', '.join(sorted(s.lower() for s in scripts))}) that look alike"
    if scripts & _LOOK_ALIKE_SCRIPTS and any(unicodedata.category(ch) in ("Mn", "Me") for ch in name):
        return "it holds a combining mark"
    return None


def _script(letter: str) -> str:
    """The script of ``letter``: the first word of its Unicode name (``LATIN``, ``CJK``,
    ``HIRAGANA``), but for the few of :data:`_SCRIPT_OF`."""
    first = unicodedata.name(letter, "?").split(" ")[0]
    return _SCRIPT_OF.get(first, first)


class LookAlikeName(web.HTTPError):
    """A 400 that says why a new user's name was refused."""

    def __init__(self, name: str, why: str):
        super().__init__(400, f"Invalid username {name!r}: {why}")


class PrintableNamesMixin(Authenticator):
    """Refuse user names that hold a control character (a NUL, a newline, a carriage
    return, ESC, NEL, a line separator), or that could pass for another name
    (:func:`look_alike`), wherever JupyterHub checks a name: a login (the name an
    identity provider or a login form hands), a user admin's ``POST /hub/api/users``
    and ``PATCH /hub/api/users/{name}``, the names of the configuration. Mix in before
    a JupyterHub Authenticator.

    Such a name has no system account (``getpwnam`` refuses a NUL); PostgreSQL cannot
    store a NUL (JupyterHub's ``POST /users`` was a 500 there); and JupyterHub's own log
    lines put the name into their text as it is, where a carriage return or a newline
    starts a line of whoever chose it (the hub's own lines write their values on one
    line, :func:`uws_hub.redaction.one_line`). A look-alike is refused with a 400 that
    says why (:class:`LookAlikeName`), unless a hub user has that name already (made
    before this rule: they keep it, and log in). ``Authenticator.username_pattern``
    still applies after this."""

    def validate_username(self, username: str) -> bool:
        if CONTROL_CHARACTERS.search(username) is not None:
            return False
        why = look_alike(username)
        if why is not None and not self._is_a_user(username):
            raise LookAlikeName(username, why)
        return super().validate_username(username)

    def _is_a_user(self, name: str) -> bool:
        db = getattr(self.parent, "db", None)  # (the hub's session: Authenticator.db is deprecated)
        return db is not None and hub_orm.User.find(db, name) is not None
