"""How a run is identified to the outside world and isolated from the host: pure decisions.

* :func:`idempotency_key`: the key every run of one (task, slot) carries, whatever
  replica, attempt or daemon start runs it (``RECONCILER_IDEMPOTENCY_KEY``, and the
  ``Idempotency-Key`` header of http tasks unless ``idempotencyKey: false``).

The executors carry these decisions out; nothing here touches a process or a file.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from reconciler.core.model import HttpTarget

#: The namespace of the name-based (version 5) UUIDs that are idempotency keys. Fixed
#: forever: changing it would give every (task, slot) a new key after an upgrade.
IDEMPOTENCY_NAMESPACE = uuid.UUID("5f0c6b7e-2d1a-4c55-9a53-6a0e1f6b8d21")
#: The header an http task sends the key in (IETF draft "The Idempotency-Key HTTP
#: Header Field").
IDEMPOTENCY_HEADER = "Idempotency-Key"


def idempotency_key(task: str, slot: datetime) -> str:
    """The idempotency key of every attempt of ``task`` at ``slot``: a UUID (version 5).

    Derived from the task's name and the slot (the UTC instant to the microsecond), and
    from nothing a replica, an attempt or a daemon start changes: a retry, a peer that
    takes over, a restarted daemon all compute the same key. Different slots give
    different keys. A manual run has its own slot (the instant it was asked for, made
    unique per task by the run table's key), hence its own key; its retries share it.
    """
    if slot.tzinfo is None:
        raise ValueError("slot must be timezone-aware")
    instant = slot.astimezone(UTC).isoformat(timespec="microseconds")
    return str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"{task}\n{instant}"))


def idempotency_header(target: HttpTarget, key: str) -> tuple[str, str] | None:
    """The header to add to an http task's request for ``key``, or None.

    None when the task opted out (``idempotencyKey: false``) or sets an
    ``Idempotency-Key`` header itself (any case): the task's own value wins.
    """
    if not target.idempotency_key:
        return None
    if any(name.lower() == IDEMPOTENCY_HEADER.lower() for name in target.headers):
        return None
    return IDEMPOTENCY_HEADER, key
