"""Alembic migrations of the store (``env.py``, ``versions/``), shipped in the package.

A package only so that packaging picks up ``env.py``; Alembic loads the scripts by path
(see :mod:`reconciler.store.migrate`).
"""
