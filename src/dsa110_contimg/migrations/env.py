"""Alembic environment of the product database.

``contimg db upgrade`` (``dsa110_contimg.db.migrate``) hands over an open
connection, already inside the transaction (and lock) it wants the migration
to run in. The plain ``alembic`` command line works too, with
``-x url=SQLALCHEMY_URL``, for writing new revisions with ``--autogenerate``.
"""

from alembic import context
from sqlalchemy import create_engine

from dsa110_contimg.db.schema import Base

config = context.config
connection = config.attributes.get("connection")


def run(conn) -> None:
    context.configure(connection=conn, target_metadata=Base.metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


if connection is not None:
    run(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        raise SystemExit("no database: run `contimg db upgrade`, or alembic with -x url=...")
    with create_engine(url).connect() as conn:
        run(conn)
