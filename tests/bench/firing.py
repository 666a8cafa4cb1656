"""Benchmark: firing precision under load, against APScheduler 3 in the same run.

10,000 registered tasks (idle: they fire once a year) plus 200 tasks that fire every
second, run records persisted in SQLite, for --seconds (default 60). The daemon is the
real ``reconciler run`` process; figures come from its run rows afterwards:

* lateness (run start - slot) p50 / p99 / max,
* runs recorded vs slots due (every slot must have a row: run, skipped or missed),
* CPU seconds and peak RSS of the daemon process.

Baseline: APScheduler 3.x BackgroundScheduler with the same 200 every-second jobs and
10,000 idle cron jobs, once with MemoryJobStore and once with SQLAlchemyJobStore on
SQLite; lateness from EVENT_JOB_SUBMITTED, drops from EVENT_JOB_MISSED and from the
count of submissions vs slots due.

Usage: .venv/bin/python tests/bench/firing.py [--seconds 60] [--busy 200] [--idle 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def summary(lateness_s: list[float]) -> dict[str, float]:
    ms = [x * 1000 for x in lateness_s]
    return {
        "p50_ms": pct(ms, 0.50),
        "p99_ms": pct(ms, 0.99),
        "max_ms": max(ms) if ms else float("nan"),
        "mean_ms": statistics.fmean(ms) if ms else float("nan"),
    }


def write_manifests(directory: Path, busy: int, idle: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    docs = []
    for i in range(busy):
        docs.append(
            f"apiVersion: reconciler/v1\nkind: Task\nmetadata: {{name: busy-{i:04d}}}\n"
            "spec:\n  schedule: '* * * * * *'\n  run: {command: ['true']}\n"
            "  concurrencyPolicy: Allow\n  history: {successful: 100000, failed: 100000}\n"
        )
    (directory / "busy.yaml").write_text("---\n".join(docs))
    for chunk in range(0, idle, 500):
        docs = []
        for i in range(chunk, min(idle, chunk + 500)):
            docs.append(
                f"apiVersion: reconciler/v1\nkind: Task\nmetadata: {{name: idle-{i:05d}}}\n"
                f"spec:\n  schedule: '{i % 60} {(i // 60) % 24} 1 1 *'\n"
                "  run: {command: ['true']}\n"
            )
        (directory / f"idle-{chunk:05d}.yaml").write_text("---\n".join(docs))


def bench_reconciler(seconds: int, busy: int, idle: int) -> dict[str, Any]:
    import psutil

    from reconciler.store import SQLStore

    with tempfile.TemporaryDirectory(prefix="reconciler-firing-") as tmp:
        root = Path(tmp)
        write_manifests(root / "manifests", busy, idle)
        db = f"sqlite:///{root / 'state.db'}"
        env = dict(os.environ, RECONCILER_DATABASE_URL=db, RECONCILER_LISTEN="127.0.0.1:0")
        log = open(root / "daemon.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "run", "--manifests", str(root / "manifests"),
             "--max-concurrent-runs", "64", "--log-level", "warning", "--max-delete", "100000"],
            env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT,
        )
        ps = psutil.Process(proc.pid)
        store = SQLStore(db)
        store.upgrade()  # the daemon does the same; whoever is first creates the schema
        # Wait until the table is loaded (first busy run recorded).
        deadline = time.monotonic() + 120
        while not store.list_runs("busy-0000", limit=1):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("daemon did not start:\n" + (root / "daemon.log").read_text())
            time.sleep(0.2)
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
        cpu0 = ps.cpu_times()
        rss_peak = 0
        end_at = time.monotonic() + seconds + 2
        while time.monotonic() < end_at:
            rss_peak = max(rss_peak, ps.memory_info().rss)
            time.sleep(0.5)
        end = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
        cpu1 = ps.cpu_times()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        lateness: list[float] = []
        recorded = 0
        statuses: dict[str, int] = {}
        slots_due = busy * int((end - start).total_seconds())
        for i in range(busy):
            for r in store.list_runs(f"busy-{i:04d}", limit=100_000):
                if start < r.slot <= end:
                    recorded += 1
                    statuses[r.status.value] = statuses.get(r.status.value, 0) + 1
                    if r.lateness_seconds is not None:
                        lateness.append(r.lateness_seconds)
        store.close()
        return {
            "lateness": summary(lateness),
            "slots_due": slots_due,
            "runs_recorded": recorded,
            "statuses": statuses,
            "missed_or_unrecorded": slots_due - statuses.get("succeeded", 0),
            "cpu_s": (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system),
            "peak_rss_mb": rss_peak / 2**20,
        }


def bench_apscheduler(seconds: int, busy: int, idle: int, store: str) -> dict[str, Any]:
    import psutil
    from apscheduler.events import EVENT_JOB_MISSED, EVENT_JOB_SUBMITTED
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.triggers.cron import CronTrigger

    with tempfile.TemporaryDirectory(prefix="reconciler-aps-") as tmp:
        jobstores: dict[str, Any] = {}
        if store == "sqlalchemy":
            from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

            jobstores["default"] = SQLAlchemyJobStore(url=f"sqlite:///{tmp}/jobs.db")
        sched = BackgroundScheduler(jobstores=jobstores, executors={
            "default": {"type": "threadpool", "max_workers": 64}},
            job_defaults={"misfire_grace_time": 1, "coalesce": False, "max_instances": 100})
        lock = threading.Lock()
        lateness: list[float] = []
        missed = 0
        submitted: dict[str, int] = {}
        window: dict[str, datetime] = {}

        def listener(event: Any) -> None:
            nonlocal missed
            now = datetime.now(UTC)
            with lock:
                if event.code == EVENT_JOB_MISSED:
                    if event.job_id.startswith("busy") and window and \
                            window["start"] < event.scheduled_run_time <= window["end"]:
                        missed += 1
                    return
                for t in event.scheduled_run_times:
                    if event.job_id.startswith("busy") and window and \
                            window["start"] < t <= window["end"]:
                        lateness.append((now - t).total_seconds())
                        submitted[event.job_id] = submitted.get(event.job_id, 0) + 1

        sched.add_listener(listener, EVENT_JOB_SUBMITTED | EVENT_JOB_MISSED)
        sched.start(paused=True)
        for i in range(idle):
            sched.add_job(_noop, CronTrigger(minute=i % 60, hour=(i // 60) % 24, day=1, month=1,
                                             timezone="UTC"), id=f"idle-{i:05d}")
        for i in range(busy):
            sched.add_job(_noop, CronTrigger(second="*", timezone="UTC"), id=f"busy-{i:04d}")
        sched.resume()
        ps = psutil.Process()
        cpu0 = ps.cpu_times()
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
        end = start + timedelta(seconds=seconds)
        with lock:
            window.update(start=start, end=end)
        rss_peak = 0
        while datetime.now(UTC) < end + timedelta(seconds=2):
            rss_peak = max(rss_peak, ps.memory_info().rss)
            time.sleep(0.5)
        cpu1 = ps.cpu_times()
        sched.shutdown(wait=False)
        due = busy * seconds
        with lock:
            ran = sum(submitted.values())
            return {
                "lateness": summary(lateness),
                "slots_due": due,
                "runs_submitted": ran,
                "missed_events": missed,
                "dropped": due - ran,
                "cpu_s": (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system),
                "peak_rss_mb": rss_peak / 2**20,
            }


def _noop() -> None:
    return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--busy", type=int, default=200)
    ap.add_argument("--idle", type=int, default=10_000)
    ap.add_argument("--only", choices=["reconciler", "memory", "sqlalchemy"])
    args = ap.parse_args()
    if args.only in ("memory", "sqlalchemy"):
        print(json.dumps(bench_apscheduler(args.seconds, args.busy, args.idle, args.only)))
        return
    ours = bench_reconciler(args.seconds, args.busy, args.idle)
    if args.only == "reconciler":
        print(json.dumps(ours, indent=2))
        return
    baselines = {}
    for store in ("memory", "sqlalchemy"):  # each in its own process, like the daemon
        out = subprocess.run([sys.executable, __file__, "--only", store, "--seconds",
                              str(args.seconds), "--busy", str(args.busy), "--idle",
                              str(args.idle)], capture_output=True, text=True, check=True)
        baselines[store] = json.loads(out.stdout)
    p99 = ours["lateness"]["p99_ms"]
    print(json.dumps({
        "benchmark": "firing",
        "seconds": args.seconds, "busy_tasks": args.busy, "idle_tasks": args.idle,
        "reconciler": ours,
        "apscheduler3_memory": baselines["memory"],
        "apscheduler3_sqlalchemy_sqlite": baselines["sqlalchemy"],
        "targets": {"p99_lateness_ms": 10, "missed_slots": 0},
        "met": {"p99_lateness": p99 < 10, "every_slot_recorded":
                ours["runs_recorded"] >= ours["slots_due"]},
        "ratios": {
            "apscheduler_memory_p99_over_ours": baselines["memory"]["lateness"]["p99_ms"] / p99,
            "apscheduler_sqlalchemy_p99_over_ours":
                baselines["sqlalchemy"]["lateness"]["p99_ms"] / p99,
        },
    }, indent=2))


if __name__ == "__main__":
    main()
