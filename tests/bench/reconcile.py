"""Benchmark: cold apply, no-change diff and a one-file change with N task files.

Usage: .venv/bin/python tests/bench/reconcile.py [--tasks 10000] [--repeat 3]

Each phase runs in a fresh child process (so peak RSS and import cost are per phase)
and prints its own JSON; the parent prints one JSON document with all phases, the
APScheduler 3 baseline measured in the same run, and the ratios. Times are the best
of --repeat runs; import time is reported separately from the work itself.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TEMPLATE = """\
apiVersion: reconciler/v1
kind: Task
metadata:
  name: task-{i:05d}
  labels: {{team: team-{team}, tier: bench}}
spec:
  schedule: "{minute} {hour} * * {dow}"
  timeZone: {zone}
  run:
    command: ["python3", "-m", "jobs.report", "--id", "{i}"]
    env: {{REPORT_FORMAT: pdf}}
  timeout: 10m
  concurrencyPolicy: Forbid
  retries: {{limit: 2, backoff: 10s}}
  history: {{successful: 20, failed: 50}}
"""
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Sydney"]


def generate(directory: Path, n: int) -> None:
    for i in range(n):
        sub = directory / f"team-{i % 20:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        text = TEMPLATE.format(
            i=i, team=i % 20, minute=i % 60, hour=(i // 60) % 24, dow=f"{(i // 1440) % 7}",
            zone=ZONES[i % len(ZONES)],
        )
        (sub / f"task-{i:05d}.yaml").write_text(text)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------- phases


def phase_cold(manifests: str, db: str) -> dict[str, float]:
    t0 = time.perf_counter()
    from reconciler.service import reconcile
    from reconciler.store import create_store

    t1 = time.perf_counter()
    store = create_store(f"sqlite:///{db}")
    store.upgrade()
    t2 = time.perf_counter()
    result = reconcile(manifests, store, actor="bench")
    t3 = time.perf_counter()
    assert result.applied is not None and result.applied.created > 0, result.plan.errors[:3]
    return {"import_s": t1 - t0, "schema_s": t2 - t1, "apply_s": t3 - t2,
            "created": result.applied.created, "peak_rss_mb": rss_mb()}


def phase_diff(manifests: str, db: str) -> dict[str, float]:
    t0 = time.perf_counter()
    from datetime import UTC, datetime

    from reconciler.core.impact import plan_impact
    from reconciler.service import make_plan
    from reconciler.store import create_store

    t1 = time.perf_counter()
    store = create_store(f"sqlite:///{db}")
    _, plan = make_plan(manifests, store)
    t2 = time.perf_counter()
    assert not plan.has_changes, "expected no changes"
    # what `reconciler diff` adds: the load of every task over 7 days, before and after
    impact = plan_impact(plan, datetime.now(UTC))
    t3 = time.perf_counter()
    assert impact.after.starts >= 1
    return {"import_s": t1 - t0, "diff_s": t2 - t1, "load_s": t3 - t2,
            "peak_rss_mb": rss_mb()}


def phase_one_file(manifests: str, db: str) -> dict[str, float]:
    from reconciler.core.plan import plan
    from reconciler.manifests import LoadCache, load_directory
    from reconciler.store import create_store

    store = create_store(f"sqlite:///{db}")
    actual = store.load_tasks()  # a running daemon keeps this in memory
    cache = LoadCache()
    load_directory(manifests, cache=cache)  # warm
    target = Path(manifests) / "team-00" / "task-00000.yaml"
    original = target.read_text()
    best = float("inf")
    walked = float("inf")
    try:
        for k in range(5):
            target.write_text(original.replace('"0 0 * * 0"', f'"{k + 1} 0 * * 0"'))
            t0 = time.perf_counter()
            # As the daemon does: the watcher's changed path is the hint.
            desired = load_directory(manifests, cache=cache, hint=[str(target)])
            p = plan(desired, actual)
            best = min(best, time.perf_counter() - t0)
            assert len(p.updates) == 1, [c.name for c in p.updates]
            # Without the hint (a periodic resync): the whole tree is stat-ed.
            target.write_text(original)
            t0 = time.perf_counter()
            plan(load_directory(manifests, cache=cache), actual)
            walked = min(walked, time.perf_counter() - t0)
    finally:
        target.write_text(original)
    return {"replan_s": best, "replan_without_hint_s": walked, "peak_rss_mb": rss_mb()}


def phase_apscheduler(manifests: str, db: str) -> dict[str, float]:
    """What a user would otherwise write: PyYAML + APScheduler 3 CronTrigger per task."""
    import yaml
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.triggers.cron import CronTrigger

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    t0 = time.perf_counter()
    docs = []
    for root, _, files in os.walk(manifests):
        for name in sorted(files):
            with open(os.path.join(root, name), "rb") as fh:
                docs.extend(d for d in yaml.load_all(fh, Loader=loader) if d)
    t1 = time.perf_counter()
    sched = BackgroundScheduler()
    sched.start(paused=True)
    for d in docs:
        trigger = CronTrigger.from_crontab(d["spec"]["schedule"], timezone=d["spec"]["timeZone"])
        sched.add_job(print, trigger, id=d["metadata"]["name"], args=[d["metadata"]["name"]])
    t2 = time.perf_counter()
    sched.shutdown(wait=False)
    return {"parse_s": t1 - t0, "add_jobs_s": t2 - t1, "total_s": t2 - t0, "jobs": len(docs),
            "peak_rss_mb": rss_mb()}


PHASES = {"cold": phase_cold, "diff": phase_diff, "one_file": phase_one_file,
          "apscheduler": phase_apscheduler}


def run_phase(name: str, manifests: Path, db: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--phase", name, "--manifests", str(manifests), "--db", str(db)],
        check=True, capture_output=True, text=True,
    )
    result: dict[str, float] = json.loads(out.stdout)
    return result


def best_of(runs: list[dict[str, float]]) -> dict[str, float]:
    keys = runs[0].keys()
    return {k: min(r[k] for r in runs) for k in keys}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--phase", choices=sorted(PHASES))
    ap.add_argument("--manifests")
    ap.add_argument("--db")
    args = ap.parse_args()
    if args.phase:
        print(json.dumps(PHASES[args.phase](args.manifests, args.db)))
        return
    with tempfile.TemporaryDirectory(prefix="reconciler-bench-") as tmp:
        manifests, db = Path(tmp) / "manifests", Path(tmp) / "state.db"
        generate(manifests, args.tasks)
        cold = []
        for _ in range(args.repeat):
            for suffix in ("", "-wal", "-shm"):
                Path(str(db) + suffix).unlink(missing_ok=True)
            cold.append(run_phase("cold", manifests, db))
        diff = best_of([run_phase("diff", manifests, db) for _ in range(args.repeat)])
        one = best_of([run_phase("one_file", manifests, db) for _ in range(args.repeat)])
        aps = best_of([run_phase("apscheduler", manifests, db) for _ in range(args.repeat)])
        c = best_of(cold)
        report = {
            "benchmark": "reconcile",
            "tasks": args.tasks,
            "cpus": os.cpu_count(),
            "cold_apply": c,
            "no_change_diff": diff,
            "one_file_change": one,
            "baseline_apscheduler3": aps,
            "targets": {"cold_apply_s": 1.5, "no_change_diff_s": 1.0, "one_file_replan_s": 0.05},
            "met": {
                "cold_apply": c["apply_s"] < 1.5,
                "no_change_diff": diff["diff_s"] + diff["load_s"] < 1.0,
                "one_file_change": one["replan_s"] < 0.05,
            },
            "ratios": {
                "apscheduler_total_over_cold_apply": aps["total_s"] / c["apply_s"],
                "apscheduler_add_jobs_over_cold_apply": aps["add_jobs_s"] / c["apply_s"],
            },
        }
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
