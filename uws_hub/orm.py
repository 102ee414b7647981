"""uws-hub's tables, beside JupyterHub's in the same database.

They have their own ``MetaData`` and their own alembic history (version table
``uws_alembic_version``), so JupyterHub's migrations and ours never step on
each other; JupyterHub ignores tables it does not know. Foreign keys to
JupyterHub's tables use the column objects, since the two metadata
collections cannot resolve each other's table names.

The ORM holds data. Rules (who may do what, which status follows which) live
in the services: :mod:`uws_hub.workspaces`, :mod:`uws_hub.jobs`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar

from jupyterhub import orm as hub_orm
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ColumnElement,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Row,
    String,
    Text,
    UniqueConstraint,
    bindparam,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, make_transient_to_detached, mapped_column, relationship
from sqlalchemy.orm.attributes import instance_state, set_committed_value

from .states import ACTIVE_JOB_STATUSES, JobStatus, JobTarget, ShareKind, WorkspaceStatus, WorkspaceTarget

#: alembic's version table for uws-hub's own migrations
VERSION_TABLE = "uws_alembic_version"

# the same convention as JupyterHub's, so constraint names are stable across
# SQLite and PostgreSQL and migrations can refer to them
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """Naive UTC now, as JupyterHub stores its timestamps."""
    return datetime.now(UTC).replace(tzinfo=None)


def isoformat(dt: datetime | None) -> str | None:
    """A stored timestamp in ISO 8601 with a 'Z' (it is UTC), as JupyterHub's API writes them."""
    return None if dt is None else dt.isoformat() + "Z"


_Row = TypeVar("_Row", "Workspace", "Job")


def write_at_once(db: Session, row: Workspace | Job, values: dict[str, Any]) -> None:
    """Set these columns of ``row`` with an UPDATE of their own in the session's
    transaction, not through the ORM's flush (which, for these rows and their
    relationships, costs the event loop several times the statement: a launch's and a
    start's writes); the session's row then holds them as stored (a rollback expires it)."""
    db.connection().execute(_UPDATE_BY_ID[type(row)], {**values, "row_id": row.id})
    for key, value in values.items():
        set_committed_value(row, key, value)


def write_changes_at_once(db: Session, row: Workspace | Job) -> None:
    """Write the columns of ``row`` changed in the session (and ``updated_at``, as the
    flush would) with :func:`write_at_once`, not at the commit's flush: a batch job's
    steps change only its row, and a burst of short jobs is bounded by the hub's work
    per job: the flush of that one row was two thirds of their commits)."""
    state = instance_state(row)
    columns = _COLUMN_KEYS[type(row)]
    changed = {key: state.dict[key] for key in state.committed_state if key in columns}
    if not changed:
        return
    write_at_once(db, row, {"updated_at": utcnow(), **changed})
    if not state.committed_state:
        # nothing of the row is left to write: it is no longer "modified", else the
        # commit would still flush it (a flush with nothing to write costs half of one).
        # SQLAlchemy has no public call for this (``_commit_all`` is what its own flush
        # calls, the same since 1.x); the unit test of a batch job's steps without a
        # flush fails if it changes
        state._commit_all(state.dict, db.identity_map)


def find_by_id(db: Session, cls: type[_Row], row_id: int) -> _Row | None:
    """``db.get(cls, row_id)``, at about half the event loop's cost when the row is not in the
    session yet (every API request on a workspace or job finds its row so, and a burst of
    launches is answered one after the other).

    The ORM's load of a row by its key costs several times the statement; here the row is
    read with a statement built once, and its object made from the values as stored and
    put in the session (as JupyterHub's lookup would have left it: persistent, unchanged,
    its relationships loaded when read). When the session holds the row's object already,
    or has rows added or deleted that its flush would write first, it is ``db.get``'s answer."""
    if db.identity_key(cls, row_id) in db.identity_map or db.new or db.deleted:
        return db.get(cls, row_id)
    row = db.connection().execute(_BY_ID[cls], {"row_id": row_id}).first()
    return None if row is None else as_stored(db, cls, row)


