"""Soak: the real daemon for 30 minutes, watching for leaks and drift (not run in CI).

``reconciler run`` (the real process, SQLite in a temp directory, the HTTP API on) holds
2,000 tasks: 100 fire ``@every 1s`` running ``true`` and 1,900 are near idle (950
hourly at spread seconds of the hour, 950 daily), all running ``true``. The script
samples the daemon every --sample-interval seconds (RSS, open file descriptors,
threads, child processes and zombies, CPU, database size) and scrapes ``/metrics`` at
the same rate like a Prometheus would; the run rows of the busy tasks are read at every
sample too, so pruning never takes a row before it is seen (each busy task keeps
--history finished runs: pruning runs all along, as in production, and the retention
fills during the warm-up).

Targets (from the issue), judged after --warmup:

* RSS growth < 10 %: (max RSS after warm-up - first sample after warm-up) / first;
  the last sample is reported beside it;
* no fd and no thread growth: the floor (minimum) of the last window is not above the
  floor of the first window after warm-up (fds: by more than 4, the pipes of one run in
  flight plus a scrape's socket). Floors are compared because every running ``true``
  holds a few pipes for a moment, so single samples jump with the load; the peaks and
  the RSS trend (least squares, MB per hour) are reported too;
* lateness p99 stable: the p99 (run start - slot, busy tasks, scheduled first attempts)
  of the last window is at most 2x that of the first window after warm-up, or within
  25 ms of it (a few-ms p99 doubling on a shared 2-core machine is noise, not drift);
* nothing lost, no duplicate: every slot of every task due in the measured span has a
  row (run, skipped or missed), and none has two.

Lateness is noisy here: other work shares this 2-core machine; the load average during
the run (load average and the machine's CPU busy share) is printed on stderr and
stored in the JSON.

Usage: .venv/bin/python tests/bench/soak.py [--duration 1800] [--sample-interval 10]
       [--warmup 300] [--window 300] [--busy 100] [--idle 1900] [--history 120]
       [--no-api] [--keep]
Smoke run: --duration 120 --warmup 30 --window 30
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from firing import pct

from tests.e2e.conftest import DaemonProcess, wait_until

EXECUTED = {"succeeded", "failed", "timed_out", "cancelled", "running"}
NOT_RUN = {"missed", "skipped"}
FD_TOLERANCE = 4  # pipes of one run in flight + one scrape socket
FINAL = {"succeeded", "failed", "timed_out", "cancelled", "abandoned", "missed", "skipped"}


# ------------------------------------------------------------------------- manifests


def hourly_offset(i: int, n: int) -> int:
    """Second of the hour at which hourly idle task ``i`` of ``n`` fires."""
    return i * 3600 // max(n, 1)


def daily_offset(i: int, n: int) -> int:
    """Minute of the day (as seconds) at which daily idle task ``i`` of ``n`` fires."""
    return (i * 1440 // max(n, 1)) * 60


def write_manifests(directory: Path, busy: int, idle: int, history: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    head = "apiVersion: reconciler/v1\nkind: Task\n"
    docs = [
        f"{head}metadata: {{name: busy-{i:04d}}}\nspec:\n  schedule: '@every 1s'\n"
        f"  run: {{command: ['true']}}\n"
        f"  history: {{successful: {history}, failed: {history}}}\n"
        for i in range(busy)
    ]
    (directory / "busy.yaml").write_text("---\n".join(docs))
    hourly, daily = idle - idle // 2, idle // 2
    for kind, n in (("hourly", hourly), ("daily", daily)):
        for chunk in range(0, n, 250):
            docs = []
            for i in range(chunk, min(n, chunk + 250)):
                if kind == "hourly":
                    off = hourly_offset(i, n)
                    expr = f"{off % 60} {off // 60} * * * *"  # seconds first
                else:
                    off = daily_offset(i, n) // 60
                    expr = f"{off % 60} {off // 60} * * *"
                docs.append(f"{head}metadata: {{name: {kind}-{i:04d}}}\nspec:\n"
                            f"  schedule: '{expr}'\n  run: {{command: ['true']}}\n")
            (directory / f"{kind}-{chunk:04d}.yaml").write_text("---\n".join(docs))


def idle_slots(start: datetime, end: datetime, period: int, offset: int) -> list[datetime]:
    """Slots in (start, end] of a task firing at ``offset`` seconds into every ``period``."""
    epoch = int(start.timestamp())
    base = epoch - epoch % period + offset
    out = []
    t = base - period
    while t <= end.timestamp():
        slot = datetime.fromtimestamp(t, UTC)
        if start < slot <= end:
            out.append(slot)
        t += period
    return out


# -------------------------------------------------------------------------- sampling


@dataclass
class Sample:
    t: float  # seconds since the measured span began
    rss_mb: float
    fds: int
    threads: int
    children: int
    zombies: int
    cpu_s: float
    load1: float
    machine_cpu: tuple[float, float]  # (busy, total) CPU seconds of the whole machine
    db_mb: float
    metrics_bytes: int | None


@dataclass
class Rows:
    """Run rows of the busy tasks seen so far, by id (a later read updates the status)."""

    by_id: dict[int, tuple[str, datetime, int, str, str, float | None]] = field(
        default_factory=dict)
    reads: int = 0

    def read(self, store: Any, tasks: list[str], limit: int) -> None:
        for name in tasks:
            for r in store.list_runs(name, limit=limit):
                self.by_id[r.id] = (r.task_name, r.slot, r.attempt, r.trigger.value,
                                    r.status.value, r.lateness_seconds)
        self.reads += 1


def sample(ps: Any, t: float, root: Path, port: int | None) -> Sample:
    import psutil

    with ps.oneshot():
        rss = ps.memory_info().rss
        fds = ps.num_fds()
        threads = ps.num_threads()
        cpu = ps.cpu_times()
    kids = ps.children(recursive=True)
    zombies = 0
    for k in kids:
        with contextlib.suppress(psutil.NoSuchProcess):
            zombies += k.status() == psutil.STATUS_ZOMBIE
    db = sum(p.stat().st_size for p in root.glob("state.db*") if p.exists())
    size = None
    if port is not None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
                size = len(resp.read())
        except OSError:
            size = -1  # recorded: a failed scrape is a finding too
    m = psutil.cpu_times()
    idle = m.idle + getattr(m, "iowait", 0.0)
    return Sample(t, rss / 2**20, fds, threads, len(kids), zombies, cpu.user + cpu.system,
                  os.getloadavg()[0], (sum(m) - idle, sum(m)), db / 2**20, size)


# -------------------------------------------------------------------------- analysis


def lateness_ms(values: list[float]) -> dict[str, float | None]:
    ms = [v * 1000 for v in values]
    if not ms:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    return {"p50_ms": round(pct(ms, 0.50), 2), "p99_ms": round(pct(ms, 0.99), 2),
            "max_ms": round(max(ms), 2)}


def busy_pct(a: Sample, b: Sample) -> float | None:
    """Share of the machine's CPU time (all cores) that was busy between two samples."""
    total = b.machine_cpu[1] - a.machine_cpu[1]
    return round((b.machine_cpu[0] - a.machine_cpu[0]) / total * 100, 1) if total > 0 else None


