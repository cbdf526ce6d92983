"""Alembic migrations of the product database (run them with ``contimg db upgrade``).

A package (not loose files) so they are installed with ``dsa110_contimg`` and
``contimg db upgrade`` works from any installation. Revisions are numbered
``0001``, ``0002``, ...: a database at a number above this code's head was
upgraded by a newer pipeline and is refused rather than misread.
"""