def as_stored(db: Session, cls: type[_Row], row: Row) -> _Row:
    """The session's object for ``row``, every column of a ``cls`` row as the database read
    or returned it (by a statement of its own: :func:`find_by_id`, a launch's INSERT):
    persistent and unchanged, its relationships loaded when read, as the ORM's load leaves
    it. Made as that load makes it (the values set without attribute events, which cost
    as much as the statement), without the rest of that load's cost."""
    made = _MANAGERS[cls].new_instance()
    made.__dict__.update(row._asdict())
    make_transient_to_detached(made)
    db.add(made)
    return made


def users_being_deleted(db: Session) -> set[int]:
    """The ids of the JupyterHub users the session deletes at its flush (in a
    ``before_flush`` hook): their workspaces and jobs go with them (``ON DELETE CASCADE``),
    unseen by the session."""
    return {user.id for user in rows_of_users_being_deleted(db)}


def rows_of_users_being_deleted(db: Session) -> list[hub_orm.User]:
    """The rows of :func:`users_being_deleted`."""
    # JupyterHub deletes its wrapper of the user (jupyterhub.user.User), which lends it its row's state
    deleted = [getattr(obj, "orm_user", obj) for obj in db.deleted]
    return [obj for obj in deleted if isinstance(obj, hub_orm.User)]


def _made_at(context) -> datetime:
    """A new workspace's ``last_used_at``: its ``created_at`` (given or defaulted)."""
    return context.get_current_parameters().get("created_at") or utcnow()


#: ``__table_args__`` of a table whose ids name things outside its rows (files, roles,
#: groups, URLs, events): on SQLite, without ``AUTOINCREMENT``, a new row gets the
#: highest id plus one, so deleting the newest rows hands their ids out again and the
#: new row inherits what the old one left. PostgreSQL's sequences never reuse a number.
NEVER_REUSED = {"sqlite_autoincrement": True}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Workspace(Base):
    """A directory of a user's work, under the configured workspaces root."""

    __tablename__ = "uws_workspaces"
    __table_args__ = (
        UniqueConstraint("owner_id", "slug", name="uq_uws_workspaces_owner_slug"),
        # the API's default order (oldest first): a page of 50 reads 50 rows, not a sort of all
        Index("ix_uws_workspaces_created_at", "created_at", "id"),
        # the pages' default order (last used first): likewise
        Index("ix_uws_workspaces_last_used_at", "last_used_at", "id"),
        # its id names its roles, POSIX group and events: never reused (see NEVER_REUSED)
        NEVER_REUSED,
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey(hub_orm.User.id, ondelete="CASCADE"), index=True)
    #: immutable, unique per owner; names the job's server (/user/<owner>/<slug>/)
    slug: Mapped[str] = mapped_column(String(63))
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(32), default=WorkspaceStatus.initializing.value)
    status_reason: Mapped[str | None] = mapped_column(Text, default=None)
    #: where the hub takes it (:class:`~uws_hub.states.WorkspaceTarget`): ready, or deleted
    target: Mapped[str] = mapped_column(String(32), default=WorkspaceTarget.ready.value, server_default="ready")
    #: absolute path; always under UWSHub.workspaces_root
    directory: Mapped[str] = mapped_column(Text)
    disk_usage_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    usage_measured_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    #: when a job was last launched in it, else when it was made (what "last used" sorts by)
    last_used_at: Mapped[datetime] = mapped_column(DateTime, default=_made_at)

    # many-to-one by primary key: loaded from the session's identity map when
    # there (JupyterHub keeps every active user's row), so no join on every query
    owner: Mapped[hub_orm.User] = relationship(hub_orm.User)
    jobs: Mapped[list[Job]] = relationship(
        back_populates="workspace", cascade="all, delete-orphan", passive_deletes=True
    )
    shares: Mapped[list[Share]] = relationship(
        back_populates="workspace", cascade="all, delete-orphan", passive_deletes=True
    )

    def __repr__(self) -> str:
        return f"<Workspace {self.id} {self.owner_id}/{self.slug} {self.status}>"

    @classmethod
    def find(cls, db: Session, workspace_id: int) -> Workspace | None:
        return find_by_id(db, cls, workspace_id)

    @classmethod
    def find_by_slug(cls, db: Session, owner_id: int, slug: str) -> Workspace | None:
        return db.scalar(select(cls).where(cls.owner_id == owner_id, cls.slug == slug))


