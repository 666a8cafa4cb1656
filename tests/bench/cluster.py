"""Benchmark: claims across a cluster of replicas (ZooKeeper locks + run rows).

Three replica processes (``--replicas``) share one ZooKeeper and one database, like
``reconciler run --zookeeper``. At every slot (``--rate`` slots per second per task,
the same wall-clock instants in every replica) each replica does what the daemon's
tick does for ``--tasks`` tasks:

    claims = gather(claimer.claim(task, slot, 1) for every task)   # pipelined
    insert_runs(rows of the claims won)                             # one transaction
    release the claims won                                          # "the run finished"

Figures (JSON on stdout):

* ``claim``: per won run, claim latency + the row insert = "claim overhead per run
  (lock + row)", p50/p99; also the lock alone (claim, release) and the row alone;
* ``throughput``: runs recorded per second across the cluster, the offered slot rate,
  and the tick lag (end of a tick's work - its slot) to show whether it kept up;
* ``correctness``: duplicates (task, slot) with more than one row (must be 0),
  slots without a row, losers that won the lock after the winner released it and were
  stopped by the row's unique key;
* ``baseline``: kazoo's ``Lock`` acquire+release from one thread on one path, and our
  claimer serially (one claim+release at a time) from one process, for the ratio.

ZooKeeper: a private standalone server (tests/services/zookeeper.py, forceSync=no) by
default, ``--ensemble`` for a 3-node ensemble, or ``--hosts`` for an existing one.
Database: a throw-away database on the PostgreSQL of this machine
(``RECONCILER_TEST_POSTGRES_URL``), ``--database-url`` for another, SQLite if none.

Usage: .venv/bin/python tests/bench/cluster.py [--tasks 125] [--rate 4] [--seconds 10]
       [--spread 20] [--hold 0.05] [--ensemble] [--hosts H] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

PG_ADMIN = os.environ.get("RECONCILER_TEST_POSTGRES_URL",
                          "postgresql://postgres@127.0.0.1:5432/test")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def dist(seconds: list[float]) -> dict[str, float]:
    ms = [x * 1000 for x in seconds]
    return {
        "n": len(ms),
        "p50_ms": round(pct(ms, 0.50), 3),
        "p90_ms": round(pct(ms, 0.90), 3),
        "p99_ms": round(pct(ms, 0.99), 3),
        "max_ms": round(max(ms), 3) if ms else float("nan"),
        "mean_ms": round(statistics.fmean(ms), 3) if ms else float("nan"),
    }


# ------------------------------------------------------------------------ replica


async def replica(args: argparse.Namespace) -> dict[str, Any]:
    from reconciler.core.protocols import NewRun
    from reconciler.core.runtime import RunStatus, Trigger
    from reconciler.locks import ZooKeeperClaimer, ZooKeeperCoordinator
    from reconciler.store import SQLStore

    name = f"bench-{args.index}"
    coordinator = ZooKeeperCoordinator(args.hosts, namespace=args.namespace, replica=name,
                                       elect=False)
    await coordinator.start()
    claimer = ZooKeeperClaimer(coordinator)
    store = SQLStore(args.database_url)
    with store.engine.connect():
        pass
    hot = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-hot")
    loop = asyncio.get_running_loop()
    tasks = [f"task-{i:04d}" for i in range(args.tasks)]
    period = 1.0 / args.rate
    ticks = int(args.seconds * args.rate)

    lock_ms: list[float] = []
    release_s: list[float] = []
    row_s: list[float] = []
    overhead_s: list[float] = []
    lag_s: list[float] = []
    won = busy = duplicate_rows = errors = 0

    async def timed_claim(task: str, slot: datetime) -> tuple[Any, float]:
        t0 = time.perf_counter()
        claim = await claimer.claim(task, slot, 1)
        return claim, time.perf_counter() - t0

    async def timed_release(claim: Any) -> None:
        t0 = time.perf_counter()
        await claim.release()
        release_s.append(time.perf_counter() - t0)

    releasing: list[asyncio.Task[Any]] = []

    async def release_later(held: list[Any], hold: float) -> None:
        await asyncio.sleep(hold)
        await asyncio.gather(*(timed_release(c) for c in held))

    groups = [tasks[g::args.spread] for g in range(args.spread)]
    cpu0 = _cpu()
    for k in range(ticks):
        for g, group in enumerate(groups):
            at = args.start_at + k * period + g * period / args.spread
            delay = at - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            slot = datetime.fromtimestamp(round(at, 6), UTC)
            results = await asyncio.gather(*(timed_claim(t, slot) for t in group))
            winners = [(t, c, lat) for t, (c, lat) in zip(group, results, strict=True)
                       if c is not None]
            busy += len(group) - len(winners)
            if winners:
                batch = [NewRun(task_name=t, slot=slot, attempt=1, trigger=Trigger.SCHEDULE,
                                status=RunStatus.SUCCEEDED, replica=name,
                                fencing_token=c.token, started_at=slot, finished_at=slot)
                         for t, c, _ in winners]
                r0 = time.perf_counter()
                try:
                    records = await loop.run_in_executor(hot, store.insert_runs, batch)
                except Exception as exc:  # a bench counts, it does not crash
                    errors += 1
                    print(f"{name}: insert failed: {exc}", file=sys.stderr)
                    records = [None] * len(batch)
                row = time.perf_counter() - r0
                row_s.append(row)
                for (_, _, lat), rec in zip(winners, records, strict=True):
                    lock_ms.append(lat)
                    if rec is None:
                        duplicate_rows += 1  # won the lock after the winner released it
                    else:
                        won += 1
                        overhead_s.append(lat + row)
                # "the run": the daemon holds the claim while the executor runs
                held = [c for _, c, _ in winners]
                if args.hold > 0:
                    releasing.append(loop.create_task(release_later(held, args.hold)))
                else:
                    await asyncio.gather(*(timed_release(c) for c in held))
            lag_s.append(time.time() - at)
    await asyncio.gather(*releasing)
    cpu_s = _cpu() - cpu0
    ended = time.time()

    await claimer.close()
    await coordinator.close()
    hot.shutdown()
    store.close()
    return {
        "replica": name, "won": won, "busy": busy, "duplicate_rows_refused": duplicate_rows,
        "errors": errors, "claim_s": lock_ms, "release_s": release_s, "row_s": row_s,
        "overhead_s": overhead_s, "lag_s": lag_s, "claimer_stats": claimer.stats,
        "cpu_s": cpu_s, "ended": ended,
    }


def _cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# ----------------------------------------------------------------------- baseline


def baseline(hosts: str, namespace: str, n: int) -> dict[str, Any]:
    """kazoo's Lock recipe, one thread, one path; and our claimer serially."""
    from kazoo.client import KazooClient

    k = KazooClient(hosts=hosts, timeout=10)
    k.start(10)
    lock = k.Lock(f"/baseline-{namespace}/lock", "bench")
    times = []
    for _ in range(50):  # warm-up
        lock.acquire()
        lock.release()
    t_all = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        lock.acquire()
        lock.release()
        times.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - t_all
    k.stop()
    k.close()
    kazoo_lock = {**dist(times), "per_second": round(n / elapsed, 1)}

    async def ours() -> dict[str, Any]:
        from reconciler.locks import ZooKeeperClaimer, ZooKeeperCoordinator

        c = ZooKeeperCoordinator(hosts, namespace=f"{namespace}-serial", elect=False)
        await c.start()
        claimer = ZooKeeperClaimer(c)
        slot = datetime.now(UTC)
        samples = []
        for i in range(50 + n):
            t0 = time.perf_counter()
            claim = await claimer.claim("serial", slot, i)
            assert claim is not None
            await claim.release()
            if i >= 50:
                samples.append(time.perf_counter() - t0)
        await c.close()
        return {**dist(samples), "per_second": round(n / sum(samples), 1)}

    return {"kazoo_lock_acquire_release": kazoo_lock,
            "claimer_serial_claim_release": asyncio.run(ours())}


