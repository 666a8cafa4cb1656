"""Distributed mode: ZooKeeper coordination (an adapter, like the store).

* :class:`ZooKeeperCoordinator` - one session per daemon: connection state and lease,
  membership, writer election, the change-notification znode.
* :class:`ZooKeeperClaimer` - the :class:`~reconciler.core.protocols.Claimer` on
  per-task lock znodes, with zxid fencing tokens.
* :class:`SkewGuard` / :func:`measure_skew` - refuse to claim while this host's clock
  may be further than a bound from the database's.

See ``docs/guarantees.md`` for the design and its limits. The pure core never
imports this package.
"""

from reconciler.locks.claims import ZooKeeperClaim, ZooKeeperClaimer, lock_name
from reconciler.locks.coordinator import (
    ENV_VAR,
    ChangeEvent,
    ConnectionState,
    Member,
    ZooKeeperCoordinator,
    make_client,
    namespace_root,
    notify_change_now,
    parse_hosts,
    read_cluster,
)
from reconciler.locks.skew import (
    DEFAULT_BOUND,
    SkewGuard,
    SkewGuardedClaimer,
    SkewMeasurement,
    database_now,
    measure_skew,
)

__all__ = [
    "DEFAULT_BOUND",
    "ENV_VAR",
    "ChangeEvent",
    "ConnectionState",
    "Member",
    "SkewGuard",
    "SkewGuardedClaimer",
    "SkewMeasurement",
    "ZooKeeperClaim",
    "ZooKeeperClaimer",
    "ZooKeeperCoordinator",
    "database_now",
    "lock_name",
    "make_client",
    "measure_skew",
    "namespace_root",
    "notify_change_now",
    "parse_hosts",
    "read_cluster",
]