class Job(Base):
    """One launch of a job type in a workspace, on a resource.

    An interactive job is a JupyterHub named server of the workspace's owner,
    named after the workspace's slug; a workspace has at most one unfinished.
    A batch job runs its command to an exit status through its resource's
    runner (:mod:`uws_hub.spawners.batch`); a workspace has any number of them.
    ``status`` is where the job is, ``target`` where the hub wants it
    (``running`` or ``stopped``).
    """

    __tablename__ = "uws_jobs"
    __table_args__ = (
        # At most one unfinished interactive job per workspace, enforced by the
        # database so that two concurrent launches cannot both win.
        Index(
            "uq_uws_jobs_one_active_per_workspace",
            "workspace_id",
            unique=True,
            sqlite_where=(
                "interactive = 1 AND status IN (" + ", ".join(f"'{s.value}'" for s in sorted(ACTIVE_JOB_STATUSES)) + ")"
            ),
            postgresql_where=(
                "interactive AND status IN (" + ", ".join(f"'{s.value}'" for s in sorted(ACTIVE_JOB_STATUSES)) + ")"
            ),
        ),
        # a workspace's unfinished jobs (asked at every end of a job), not read through its
        # finished ones
        Index("ix_uws_jobs_workspace_id_status", "workspace_id", "status"),
        # the slots held (unfinished interactive jobs, batch jobs handed over), counted at each
        # step of the fair queue, not read through the jobs waiting
        Index("ix_uws_jobs_status_interactive_submitted_at", "status", "interactive", "submitted_at"),
        # an owner's unfinished batch jobs (counted at every batch launch against
        # max_unfinished_batch_jobs_per_user), counted in the index, not read through their
        # finished jobs
        Index("ix_uws_jobs_owner_id_interactive_status", "owner_id", "interactive", "status"),
        # its id names its files, results, events, URLs and SLURM job: never reused
        NEVER_REUSED,
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("uws_workspaces.id", ondelete="CASCADE"), index=True)
    #: the workspace owner's id, copied so that listing jobs by scope is one query
    owner_id: Mapped[int] = mapped_column(ForeignKey(hub_orm.User.id, ondelete="CASCADE"), index=True)
    #: the user whose system account the job runs as: who launched it (an editor of a
    #: shared workspace runs as themself), or the owner when the owner, an admin or a
    #: service launched it. None: the owner (jobs from before it was recorded)
    launcher_id: Mapped[int | None] = mapped_column(
        ForeignKey(hub_orm.User.id, ondelete="SET NULL"), index=True, default=None
    )
    job_type: Mapped[str] = mapped_column(String(63))
    resource: Mapped[str] = mapped_column(String(63), default="local")
    interactive: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[str] = mapped_column(String(32), default=JobStatus.pending.value, index=True)
    target: Mapped[str] = mapped_column(String(32), default=JobTarget.running.value)
    #: the terminal status a requested stop ends in (set with the stop request)
    outcome: Mapped[str | None] = mapped_column(String(32), default=None)
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    #: how many times the hub has tried to start the job's server
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    server_name: Mapped[str] = mapped_column(String(255))
    #: the resource's own id: a process id, a SLURM job id
    resource_id: Mapped[str | None] = mapped_column(String(255), default=None)
    #: the uid the resource runs as, recorded with its id (a SLURM job: its account's at
    #: submission, kept if the account gets another uid later): SLURM gives a forgotten
    #: job's id again, and another uid's job under it is not this one. None: unknown
    resource_uid: Mapped[int | None] = mapped_column(Integer, default=None)
    #: where its server answers through the proxy, and the host it runs on (a SLURM
    #: node): stored when it starts running, so reading a job never asks a spawner
    url: Mapped[str | None] = mapped_column(Text, default=None)
    node: Mapped[str | None] = mapped_column(String(255), default=None)
    #: requested resources: cpus, memory, gpus, time limit, partition
    resources: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    queued_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    #: a batch job: when the fair queue gave it its slot and handed it to its runner
    #: (from then on it holds a slot until it ends, a hub restart included)
    submitted_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    running_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    stopping_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    #: a batch job's parameters, as validated (defaults filled in)
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: how a batch job's command ended: its exit status, or the signal that killed it
    exit_code: Mapped[int | None] = mapped_column(Integer, default=None)
    exit_signal: Mapped[int | None] = mapped_column(Integer, default=None)
    #: where a batch job's stdout and stderr go (the job log dir, or SLURM's output file)
    log_path: Mapped[str | None] = mapped_column(Text, default=None)
    #: a label its client gave it (UWS's runId), shown as given
    run_id: Mapped[str | None] = mapped_column(String(255), default=None)
    #: when the hub destroys the job (UWS's destruction time): stops it if it runs, deletes
    #: its results and log and keeps its record, archived
    destroy_at: Mapped[datetime | None] = mapped_column(DateTime, default=None, index=True)
    archived_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)

    workspace: Mapped[Workspace] = relationship(back_populates="jobs")
    owner: Mapped[hub_orm.User] = relationship(hub_orm.User, foreign_keys=[owner_id])
    launched_by: Mapped[hub_orm.User | None] = relationship(hub_orm.User, foreign_keys=[launcher_id])

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.job_type} in {self.workspace_id} {self.status}>"

    @property
    def terminal(self) -> bool:
        return JobStatus(self.status).terminal

    @property
    def launcher(self) -> hub_orm.User:
        """The user whose account the job runs as (the owner for a job from before that was recorded)."""
        return self.launched_by if self.launched_by is not None else self.owner

    @classmethod
    def find(cls, db: Session, job_id: int) -> Job | None:
        return find_by_id(db, cls, job_id)

    @classmethod
    def active_in(cls, db: Session, workspace_id: int) -> Job | None:
        """The workspace's unfinished interactive job, if any (there is at most one)."""
        return db.scalar(
            select(cls).where(
                cls.workspace_id == workspace_id,
                cls.interactive.is_(True),
                cls.status.in_([s.value for s in ACTIVE_JOB_STATUSES]),
            )
        )

    @classmethod
    def oldest_unfinished_in(cls, db: Session, workspace_id: int) -> Job | None:
        """The workspace's oldest unfinished job of either kind (its batch jobs as well as
        its interactive one: a workspace with any is not deleted under them), if any."""
        return db.scalar(
            select(cls)
            .where(cls.workspace_id == workspace_id, cls.status.in_(sorted(_ACTIVE_VALUES)))
            .order_by(cls.id)
            .limit(1)
        )

    @classmethod
    def any_unfinished_in(cls, db: Session, workspace_id: int, excluding: Job | None = None) -> bool:
        """Whether the workspace has an unfinished job of either kind but ``excluding``, as
        the session sees it, without flushing it: the workspace's jobs the session added,
        changed or deleted are judged here, the others by one query of an id. (Every end
        of a job asks, in the transaction that records it: a flush there was the job's
        change flushed on its own, and its event in another flush at the commit.)"""
        in_session = [
            job
            for job in (*db.new, *db.dirty, *db.deleted)
            if isinstance(job, Job) and job.workspace_id == workspace_id and job is not excluding
        ]
        if any(job.status in _ACTIVE_VALUES for job in in_session if job not in db.deleted):
            return True
        skip = {job.id for job in in_session if job.id is not None}
        if excluding is not None and excluding.id is not None:
            skip.add(excluding.id)
        with db.no_autoflush:
            return (
                db.execute(_ANY_UNFINISHED_IN, {"workspace_id": workspace_id, "skip": sorted(skip)}).first() is not None
            )

    @classmethod
    def unfinished(cls, db: Session) -> list[Job]:
        """Every job that has not reached a terminal status (for the reconciler)."""
        return list(db.scalars(select(cls).where(cls.status.in_([s.value for s in ACTIVE_JOB_STATUSES]))))

    @classmethod
    def owners_own_servers(cls, db: Session) -> set[tuple[int, str]]:
        """(owner id, server name) of every unfinished server its owner launched (not an editor)."""
        rows = db.execute(
            select(cls.owner_id, cls.server_name).where(
                cls.interactive.is_(True),
                cls.status.in_([s.value for s in ACTIVE_JOB_STATUSES]),
                or_(cls.launcher_id.is_(None), cls.launcher_id == cls.owner_id),
            )
        )
        return {(owner_id, server_name) for owner_id, server_name in rows}


