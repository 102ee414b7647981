"""JupyterHub's spawn with one commit a step: :class:`OneCommitAStep`.

JupyterHub shares one database session between all its coroutines, and its rule
is to commit before every ``await`` that may give the loop to another: then no
other coroutine finds (or rolls back) its changes half done. ``User.spawn``
commits five times before the spawner's ``start()`` runs (the server's row, its
token, its OAuth client, the activity, before the start), all in one stretch of
the event loop: nothing else runs between those commits. Each commit is a flush
and a COMMIT (~0.4 ms of the loop on SQLite, twice the flush alone); a burst of
launches pays it for every server.

:class:`OneCommitAStep` runs a coroutine in steps, as the event loop does (a
step: from one suspension to the next), and makes each ``commit()`` of the
session within a step a flush; one commit ends the step, before anything else
runs. What other coroutines see is what they saw: every change committed before
the loop runs anything else, rows with their ids as soon as the commit that made
them was asked for (the flush), the same rows, the same order.

Two paths differ in form only: a step that fails after a commit still has what
that commit stood for committed (a flush error fails where the commit did), and a
``rollback()`` within a step (JupyterHub's spawn makes none; a config's hook
might) first commits what the step's commits stood for, so that what the
coroutine committed stays committed, as it would have. It drops the changes not
flushed since, as the rollback would; what a query flushed meanwhile (autoflush)
is committed with the rest, and an object deleted since is left detached.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Generator
from typing import Any, Generic, TypeVar

from sqlalchemy.orm import Session

T = TypeVar("T")

log = logging.getLogger(__name__)


class _MergedCommits:
    """While one step runs: the session's ``commit()`` flushes, its ``rollback()``
    first commits what those stood for; :meth:`end` commits them at the step's end."""

    def __init__(self, db: Session):
        self.db = db
        #: the session's own ``commit`` and ``rollback`` attributes, if it has some (a test's)
        self.saved = {name: db.__dict__[name] for name in ("commit", "rollback") if name in db.__dict__}
        self.commit: Callable[[], None] = db.commit
        self.rollback: Callable[[], None] = db.rollback
        #: whether a commit was asked for in this step (and its changes flushed)
        self.pending = False
        db.commit = self._flush  # type: ignore[method-assign]
        db.rollback = self._rollback  # type: ignore[method-assign]

    def _flush(self) -> None:
        self.db.flush()
        self.pending = True

    def _rollback(self) -> None:
        try:
            if self.pending:
                # what the step's commits stood for stays committed; what it changed since,
                # not yet flushed, is dropped first, as the rollback would drop it
                self.pending = False
                for obj in [*self.db.new, *self.db.deleted]:
                    self.db.expunge(obj)
                for obj in list(self.db.dirty):
                    self.db.expire(obj)
                self.commit()
        finally:
            self.rollback()

    def restore(self) -> None:
        for name in ("commit", "rollback"):
            if name in self.saved:
                setattr(self.db, name, self.saved[name])
            else:
                self.db.__dict__.pop(name, None)

    def end(self) -> None:
        """The step's one commit, if it asked for any."""
        if self.pending:
            self.pending = False
            self.commit()


class OneCommitAStep(Generic[T]):
    """Await ``coro`` with the commits each of its steps asks of ``db`` made as one
    commit at the step's end (see the module's documentation). Awaited once."""

    def __init__(self, db: Session, coro: Coroutine[Any, Any, T]):
        self.db = db
        self.coro = coro

    def __await__(self) -> Generator[Any, Any, T]:
        coro = self.coro
        value: Any = None
        error: BaseException | None = None
        while True:
            merged = _MergedCommits(self.db)
            try:
                try:
                    waiting_for = coro.send(value) if error is None else coro.throw(error)
                finally:
                    merged.restore()
            except StopIteration as done:
                merged.end()  # its failure is the coroutine's outcome
                return done.value
            except BaseException:
                try:
                    merged.end()  # what the step's commits stood for, as they would have
                except Exception:
                    log.exception("The commit of a failed step failed too")
                raise
            try:
                merged.end()
            except Exception as e:
                # the coroutine learns of it where it waits, as from its own commit
                value, error = None, e
                continue
            try:
                value, error = (yield waiting_for), None
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as e:
                value, error = None, e