# -------------------------------------------------------------------------- setup


def make_database(url: str | None) -> tuple[str, Any]:
    """(url, cleanup): a throw-away PostgreSQL database, or SQLite when unreachable."""
    from sqlalchemy import create_engine, text

    from reconciler.store import SQLStore
    from reconciler.store.engine import normalize_url

    if url:
        SQLStore(url).upgrade()
        return url, lambda: None
    try:
        admin = create_engine(normalize_url(PG_ADMIN), isolation_level="AUTOCOMMIT",
                              connect_args={"connect_timeout": 3})
        name = f"reconciler_bench_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        db_url = normalize_url(PG_ADMIN).set(database=name).render_as_string(
            hide_password=False)

        def drop() -> None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()

        SQLStore(db_url).upgrade()
        return db_url, drop
    except Exception as exc:
        print(f"PostgreSQL unavailable ({exc}); using SQLite", file=sys.stderr)
        path = Path(tempfile.mkdtemp(prefix="bench-cluster-")) / "state.db"
        db_url = f"sqlite:///{path}"
        SQLStore(db_url).upgrade()
        return db_url, lambda: None


def _jvm_cpu(server: Any) -> float:
    """CPU seconds of the ZooKeeper JVM(s) we started (0 for an external one)."""
    if server is None:
        return 0.0
    import psutil

    total = 0.0
    for s in getattr(server, "servers", [server]):
        if s.pid:
            t = psutil.Process(s.pid).cpu_times()
            total += t.user + t.system
    return total