#: a row of these tables by its id, for :func:`find_by_id` (built once: SQLAlchemy takes about
#: as long to build a statement as SQLite to answer it)
_BY_ID: dict[type, Any] = {
    cls: select(*cls.__table__.columns).where(cls.__table__.c.id == bindparam("row_id")) for cls in (Workspace, Job)
}
#: :func:`write_at_once`'s statement: the columns set are those given (built once, it costs
#: the loop less than half what building it each time did)
_UPDATE_BY_ID: dict[type, Any] = {cls: update(cls).where(cls.id == bindparam("row_id")) for cls in (Workspace, Job)}
_MANAGERS: dict[type, Any] = {cls: cls.__mapper__.class_manager for cls in (Workspace, Job)}
_COLUMN_KEYS: dict[type, frozenset[str]] = {cls: frozenset(cls.__table__.columns.keys()) for cls in (Workspace, Job)}

_ACTIVE_VALUES = frozenset(s.value for s in ACTIVE_JOB_STATUSES)
#: Job.any_unfinished_in's query, built once
_ANY_UNFINISHED_IN = (
    select(Job.id)
    .where(
        Job.workspace_id == bindparam("workspace_id"),
        Job.status.in_(sorted(_ACTIVE_VALUES)),
        Job.id.not_in(bindparam("skip", expanding=True)),
    )
    .limit(1)
)


