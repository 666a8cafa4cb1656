"""In-process claims for a single replica.

With one replica the run row's unique (task, slot, attempt) key is already the final
guard; the claimer adds a per-task lock and a monotonic fencing token so the daemon
loop is written once against :class:`~reconciler.core.protocols.Claimer`, and a
ZooKeeper implementation slots in for distributed mode without touching the loop.
"""

from __future__ import annotations

import itertools
from datetime import datetime


class InProcessClaim:
    def __init__(self, claimer: InProcessClaimer, task: str, token: int) -> None:
        self._claimer = claimer
        self._task = task
        self._token = token
        self._released = False

    @property
    def token(self) -> int:
        return self._token

    @property
    def valid(self) -> bool:
        return not self._released

    async def release(self) -> None:
        if not self._released:
            self._released = True
            self._claimer._held.pop((self._task, self._token), None)


class InProcessClaimer:
    def __init__(self) -> None:
        self._tokens = itertools.count(1)
        self._held: dict[tuple[str, int], InProcessClaim] = {}

    async def claim(self, task: str, slot: datetime, attempt: int) -> InProcessClaim | None:
        token = next(self._tokens)
        claim = InProcessClaim(self, task, token)
        self._held[(task, token)] = claim
        return claim

    async def close(self) -> None:
        for claim in list(self._held.values()):
            await claim.release()
