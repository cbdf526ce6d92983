"""Schema revisions: which one a database is at, and Alembic upgrades to the head.

Opening a database (:class:`~.core.Database`) only reads the revision, which
costs one query and does not import Alembic: an empty database is created at
the head, any other revision than the head is refused with the command that
fixes it. Upgrades are explicit (``contimg db upgrade``) because on a shared
PostgreSQL server other pipeline installations may still be running the
older code.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from .errors import DatabaseError, SchemaOutdatedError, SchemaTooNewError
from .schema import HEAD_REVISION, REVISIONS

#: Tables of revision 0001, which databases made before migrations existed have without a version.
FOUNDATION_TABLES = frozenset({"observation_groups", "raw_files", "measurement_sets"})

_LOCK_KEY = 0x110C0  # PostgreSQL advisory lock serialising schema changes


def schema_revision(connection: Connection, where: str = "database") -> str | None:
    """The database's revision; None when it holds none of our tables (a new database).

    A database with the foundation's tables and no ``alembic_version`` was
    made by the code before migrations existed: that is revision 0001.
    """
    names = set(inspect(connection).get_table_names())
    if "alembic_version" in names:
        versions = connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
        if len(versions) != 1:
            raise DatabaseError(f"{where}: expected one schema revision, found {versions}")
        return versions[0]
    ours = names & FOUNDATION_TABLES
    if not ours:
        return None
    if ours == FOUNDATION_TABLES:
        return REVISIONS[0]
    raise DatabaseError(
        f"{where} has tables {sorted(ours)} but no schema revision: not a product database "
        "this software can read"
    )


def is_versioned(connection: Connection) -> bool:
    return inspect(connection).has_table("alembic_version")


def require_head(revision: str | None, where: str, config_hint: str = " --config <your config>") -> None:
    """Raise unless ``revision`` is the head (None, a new database, is fine too)."""
    if revision is None or revision == HEAD_REVISION:
        return
    if revision in REVISIONS:
        raise SchemaOutdatedError(
            f"{where} is at schema revision {revision}, this software needs {HEAD_REVISION}: "
            f"run `contimg db upgrade{config_hint}` (with no pipeline job running)"
        )
    newer = revision.isdigit() and int(revision) > int(HEAD_REVISION)
    raise SchemaTooNewError(
        f"{where} is at schema revision {revision}, "
        + ("newer than" if newer else "unknown to")
        + f" this software (which knows up to {HEAD_REVISION}): it was upgraded by a newer "
        "version of the pipeline; run that version, or point database.url elsewhere"
    )


def lock_schema(connection: Connection) -> None:
    """Serialise schema changes between processes for the rest of the transaction.

    On SQLite the caller's ``BEGIN IMMEDIATE`` already holds the write lock.
    """
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})


def alembic_config(connection: Connection) -> Any:
    """An Alembic config running the packaged migrations on ``connection``."""
    from alembic.config import Config

    config = Config()
    location = resources.files("dsa110_contimg") / "migrations"
    config.set_main_option("script_location", str(location))
    config.attributes["connection"] = connection
    return config


def upgrade(connection: Connection, target: str = "head") -> tuple[str | None, str]:
    """Migrate to ``target`` inside the caller's transaction; returns (before, after).

    An unversioned foundation database is stamped 0001 first. A revision this
    code does not know is refused: migrating it "down" would destroy data.
    """
    from alembic import command

    lock_schema(connection)
    before = schema_revision(connection)
    if before is not None and before not in REVISIONS:
        require_head(before, "database")
    config = alembic_config(connection)
    if before is not None and not is_versioned(connection):
        command.stamp(config, before)
    command.upgrade(config, target)
    return before, schema_revision(connection) or "none"


def downgrade(connection: Connection, target: str) -> None:
    """Migrate down to ``target`` (tests; operators restoring an older pipeline)."""
    from alembic import command

    lock_schema(connection)
    command.downgrade(alembic_config(connection), target)


def script_revisions() -> list[str]:
    """Revisions of the packaged migration scripts, oldest first (for the tests)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(resources.files("dsa110_contimg") / "migrations"))
    script = ScriptDirectory.from_config(config)
    return [s.revision for s in reversed(list(script.walk_revisions()))]