class Event(Base):
    """A stored change of a job or a workspace: who, what, when, why.

    Events outlive their workspace and job (no foreign keys to them), so the
    history stays readable; they go with their owner. The id orders them and
    is the ``id:`` of the event streams, so clients resume after the last one
    they saw.
    """

    __tablename__ = "uws_events"
    # its id is where event streams resume and names notifications: never reused
    __table_args__ = (NEVER_REUSED,)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    #: "job", "workspace" or "progress"
    kind: Mapped[str] = mapped_column(String(32))
    owner_id: Mapped[int] = mapped_column(ForeignKey(hub_orm.User.id, ondelete="CASCADE"), index=True)
    workspace_id: Mapped[int | None] = mapped_column(Integer, index=True, default=None)
    job_id: Mapped[int | None] = mapped_column(Integer, index=True, default=None)
    #: who caused it: a user's name, or "hub" for the hub's own repairs
    actor: Mapped[str] = mapped_column(String(255), default="hub")
    status: Mapped[str | None] = mapped_column(String(32), default=None)
    previous: Mapped[str | None] = mapped_column(String(32), default=None)
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: a notification's: when its recipient marked it read, and dismissed it (hidden)
    read_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    dismissed_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)

    def __repr__(self) -> str:
        return f"<Event {self.id} {self.kind} job={self.job_id} ws={self.workspace_id} {self.status}>"