def analyse(args: argparse.Namespace, start: datetime, end: datetime, samples: list[Sample],
            rows: Rows, idle: dict[str, Any], busy_names: list[str]) -> dict[str, Any]:
    span = (end - start).total_seconds()
    n_windows = max(1, int(-(-span // args.window)))
    per_slot: dict[tuple[str, datetime], list[tuple[int, str, str, float | None]]] = {}
    for rid, (task, slot, attempt, trig, status, late) in rows.by_id.items():
        if attempt == 1 and trig == "schedule" and start < slot <= end:
            per_slot.setdefault((task, slot), []).append((rid, status, trig, late))
    duplicates = sum(len(v) - 1 for v in per_slot.values() if len(v) > 1)

    windows = []
    for w in range(n_windows):
        w0, w1 = w * args.window, min(span, (w + 1) * args.window)
        lo, hi = start + timedelta(seconds=w0), start + timedelta(seconds=w1)
        late: list[float] = []
        statuses: Counter[str] = Counter()
        for (_task, slot), recs in per_slot.items():
            if lo < slot <= hi:
                _rid, status, _trig, lat = recs[0]
                statuses[status] += 1
                if status in EXECUTED and lat is not None:
                    late.append(lat)
        due = len(busy_names) * int(w1 - w0)
        recorded = sum(statuses.values())
        ss = [s for s in samples if w0 <= s.t < w1 or (w == n_windows - 1 and s.t >= w0)]
        cpu = (ss[-1].cpu_s - ss[0].cpu_s) / max(ss[-1].t - ss[0].t, 1e-9) if len(ss) > 1 \
            else None
        machine = busy_pct(ss[0], ss[-1]) if len(ss) > 1 else None
        windows.append({
            "window": w, "from_s": w0, "to_s": w1, "warmup": w0 < args.warmup,
            "samples": len(ss),
            "rss_mb": {"first": round(ss[0].rss_mb, 2), "last": round(ss[-1].rss_mb, 2),
                       "max": round(max(s.rss_mb for s in ss), 2)} if ss else None,
            "fds": {"min": min(s.fds for s in ss), "max": max(s.fds for s in ss)} if ss
            else None,
            "threads": {"min": min(s.threads for s in ss), "max": max(s.threads for s in ss)}
            if ss else None,
            "children_max": max((s.children for s in ss), default=None),
            "zombies_max": max((s.zombies for s in ss), default=None),
            "daemon_cpu_pct": round(cpu * 100, 1) if cpu is not None else None,
            "machine_cpu_busy_pct": machine,
            "load1_mean": round(statistics.fmean(s.load1 for s in ss), 2) if ss else None,
            "db_mb": round(ss[-1].db_mb, 2) if ss else None,
            "metrics_bytes": ss[-1].metrics_bytes if ss else None,
            "lateness": lateness_ms(late),
            "runs": sum(statuses[s] for s in EXECUTED),
            "missed": statuses["missed"], "skipped": statuses["skipped"],
            "slots_due": due, "slots_recorded": recorded, "lost": due - recorded,
            "statuses": dict(statuses),
        })

    post = [s for s in samples if s.t >= args.warmup]
    post_windows = [w for w in windows if not w["warmup"] and w["samples"]]
    out: dict[str, Any] = {"windows": windows}
    if not post or not post_windows:
        out["verdicts"] = {"error": "no sample after the warm-up: raise --duration"}
        return out
    first_w, last_w = post_windows[0], post_windows[-1]
    base = post[0].rss_mb
    rss_growth_max = (max(s.rss_mb for s in post) - base) / base * 100
    rss_growth_last = (post[-1].rss_mb - base) / base * 100
    slope = statistics.linear_regression([s.t for s in post], [s.rss_mb for s in post]).slope \
        if len(post) > 1 else 0.0
    fd_floor = last_w["fds"]["min"] - first_w["fds"]["min"]
    fd_peak = last_w["fds"]["max"] - first_w["fds"]["max"]
    th_floor = last_w["threads"]["min"] - first_w["threads"]["min"]
    th_peak = last_w["threads"]["max"] - first_w["threads"]["max"]
    p99_first, p99_last = first_w["lateness"]["p99_ms"], last_w["lateness"]["p99_ms"]
    p99s = [w["lateness"]["p99_ms"] for w in post_windows if w["lateness"]["p99_ms"] is not None]
    due = sum(w["slots_due"] for w in windows)
    recorded = sum(w["slots_recorded"] for w in windows)
    p99_ok = (p99_first is not None and p99_last is not None
              and (p99_last <= 2 * p99_first or p99_last - p99_first <= 25))
    out["growth_after_warmup"] = {
        "rss_first_mb": round(base, 2), "rss_max_mb": round(max(s.rss_mb for s in post), 2),
        "rss_last_mb": round(post[-1].rss_mb, 2),
        "rss_growth_pct_max": round(rss_growth_max, 2),
        "rss_growth_pct_last": round(rss_growth_last, 2),
        "rss_slope_mb_per_hour": round(slope * 3600, 2),
        "fds_floor_growth": fd_floor, "fds_peak_growth": fd_peak,
        "threads_floor_growth": th_floor, "threads_peak_growth": th_peak,
        "zombies_max": max(s.zombies for s in samples),
        "p99_first_window_ms": p99_first, "p99_last_window_ms": p99_last,
        "p99_min_ms": min(p99s) if p99s else None, "p99_max_ms": max(p99s) if p99s else None,
        "db_mb_first": round(post[0].db_mb, 2), "db_mb_last": round(post[-1].db_mb, 2),
    }
    idle_lost = idle["due"] - idle["recorded"]
    out["slots"] = {
        "busy_due": due, "busy_recorded": recorded, "busy_lost": due - recorded,
        "busy_executed": sum(w["runs"] for w in windows),
        "busy_missed": sum(w["missed"] for w in windows),
        "busy_skipped": sum(w["skipped"] for w in windows),
        "idle_due": idle["due"], "idle_recorded": idle["recorded"], "idle_lost": idle_lost,
        "idle_statuses": idle["statuses"],
        "duplicates": duplicates + idle["duplicates"],
    }
    out["verdicts"] = {
        "rss_growth_under_10pct": rss_growth_max < 10,
        "no_fd_growth": fd_floor <= FD_TOLERANCE,
        "no_thread_growth": th_floor <= 0,
        "no_zombies_accumulating": last_w["zombies_max"] <= max(first_w["zombies_max"], 1),
        "lateness_p99_stable": p99_ok,
        "nothing_lost": due == recorded and idle_lost == 0,
        "no_duplicates": out["slots"]["duplicates"] == 0,
    }
    out["verdicts"]["all"] = all(out["verdicts"].values())
    return out


# ------------------------------------------------------------------------------- run


def soak(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    import psutil

    d = DaemonProcess(root)
    write_manifests(d.manifests, args.busy, args.idle, args.history)
    busy_names = [f"busy-{i:04d}" for i in range(args.busy)]
    extra = ["--log-level", "info", "--heartbeat-interval", "5s", "--resync-interval", "60s",
             "--shutdown-grace", "10s"]
    if args.no_api:
        extra.append("--no-api")
    t_launch = time.monotonic()
    d.start(*extra)
    try:
        assert d.proc is not None
        ps = psutil.Process(d.proc.pid)
        wait_until(lambda: d.store.list_runs(busy_names[-1], limit=1), timeout=120,
                   what="first run of the last busy task")
        startup_s = time.monotonic() - t_launch
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
        while datetime.now(UTC) < start:  # begin on a second boundary
            time.sleep(0.01)
        t0 = time.monotonic()
        samples: list[Sample] = []
        rows = Rows()
        last_read = t0
        k = 0
        while True:
            now = time.monotonic()
            if now - t0 >= args.duration:
                break
            limit = min(args.history, int((now - last_read) * 2) + 30)
            rows.read(d.store, busy_names, limit)
            last_read = now
            samples.append(sample(ps, now - t0, root, None if args.no_api else d.port))
            if d.exited():
                raise SystemExit("the daemon exited:\n" + d.log.read_text()[-5000:])
            k += 1
            time.sleep(max(0.0, t0 + k * args.sample_interval - time.monotonic()))
        end = start + timedelta(seconds=int(time.monotonic() - t0))
        samples.append(sample(ps, time.monotonic() - t0, root, None if args.no_api else d.port))

        def settled() -> bool:  # every busy slot up to ``end`` has a final row
            rows.read(d.store, busy_names, min(args.history, 60))
            got = {(t, s) for t, s, a, _tr, st, _l in rows.by_id.values()
                   if a == 1 and st in FINAL and end - timedelta(seconds=20) < s <= end}
            return len(got) >= len(busy_names) * 20

        try:
            wait_until(settled, timeout=60, what="rows of the last slots")
        except AssertionError as exc:
            print(f"warning: {exc}", file=sys.stderr)
        idle = idle_rows(d.store, args.idle, start, end)
        log = d.log.read_text(errors="replace").splitlines()
    finally:
        d.stop()
    report = analyse(args, start, end, samples, rows, idle, busy_names)
    loads = [s.load1 for s in samples]
    cores = os.cpu_count() or 1
    daemon_pct = (samples[-1].cpu_s - samples[0].cpu_s) / max(samples[-1].t, 1e-9) * 100
    return {
        "benchmark": "soak",
        "config": {
            "duration_s": args.duration, "sample_interval_s": args.sample_interval,
            "warmup_s": args.warmup, "window_s": args.window, "busy_tasks": args.busy,
            "busy_schedule": "@every 1s, command ['true'], concurrencyPolicy Forbid (default)",
            "idle_tasks": args.idle,
            "idle_schedules": "half hourly (6-field cron, spread over the hour), half daily",
            "busy_history_kept": args.history, "database": "SQLite (WAL) in a temp dir",
            "api": "off (--no-api)" if args.no_api else "on, /metrics scraped every sample",
            "daemon_flags": extra, "python": sys.version.split()[0],
            "cpus": os.cpu_count(), "daemon_startup_s": round(startup_s, 2),
            "measured_from": start.isoformat(), "measured_to": end.isoformat(),
            "p99_stable_rule": "last window p99 <= 2x first post-warm-up window p99, "
                               "or within 25 ms of it",
            "fd_thread_rule": "min of last window <= min of first post-warm-up window "
                              f"(+{FD_TOLERANCE} for fds)",
            "rss_rule": "(max RSS after warm-up - first RSS after warm-up) / first < 10 %",
        },
        "machine_load": {
            "load1_mean": round(statistics.fmean(loads), 2), "load1_max": round(max(loads), 2),
            "cpu_busy_pct_all_cores": busy_pct(samples[0], samples[-1]),
            "daemon_cpu_pct_of_all_cores": round(daemon_pct / cores, 1),
            "note": "other work shares this 2-core machine, so lateness is noisy; "
                    "cpu_busy_pct covers the daemon, its runs, this script and everything "
                    "else"},
        "daemon_log": {"lines": len(log),
                       "warnings": sum(" WARNING " in x for x in log),
                       "errors": sum(" ERROR " in x or "Traceback" in x for x in log)},
        "row_reads": rows.reads,
        **report,
    }


def idle_rows(store: Any, idle: int, start: datetime, end: datetime) -> dict[str, Any]:
    hourly, daily = idle - idle // 2, idle // 2
    due = recorded = duplicates = 0
    statuses: Counter[str] = Counter()
    for kind, n, period, offset in (("hourly", hourly, 3600, hourly_offset),
                                    ("daily", daily, 86400, daily_offset)):
        for i in range(n):
            expected = idle_slots(start, end, period, offset(i, n))
            due += len(expected)
            if not expected:
                continue
            got = Counter(r.slot for r in store.list_runs(f"{kind}-{i:04d}", limit=100)
                          if r.attempt == 1 and start < r.slot <= end)
            recorded += sum(1 for s in expected if got[s])
            duplicates += sum(c - 1 for c in got.values() if c > 1)
            for r in store.list_runs(f"{kind}-{i:04d}", limit=100):
                if start < r.slot <= end:
                    statuses[r.status.value] += 1
    return {"due": due, "recorded": recorded, "duplicates": duplicates,
            "statuses": dict(statuses)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=1800, help="seconds measured (1800)")
    ap.add_argument("--sample-interval", type=float, default=10.0)
    ap.add_argument("--warmup", type=int, default=300, help="seconds not judged (300)")
    ap.add_argument("--window", type=int, default=300, help="window length in seconds (300)")
    ap.add_argument("--busy", type=int, default=100)
    ap.add_argument("--idle", type=int, default=1900)
    ap.add_argument("--history", type=int, default=120,
                    help="finished runs kept per busy task (pruned beyond, 120)")
    ap.add_argument("--no-api", action="store_true", help="run the daemon without its API")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (path on stderr)")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="reconciler-soak-")
    try:
        result = soak(args, Path(tmp))
    finally:
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    load = result["machine_load"]
    print(f"machine load during the run: load average (1 min) mean {load['load1_mean']}, max "
          f"{load['load1_max']}; CPU busy {load['cpu_busy_pct_all_cores']} % of "
          f"{os.cpu_count()} cores (daemon alone {load['daemon_cpu_pct_of_all_cores']} %); "
          "other work shares this machine, so lateness is noisy", file=sys.stderr)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
