"""Engines, sessions and migrations of the twin store: SQLite (a file, the default) or PostgreSQL, by URL.

SQLite gets foreign keys ON, write-ahead logging, a busy timeout and ``BEGIN IMMEDIATE`` transactions (every store
call writes at least an audit row, so each takes the write lock up front instead of failing on upgrade).
PostgreSQL URLs without a driver (``postgresql://``) use psycopg 3. The schema is only ever created by the Alembic
migrations in ``migrations/``: ``upgrade_database(url)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from twin_imaging.errors import TwinConflictError, TwinError

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000


def database_url(url: str | URL) -> URL:
    """``url`` parsed, with psycopg 3 as the PostgreSQL driver where none is named; TwinError if unusable."""
    try:
        parsed = make_url(url)
    except ArgumentError as error:
        raise TwinError(f"not a database URL: {error}") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise TwinError(f"the twin store runs on SQLite or PostgreSQL, not {parsed.get_backend_name()!r}")
    return parsed


def create_twin_engine(url: str | URL, **kwargs: Any) -> Engine:
    """An engine for the twin store. A SQLite file is created owner-only (0600; SQLite gives its WAL and shared-
    memory files the database file's mode), in a folder created owner-only (0700): it holds patient data."""
    url = database_url(url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
            path = Path(url.database).expanduser()
            try:
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as error:
                raise TwinError(f"cannot create the twin database's folder {path.parent}: {error.strerror}") from None
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))  # created 0600, whatever the umask
                os.chmod(path, 0o600)  # and tightened where an older version made it 0644
            except OSError as error:
                raise TwinError(f"cannot create the twin database {path}: {error.strerror}") from None
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _configure_sqlite)
        event.listen(engine, "begin", _begin_immediate)
        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # the driver emits no BEGIN of its own; _begin_immediate does
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def _begin_immediate(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(sessions: sessionmaker[Session], *, raw_conflicts: bool = False) -> Iterator[Session]:
    """A session in one transaction, committed when the block ends; database failures become TwinError (a
    constraint violation stays an IntegrityError with ``raw_conflicts``, for the caller to resolve)."""
    try:
        with sessions() as session, session.begin():
            yield session
    except IntegrityError:
        if raw_conflicts:
            raise
        raise TwinConflictError(
            "a concurrent change to this patient's twin conflicted with this one; retry it"
        ) from None
    except DBAPIError as error:
        raise database_error(error) from None


def guarded(call: Callable[[], None]) -> None:
    """Run ``call``; a database failure becomes TwinError."""
    try:
        call()
    except DBAPIError as error:
        raise database_error(error) from None


def database_error(error: DBAPIError) -> TwinError:
    reason = str(error.orig).strip().splitlines()[0] if error.orig is not None else type(error).__name__
    return TwinError(f"the twin database failed: {type(error.orig).__name__}: {reason}")


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def upgrade_database(target: str | URL | Engine, revision: str = "head") -> None:
    """Run the migrations up to ``revision`` (all of them by default) in one transaction."""
    engine = target if isinstance(target, Engine) else create_twin_engine(target)
    try:
        config = alembic_config()
        with engine.connect() as connection:
            sqlite = connection.dialect.name == "sqlite"
            if sqlite:  # SQLite alters a table by copying it and dropping the original: with foreign keys on, the
                # drop would cascade to every child row (an analysis' measurements), so they are off meanwhile
                _sqlite_pragma(connection, "PRAGMA foreign_keys = OFF")
            try:
                with connection.begin():
                    config.attributes["connection"] = connection
                    command.upgrade(config, revision)
                    if sqlite and connection.exec_driver_sql("PRAGMA foreign_key_check").first() is not None:
                        raise TwinError("the migration would leave rows pointing at missing parents; rolled back")
            finally:
                if sqlite:
                    _sqlite_pragma(connection, "PRAGMA foreign_keys = ON")
    finally:
        if engine is not target:
            engine.dispose()


def _sqlite_pragma(connection: Connection, pragma: str) -> None:
    """A PRAGMA outside any transaction (SQLite ignores foreign_keys inside one), on the driver's connection."""
    cursor = connection.connection.dbapi_connection.cursor()
    try:
        cursor.execute(pragma)
    finally:
        cursor.close()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()
