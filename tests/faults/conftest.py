"""Fault tests: the real daemon on real services, with something breaking underneath.

Each module owns its fault (process, database, ZooKeeper, manifests, clock) and its
fixtures; what they share is the daemon launcher of the end-to-end tests and the
cluster helpers of the chaos test (``tests/e2e/cluster.py``).
"""

from __future__ import annotations

from tests.e2e.conftest import daemon  # noqa: F401  (re-exported fixture)
