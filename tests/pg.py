"""A throwaway PostgreSQL server for tests (Debian's ``postgresql`` package).

``initdb`` and ``pg_ctl`` refuse to run as root, so as root they run as the
``postgres`` user in a temporary folder it owns. The server listens only on a
Unix socket in that folder (``listen_addresses=''``) with ``fsync=off``; it
starts in about half a second and is removed completely by :meth:`stop`.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


def find_bindir() -> Path:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding initdb, or initdb on PATH."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if candidates:
        return Path(candidates[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise PostgresUnavailable("PostgreSQL server binaries not found (apt-get install postgresql)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """``start()`` a private server, ``create_database()`` per test, ``stop()`` at the end."""

    def __init__(self) -> None:
        self.bindir = find_bindir()
        self.port = _free_port()
        self._user: dict[str, object] = {}
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable("running as root and there is no postgres user") from None
            self._user = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        self.dir = Path(tempfile.mkdtemp(prefix="contimg-pg-"))
        self.data = self.dir / "data"
        if self._user:
            os.chown(self.dir, self._user["user"], self._user["group"])
        self._counter = 0

    def _run(self, *args: str) -> None:
        result = subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            cwd=self.dir,
            capture_output=True,
            text=True,
            **self._user,
        )
        if result.returncode != 0:
            output = result.stderr or result.stdout
            raise RuntimeError(f"{args[0]} failed ({result.returncode}): {output}")

    def start(self) -> PostgresServer:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")
        options = f"-p {self.port} -k {self.dir} -c listen_addresses='' -c fsync=off"
        log = str(self.dir / "log")
        self._run("pg_ctl", "-D", str(self.data), "-l", log, "-o", options, "-w", "start")
        return self

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir)

    def url(self, dbname: str = "postgres") -> str:
        """SQLAlchemy URL of a database on this server (psycopg 3, Unix socket)."""
        return f"postgresql+psycopg://postgres@/{dbname}?host={self.dir}&port={self.port}"

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(
            host=str(self.dir), port=self.port, user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(sql)

    def create_database(self) -> str:
        """A new empty database; returns its URL."""
        self._counter += 1
        name = f"test_{self._counter}"
        self._admin(f"CREATE DATABASE {name}")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.split("?")[0].rsplit("/", 1)[1]
        self._admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def start_or_skip() -> PostgresServer:
    """Start a server for a test session; skip without binaries, but fail when ``CI`` is set."""
    from needs import unavailable

    try:
        return PostgresServer().start()
    except PostgresUnavailable as exc:
        unavailable(str(exc), "the PostgreSQL tests")


_shared: PostgresServer | None = None


def shared_server() -> PostgresServer:
    """One server per test process, whichever test module asks first; stopped at exit."""
    global _shared
    if _shared is None:
        _shared = start_or_skip()
        atexit.register(_shared.stop)
    return _shared
