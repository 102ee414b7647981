"""Every message the docs quote can still be produced.

The rule (keep it when writing docs):

- A **quoted message** is italic text in double quotes, ``*"…"*``, in
  README.md or a page of docs/ (outside fenced code blocks), possibly broken
  across lines; inline code in it is part of the message. Quote the hub's
  answers (error messages, reasons, page texts) this way and nothing else;
  write any other quotation another way (plain quotes or inline code).
- In a quote, ``…`` stands for text left out (anything, also the hub's fixed
  text, with the spaces around it); the rest is the message as a user sees
  it, whole, with example values (``'x'``, ``12``, ``alice's``, ``N``) where
  the hub puts variable parts. A quote of a message's beginning ends in ``…``.
- A quote is **producible** when it matches one *message template* of the
  code that answers: the string literals of uws-hub (``uws_hub/``,
  ``spawners/``, ``authenticators/`` and the pages' HTML and JavaScript in
  ``share/templates/``), of the installed JupyterHub and OAuthenticator (their
  tests left out), pydantic's error templates, and HTTP's reason phrases
  (``"Method Not Allowed"``). A template's variable parts (f-string fields,
  ``%s``, ``{}``, ``" + x + "`` in JavaScript) are placeholders; a field that
  names a module's string constant is its text. Each placeholder takes example
  values (at most three words each) or texts that are themselves producible
  (a message built from parts: ``f"Invalid request: {problems}"``), and the
  letters the templates match must be at least those of the example values
  (names in single quotes are free), so that a bare ``f"{a} not {b}"``
  explains nothing. Docstrings are not templates (they quote messages too).

A quote no template produces fails the test with its page: the message was
reworded, the doc was wrong, or the doc quotes something else than an answer.
"""

from __future__ import annotations

import ast
import http
import re
from collections import defaultdict
from functools import cache, lru_cache
from pathlib import Path

import jupyterhub
import oauthenticator
import pytest
from pydantic_core._pydantic_core import list_all_errors

from ..hubutil import REPO

DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SOURCE_DIRS = [REPO / "uws_hub"]
#: the installed code uws-hub answers through: JupyterHub, and OAuthenticator (the OIDC/Globus logins)
PACKAGE_DIRS = [Path(jupyterhub.__file__).parent, Path(oauthenticator.__file__).parent]

#: a placeholder in a template, and the elision mark in a quote
PH = "\x00"
ELLIPSIS = "…"
#: the most words an example value in a quote may have
VALUE_WORDS = 3

_QUOTE = re.compile(r'\*"(.+?)"\*', re.S)
_FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1", re.S | re.M)
_PERCENT = re.compile(r"%(?:\([^)]*\))?[-#0 +]*\d*(?:\.\d+)?[sdrfigxX]")
_BRACES = re.compile(r"\{[^{}\s]*\}")
_WORD = re.compile(r"[A-Za-z]{3,}")


# ---------------------------------------------------------------- quotes
def doc_quotes() -> list[tuple[str, str]]:
    """(page, quote) for every quoted message, whitespace collapsed."""
    found = []
    for path in DOC_FILES:
        text = _FENCE.sub("", path.read_text())
        for m in _QUOTE.finditer(text):
            found.append((path.relative_to(REPO).as_posix(), " ".join(m.group(1).split())))
    return found


def normalised(quote: str) -> str:
    """The quote as matched: the spaces around ``…`` belong to what it leaves out."""
    return re.sub(rf" ?{ELLIPSIS} ?", ELLIPSIS, quote)


# ---------------------------------------------------------------- templates
def _from_literal(s: str) -> str:
    """A plain string literal's template: %-style and {}-style fields are placeholders."""
    return _BRACES.sub(PH, _PERCENT.sub(PH, s))


def _template(node: ast.AST, constants: dict[str, str]) -> str | None:
    """The template of a string expression (literal, f-string, concatenation), else None.

    A field that names a module-level string constant is that constant's text.
    """
    if isinstance(node, ast.Constant):
        return _from_literal(node.value) if isinstance(node.value, str) else None
    if isinstance(node, ast.Name):
        return _from_literal(constants[node.id]) if node.id in constants else None
    if isinstance(node, ast.JoinedStr):
        return "".join(_field(v, constants) for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mod)):
        left = _template(node.left, constants)
        if isinstance(node.op, ast.Mod):
            return left
        right = _template(node.right, constants)
        if left is None and right is None:
            return None
        return (left if left is not None else PH) + (right if right is not None else PH)
    return None


