"""Notifications: stored as events of kind ``notification``, and e-mailed.

A notification is an :class:`~uws_hub.orm.Event` whose ``owner_id`` is the
recipient (so the event streams and the pages show it to them, and to
admins), with the text in ``reason`` and ``subject``/``link`` in ``data``.
Like every event it is published only once its transaction commits; only
then is it handed to the mail sender, so a change that was rolled back sends
no mail.

Mail goes through the SMTP server of ``UWSHub.smtp_host`` (none: no mail), to
the address in the recipient's ``user_info`` (:mod:`uws_hub.authenticators.identity`),
by :meth:`Notifier.send_loop` (run by the app's task pool, see
:mod:`uws_hub.tasks`), which runs :mod:`smtplib` in a thread: the hub's event
loop never waits for the mail server. Sending is best effort: a message that
the server refuses, or that is queued when the hub stops, is logged and lost;
the notification itself stays in the hub.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from jupyterhub import orm as hub_orm
from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.orm import Session

from ..authenticators.identity import display_name_of, email_of
from ..errors import NotFound
from ..orm import Event, isoformat, utcnow
from .bus import EventBus, event_model


@dataclass(frozen=True)
class SMTPSettings:
    host: str
    port: int
    sender: str
    tls: str = "none"  # "none", "starttls" or "ssl"
    username: str = ""
    password: str = ""
    timeout_seconds: float = 30.0


@dataclass(frozen=True)
class Mail:
    to: str
    subject: str
    body: str


def send_mail(settings: SMTPSettings, mail: Mail) -> None:
    """Send one message (blocking)."""
    msg = EmailMessage()
    msg["From"] = settings.sender
    msg["To"] = mail.to
    msg["Subject"] = mail.subject
    msg.set_content(mail.body)
    if settings.tls == "ssl":
        server: smtplib.SMTP = smtplib.SMTP_SSL(
            settings.host, settings.port, timeout=settings.timeout_seconds, context=ssl.create_default_context()
        )
    else:
        server = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout_seconds)
    with server:
        if settings.tls == "starttls":
            server.starttls(context=ssl.create_default_context())
        if settings.username:
            server.login(settings.username, settings.password)
        server.send_message(msg)


class Notifier:
    def __init__(
        self,
        db: Session,
        events: EventBus,
        log: logging.Logger,
        *,
        smtp: SMTPSettings | None,
        hub_url: str,
    ):
        self.db = db
        self.events = events
        self.log = log
        self.smtp = smtp
        #: the hub's public URL with its prefix (``https://hub.example.org/hub/``): links are relative to it
        self.hub_url = hub_url.rstrip("/") + "/"
        self._outbox: asyncio.Queue[Mail] = asyncio.Queue()
        #: messages sent and failed since the start (for metrics and tests)
        self.sent = 0
        self.failed = 0
        events.listeners.append(self._on_event)

    def notify(
        self,
        recipient: hub_orm.User,
        subject: str,
        message: str,
        *,
        actor: str = "hub",
        link: str | None = None,  # relative to the hub's prefix, e.g. "workspaces/12"
        data: dict[str, Any] | None = None,
    ) -> None:
        """Record a notification for ``recipient`` in the session (sent when it commits)."""
        self.events.change(
            self.db,
            "notification",
            owner_id=recipient.id,
            actor=actor,
            reason=message,
            data={"subject": subject, "link": link, **(data or {})},
        )

    # ---------------------------------------------------------------- the recipient's list
    def _of(self, recipient: hub_orm.User) -> ColumnElement[bool]:
        """The recipient's notifications that they have not dismissed."""
        return and_(Event.kind == "notification", Event.owner_id == recipient.id, Event.dismissed_at.is_(None))

    def listed(self, recipient: hub_orm.User, *, unread: bool, offset: int, limit: int) -> tuple[list[Event], int]:
        """A page of the recipient's notifications, newest first, and how many there are."""
        where = self._of(recipient)
        if unread:
            where = and_(where, Event.read_at.is_(None))
        total = self.db.scalar(select(func.count(Event.id)).where(where)) or 0
        rows = self.db.scalars(select(Event).where(where).order_by(Event.id.desc()).offset(offset).limit(limit))
        return list(rows), total

    def unread(self, recipient: hub_orm.User) -> int:
        return self.db.scalar(select(func.count(Event.id)).where(self._of(recipient), Event.read_at.is_(None))) or 0

    def find(self, recipient: hub_orm.User, event_id: int) -> Event:
        """One of the recipient's notifications (also a dismissed one); NotFound for anyone else's."""
        event = self.db.get(Event, event_id)
        if event is None or event.kind != "notification" or event.owner_id != recipient.id:
            raise NotFound(f"No such notification: {event_id}")
        return event

    def mark_read(self, event: Event) -> Event:
        """Mark a notification read (again: it stays read when it was)."""
        if event.read_at is None:
            event.read_at = utcnow()
            self.db.commit()
        return event

    def dismiss(self, event: Event) -> Event:
        """Hide a notification from its recipient's lists (it is read, too)."""
        now = utcnow()
        event.read_at = event.read_at or now
        event.dismissed_at = event.dismissed_at or now
        self.db.commit()
        return event

    # ---------------------------------------------------------------- mail
    def _on_event(self, event: dict) -> None:
        if event["kind"] != "notification" or self.smtp is None:
            return
        user = self.db.get(hub_orm.User, event["owner_id"])
        address = email_of(user.user_info) if user is not None else None
        if user is None or not address:
            return
        data = event["data"]
        body = f"Hello {display_name_of(user.user_info, user.name)},\n\n{event['reason']}\n"
        if data.get("link"):
            body += f"\n{self.hub_url}{data['link']}\n"
        self._outbox.put_nowait(Mail(address, data.get("subject") or "uws-hub", body))

    async def send_loop(self) -> None:
        """Mail what is queued, one message at a time, until cancelled (with an SMTP host only)."""
        assert self.smtp is not None
        while True:
            mail = await self._outbox.get()
            try:
                await asyncio.to_thread(send_mail, self.smtp, mail)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.failed += 1
                self.log.error("Could not mail %r to %s: %s", mail.subject, mail.to, e)
            else:
                self.sent += 1
                self.log.info("Mailed %r to %s", mail.subject, mail.to)


def notification_model(event: Event) -> dict[str, Any]:
    """A notification as the API shows it: the event, and whether it was read or dismissed."""
    return {**event_model(event), "read_at": isoformat(event.read_at), "dismissed_at": isoformat(event.dismissed_at)}