def check_rows(db_url: str, tasks: int, ticks: int) -> dict[str, Any]:
    from sqlalchemy import func, select

    from reconciler.store import SQLStore
    from reconciler.store.schema import runs

    store = SQLStore(db_url)
    with store.engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(runs)).scalar_one()
        dup_q = (select(runs.c.task_name, runs.c.slot).group_by(runs.c.task_name, runs.c.slot)
                 .having(func.count() > 1))
        duplicates = len(conn.execute(dup_q).all())
        per_replica: dict[str, int] = dict(conn.execute(
            select(runs.c.replica, func.count()).group_by(runs.c.replica)).all())
    store.close()
    expected = tasks * ticks
    return {"rows": total, "expected_slots": expected, "duplicates": duplicates,
            "slots_without_a_row": expected - total + duplicates, "rows_per_replica": per_replica}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=125)
    parser.add_argument("--rate", type=float, default=4.0, help="slots per second per task")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--hold", type=float, default=0.05,
                        help="seconds a won claim is held (the run), default 0.05")
    parser.add_argument("--spread", type=int, default=20,
                        help="task groups spread over each period (1: all slots at once)")
    parser.add_argument("--hosts", help="an existing ZooKeeper (default: start one)")
    parser.add_argument("--ensemble", action="store_true", help="start a 3-node ensemble")
    parser.add_argument("--database-url", help="default: a throw-away PostgreSQL database")
    parser.add_argument("--baseline", type=int, default=500, help="baseline iterations")
    # internal: one replica process
    parser.add_argument("--replica-of", help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--namespace", help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.replica_of:
        args.hosts = args.replica_of
        result = asyncio.run(replica(args))
        json.dump(result, sys.stdout)
        return

    from tests.services.zookeeper import start_ensemble, start_standalone, zookeeper_missing

    server: Any = None
    hosts = args.hosts
    if hosts is None:
        reason = zookeeper_missing()
        if reason:
            raise SystemExit(reason)
        server = start_ensemble() if args.ensemble else start_standalone()
        hosts = server.hosts if args.ensemble else server.address
    db_url, drop = make_database(args.database_url)
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    try:
        start_at = time.time() + 3.0  # every replica connected and warmed up by then
        jvm_cpu0 = _jvm_cpu(server)
        procs = [
            subprocess.Popen(
                [sys.executable, __file__, "--replica-of", hosts, "--index", str(i),
                 "--namespace", namespace, "--start-at", repr(start_at),
                 "--tasks", str(args.tasks), "--rate", str(args.rate),
                 "--seconds", str(args.seconds), "--spread", str(args.spread),
                 "--hold", str(args.hold),
                 "--database-url", db_url],
                stdout=subprocess.PIPE, text=True, cwd=ROOT,
            )
            for i in range(args.replicas)
        ]
        outputs = [p.communicate(timeout=args.seconds * 10 + 60)[0] for p in procs]
        if any(p.returncode for p in procs):
            raise SystemExit(f"a replica failed: {[p.returncode for p in procs]}")
        results = [json.loads(o) for o in outputs]
        jvm_cpu = _jvm_cpu(server) - jvm_cpu0
        ticks = int(args.seconds * args.rate)
        rows = check_rows(db_url, args.tasks, ticks)
        base = baseline(hosts, namespace, args.baseline)
    finally:
        drop()
        if server is not None:
            server.close() if args.ensemble else server.kill()

    def merged(key: str) -> list[float]:
        return [x for r in results for x in r[key]]

    runs = sum(r["won"] for r in results)
    # from the first slot to the last replica's last release, at least the scheduled span
    elapsed = max(max(r["ended"] for r in results) - start_at, args.seconds)
    lag = merged("lag_s")
    overhead = dist(merged("overhead_s"))
    claim_lock = dist(merged("claim_s"))
    report = {
        "setup": {
            "replicas": args.replicas, "tasks": args.tasks, "rate_per_task": args.rate,
            "spread": args.spread, "hold_s": args.hold,
            "seconds": args.seconds, "zookeeper": "ensemble" if args.ensemble else (
                "standalone (forceSync=no)" if args.hosts is None else hosts),
            "database": db_url.split("://")[0], "cpus": os.cpu_count(),
        },
        "claim": {
            "overhead_lock_plus_row": overhead,
            "lock_claim": claim_lock,
            "lock_release": dist(merged("release_s")),
            "row_insert_batch": dist(merged("row_s")),
        },
        "throughput": {
            "offered_slots_per_s": round(args.tasks * args.rate, 1),
            "runs_per_s": round(runs / elapsed, 1),
            "elapsed_s": round(elapsed, 2),
            "claim_requests_per_s": round(args.replicas * args.tasks * args.rate, 1),
            "tick_lag": dist(lag),
            "kept_up": pct(lag, 0.99) < 1.0 / args.rate,
        },
        "cpu": {
            "replicas_cpu_s": round(sum(r["cpu_s"] for r in results), 2),
            "zookeeper_cpu_s": round(jvm_cpu, 2),
            "replica_cpu_ms_per_run": round(
                sum(r["cpu_s"] for r in results) * 1000 / max(runs, 1), 3),
            "note": "replicas, ZooKeeper and PostgreSQL share this machine's CPUs",
        },
        "correctness": {
            **rows,
            "lost_races_stopped_by_unique_row": sum(r["duplicate_rows_refused"]
                                                    for r in results),
            "insert_errors": sum(r["errors"] for r in results),
            "claimer_stats": [r["claimer_stats"] for r in results],
        },
        "baseline": base,
    }
    kl = base["kazoo_lock_acquire_release"]
    report["ratio"] = {
        "cluster_runs_per_s_vs_kazoo_lock_per_s": round(runs / elapsed / kl["per_second"], 2),
        "serial_claim_p50_vs_kazoo_lock_p50": round(
            base["claimer_serial_claim_release"]["p50_ms"] / kl["p50_ms"], 2),
    }
    report["targets"] = {
        "overhead_p50_under_5ms": overhead["p50_ms"] < 5,
        "overhead_p99_under_25ms": overhead["p99_ms"] < 25,
        "at_least_500_runs_per_s": runs / elapsed >= 500,
        "zero_duplicates": rows["duplicates"] == 0,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