def _field(value: ast.AST, constants: dict[str, str]) -> str:
    """A piece of an f-string: its text, a constant's (``!r``: its repr), else a placeholder."""
    if isinstance(value, ast.Constant):
        return _from_literal(value.value)
    name = getattr(value.value, "id", None)
    if name not in constants:
        return PH
    text = constants[name]
    return _from_literal(repr(text) if value.conversion == ord("r") else text)


def python_templates(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    constants = {
        target.id: stmt.value.value
        for stmt in tree.body
        if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)
        for target in stmt.targets
        if isinstance(target, ast.Name)
    }
    # docstrings, and the pieces of f-strings (the f-string is the template)
    skip = {
        id(stmt.value)
        for stmt in ast.walk(tree)
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, (ast.Constant, ast.JoinedStr))
    }
    skip.update(id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for v in node.values)
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip or isinstance(node, ast.Name):
            continue
        template = _template(node, constants)
        if template:
            found.add(template)
    return found


_JS_STRING = re.compile(r"""(["'`])((?:\\.|(?!\1)[^\\])*)\1""")
_JS_CONCAT = re.compile(r"""(["'`])\s*\+\s*[^"'`+;]+?\s*\+\s*(["'`])""")
_JS_TAIL = re.compile(r"""(["'`])\s*\+\s*[\w.()\[\]]+""")


def page_templates(path: Path) -> set[str]:
    """The texts of an HTML page: its text between tags, and its JavaScript strings
    (``"a " + x + " b"`` and ``${x}`` are placeholders, Jinja's ``{{ }}`` too)."""
    text = path.read_text()
    text = re.sub(r"\{\{.*?\}\}|\{%.*?%\}|\$\{[^}]*\}", PH, text)
    text = _JS_TAIL.sub(lambda m: PH + m.group(1), _JS_CONCAT.sub(PH, text))
    found = {" ".join(t.split()) for t in re.findall(r">([^<>]+)<", text)}
    found.update(m.group(2) for m in _JS_STRING.finditer(text))
    return {t for t in found if t.strip()}


def pydantic_templates() -> set[str]:
    return {_from_literal(e["message_template_python"]) for e in list_all_errors()}


def status_phrases() -> set[str]:
    """HTTP's reason phrases: the message of an API error raised without one."""
    return {status.phrase for status in http.HTTPStatus}


@lru_cache(maxsize=1)
def all_templates() -> list[str]:
    found = pydantic_templates() | status_phrases()
    roots = [(d, False) for d in SOURCE_DIRS] + [(d, True) for d in PACKAGE_DIRS]
    for root, skip_tests in roots:
        for path in root.rglob("*"):
            if skip_tests and "tests" in path.relative_to(root).parts:
                continue
            if path.suffix == ".py":
                found |= python_templates(path)
            elif path.suffix in (".html", ".js"):
                found |= page_templates(path)
    # placeholders next to each other are one; a template of placeholders only explains nothing
    cleaned = {re.sub(PH + "+", PH, " ".join(t.split()) if "\n" in t else t) for t in found}
    return sorted(t for t in cleaned if _WORD.search(t.replace(PH, " ")))


@lru_cache(maxsize=1)
def word_index() -> dict[str, set[int]]:
    index = defaultdict(set)
    for i, t in enumerate(all_templates()):
        for w in _WORD.findall(t.lower()):
            index[w].add(i)
    return index


# ---------------------------------------------------------------- matching
NO = float("-inf")


def value_letters(value: str) -> int:
    """What an example value costs: its letters, but names in quotes ('x') are free."""
    return sum(c.isalpha() for c in re.sub(r"'[^']*'", "", value.replace(ELLIPSIS, "")))


def candidates(quote: str) -> list[str]:
    """Templates that share at least two of the quote's words (a cheap first filter)."""
    words = set(_WORD.findall(quote.lower()))
    if not words:
        return []
    counts: dict[int, int] = defaultdict(int)
    for w in words:
        for i in word_index().get(w, ()):
            counts[i] += 1
    templates = all_templates()
    return [templates[i] for i, n in counts.items() if n >= min(2, len(words))]