class Share(Base):
    """A workspace shared by its owner: a live collaboration, or a copy sent to someone.

    ``kind`` "collaborate": with a user or a hub group, at ``level`` "viewer"
    or "editor"; ``status`` is "accepted" from the start. ``kind`` "copy": to
    a user, ``status`` "pending" until they accept or decline; an accepted
    copy is made in the background (``copy_state`` queued → copying →
    placing → done, or failed with ``copy_error``).
    """

    __tablename__ = "uws_shares"
    __table_args__ = (
        # one collaboration per workspace and grantee (sharing again changes the level)
        *(
            Index(
                f"uq_uws_shares_collaborate_{column}",
                "workspace_id",
                column,
                unique=True,
                sqlite_where=text(f"kind = 'collaborate' AND {column} IS NOT NULL"),
                postgresql_where=text(f"kind = 'collaborate' AND {column} IS NOT NULL"),
            )
            for column in ("user_id", "group_id")
        ),
        # its id names its URLs, events and interrupted copy: never reused
        NEVER_REUSED,
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("uws_workspaces.id", ondelete="CASCADE"), index=True)
    #: the workspace's owner, who shares it
    owner_id: Mapped[int] = mapped_column(ForeignKey(hub_orm.User.id, ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    level: Mapped[str | None] = mapped_column(String(16), default=None)
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey(hub_orm.User.id, ondelete="CASCADE"), index=True, default=None
    )
    group_id: Mapped[int | None] = mapped_column(
        ForeignKey(hub_orm.Group.id, ondelete="CASCADE"), index=True, default=None
    )
    status: Mapped[str] = mapped_column(String(16))
    created_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    responded_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    copy_name: Mapped[str | None] = mapped_column(String(255), default=None)
    copy_slug: Mapped[str | None] = mapped_column(String(63), default=None)
    copy_state: Mapped[str | None] = mapped_column(String(16), index=True, default=None)
    copy_attempts: Mapped[int] = mapped_column(Integer, default=0)
    copy_error: Mapped[str | None] = mapped_column(Text, default=None)
    copy_bytes: Mapped[int | None] = mapped_column(BigInteger, default=None)
    #: the recipient's new workspace (no foreign key: it lives on without the share)
    copy_workspace_id: Mapped[int | None] = mapped_column(Integer, default=None)

    workspace: Mapped[Workspace] = relationship(back_populates="shares")
    user: Mapped[hub_orm.User | None] = relationship(hub_orm.User, foreign_keys=[user_id])
    group: Mapped[hub_orm.Group | None] = relationship(hub_orm.Group)

    def __repr__(self) -> str:
        return f"<Share {self.id} {self.kind} ws={self.workspace_id} {self.status}>"

    @property
    def recipient(self) -> hub_orm.User:
        """The user a copy is sent to (a copy always has one; a collaboration may be a group's)."""
        if self.user is None:
            raise ValueError(f"share {self.id} has no recipient user")
        return self.user

    @staticmethod
    def _grantee(user_id: int) -> ColumnElement[bool]:
        return or_(
            Share.user_id == user_id,
            Share.group_id.in_(
                select(hub_orm.user_group_map.c.group_id).where(hub_orm.user_group_map.c.user_id == user_id)
            ),
        )

    @classmethod
    def levels_of(cls, db: Session, workspace_id: int, user_id: int) -> set[str]:
        """The levels at which a workspace is shared with a user, directly or through groups."""
        return set(
            db.scalars(
                select(cls.level).where(
                    cls.workspace_id == workspace_id, cls.kind == ShareKind.collaborate.value, cls._grantee(user_id)
                )
            )
        )

    @classmethod
    def levels_by_workspace(cls, db: Session, workspace_ids: list[int], user_id: int) -> dict[int, set[str]]:
        """:meth:`levels_of` for many workspaces at once (one query, for a page of a list)."""
        found: dict[int, set[str]] = {}
        if not workspace_ids:
            return found
        rows = db.execute(
            select(cls.workspace_id, cls.level).where(
                cls.workspace_id.in_(workspace_ids), cls.kind == ShareKind.collaborate.value, cls._grantee(user_id)
            )
        )
        for workspace_id, level in rows:
            if level is not None:
                found.setdefault(workspace_id, set()).add(level)
        return found

    @classmethod
    def shared_with(cls, user_id: int, levels: Iterable[str]):
        """SELECT of the ids of workspaces shared with a user at one of ``levels``."""
        return select(cls.workspace_id).where(
            cls.kind == ShareKind.collaborate.value, cls.level.in_(list(levels)), cls._grantee(user_id)
        )


class QuotaOverride(Base):
    """An admin's quota limits for one user or one group (None: not overridden)."""

    __tablename__ = "uws_quota_overrides"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey(hub_orm.User.id, ondelete="CASCADE"), unique=True, default=None
    )
    group_id: Mapped[int | None] = mapped_column(
        ForeignKey(hub_orm.Group.id, ondelete="CASCADE"), unique=True, default=None
    )
    disk_bytes: Mapped[int | None] = mapped_column(BigInteger, default=None)
    core_seconds: Mapped[int | None] = mapped_column(BigInteger, default=None)
    concurrent_jobs: Mapped[int | None] = mapped_column(Integer, default=None)
    max_cpus: Mapped[int | None] = mapped_column(Integer, default=None)
    max_memory_bytes: Mapped[int | None] = mapped_column(BigInteger, default=None)
    max_gpus: Mapped[int | None] = mapped_column(Integer, default=None)
    updated_by: Mapped[str] = mapped_column(String(255), default="hub")
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class Usage(Base):
    """A user's measured core-hour usage in the current quota period, and warnings sent."""

    __tablename__ = "uws_usage"

    user_id: Mapped[int] = mapped_column(ForeignKey(hub_orm.User.id, ondelete="CASCADE"), primary_key=True)
    period_start: Mapped[datetime] = mapped_column(DateTime)
    core_seconds: Mapped[int] = mapped_column(BigInteger, default=0)
    measured_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    #: the period a core-hour warning was sent for
    core_warned_period: Mapped[datetime | None] = mapped_column(DateTime, default=None)
    #: when a disk warning was sent (cleared once usage drops below the threshold)
    disk_warned_at: Mapped[datetime | None] = mapped_column(DateTime, default=None)


