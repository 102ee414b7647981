"""A throwaway PostgreSQL server for the tests (Debian's postgresql package).

Started as the ``postgres`` system account in a temporary directory, on a free
port, with trust authentication on 127.0.0.1 only.
"""

from __future__ import annotations

import glob
import shutil
import subprocess
from pathlib import Path

from .hubutil import free_port, wait_for


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"{name} not found: install Debian's postgresql (make install-test)")
    return found[-1]


class PostgresServer:
    def __init__(self, datadir: Path):
        self.datadir = datadir
        self.port = free_port()

    def _as_postgres(self, *cmd: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["runuser", "-u", "postgres", "--", *cmd], check=True, capture_output=True, text=True, **kw
        )

    def start(self) -> None:
        shutil.chown(self.datadir, "postgres", "postgres")
        self.datadir.chmod(0o700)
        pgdata = str(self.datadir / "data")
        self._as_postgres(_pg_bin("initdb"), "-D", pgdata, "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self._as_postgres(
            _pg_bin("pg_ctl"),
            "-D",
            pgdata,
            "-l",
            str(self.datadir / "server.log"),
            "-w",
            "-o",
            f"-p {self.port} -k {self.datadir} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        )
        wait_for(self._ready, 30, what="PostgreSQL to accept connections")

    def _ready(self) -> bool:
        try:
            self.psql("SELECT 1")
            return True
        except subprocess.CalledProcessError:
            return False

    def psql(self, sql: str, db: str = "postgres") -> str:
        return self._as_postgres(
            "psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", db, "-tAc", sql
        ).stdout

    def create_database(self, name: str) -> str:
        self.psql(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                _pg_bin("pg_ctl"),
                "-D",
                str(self.datadir / "data"),
                "-m",
                "fast",
                "stop",
            ],
            capture_output=True,
        )
        shutil.rmtree(self.datadir, ignore_errors=True)
