"""The daemon's side of :class:`~reconciler.service.operations.TaskOperations`: its
scheduler, as the :class:`~reconciler.service.operations.RunHost` port."""

from __future__ import annotations

from reconciler.core.model import ConcurrencyPolicy
from reconciler.core.runtime import ActualTask, RunRecord, RunStatus
from reconciler.daemon.scheduler import Scheduler, SchedulerListener


class SchedulerHost:
    def __init__(self, scheduler: Scheduler, listener: SchedulerListener, replica: str) -> None:
        self.scheduler = scheduler
        self.listener = listener
        self.replica = replica

    def accepting(self) -> bool:
        return self.scheduler.accepting

    def policy(self, task: str) -> ConcurrencyPolicy | None:
        state = self.scheduler.tasks.get(task)
        return None if state is None else state.policy.spec.concurrency_policy

    def busy(self, task: str) -> int:
        state = self.scheduler.tasks.get(task)
        return 0 if state is None else state.busy

    async def start_pending(self, task: str, pending: RunRecord) -> RunRecord | None:
        return await self.scheduler.trigger(task, existing=pending, trigger=pending.trigger)

    async def synced(self, row: ActualTask) -> None:
        await self.scheduler.sync([row], full=False)

    def cancel_live(self, task: str, run_id: int, reason: str) -> tuple[RunRecord, bool] | None:
        state = self.scheduler.tasks.get(task)
        live = None if state is None else state.active.get(run_id)
        if live is None:
            return None
        if live.cancel.is_set():
            return live.record, False
        live.cancel_status = RunStatus.CANCELLED
        live.cancel_reason = reason
        live.cancel.set()
        return live.record, True

    def recorded(self, record: RunRecord) -> None:
        self.listener.run_recorded(record)