@cache
def explained(quote: str) -> float:
    """How well the best template explains the quote (see :func:`score`); NO if none can."""
    return max((score(quote, t) for t in candidates(quote)), default=NO)


def producible(quote: str) -> bool:
    return explained(quote) >= 0


@cache
def filling(part: str) -> float:
    """The score of what a placeholder takes: a sequence of example values (each
    costs its letters) and producible messages (their own score), split at spaces."""
    words = part.split()
    best = [NO] * len(words) + [0.0]
    for w in range(len(words) - 1, -1, -1):
        for v in range(w + 1, len(words) + 1):
            if best[v] == NO:
                continue
            piece = " ".join(words[w:v])
            if v - w <= VALUE_WORDS:
                best[w] = max(best[w], best[v] - value_letters(piece))
            if v - w >= 2:
                for message in {piece, piece.strip(" ,;:()")}:
                    sub = explained(message)
                    if sub >= 0:
                        best[w] = max(best[w], best[v] + sub)
    return best[0]


def score(quote: str, template: str) -> float:
    """How well ``template`` produces ``quote``: NO if it cannot, else the
    letters explained by templates minus those of example values.

    A dynamic programme over (position in the template, position in the
    quote): a literal matches itself, the quote's ``…`` skips any part of the
    template, a placeholder takes a part of the quote (:func:`filling`).
    """
    nt, nq = len(template), len(quote)

    @cache
    def best(i: int, j: int) -> float:
        if i == nt and j == nq:
            return 0
        result = NO
        if j < nq and quote[j] == ELLIPSIS:
            # the elision takes template text up to some point, then the quote goes on
            for k in range(i, nt + 1):
                result = max(result, best(k, j + 1))
            return result
        if i == nt:
            return NO
        t = template[i]
        if t == PH:
            after = template[i + 1] if i + 1 < nt else None
            for k in range(j, nq + 1):
                # the part ends where the template's next character (or the quote's …) is
                if k < nq and after is not None and quote[k] not in (after, ELLIPSIS):
                    continue
                rest = best(i + 1, k)
                if rest == NO:
                    continue
                cost = filling(quote[j:k])
                if cost != NO:
                    result = max(result, rest + cost)
            return result
        if j < nq and t == quote[j]:
            rest = best(i + 1, j + 1)
            if rest != NO:
                result = rest + (1 if t.isalpha() else 0)
        return result

    return best(0, 0)


def matches(quote: str, template: str) -> bool:
    return score(normalised(quote), template) >= 0


# ---------------------------------------------------------------- tests
def test_the_rule_tells_answers_apart():
    """The matching itself, on made-up templates: what passes and what does not."""
    assert matches("No such user: x", "No such user: " + PH)
    assert matches(
        "Workspace 'x' has a running job (id 7); stop it first.",
        f"Workspace {PH} has a {PH} job (id {PH}); stop it first.",
    )
    assert matches("Disk quota: … over by 1.0 KiB", f"Disk quota: {PH} would use {PH}; over by {PH}")
    assert not matches("Stopped before it was running", "Stopped on request")
    assert not matches("did not answer in time", f"{PH} not {PH}")
    assert not matches("The server is no longer running now", "The server is no longer running")
    assert not matches("The server is no longer", "The server is no longer running")
    assert matches("The server is no longer …", "The server is no longer running")
    # a message built from parts: the placeholder takes a producible message
    assert matches("Stopping failed: Stopped on request", f"Stopping failed: {PH}")
    assert not matches("Stopping failed: before it was running", f"Stopping failed: {PH}")


def test_templates_are_found():
    templates = set(all_templates())
    assert "Stopped on request" in templates  # a default argument
    assert f"No such workspace: {PH}" in templates  # an f-string
    assert f"{PH} job {PH} failed: {PH}" in templates  # a page's template
    assert "Extra inputs are not permitted" in templates  # pydantic


QUOTES = doc_quotes()


def test_quotes_are_found():
    assert len(QUOTES) > 50
    assert all('"' not in q for _, q in QUOTES)


@pytest.mark.parametrize("page,quote", QUOTES, ids=[f"{p}:{q[:40]}" for p, q in QUOTES])
def test_quoted_message_can_be_produced(page, quote):
    assert producible(normalised(quote)), f"{page} quotes {quote!r}, which nothing in the hub produces"
