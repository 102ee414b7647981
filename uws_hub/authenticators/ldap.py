"""Log in against an LDAP directory (OpenLDAP, 389-ds, Active Directory) with ldap3.

Entry point ``uws-ldap`` (needs the ``ldap`` extra: ``pip install uws-hub[ldap]``).

A login:

1. finds the user's DN: either a search with a service account
   (:attr:`~WorkspaceLDAPAuthenticator.lookup_dn`, the usual setup) or the
   :attr:`~WorkspaceLDAPAuthenticator.bind_dn_template` list;
2. binds as that DN with the password (a failed bind is a wrong password);
3. reads the user's attributes (uid and gid numbers, home, email, display
   name) and their groups (``member``/``uniqueMember`` of groupOfNames and
   groupOfUniqueNames, ``memberUid`` of posixGroup);
4. lets them in if allowed (:attr:`allowed_groups`, ``allowed_users``,
   ``allow_all``), as an admin if in :attr:`admin_groups`.

The attributes go to JupyterHub's ``user_info`` (email, display name,
``external_ids["ldap"]``) and, for the spawner, to the encrypted
``auth_state["ldap"]`` (``dn``, ``uid``, ``uid_number``, ``gid_number``,
``home``, ``email``, ``groups``): a spawner reads them in its
``auth_state_hook``, and :attr:`pass_attributes_to_jobs` hands them to jobs as
``UWS_LDAP_*`` environment variables.

An unreachable directory fails the login closed with "The directory (LDAP) is
not available right now"; the hub keeps running. ldap3 blocks, so every LDAP
exchange runs in a thread.

The filter and DN building is in pure functions (:func:`user_search_filter`,
:func:`group_search_filter`, :func:`dn_key`) tested without a server.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

import ldap3
from ldap3.core import exceptions as ldap_exc
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn, parse_dn
from tornado import web
from traitlets import Bool, Float, Integer, List, Unicode, default, validate

from .identity import external_ids_of, make_user_info
from .jobenv import JobEnvironmentMixin
from .sameperson import PersonChanged, SamePersonMixin

# ---------------------------------------------------------------- pure helpers


def user_search_filter(template: str, attribute: str, username: str) -> str:
    """The filter that finds a user: ``template`` with ``{attribute}`` and an escaped ``{username}``
    (``*``, ``(``, ``)``, ``\\`` and NUL become ``\\2a`` etc., so a name cannot widen the search)."""
    return template.format(attribute=attribute, username=escape_filter_chars(username))


def group_search_filter(template: str, user_dn: str, username: str) -> str:
    """The filter that finds a user's groups, with ``{userdn}`` and ``{username}`` escaped."""
    return template.format(userdn=escape_filter_chars(user_dn), username=escape_filter_chars(username))


def bind_dn(template: str, username: str) -> str:
    """A DN from a template such as ``uid={username},ou=people,dc=example,dc=org``."""
    return template.format(username=escape_rdn(username))


def dn_key(dn: str) -> str:
    """A DN in a form to compare with: attribute types and values lower-cased, spaces trimmed."""
    try:
        parts = parse_dn(dn, escape=False, strip=True)
    except ldap_exc.LDAPInvalidDnError:
        return dn.strip().lower()
    return ",".join(f"{attr.lower()}={value.lower()}" for attr, value, _sep in parts)


def first(value: Any) -> Any:
    """The first value of a (possibly multi-valued) attribute, or None."""
    if isinstance(value, (list, tuple)):
        return value[0] if value else None
    return value if value not in ("", b"") else None


@dataclass
class DirectoryUser:
    """What the directory says about a user who bound successfully."""

    dn: str
    attributes: dict[str, Any]
    #: (group DN, group cn)
    groups: list[tuple[str, str]] = field(default_factory=list)
    #: whether the account that read the entry saw it (a search account without read
    #: rights on people's entries sees none of them, as if they did not exist)
    visible: bool = True


class DirectoryUnavailable(web.HTTPError):
    """The directory could not be reached: the login fails with this message."""

    def __init__(self, message: str):
        super().__init__(503, "%s", message)
        self.jupyterhub_message = message


