"""Alembic environment of the twin store.

``twin_imaging.twin.database.upgrade_database`` passes an open connection in ``config.attributes["connection"]``;
the ``alembic`` command line (with ``script_location`` pointing here) uses ``sqlalchemy.url`` or, failing that,
the settings' ``database_url``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from twin_imaging.settings import get_settings
from twin_imaging.twin.database import create_twin_engine, database_url
from twin_imaging.twin.schema import Base, UTCDateTime

config = context.config


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or get_settings().database_url


def _render_item(kind: str, item: object, _context: object) -> str | bool:
    """Migrations stay independent of the models' Python types: UTCDateTime is written as the column it makes."""
    if kind == "type" and isinstance(item, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
        compare_type=True,
        render_item=_render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    context.configure(url=database_url(_url()), target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
elif (connection := config.attributes.get("connection")) is not None:
    _run(connection)
else:
    engine = create_twin_engine(_url())
    try:
        with engine.begin() as connection:
            _run(connection)
    finally:
        engine.dispose()
