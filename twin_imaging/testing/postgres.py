"""A throwaway PostgreSQL server for tests and benchmarks: Debian's binaries, ``initdb`` into a temporary folder and
``pg_ctl start`` on 127.0.0.1 and a free port (as the ``postgres`` user when run as root: the server refuses root).

    with throwaway_postgres() as server:
        url = server.create_database()      # a fresh, empty database: its SQLAlchemy URL
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from twin_imaging.testing.network import free_port

POSTGRES_ROOT = Path("/usr/lib/postgresql")
POSTGRES_USER = "twin"


class PostgresUnavailable(RuntimeError):
    """The server binaries are not installed."""


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's bin folder (Debian's layout), or None."""
    found = [p for p in POSTGRES_ROOT.glob("*/bin") if (p / "initdb").is_file() and (p / "pg_ctl").is_file()]
    return max(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, default=None)


@dataclass
class PostgresServer:
    port: int
    _names: itertools.count

    def create_database(self) -> str:
        """A fresh, empty database; its SQLAlchemy URL."""
        import psycopg

        name = f"twin_test_{next(self._names)}"
        with psycopg.connect(host="127.0.0.1", port=self.port, user=POSTGRES_USER, dbname="postgres") as connection:
            connection.autocommit = True
            connection.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://{POSTGRES_USER}@127.0.0.1:{self.port}/{name}"


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[PostgresServer]:
    bin_dir = postgres_bin()
    if bin_dir is None:
        raise PostgresUnavailable(
            f"PostgreSQL server binaries not found in {POSTGRES_ROOT}/*/bin (the README's set-up installs them)"
        )
    root = Path(tempfile.mkdtemp(prefix="twin-postgres-"))  # under /tmp: pytest's own folders are private to root
    data, sockets, log = root / "data", root / "sockets", root / "server.log"
    sockets.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
    run = dict(check=True, capture_output=True, text=True, timeout=120)
    initdb = [str(bin_dir / "initdb"), "-D", str(data), "-U", POSTGRES_USER, "--auth=trust", "-E", "UTF8", "--no-sync"]
    pg_ctl = [str(bin_dir / "pg_ctl"), "-D", str(data)]
    try:
        subprocess.run([*as_user, *initdb], **run)
        port = free_port()
        options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
        try:
            subprocess.run([*as_user, *pg_ctl, "-l", str(log), "-w", "-t", "60", "-o", options, "start"], **run)
        except subprocess.CalledProcessError as error:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"PostgreSQL did not start: {error.stderr or error.stdout}\n{tail}") from None
        try:
            yield PostgresServer(port, itertools.count())
        finally:
            subprocess.run([*as_user, *pg_ctl, "-m", "immediate", "-w", "stop"], capture_output=True, timeout=60)
    finally:
        shutil.rmtree(root, ignore_errors=True)
