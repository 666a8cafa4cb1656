"""The scheduler: one timeline for every task, runs claimed, executed and recorded.

Design:

* :class:`~reconciler.core.scheduling.Timeline` holds the next slot of every task in a
  heap; the loop sleeps until the earliest entry or until something wakes it (a
  change, a trigger, a finished run). Nothing polls every task every tick.
* At a slot the pure :func:`~reconciler.core.scheduling.decide_slot` says run, skip,
  replace or miss; this module only carries the decision out. A slot fires at its
  start (:meth:`~reconciler.core.scheduling.TaskSlots.start_of`: later with jitter)
  and its run keeps the slot: the claim, the row and ``RECONCILER_SLOT``.
* A run row is written *before* the executor starts (status ``running``), so a crash
  leaves a row that the next start marks ``abandoned``: a run is never lost.
* ``tick()`` processes everything due at ``clock.now()``; tests drive it with a fake
  clock and never sleep.
* Behind by a whole period (the slot after a due slot is due too: the wall clock
  stepped forward, the host was suspended, the loop was blocked): the backlog is
  decided at once by the downtime rules (:func:`~reconciler.core.scheduling.
  recover_missed`: ``startingDeadline``, ``catchUp``, ``maxCatchUp``, at most 100
  ``missed`` rows per task), not walked slot by slot.
* The wall clock stepping *back* re-runs nothing: each task remembers the last slot
  it decided, and its next slot is never planned at or before it, whether the
  timeline is rebuilt by a manifest edit, a resume or a restart (``last_slot_at`` is
  persisted). The task waits until the clock reaches that next slot again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from reconciler.core.clock import Clock
from reconciler.core.errors import ReconcilerError
from reconciler.core.protocols import (
    Claim,
    Claimer,
    ExecutionResult,
    Executor,
    NewRun,
    RunStore,
)
from reconciler.core.runtime import ActualTask, RunRecord, RunStatus, Trigger
from reconciler.core.scheduling import (
    Entry,
    EntryKind,
    Exclusion,
    SlotDecision,
    TaskPolicy,
    Timeline,
    Verdict,
    admit_backlog,
    cancel_on_claim_lost,
    decide_backlog,
    decide_retry,
    decide_slot,
    decide_trigger,
    recover_missed,
    run_params,
    whole_period_late,
)
from reconciler.daemon.notices import Notices
from reconciler.daemon.pool import RunPool
from reconciler.daemon.recorder import Recorder
from reconciler.daemon.runs import (
    STARTS,
    ActiveRun,
    NoListener,
    RunEvents,
    SchedulerConfig,
    SchedulerListener,
    TaskState,
    execution_request,
    newest_scheduled_slots,
)
from reconciler.daemon.worker import StoreWorker

__all__ = ["ActiveRun", "NoListener", "Scheduler", "SchedulerConfig", "SchedulerListener",
           "TaskState"]

log = logging.getLogger("reconciler.scheduler")

#: A clock stepped back by at most this waits for the slot after the last one decided;
#: a last slot further ahead than that is taken for the work of a wrong clock.
MAX_CLOCK_STEP_BACK = timedelta(hours=1)


class Scheduler:
    def __init__(
        self,
        store: RunStore,
        worker: StoreWorker,
        claimer: Claimer,
        executor: Executor,
        clock: Clock,
        config: SchedulerConfig | None = None,
        on_run_finished: Callable[[RunRecord], None] | None = None,
        listener: SchedulerListener | None = None,
        clock_refusal: Callable[[], str | None] | None = None,
        on_tick: Callable[[bool], None] | None = None,
        notices: Notices | None = None,
    ) -> None:
        self.store = store
        self.worker = worker
        self.claimer = claimer
        self.executor = executor
        self.clock = clock
        self.config = config or SchedulerConfig()
        self.tasks: dict[str, TaskState] = {}
        #: Every calendar by name (the daemon sets it from the table before a sync)
        self.calendars: Mapping[str, Exclusion] = {}
        self.timeline = Timeline()
        self.wake = asyncio.Event()
        self.accepting = True
        self._pool = RunPool(self.config.max_concurrent_runs)  # waiting runs by priority
        self._queued = 0
        self._background: set[asyncio.Task[Any]] = set()
        self._runs: set[asyncio.Task[Any]] = set()
        self._pending_starts: set[int] = set()  # ids of pending rows being started here
        self._on_run_finished = on_run_finished
        self.listener: SchedulerListener = listener or NoListener()
        #: Distributed mode: why this replica's clock must not be trusted now (None: it
        #: may be). While it says so, slots are neither claimed nor recorded here.
        self.clock_refusal = clock_refusal
        self.on_tick = on_tick  # told True while a tick starts its runs, then False
        #: Writes run ends and slot rows with their notifications (none without channels)
        self.notices = notices or Notices(store, clock)
        self.recorder = Recorder(store, worker, clock, self.listener,
                                 self.config.max_deferred_rows, self.notices, self.policy_of)

    def policy_of(self, name: str) -> TaskPolicy | None:
        state = self.tasks.get(name)  # also called on the store worker's thread
        return None if state is None else state.policy

    @property
    def write_error(self) -> str | None:
        """Why the last write to the database failed (None once one succeeded again)."""
        return self.recorder.write_error

    def wrote(self, error: Exception | None = None) -> None:
        """Record the outcome of a write to the database (for readiness)."""
        self.recorder.wrote(error)

    async def flush_state(self) -> None:
        """Write what is pending: deferred rows, ends of runs, schedule state."""
        await self.recorder.flush_state()

    # ------------------------------------------------------------------ table sync

    async def sync(self, tasks: Iterable[ActualTask], *, full: bool = True,
                   recover: bool = False) -> None:
        """Bring the in-memory tasks in line with rows of the runtime table.

        ``full``: ``tasks`` is every live task (others are removed); otherwise only
        the given tasks changed. ``recover``: decide the slots missed since each
        task's ``last_slot_at`` (start-up after downtime).
        """
        now = self.clock.now()
        seen = set()
        for row in tasks:
            seen.add(row.name)
            self.listener.task_row(row)
            state = self.tasks.get(row.name)
            if state is not None and state.policy.current(row.generation, row.suspended,
                                                          self.calendars):
                continue
            try:
                policy = TaskPolicy.from_document(
                    row.name, row.generation, row.document, row.suspended, self.calendars
                )
            except (ValueError, ReconcilerError) as exc:
                log.error("task %s: stored spec is unusable: %s", row.name, exc)
                continue
            if state is None:
                state = self.tasks[row.name] = TaskState(policy)
            else:
                state.policy = policy
            state.saw_slot(row.last_slot_at)
            if policy.suspended:
                self.timeline.remove(row.name)
                self._set_next(policy, None)
                continue
            if recover and row.last_slot_at is not None:
                decisions = recover_missed(policy, row.last_slot_at, now)
                for d in decisions:
                    state.saw_slot(d.slot)
                await self._carry_out_many(
                    [(state, d, 1, d.trigger)
                     for d in self._admit(state, decisions, now, "downtime")], now
                )
            # A new, changed or resumed task continues from now: no burst of old slots.
            self._plan_next(state, now)
        if full:
            for name in list(self.tasks):
                if name not in seen:
                    self.forget(name)
        await self.flush_state()
        self.wake.set()

    def forget(self, name: str) -> None:
        self.tasks.pop(name, None)
        self.timeline.remove(name)
        self.listener.task_removed(name)

    def _plan_next(self, state: TaskState, now: datetime) -> None:
        """Plan the first slot after the last one decided that has not started by
        ``now``: a clock behind a slot already decided waits for the next one."""
        last = state.last_slot
        if last is not None and last - now > MAX_CLOCK_STEP_BACK:
            # More than that: the clock that decided it was wrong, not this one.
            log.warning("task %s: its last slot %s is %s ahead of this clock; "
                        "planning from now", state.policy.name, last.isoformat(), last - now)
            state.last_slot = last = None
        self._set_next(state.policy, state.policy.schedule.next_planned(now, last))

    def _set_next(self, policy: TaskPolicy, slot: datetime | None) -> None:
        """Plan ``slot`` at its start; persist it (the nominal slot) as the next fire."""
        at = policy.schedule.start_of(slot) if slot is not None else None
        self.timeline.set_slot(policy.name, slot, policy.generation, at)
        self.recorder.state(policy.name, "next_fire_at", slot)
        self.listener.next_fire(policy.name, slot)

    # ----------------------------------------------------------------------- loop

    def next_wakeup(self) -> datetime | None:
        return self.timeline.next_at()

    async def tick(self) -> int:
        """Process every entry due at ``clock.now()``; return how many were handled.
        Everything due at one instant is decided, then claimed and written in one
        ``insert_runs`` transaction: the last run starts about as early as the first."""
        if not self.accepting:
            return 0
        now = self.clock.now()
        due = self.timeline.pop_due(now)
        if due and self.on_tick is not None:
            self.on_tick(True)  # the API thread holds back meanwhile (api.limits.TickGate)
        try:
            return await self._tick(due, now)
        finally:
            if due and self.on_tick is not None:
                self.on_tick(False)

    async def _tick(self, due: list[Entry], now: datetime) -> int:
        batch: list[tuple[TaskState, SlotDecision, int, Trigger]] = []
        # (task, the slot to continue after, the generation that decided it)
        slots: list[tuple[TaskState, datetime, int]] = []
        # a refused clock decides nothing, so it must not record progress either
        trusted = self.clock_refusal is None or self.clock_refusal() is None
        behind = 0
        covered = await self._covered_by_peers(due, now) if self.config.skip_covered_slots else {}
        for entry in due:
            state = self.tasks.get(entry.name)
            if state is None or state.policy.generation != entry.generation:
                continue
            newest = covered.get(entry.name)
            if entry.kind is EntryKind.SLOT and newest is not None and newest > entry.slot:
                log.info("task %s: slot %s skipped: this replica is behind and a peer "
                         "already recorded slot %s", entry.name, entry.slot.isoformat(),
                         newest.isoformat())
                slots.append((state, newest, entry.generation))  # after the peers' slot
                continue
            if entry.kind is EntryKind.SLOT:
                backlog = self._backlog(state, entry, now, trusted)
                if backlog:
                    behind += 1
                    batch.extend(backlog)
                    slots.append((state, backlog[-1][1].slot, entry.generation))
                    continue
            batch.append(self._decide(state, entry, now, trusted))
            if entry.kind is EntryKind.SLOT:
                slots.append((state, entry.slot, entry.generation))
        if behind:
            log.warning("%d task(s) were a whole period or more behind schedule (clock "
                        "stepped forward, host suspended or loop blocked): their backlog "
                        "was decided by startingDeadline/catchUp/maxCatchUp", behind)
        await self._carry_out_many(batch, now)
        # Only now, with the runs started, work out the following slots. Tasks that share
        # a schedule (many "0 * * * *") share one computation.
        memo: dict[tuple[Any, datetime], datetime | None] = {}
        for state, after, generation in slots:
            policy = state.policy
            if policy.suspended or policy.generation != generation:
                continue  # suspended or changed while the runs started: sync() planned it
            key = (policy.schedule.same_slots_key, after)
            if key not in memo:
                memo[key] = policy.schedule.next_after(after)
            nxt = memo[key]
            if self.tasks.get(policy.name) is state and self.timeline.slot_of(policy.name) is None:
                self._set_next(policy, nxt)
        await self.flush_state()
        return len(batch)

    async def _covered_by_peers(self, due: list[Entry], now: datetime) -> dict[str, datetime]:
        """For the slots of ``due`` that are a whole period late: the newest scheduled
        slot any replica recorded for the task."""
        late = whole_period_late(due, self.policy_of, now)
        if not late:
            return {}
        try:
            return await self.worker.call(newest_scheduled_slots, self.store, late)
        except ReconcilerError as exc:
            log.warning("could not read the newest runs of %d late task(s): %s", len(late), exc)
            return {}

    async def run_forever(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            await self.tick()
            self.wake.clear()
            nxt = self.next_wakeup()
            timeout = 1.0
            if nxt is not None:
                timeout = min(timeout, max(0.0, (nxt - self.clock.now()).total_seconds()))
            if timeout <= 0:
                continue
            waker = loop.create_task(self.wake.wait())
            stopper = loop.create_task(stop.wait())
            try:
                await asyncio.wait({waker, stopper}, timeout=timeout,
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                waker.cancel()
                stopper.cancel()

    def _backlog(
        self, state: TaskState, entry: Entry, now: datetime, trusted: bool
    ) -> list[tuple[TaskState, SlotDecision, int, Trigger]]:
        """The decisions for a slot a whole period late, and every slot since (oldest
        first), by the catch-up rules; empty when only this slot is due."""
        policy = state.policy
        decisions = decide_backlog(policy, entry.slot, now)
        if not decisions:
            return []
        out = [(state, d, 1, d.trigger) for d in self._admit(state, decisions, now,
                                                             "behind schedule")]
        if trusted:
            self._progress(state, decisions[-1].slot)
        log.info("task %s: %s behind schedule at slot %s; %d slot(s) decided by the "
                 "catch-up rules", policy.name, now - entry.slot, entry.slot.isoformat(),
                 len(decisions))
        return out

    @staticmethod
    def _admit(state: TaskState, decisions: list[SlotDecision], now: datetime,
               cause: str) -> list[SlotDecision]:
        """The concurrency policy over catch-up runs that start together (decided by
        :func:`admit_backlog`), each run reserved in the same step."""
        return [state.reserve(d) for d in
                admit_backlog(state.policy, decisions, now, state.busy, cause)]

    def _progress(self, state: TaskState, slot: datetime) -> None:
        """Remember ``slot`` as decided (in memory and ``last_slot_at``). Only by a
        trusted clock: one far ahead must not leave a future "last slot" for all."""
        state.saw_slot(slot)
        self.recorder.state(state.policy.name, "last_slot_at", slot)

    def _decide(
        self, state: TaskState, entry: Entry, now: datetime, trusted: bool
    ) -> tuple[TaskState, SlotDecision, int, Trigger]:
        policy = state.policy
        if entry.kind is EntryKind.SLOT:
            if trusted:
                self._progress(state, entry.slot)
            # tick() then queues the slot after this one: each slot is decided in turn, so
            # an overloaded loop records late slots as missed (startingDeadline) instead
            # of dropping them.
            decision = state.reserve(decide_slot(policy, entry.slot, now, state.busy))
            return state, decision, 1, decision.trigger
        # a retry was decided when its attempt ended: no startingDeadline, the policy
        decision = state.reserve(decide_trigger(policy, entry.slot, state.busy, Trigger.RETRY,
                                                entry.params))
        return state, decision, entry.attempt, Trigger.RETRY

    async def _carry_out_many(
        self, batch: list[tuple[TaskState, SlotDecision, int, Trigger]], now: datetime
    ) -> None:
        """Carry out decisions; each one that starts a run holds a reservation
        (:meth:`TaskState.reserve`), given back here once the run is launched (it then
        counts as active) or could not be (claim refused, duplicate row, database down)."""
        try:
            await self._carry_out_reserved(batch, now)
        finally:
            for state, decision, _, _ in batch:
                if decision.verdict in STARTS:
                    state.starting -= 1

    async def _carry_out_reserved(
        self, batch: list[tuple[TaskState, SlotDecision, int, Trigger]], now: datetime
    ) -> None:
        if not batch:
            return
        if self.clock_refusal is not None and (why := self.clock_refusal()) is not None:
            # Every decision below (due, missed, late, the grace of an unclaimed slot) was
            # made by a clock that may be off: a replica with a good clock records these
            # slots. A clock far ahead would otherwise record future slots missed.
            log.debug("%d slot(s) left to the other replicas: %s", len(batch), why)
            return
        rows: list[NewRun] = []
        starts: list[tuple[TaskState, Claim | None]] = []
        to_claim: list[tuple[TaskState, SlotDecision, int, Trigger]] = []
        for state, decision, attempt, trigger in batch:
            policy = state.policy
            if decision.verdict in (Verdict.MISSED, Verdict.SKIPPED):
                status = (RunStatus.MISSED if decision.verdict is Verdict.MISSED
                          else RunStatus.SKIPPED)
                rows.append(NewRun(
                    task_name=policy.name, slot=decision.slot, attempt=attempt,
                    trigger=trigger, status=status, replica=self.config.replica,
                    finished_at=now, reason=decision.reason, generation=policy.generation,
                ))
                starts.append((state, None))
                continue
            if decision.verdict is Verdict.REPLACE:
                self._replace_active(state, decision)
            to_claim.append((state, decision, attempt, trigger))
        claims = await asyncio.gather(
            *(self.claimer.claim(st.policy.name, d.slot, att) for st, d, att, _ in to_claim)
        )
        started_at = self.clock.now()
        for (state, decision, attempt, trig), claim in zip(to_claim, claims, strict=True):
            if claim is None:
                # Another replica holds it: do nothing now. Later, make sure the slot has
                # a row (the holder may have died): inserting a missed row is a no-op when
                # the holder recorded its run, thanks to the unique key.
                self.recorder.defer(now + self.config.unclaimed_grace, NewRun(
                    task_name=state.policy.name, slot=decision.slot, attempt=attempt,
                    trigger=trig, status=RunStatus.MISSED, replica=self.config.replica,
                    finished_at=now + self.config.unclaimed_grace,
                    reason="no replica recorded this slot: its lock was held by a replica "
                           "that did not run it, or no replica could claim it",
                    generation=state.policy.generation,
                ))
                continue
            rows.append(NewRun(
                task_name=state.policy.name, slot=decision.slot, attempt=attempt,
                trigger=trig, status=RunStatus.RUNNING, replica=self.config.replica,
                fencing_token=claim.token, started_at=started_at,
                generation=state.policy.generation, params=run_params(state.policy, decision),
            ))
            starts.append((state, claim))
        try:
            records = await self.worker.call(self.notices.insert_runs, rows, self.policy_of)
            self.wrote()
        except ReconcilerError as exc:
            # No run starts without its row (exactly once over liveness); the slots are
            # recorded missed once the database answers again.
            self.recorder.write_failed(exc, logging.ERROR, "could not record %d run(s): %s",
                               len(rows), exc)
            records = [None] * len(rows)
            for row in rows:
                self.recorder.defer(now, replace(
                    row, status=RunStatus.MISSED, fencing_token=None, started_at=None,
                    finished_at=now, reason=f"database unavailable: {exc}"[:2000],
                ))
        for (state, claim), record in zip(starts, records, strict=True):
            if claim is None:
                if record is not None:
                    self.listener.run_recorded(record)
                continue
            if record is None:
                await claim.release()  # duplicate: someone else recorded this slot
                continue
            self._launch(state, record, claim)

    def _record_progress(self, active: ActiveRun, percent: float | None,
                         message: str | None) -> None:
        self._spawn(self.worker.call(
            self.store.update_run, active.record.id, fencing_token=active.claim.token,
            progress_percent=percent, progress_message=message,
        ))

    @staticmethod
    def _replace_active(state: TaskState, decision: SlotDecision) -> None:
        """Cancel the active runs of a task (concurrencyPolicy Replace)."""
        what = ("a manual run" if decision.trigger is Trigger.MANUAL
                else f"the run of slot {decision.slot.isoformat()}")
        for active in list(state.active.values()):
            active.cancel_status = RunStatus.CANCELLED
            active.cancel_reason = f"replaced by {what}"
            active.cancel.set()

    def claim_lost(self, claim: Claim) -> None:
        """The lock of a run is gone (ZooKeeper session lost, lease ran out): stop the
        run where the policy says so (:func:`cancel_on_claim_lost`)."""
        for state in self.tasks.values():
            if not cancel_on_claim_lost(state.policy):
                continue
            for active in state.active.values():
                if active.claim is claim:
                    active.cancel_status = RunStatus.CANCELLED
                    active.cancel_reason = "lock lost"
                    active.cancel.set()

    def _launch(self, state: TaskState, record: RunRecord, claim: Claim) -> None:
        active = ActiveRun(record, claim)
        state.active[record.id] = active
        task = asyncio.get_running_loop().create_task(self._execute(state, active))
        self._runs.add(task)
        task.add_done_callback(self._runs.discard)
        self.listener.run_started(record)

    # ----------------------------------------------------------------------- runs

    async def start_decided(self, name: str, pending: RunRecord) -> RunRecord | None:
        """Start a ``pending`` row whose start its caller decided (a backfill's step:
        :func:`~reconciler.core.backfill.plan_backfill`); None: not started here."""
        state = self.tasks.get(name)
        if state is None or not self.accepting or pending.id in self._pending_starts:
            return None
        state.starting += 1
        return await self._start_pending(state, pending)

    async def _start_pending(self, state: TaskState, existing: RunRecord) -> RunRecord | None:
        """Claim a ``pending`` row (a trigger, catch-up or backfill written to the
        database) and start it; its place was reserved by the caller, given back here."""
        policy, record = state.policy, None
        self._pending_starts.add(existing.id)
        try:
            claim = await self.claimer.claim(policy.name, existing.slot, existing.attempt)
            if claim is None:
                return None
            try:
                ok = await self.worker.call(
                    self.store.claim_pending_run, existing.id, replica=self.config.replica,
                    fencing_token=claim.token, started_at=self.clock.now(),
                )
                record = await self.worker.call(self.store.get_run, existing.id) if ok else None
            except ReconcilerError as exc:
                log.error("task %s: could not claim run %d: %s", policy.name, existing.id, exc)
            if record is None:
                await claim.release()
                return None
            self._launch(state, record, claim)
            return record
        finally:
            state.starting -= 1
            self._pending_starts.discard(existing.id)

    async def _execute(self, state: TaskState, active: ActiveRun) -> None:
        policy, record = state.policy, active.record
        result: ExecutionResult
        try:
            async with self._pool.place(policy.spec.priority, record.slot):
                request = execution_request(policy, record, self.config)
                events = RunEvents(active, self.config.output_limit, self.clock,
                                   functools.partial(self._record_progress, active))
                result = await self.executor.execute(request, events, active.cancel)
        except asyncio.CancelledError:
            result = ExecutionResult(RunStatus.CANCELLED, error="daemon stopped")
        except Exception as exc:  # an executor bug must not lose the run's record
            log.exception("task %s: executor failed", policy.name)
            result = ExecutionResult(RunStatus.FAILED, error=f"internal error: {exc}")
        status = result.status
        reason = None
        if status is RunStatus.CANCELLED and active.cancel_status is not None:
            status = active.cancel_status
            reason = active.cancel_reason
        finished = self.clock.now()
        values: dict[str, Any] = {
            "status": status, "finished_at": finished, "exit_code": result.exit_code,
            "error": result.error, "output_tail": result.output_tail,
            "output_truncated": result.output_truncated,
        }
        if reason is not None:  # else keep the row's ("triggered by ...", a catch-up's)
            values["reason"] = reason
        reason = reason or record.reason
        retry_at = (None if status is RunStatus.SUCCEEDED
                    else decide_retry(policy, status, record.attempt, finished))
        retrying = (retry_at is not None and self.accepting
                    and self.tasks.get(policy.name) is state)
        end = functools.partial(self.notices.finish_run, record, policy, retrying,
                                active.claim.token, values)
        try:
            await self.worker.call(end)  # the status and its notifications, together
        except ReconcilerError as exc:
            # Retried at every flush: left "running", a peer would mark the run abandoned
            # (and retry it where the policy says so: the slot would run twice).
            self.recorder.write_failed(exc, logging.ERROR,
                               "task %s: could not record the end of run %d yet: %s",
                               policy.name, record.id, exc)
            self.recorder.unrecorded(record.id, status, end)
        finally:
            state.active.pop(record.id, None)
            active.done = True
            active.notify()
            await active.claim.release()
        self.listener.run_finished(replace(
            record, status=status, finished_at=finished, exit_code=result.exit_code,
            error=result.error, output_tail=result.output_tail, reason=reason,
            output_truncated=result.output_truncated,
        ))
        if status is RunStatus.SUCCEEDED:
            self.recorder.state(policy.name, "last_success_at", finished)
        elif retrying and retry_at is not None:
            self.timeline.add_retry(policy.name, retry_at, record.slot,
                                    record.attempt + 1, policy.generation, record.params)
        state.finished_since_prune += 1
        if state.finished_since_prune >= self.config.prune_every:
            state.finished_since_prune = 0
            with contextlib.suppress(ReconcilerError):
                await self.worker.call(
                    self.store.prune_runs, policy.name,
                    successful=policy.spec.history.successful, failed=policy.spec.history.failed,
                )
        if self._on_run_finished is not None:
            self._on_run_finished(record)
        self.wake.set()

    async def trigger(self, name: str, *, existing: RunRecord | None = None,
                      slot: datetime | None = None, trigger: Trigger = Trigger.MANUAL
                      ) -> RunRecord | None:
        """Run a task now (manual trigger or an operator's catch-up), or a ``pending``
        row (``existing``). The concurrency policy is decided and the run reserved in
        one step: of two triggers at once, a Forbid task starts one; the other's
        pending row is recorded ``skipped``."""
        state = self.tasks.get(name)
        if state is None or (existing is not None and existing.id in self._pending_starts):
            return None  # unknown, or that pending row is being started already
        now = self.clock.now()
        slot = existing.slot if existing else (slot or now)
        decision = state.reserve(decide_trigger(state.policy, slot, state.busy, trigger))
        if decision.verdict not in STARTS:
            if existing is not None:
                await self._skip_pending(existing, now, decision.reason)
            return None
        attempt = existing.attempt if existing else 1
        if existing is None:
            before = set(state.active)
            await self._carry_out_many([(state, decision, attempt, trigger)], now)
            new = [a.record for rid, a in state.active.items() if rid not in before]
            return new[0] if new else None
        if decision.verdict is Verdict.REPLACE:
            self._replace_active(state, decision)
        return await self._start_pending(state, existing)

    async def _skip_pending(self, existing: RunRecord, now: datetime,
                            reason: str | None) -> None:
        reason = reason or "previous run active"
        skipped = await self.worker.call(
            self.store.claim_pending_run, existing.id, replica=self.config.replica,
            fencing_token=None, started_at=now, status=RunStatus.SKIPPED, reason=reason,
        )
        if skipped:
            self.listener.run_recorded(replace(
                existing, status=RunStatus.SKIPPED, replica=self.config.replica,
                started_at=now, finished_at=now, reason=existing.reason or reason,
            ))

    # ------------------------------------------------------------------- lifecycle

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @property
    def active_runs(self) -> list[ActiveRun]:
        return [a for s in self.tasks.values() for a in s.active.values()]

    async def drain(self) -> None:
        """Wait for every started run to finish (tests; shutdown)."""
        while self._runs or self._background:
            await asyncio.gather(*self._runs, *self._background, return_exceptions=True)
        await self.flush_state()

    async def heartbeat(self) -> None:
        now = self.clock.now()
        for a in self.active_runs:
            with contextlib.suppress(ReconcilerError):
                await self.worker.call(self.store.update_run, a.record.id,
                                       fencing_token=a.claim.token, heartbeat_at=now)

    async def shutdown(self, grace: timedelta) -> None:
        """Stop firing; let runs finish within ``grace``; cancel and record the rest."""
        self.accepting = False
        if self._runs:
            _, pending = await asyncio.wait(set(self._runs), timeout=grace.total_seconds())
            if pending:
                for a in self.active_runs:
                    a.cancel_status = RunStatus.CANCELLED
                    a.cancel_reason = "daemon shutting down"
                    a.cancel.set()
        await self.drain()

