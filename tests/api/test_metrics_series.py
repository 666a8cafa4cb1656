"""A task's series on ``GET /metrics`` follow the task: at 0 once it is loaded, gone when deleted.

Prometheus' ``increase()`` sees a counter change only between two samples, so a series
that first appears at 1 hides the first failure or missed slot (the alert rules in
docs/alerts.yaml would wait for a second, or a fourth for ``ReconcilerTaskFailing``).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from reconciler.api.metrics import FINAL_STATUSES, MISSED_REASONS, Metrics
from reconciler.core.runtime import RunRecord, RunStatus, Trigger
from tests.api.conftest import AUTH, MANIFESTS, T0, harness, run

Sample = tuple[str, tuple[tuple[str, str], ...]]


def samples(text: str) -> dict[Sample, float]:
    """``{(name, sorted labels): value}`` of a scrape."""
    out: dict[Sample, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def of_task(scrape: dict[Sample, float], task: str) -> dict[Sample, float]:
    return {k: v for k, v in scrape.items() if ("task", task) in k[1]}


def counters_at_zero(task: str) -> dict[Sample, float]:
    zeros = {("reconciler_runs_total", (("status", s), ("task", task))): 0.0
             for s in FINAL_STATUSES}
    zeros.update({("reconciler_missed_slots_total", (("reason", r), ("task", task))): 0.0
                  for r in MISSED_REASONS})
    return zeros


TASKS = ("heartbeat", "nightly-backup", "nightly-report", "paused-in-git", "weekly-summary")


def test_every_task_has_its_counters_at_zero_once_loaded(tmp_path: Path) -> None:
    async def scenario() -> None:
        for start in ("first start: tasks created", "restart: tasks already in the table"):
            async with harness(tmp_path) as h:
                scrape = samples((await h.client.get("/metrics")).text)
                rows = {t.name: t for t in await h.daemon.worker.bulk(h.store.load_tasks)}
                assert sorted(rows) == list(TASKS)
                for name in TASKS:
                    assert counters_at_zero(name).items() <= scrape.items(), (start, name)
                    created = ("reconciler_task_created_timestamp_seconds", (("task", name),))
                    assert scrape[created] == rows[name].created_at.timestamp(), (start, name)
                    # no run yet: nothing but the zeros, the creation time, the next slot
                    assert ("reconciler_last_success_timestamp_seconds", (("task", name),)) \
                        not in scrape
                assert len(FINAL_STATUSES) == 7 and "succeeded" in FINAL_STATUSES
                assert "pending" not in FINAL_STATUSES and "running" not in FINAL_STATUSES
                # the first failure reads 0 -> 1, not a series that appears at 1 (a restart
                # starts the counters again at 0: Prometheus reads that as a reset)
                h.executor.fail.add("nightly-backup")
                await h.client.post("/api/v1/tasks/nightly-backup/trigger", headers=AUTH)
                await h.settle()
                after = samples((await h.client.get("/metrics")).text)
                failed = ("reconciler_runs_total", (("status", "failed"),
                                                    ("task", "nightly-backup")))
                assert (scrape[failed], after[failed]) == (0.0, 1.0), start

    run(scenario)


def test_a_deleted_task_leaves_no_series(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with harness(tmp_path) as h:
            await h.client.post("/api/v1/tasks/nightly-backup/trigger", headers=AUTH)
            await h.settle()
            h.executor.blocked.add("heartbeat")
            await h.client.post("/api/v1/tasks/heartbeat/trigger", headers=AUTH)
            await h.advance(1)  # the heartbeat run is going when its task is deleted
            assert [a.record.task_name for a in h.daemon.scheduler.active_runs] == ["heartbeat"]
            before = samples((await h.client.get("/metrics")).text)
            backup = of_task(before, "nightly-backup")
            assert {name for name, _ in backup} >= {
                "reconciler_runs_total", "reconciler_missed_slots_total",
                "reconciler_run_duration_seconds_bucket", "reconciler_run_duration_seconds_sum",
                "reconciler_last_success_timestamp_seconds",
                "reconciler_task_created_timestamp_seconds",
                "reconciler_next_fire_timestamp_seconds"}
            (h.manifests / "backup.yaml").unlink()
            (h.manifests / "heartbeat.yaml").unlink()
            await h.daemon.reconcile_once()
            assert [a.record.task_name for a in h.daemon.scheduler.active_runs] == []
            h.executor.release.set()  # the heartbeat run ends after its task is gone
            await h.daemon.scheduler.drain()
            (ended,) = await h.daemon.worker.bulk(h.store.list_runs, "heartbeat")
            assert ended.status is RunStatus.SUCCEEDED
            after = samples((await h.client.get("/metrics")).text)
            assert of_task(after, "nightly-backup") == {}
            assert of_task(after, "heartbeat") == {}
            assert of_task(after, "nightly-report") == of_task(before, "nightly-report")
            # created again: back at 0, not where the deleted task's counters were
            (h.manifests / "backup.yaml").write_text(MANIFESTS["backup.yaml"])
            await h.daemon.reconcile_once()
            again = samples((await h.client.get("/metrics")).text)
            assert {k: v for k, v in of_task(again, "nightly-backup").items()
                    if k[0].endswith("_total")} == counters_at_zero("nightly-backup")

    run(scenario)


def record(task: str, status: RunStatus) -> RunRecord:
    return RunRecord(id=1, task_name=task, slot=T0, attempt=1, trigger=Trigger.SCHEDULE,
                     status=status, started_at=T0, finished_at=T0 + timedelta(seconds=2))


def test_metrics_follow_the_task_not_its_runs() -> None:
    m = Metrics()
    m.task_loaded("a", T0)
    m.run_final(record("a", RunStatus.FAILED))
    m.task_loaded("a", T0)  # loaded again at every resync: the counts stay
    scrape = samples(m.render().decode())
    assert scrape[("reconciler_runs_total", (("status", "failed"), ("task", "a")))] == 1.0
    assert scrape[("reconciler_runs_total", (("status", "succeeded"), ("task", "a")))] == 0.0
    assert scrape[("reconciler_task_created_timestamp_seconds", (("task", "a"),))] \
        == T0.timestamp()
    m.run_final(record("never-loaded", RunStatus.SUCCEEDED))
    m.set_last_success("a", T0)
    m.set_interval("a", 60)
    m.set_next_fire("a", T0)
    m.forget_task("a")
    m.forget_task("a")  # twice: nothing left to remove, no error
    m.run_final(record("a", RunStatus.FAILED))  # a run that ends after its task went
    scrape = samples(m.render().decode())
    assert of_task(scrape, "a") == {} and of_task(scrape, "never-loaded") == {}