class EndedCoreUsage(Base):
    """The core-hours of a user's ended jobs in one quota period, kept as they end: what
    a launch's core-hour check adds its running jobs' time to, instead of reading every
    job of the period (a burst of N jobs cost N² rows read).

    Exact, and so across hub restarts: the hub adds a job's part in the same
    transaction as its end (:meth:`uws_hub.quotas.service.QuotaService.record_job_end`);
    the row is (re)made from the jobs by the first end that finds it missing or of
    another period (the first end of a period or under a changed
    ``UWSHub.quota_period``), or by a deletion of ended jobs (a job, a workspace) before
    they go. Until then a check sums the jobs (a check only reads). Deleting jobs never
    takes their run time out of it: the compute was consumed, the row is what remembers
    it (:meth:`uws_hub.quotas.service.QuotaService.keep_ended_usage`).
    """

    __tablename__ = "uws_ended_core_usage"

    user_id: Mapped[int] = mapped_column(ForeignKey(hub_orm.User.id, ondelete="CASCADE"), primary_key=True)
    #: ``UWSHub.quota_period`` and the start of the period the sum is of
    period: Mapped[str] = mapped_column(String(16))
    period_start: Mapped[datetime] = mapped_column(DateTime)
    #: cpus × microseconds (integers: a sum of any number of jobs is exact)
    core_microseconds: Mapped[int] = mapped_column(BigInteger, default=0)


class DiskReservation(Base):
    """Bytes that a user's writes in progress (uploads, seed files, copies) hold
    against their disk quota, beside the measured usage of their workspaces.

    One row per user: :class:`uws_hub.quotas.service.QuotaService` changes it only while
    holding the row's lock, so parallel writes cannot each see the same free room.
    A write turns its part into its workspace's usage when it completes and gives
    it back when it fails; no write survives a hub restart, so the hub empties
    the table when it starts.
    """

    __tablename__ = "uws_disk_reservations"

    user_id: Mapped[int] = mapped_column(ForeignKey(hub_orm.User.id, ondelete="CASCADE"), primary_key=True)
    reserved_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
