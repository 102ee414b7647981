"""A throwaway OpenLDAP server for the tests (Debian's slapd and ldap-utils).

Generated ``slapd.conf`` in a temporary directory, an mdb database loaded with
``slapadd``, listening on 127.0.0.1 on a free port. Anonymous clients may only
bind; bound users read the directory; passwords are readable by nobody.

The small directory (``dc=example,dc=org``):

- ``ou=people``: ``ldapalice`` (researchers), ``ldapbob`` (no group),
  ``ldapcarol`` (hubadmins and researchers), ``ldapdave`` (researchers
  through the posixGroup's memberUid only), ``ldapeve`` (researchers, and the
  same password as alice: names must not mix up);
- ``ou=groups``: ``cn=researchers`` (groupOfNames), ``cn=hubadmins``
  (groupOfNames), ``cn=posix-researchers`` (posixGroup with memberUid);
- ``ou=services``: ``cn=hub``, the account the hub searches with.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import textwrap
from pathlib import Path

from .hubutil import free_port, wait_for

BASE_DN = "dc=example,dc=org"
PEOPLE = f"ou=people,{BASE_DN}"
GROUPS = f"ou=groups,{BASE_DN}"
SEARCH_DN = f"cn=hub,ou=services,{BASE_DN}"
SEARCH_PASSWORD = "hub-search-password"
ROOT_DN = f"cn=admin,{BASE_DN}"
ROOT_PASSWORD = "root-password"

#: uid -> (password, uidNumber, cn, mail)
PEOPLE_ENTRIES = {
    "ldapalice": ("alice-password", 20001, "Alice Ldap", "alice@example.org"),
    "ldapbob": ("bob-password", 20002, "Bob Ldap", "bob@example.org"),
    "ldapcarol": ("carol-password", 20003, "Carol Ldap", "carol@example.org"),
    "ldapdave": ("dave pass (with) *stars*", 20004, "Dave Ldap", "dave@example.org"),
    "ldapeve": ("alice-password", 20005, "Eve Ldap", "eve@example.org"),
}


def user_dn(uid: str) -> str:
    return f"uid={uid},{PEOPLE}"


def person_ldif(uid: str) -> str:
    password, number, cn, mail = PEOPLE_ENTRIES[uid]
    return textwrap.dedent(
        f"""\
        dn: {user_dn(uid)}
        objectClass: inetOrgPerson
        objectClass: posixAccount
        uid: {uid}
        cn: {cn}
        sn: Ldap
        mail: {mail}
        uidNumber: {number}
        gidNumber: 30000
        homeDirectory: /home/{uid}
        loginShell: /bin/bash
        userPassword: {password}
        """
    )


def directory_ldif() -> str:
    entries = [
        f"dn: {BASE_DN}\nobjectClass: top\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n",
        f"dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n",
        f"dn: {GROUPS}\nobjectClass: organizationalUnit\nou: groups\n",
        f"dn: ou=services,{BASE_DN}\nobjectClass: organizationalUnit\nou: services\n",
        f"dn: {SEARCH_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\ncn: hub\n"
        f"userPassword: {SEARCH_PASSWORD}\n",
    ]
    entries += [person_ldif(uid) for uid in PEOPLE_ENTRIES]
    entries += [
        f"dn: cn=researchers,{GROUPS}\nobjectClass: groupOfNames\ncn: researchers\n"
        f"member: {user_dn('ldapalice')}\nmember: {user_dn('ldapcarol')}\nmember: {user_dn('ldapeve')}\n",
        f"dn: cn=hubadmins,{GROUPS}\nobjectClass: groupOfNames\ncn: hubadmins\nmember: {user_dn('ldapcarol')}\n",
        f"dn: cn=posix-researchers,{GROUPS}\nobjectClass: posixGroup\ncn: posix-researchers\ngidNumber: 30001\n"
        "memberUid: ldapdave\n",
    ]
    return "\n".join(entries)


class SlapdServer:
    def __init__(self, workdir: Path, people_private: bool = False):
        """``people_private``: people's entries are theirs alone to read (the search
        account reads groups only), as some directories keep them."""
        self.workdir = workdir
        self.people_private = people_private
        self.port = free_port()
        self.url = f"ldap://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    @property
    def conf(self) -> Path:
        return self.workdir / "slapd.conf"

    def write_config(self) -> None:
        people_acl = (
            f'access to dn.subtree="{PEOPLE}"\n    by self read\n    by * none\n' if self.people_private else ""
        )
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(
            textwrap.dedent(
                f"""\
                include /etc/ldap/schema/core.schema
                include /etc/ldap/schema/cosine.schema
                include /etc/ldap/schema/nis.schema
                include /etc/ldap/schema/inetorgperson.schema
                modulepath /usr/lib/ldap
                moduleload back_mdb
                pidfile {self.workdir}/slapd.pid
                argsfile {self.workdir}/slapd.args

                database mdb
                maxsize 67108864
                suffix "{BASE_DN}"
                rootdn "{ROOT_DN}"
                rootpw {ROOT_PASSWORD}
                directory {data}
                index objectClass,uid,member,memberUid eq

                access to attrs=userPassword
                    by anonymous auth
                    by * none
                # people
                access to *
                    by users read
                    by * none
                """
            ).replace("# people\n", people_acl)
        )

    def start(self) -> None:
        if shutil.which("slapd") is None and not Path("/usr/sbin/slapd").exists():
            raise RuntimeError("slapd not found: install Debian's slapd and ldap-utils (make install-test)")
        self.write_config()
        ldif = self.workdir / "directory.ldif"
        ldif.write_text(directory_ldif())
        subprocess.run(["/usr/sbin/slapadd", "-f", str(self.conf), "-l", str(ldif)], check=True, capture_output=True)
        log = open(self.workdir / "slapd.log", "wb")
        # -d keeps slapd in the foreground (so the test owns the process)
        self.proc = subprocess.Popen(
            ["/usr/sbin/slapd", "-f", str(self.conf), "-h", f"{self.url}/", "-d", "none"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        wait_for(self._ready, 30, what="slapd to accept connections")

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"slapd exited: {(self.workdir / 'slapd.log').read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                pass
        except OSError:
            return False
        return self.search("(uid=ldapalice)").returncode == 0

    def search(self, flt: str, *attrs: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["ldapsearch", "-x", "-H", self.url, "-D", SEARCH_DN, "-w", SEARCH_PASSWORD, "-b", BASE_DN, flt, *attrs],
            capture_output=True,
            text=True,
        )

    def remove(self, uid: str) -> None:
        """Delete a person's entry (a person who left)."""
        subprocess.run(["ldapdelete", *self._as_root(), user_dn(uid)], check=True, capture_output=True)

    def add(self, uid: str) -> None:
        """Add a person's entry as it was at the start (with a new ``entryUUID``)."""
        subprocess.run(
            ["ldapadd", *self._as_root()], input=person_ldif(uid), text=True, check=True, capture_output=True
        )

    def make_again(self, uid: str) -> None:
        """Delete a person's entry and add it again, as it was (a new ``entryUUID``): what a
        directory's admin does to give a departed person's ``uid`` to a newcomer."""
        self.remove(uid)
        self.add(uid)

    def rename(self, dn: str, new_rdn: str) -> str:
        """Rename an entry (its attributes stay, its DN changes, as on an OU move): the new DN."""
        subprocess.run(["ldapmodrdn", *self._as_root(), dn, new_rdn], check=True, capture_output=True)
        return f"{new_rdn},{dn.split(',', 1)[1]}"

    def _as_root(self) -> list[str]:
        return ["-x", "-H", self.url, "-D", ROOT_DN, "-w", ROOT_PASSWORD]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)