# ---------------------------------------------------------------- the authenticator


class WorkspaceLDAPAuthenticator(SamePersonMixin, JobEnvironmentMixin):
    """Check user names and passwords against an LDAP directory."""

    server_address = Unicode(
        config=True,
        help="""Host name or IP address of the LDAP server, e.g. ``ldap.example.org``.

        Required.

        .. versionadded:: 0.2
        """,
    )

    server_port = Integer(
        config=True,
        help="""Port of the LDAP server; default 636 with :attr:`use_ssl`, else 389.

        .. versionadded:: 0.2
        """,
    )

    @default("server_port")
    def _default_server_port(self):
        return 636 if self.use_ssl else 389

    use_ssl = Bool(
        False,
        config=True,
        help="""Connect with TLS from the start (``ldaps://``). See also :attr:`start_tls`.

        .. versionadded:: 0.2
        """,
    )

    start_tls = Bool(
        False,
        config=True,
        help="""Upgrade a plain connection with StartTLS before sending any password.

        .. versionadded:: 0.2
        """,
    )

    tls_ca_file = Unicode(
        "",
        config=True,
        help="""File of CA certificates (PEM) to check the server's certificate with; empty: the system's.

        .. versionadded:: 0.2
        """,
    )

    tls_validate = Bool(
        True,
        config=True,
        help="""Check the server's TLS certificate. Turn off only to test.

        .. versionadded:: 0.2
        """,
    )

    connect_timeout_seconds = Float(
        5.0,
        config=True,
        help="""Seconds to wait for the connection to the LDAP server.

        .. versionadded:: 0.2
        """,
    )

    receive_timeout_seconds = Integer(
        10,
        config=True,
        help="""Seconds to wait for each answer of the LDAP server (whole seconds).

        .. versionadded:: 0.2
        """,
    )

    lookup_dn = Bool(
        False,
        config=True,
        help="""Find the user's DN with a search (as :attr:`search_bind_dn`) instead of
        :attr:`bind_dn_template`.

        The search looks under :attr:`user_search_base` with
        :attr:`user_search_filter`; exactly one entry must match.

        .. versionadded:: 0.2
        """,
    )

    bind_dn_template = List(
        Unicode(),
        config=True,
        help="""DN templates to bind with when :attr:`lookup_dn` is off, tried in order;
        ``{username}`` is replaced by the (escaped) user name. Example::

            c.WorkspaceLDAPAuthenticator.bind_dn_template = [
                "uid={username},ou=people,dc=example,dc=org",
                "uid={username},ou=guests,dc=example,dc=org",
            ]

        .. versionadded:: 0.2
        """,
    )

    search_bind_dn = Unicode(
        "",
        config=True,
        help="""DN of the account the hub searches the directory with (for :attr:`lookup_dn`
        and group lookups); empty: search as the user who logs in.

        .. versionadded:: 0.2
        """,
    )

    search_bind_password = Unicode(
        "",
        config=True,
        help="""Password of :attr:`search_bind_dn` (keep it out of the config file:
        ``os.environ["LDAP_SEARCH_PASSWORD"]``).

        .. versionadded:: 0.2
        """,
    )

    user_search_base = Unicode(
        "",
        config=True,
        help="""Where users are, e.g. ``ou=people,dc=example,dc=org`` (for :attr:`lookup_dn`).

        .. versionadded:: 0.2
        """,
    )

    user_attribute = Unicode(
        "uid",
        config=True,
        help="""Attribute holding the user name (``uid``; ``sAMAccountName`` on Active Directory).

        .. versionadded:: 0.2
        """,
    )

    user_search_filter = Unicode(
        "({attribute}={username})",
        config=True,
        help="""Filter that finds a user, with ``{attribute}`` (:attr:`user_attribute`) and
        ``{username}`` (escaped). E.g. ``"(&(objectClass=posixAccount)({attribute}={username}))"``.

        .. versionadded:: 0.2
        """,
    )

    group_search_base = Unicode(
        "",
        config=True,
        help="""Where groups are, e.g. ``ou=groups,dc=example,dc=org``; empty: groups are not
        looked up (then :attr:`allowed_groups` and :attr:`admin_groups` cannot match).

        .. versionadded:: 0.2
        """,
    )

    group_search_filter = Unicode(
        "(|(member={userdn})(uniqueMember={userdn})(memberUid={username}))",
        config=True,
        help="""Filter that finds the groups of a user, with ``{userdn}`` and ``{username}`` (escaped).

        The default covers groupOfNames, groupOfUniqueNames and posixGroup.

        .. versionadded:: 0.2
        """,
    )

    allowed_groups = List(
        Unicode(),
        config=True,
        help="""DNs of the groups whose members may log in, e.g.
        ``["cn=researchers,ou=groups,dc=example,dc=org"]``.

        Members of :attr:`admin_groups`, names in ``allowed_users`` and
        ``admin_users`` may log in too; ``allow_all = True`` lets in everyone who
        binds. With none of these, nobody may log in.

        .. versionadded:: 0.2
        """,
    )

    admin_groups = List(
        Unicode(),
        config=True,
        help="""DNs of the groups whose members are hub admins.

        When set, a user in none of them loses admin rights at login (unless
        listed in ``admin_users``).

        .. versionadded:: 0.2
        """,
    )

    uid_number_attribute = Unicode(
        "uidNumber",
        config=True,
        help="""Attribute with the user's numeric uid (``auth_state["ldap"]["uid_number"]``).

        .. versionadded:: 0.2
        """,
    )

    gid_number_attribute = Unicode(
        "gidNumber",
        config=True,
        help="""Attribute with the user's numeric primary gid (``auth_state["ldap"]["gid_number"]``).

        .. versionadded:: 0.2
        """,
    )

    home_attribute = Unicode(
        "homeDirectory",
        config=True,
        help="""Attribute with the user's home directory (``auth_state["ldap"]["home"]``).

        .. versionadded:: 0.2
        """,
    )

    email_attribute = Unicode(
        "mail",
        config=True,
        help="""Attribute with the user's email address (``user_info["email"]``).

        .. versionadded:: 0.2
        """,
    )

    display_name_attribute = Unicode(
        "cn",
        config=True,
        help="""Attribute with the name to show for the user (``user_info["display_name"]``),
        e.g. ``cn`` or ``displayName``.

        .. versionadded:: 0.2
        """,
    )

    id_attribute = Unicode(
        "entryUUID",
        config=True,
        help="""Attribute with a stable id of the user (``user_info["external_ids"]["ldap"]``);
        ``entryUUID`` (OpenLDAP), ``objectGUID`` (Active Directory), ``nsUniqueId`` (389-ds).

        An entry without it has no stable id: its DN is kept in ``user_info["ldap_dn"]``
        but binds nothing (a DN changes when the entry moves or is renamed), so
        :attr:`bind_names_to_external_ids` cannot tell its person from a newcomer given
        the same name. Set it to an attribute your directory has.

        .. versionadded:: 0.2
        """,
    )

    valid_username_regex = Unicode(
        r"^[a-z][.a-z0-9_-]*$",
        config=True,
        help="""User names (lower-cased) must match this before anything is sent to the directory.

        .. versionadded:: 0.2
        """,
    )

    pass_attributes_to_jobs = Bool(
        False,
        config=True,
        help="""Hand the user's directory attributes to jobs as environment variables:
        ``UWS_LDAP_DN``, ``UWS_LDAP_UID_NUMBER``, ``UWS_LDAP_GID_NUMBER``,
        ``UWS_LDAP_HOME``, ``UWS_LDAP_EMAIL``.

        Off by default. Needs ``enable_auth_state``.

        .. versionadded:: 0.2
        """,
    )

    @validate("allowed_groups", "admin_groups")
    def _validate_group_dns(self, proposal):
        for dn in proposal.value:
            try:
                parse_dn(dn, strip=True)
            except ldap_exc.LDAPInvalidDnError:
                raise ValueError(f"{proposal.trait.name}: {dn!r} is not a DN") from None
        return proposal.value

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        #: user name -> when a refresh last said they are out (time.monotonic())
        self._refused: dict[str, float] = {}
        #: user name -> the refresh under way (shared by the user's concurrent requests)
        self._refreshing: dict[str, asyncio.Future[bool]] = {}

    # ---------------------------------------------------------------- connections
    def _server(self) -> ldap3.Server:
        tls = None
        if self.use_ssl or self.start_tls:
            tls = ldap3.Tls(
                validate=ssl.CERT_REQUIRED if self.tls_validate else ssl.CERT_NONE,
                ca_certs_file=self.tls_ca_file or None,
            )
        return ldap3.Server(
            self.server_address,
            port=self.server_port,
            use_ssl=self.use_ssl,
            tls=tls,
            connect_timeout=self.connect_timeout_seconds,
            get_info=ldap3.NONE,
        )

    def _connect(self, server: ldap3.Server, dn: str, password: str) -> ldap3.Connection | None:
        """A connection bound as ``dn``, or None if the password is wrong (blocking)."""
        conn = ldap3.Connection(
            server,
            user=dn,
            password=password,
            receive_timeout=self.receive_timeout_seconds,
            raise_exceptions=False,
            read_only=True,
        )
        conn.open()
        if self.start_tls and not self.use_ssl:
            conn.start_tls()
        if not conn.bind():
            conn.unbind()
            return None
        return conn

    def _attribute_names(self) -> list[str]:
        names = [
            self.user_attribute,
            self.uid_number_attribute,
            self.gid_number_attribute,
            self.home_attribute,
            self.email_attribute,
            self.display_name_attribute,
            self.id_attribute,
        ]
        return sorted({n for n in names if n})

    def find_user(self, username: str, password: str) -> DirectoryUser | None:
        """Bind as the user and read what the directory says about them (blocking).

        None for a wrong password or an unknown user; :class:`DirectoryUnavailable`
        when the directory cannot be reached.
        """
        server = self._server()
        searcher = None
        try:
            if self.search_bind_dn:
                searcher = self._connect(server, self.search_bind_dn, self.search_bind_password)
                if searcher is None:
                    self.log.error(
                        "LDAP: the search account %s cannot bind (wrong search_bind_password?)", self.search_bind_dn
                    )
                    raise DirectoryUnavailable(
                        "The directory (LDAP) refused the hub's own account: ask the hub's administrators."
                    )
            if self.lookup_dn:
                candidates = self._lookup_dn(searcher, username)
            else:
                candidates = [bind_dn(t, username) for t in self.bind_dn_template]
            user_conn = dn = None
            for dn in candidates:
                user_conn = self._connect(server, dn, password)
                if user_conn is not None:
                    break
            if user_conn is None or dn is None:
                return None
            try:
                return self._read_entry(searcher or user_conn, dn, username)[1]
            finally:
                user_conn.unbind()
        except ldap_exc.LDAPException as e:
            self.log.error("LDAP server %s:%s is not available: %s", self.server_address, self.server_port, e)
            raise DirectoryUnavailable(
                "The directory (LDAP) is not available right now. Please try again later."
            ) from None
        finally:
            if searcher is not None:
                searcher.unbind()

    def look_up(self, username: str) -> DirectoryUser | None:
        """What the directory says now about a user who logged in, read with the search
        account (blocking): None if no entry has their name any more;
        :class:`DirectoryUnavailable` when the directory cannot be reached."""
        server = self._server()
        try:
            searcher = self._connect(server, self.search_bind_dn, self.search_bind_password)
            if searcher is None:
                raise DirectoryUnavailable("The directory (LDAP) refused the hub's own account.")
            try:
                if self.lookup_dn:
                    candidates = self._lookup_dn(searcher, username)
                else:
                    candidates = [bind_dn(t, username) for t in self.bind_dn_template]
                for dn in candidates:
                    exists, found = self._read_entry(searcher, dn, username)
                    if exists:
                        return found
                return None
            finally:
                searcher.unbind()
        except ldap_exc.LDAPException as e:
            raise DirectoryUnavailable(str(e)) from None

    def _read_entry(self, reader: ldap3.Connection, dn: str, username: str) -> tuple[bool, DirectoryUser]:
        """Whether ``reader`` finds the entry ``dn``, and its attributes (none if not) and groups."""
        reader.search(dn, "(objectClass=*)", ldap3.BASE, attributes=self._attribute_names())
        attributes = dict(reader.entries[0].entry_attributes_as_dict) if reader.entries else {}
        exists = bool(reader.entries)
        found = DirectoryUser(dn=dn, attributes=attributes, groups=self._groups(reader, dn, username), visible=exists)
        return exists, found

    def _lookup_dn(self, searcher: ldap3.Connection | None, username: str) -> list[str]:
        if searcher is None:
            self.log.error("LDAP: lookup_dn needs search_bind_dn")
            raise DirectoryUnavailable("Login is not configured on this hub: ask its administrators.")
        flt = user_search_filter(self.user_search_filter, self.user_attribute, username)
        searcher.search(self.user_search_base, flt, ldap3.SUBTREE, attributes=[self.user_attribute])
        dns = [entry.entry_dn for entry in searcher.entries]
        if len(dns) > 1:
            self.log.error(
                "LDAP: %d entries match %s under %s; refusing the login", len(dns), flt, self.user_search_base
            )
            return []
        return dns

    def _groups(self, conn: ldap3.Connection, dn: str, username: str) -> list[tuple[str, str]]:
        if not self.group_search_base:
            return []
        flt = group_search_filter(self.group_search_filter, dn, username)
        conn.search(self.group_search_base, flt, ldap3.SUBTREE, attributes=["cn"])
        return [(entry.entry_dn, str(first(entry.entry_attributes_as_dict.get("cn")) or "")) for entry in conn.entries]

    # ---------------------------------------------------------------- the auth model (pure)
    def auth_model(self, username: str, found: DirectoryUser) -> dict[str, Any]:
        attrs = found.attributes
        get = lambda name: first(attrs.get(name)) if name else None  # noqa: E731
        group_dns = [g for g, _ in found.groups]
        keys = {dn_key(g) for g in group_dns}
        model: dict[str, Any] = {
            "name": username,
            # the DN is no stable id (an OU move or a rename changes it): under its own
            # key, which SamePersonMixin does not compare; set only when the entry was read
            "user_info": make_user_info(
                "ldap",
                get(self.id_attribute),
                email=get(self.email_attribute),
                display_name=get(self.display_name_attribute),
                ldap_dn=found.dn if found.visible else None,
            ),
            "auth_state": {
                "ldap": {
                    "dn": found.dn,
                    "uid": get(self.user_attribute) or username,
                    "uid_number": _int_or_none(get(self.uid_number_attribute)),
                    "gid_number": _int_or_none(get(self.gid_number_attribute)),
                    "home": get(self.home_attribute),
                    "email": get(self.email_attribute),
                    "groups": group_dns,
                }
            },
            "groups": sorted({cn for _, cn in found.groups if cn}),
        }
        if self.admin_groups:
            model["admin"] = bool(keys & {dn_key(g) for g in self.admin_groups}) or username in self.admin_users
        return model

    # ---------------------------------------------------------------- JupyterHub's hooks
    async def authenticate(self, handler, data):
        username = self.normalize_username((data.get("username") or "").strip())
        password = data.get("password") or ""
        # an empty password would be an anonymous ("unauthenticated") bind, which succeeds
        if not username or not password:
            return None
        if not re.fullmatch(self.valid_username_regex, username):
            self.log.warning("LDAP: refusing the invalid user name %r", username)
            return None
        if not self.server_address:
            self.log.error("WorkspaceLDAPAuthenticator.server_address is not set: nobody can log in")
            raise DirectoryUnavailable("Login is not configured on this hub: ask its administrators.")
        found = await asyncio.to_thread(self.find_user, username, password)
        if found is None:
            self.log.warning("LDAP: wrong password or no such user: %s", username)
            return None
        # a new login answers afresh what an earlier refresh said no to
        self._refused.pop(username, None)
        return self.auth_model(username, found)

    async def refresh_user(self, user, handler=None):
        """A user whose entry left the directory, was made again for someone else, or left
        every allowed group, is logged out at their next refresh (JupyterHub's
        ``auth_refresh_age``, 300 s): they had kept their browser sessions (and, with
        ``auth_refresh_strict``, their API tokens) for as long as those lasted. Needs the
        search account (:attr:`search_bind_dn`), which reads the directory without the
        user's password; while the directory cannot be reached, sessions go on.

        JupyterHub asks again at every request until the answer is yes: the requests of
        one user share one look-up, and a no is remembered for ``auth_refresh_age`` (until
        the user logs in again), so that a departed user's token, or many requests while
        the directory is slow, do not each bind and search in the hub's thread pool."""
        if not self.search_bind_dn or not self.server_address:
            return True
        refused_at = self._refused.get(user.name)
        if refused_at is not None and time.monotonic() - refused_at < self.auth_refresh_age:
            return False
        pending = self._refreshing.get(user.name)
        if pending is None:
            pending = asyncio.ensure_future(self._refresh(user, handler))
            self._refreshing[user.name] = pending
            pending.add_done_callback(lambda _done, name=user.name: self._refreshing.pop(name, None))
        still_in = await asyncio.shield(pending)
        if still_in:
            self._refused.pop(user.name, None)
        else:
            self._refused[user.name] = time.monotonic()
        return still_in

    async def _refresh(self, user, handler) -> bool:
        """Whether the directory still lets ``user`` in (one look-up)."""
        try:
            found = await asyncio.to_thread(self.look_up, user.name)
        except DirectoryUnavailable as e:
            self.log.warning("LDAP: cannot refresh %s, the directory is not available (%s)", user.name, e)
            return True
        if found is None:
            if not self.lookup_dn and not _read_at_login(user.user_info):
                # the search account could not read the entry at login either (it may only
                # read groups): it cannot tell a departure from an entry it may not see
                return True
            self.log.warning("LDAP: %s is no longer in the directory: their sessions end", user.name)
            return False
        model = self.auth_model(user.name, found)
        if not await self.check_allowed(user.name, model):
            return False
        if self.bind_names_to_external_ids:
            try:
                self.check_same_person(handler, model)
            except PersonChanged:
                return False
        return True

    async def check_allowed(self, username, auth_model):
        if self.allow_all or username in self.allowed_users or username in self.admin_users:
            return True
        if auth_model is None:
            return False
        if auth_model.get("admin"):
            return True
        group_dns = ((auth_model.get("auth_state") or {}).get("ldap") or {}).get("groups") or []
        allowed = {dn_key(g) for g in self.allowed_groups} | {dn_key(g) for g in self.admin_groups}
        if allowed & {dn_key(g) for g in group_dns}:
            return True
        self.log.warning("LDAP: %s is in none of the allowed groups", username)
        return False

    def passes_to_jobs(self) -> bool:
        return self.pass_attributes_to_jobs

    def job_environment(self, auth_state: dict[str, Any]) -> dict[str, str]:
        ldap = auth_state.get("ldap") or {}
        env = {
            "UWS_LDAP_DN": ldap.get("dn"),
            "UWS_LDAP_UID_NUMBER": ldap.get("uid_number"),
            "UWS_LDAP_GID_NUMBER": ldap.get("gid_number"),
            "UWS_LDAP_HOME": ldap.get("home"),
            "UWS_LDAP_EMAIL": ldap.get("email"),
        }
        return {k: str(v) for k, v in env.items() if v is not None}


def _read_at_login(user_info: dict[str, Any] | None) -> bool:
    """Whether the login that stored ``user_info`` read the user's entry (its DN or stable
    id is there; earlier versions stored a DN in place of a missing id under ``external_ids``)."""
    info = user_info or {}
    return bool(info.get("ldap_dn")) or "ldap" in external_ids_of(info)


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
