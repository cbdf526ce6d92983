"""Errors of the product database; each names the database (password masked)."""

from __future__ import annotations


class DatabaseError(RuntimeError):
    """The database cannot be reached or refused an operation (URL shown, password masked)."""


class SchemaError(DatabaseError):
    """The database's schema revision is not the one this software writes."""


class SchemaOutdatedError(SchemaError):
    """The database is at an earlier revision: ``contimg db upgrade`` brings it up to date."""


class SchemaTooNewError(SchemaError):
    """The database was upgraded by a newer pipeline; this software must not write to it."""
