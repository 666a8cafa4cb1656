"""Benchmark: scheduling lateness with and without hostile HTTP load on the API.

The daemon is the real ``reconciler run`` process on SQLite with --tasks Forbid tasks
``@every 1s`` running ``true``. Two phases of --seconds each:

* ``idle``: no API traffic;
* ``sink``: the same load as ``load`` below, sent to a trivial server in another
  process instead of the daemon: what the load costs the machine (CPU taken from the
  daemon) without costing the daemon any work, the floor ``load`` is compared with;
* ``load``: a separate process holds --idle-sockets TCP connections that never send a
  byte (reopened when the daemon closes them) and runs --sse clients that open
  ``GET /api/v1/events`` with a valid token, read the first bytes of the answer, close
  and start again, as fast as they can. Meanwhile the benchmark GETs ``/healthz`` once
  a second (status and latency recorded).

Figures come from the run rows afterwards: lateness (run start - slot) p50/p99/max of
each phase, the statuses of the slots (``skipped`` = a Forbid slot lost), the ratio
p99 under load / p99 idle (target: <= 2), and the ratios sink / idle (the machine's
share: with the load generator on the same cores it may exceed 2 by itself) and load /
sink (the daemon's own share). The slots of one task tick fire together, so p99 is
about the latest tick of a phase. Everything is on loopback; every loop stops by
itself at its phase's end.

Usage: .venv/bin/python tests/bench/api_load.py [--seconds 30] [--tasks 30]
       [--idle-sockets 600] [--sse 400]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.api import free_port, summary_ms, wait_ready

TOKEN = "bench:bench-token-0123456789"


def raise_nofile(wanted: int) -> int:
    """Raise this process's soft open-files limit towards ``wanted`` (up to the hard one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return int(soft)


def write_manifests(directory: Path, tasks: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    docs = [
        f"apiVersion: reconciler/v1\nkind: Task\nmetadata: {{name: tick-{i:03d}}}\n"
        "spec:\n  schedule: '@every 1s'\n  run: {command: ['true']}\n"
        "  concurrencyPolicy: Forbid\n  history: {successful: 100000, failed: 100000}\n"
        for i in range(tasks)
    ]
    (directory / "ticks.yaml").write_text("---\n".join(docs))


# ------------------------------------------------------------------ load worker


async def _idle_socket(port: int, end: float, counts: dict[str, int]) -> None:
    """Hold a connection that never sends a byte; reopen it when the daemon closes it."""
    while time.monotonic() < end:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            counts["idle_connect_errors"] += 1
            await asyncio.sleep(0.1)
            continue
        counts["idle_opened"] += 1
        try:
            await asyncio.wait_for(reader.read(), timeout=max(0.01, end - time.monotonic()))
            counts["idle_closed_by_daemon"] += 1
        except (TimeoutError, OSError):
            pass
        finally:
            writer.close()


async def _sse_churn(port: int, end: float, counts: dict[str, int]) -> None:
    """Open the event stream, read the status line, close; again until ``end``."""
    request = (f"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               f"Authorization: Bearer {TOKEN.partition(':')[2]}\r\n"
               "Accept: text/event-stream\r\n\r\n").encode()
    while time.monotonic() < end:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            counts["sse_connect_errors"] += 1
            await asyncio.sleep(0.1)
            continue
        try:
            writer.write(request)
            line = await asyncio.wait_for(reader.readline(), timeout=10)
            status = line.split(b" ")[1].decode() if line.count(b" ") >= 2 else "closed"
            counts[f"sse_{status}"] = counts.get(f"sse_{status}", 0) + 1
        except (TimeoutError, OSError):
            counts["sse_errors"] += 1
        finally:
            writer.close()


def new_counts() -> dict[str, int]:
    return {"idle_opened": 0, "idle_closed_by_daemon": 0, "idle_connect_errors": 0,
            "sse_connect_errors": 0, "sse_errors": 0}


async def hostile_load(port: int, seconds: float, idle: int, sse: int,
                       counts: dict[str, int]) -> None:
    """``idle`` silent connections and ``sse`` churning event-stream clients on
    127.0.0.1:``port`` for ``seconds``; what happened is added up in ``counts``."""
    raise_nofile(idle + sse + 256)
    end = time.monotonic() + seconds
    await asyncio.gather(*[_idle_socket(port, end, counts) for _ in range(idle)],
                         *[_sse_churn(port, end, counts) for _ in range(sse)])


SINK_ANSWER = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n"
               b"connection: close\r\n\r\n")


class _Sink(asyncio.Protocol):
    """Answer whatever arrives with a 503 and close; silent sockets are left open."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert isinstance(self.transport, asyncio.Transport)
        self.transport.write(SINK_ANSWER)
        self.transport.close()


async def _sink(port: int, seconds: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Sink, "127.0.0.1", port, backlog=1024)
    async with server:
        await asyncio.sleep(seconds)


def sink_worker(port: int, seconds: float) -> None:
    raise_nofile(4096)
    asyncio.run(_sink(port, seconds))


def load_worker(port: int, seconds: float, idle: int, sse: int, out: str) -> None:
    counts = new_counts()
    asyncio.run(hostile_load(port, seconds, idle, sse, counts))
    Path(out).write_text(json.dumps(counts))


# ------------------------------------------------------------------------ bench


def probe(base: str, seconds: float) -> dict[str, Any]:
    """GET /healthz once a second for ``seconds``: statuses and latencies."""
    import httpx

    latencies: list[float] = []
    statuses: dict[str, int] = {}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.perf_counter()
        try:
            status = str(httpx.get(base + "/healthz", timeout=10).status_code)
        except httpx.HTTPError as exc:
            status = exc.__class__.__name__
        latencies.append(time.perf_counter() - t0)
        statuses[status] = statuses.get(status, 0) + 1
        time.sleep(max(0.0, 1.0 - (time.perf_counter() - t0)))
    return {**summary_ms(latencies), "statuses": statuses}


def lateness_by_phase(db: str, phases: dict[str, tuple[datetime, datetime]]
                      ) -> dict[str, Any]:
    from sqlalchemy import select

    from reconciler.store import SQLStore
    from reconciler.store.schema import runs
    from reconciler.store.types import utc_from_db

    store = SQLStore(db)
    with store.engine.connect() as conn:
        rows = conn.execute(select(runs.c.slot, runs.c.started_at, runs.c.status)
                            .where(runs.c.trigger == "schedule")).all()
    store.close()
    lateness: dict[str, list[float]] = {name: [] for name in phases}
    statuses: dict[str, dict[str, int]] = {name: {} for name in phases}
    for slot, started, status in rows:
        slot_at = utc_from_db(slot)
        assert slot_at is not None
        for name, (start, end) in phases.items():
            if start + timedelta(seconds=1) <= slot_at <= end - timedelta(seconds=1):
                statuses[name][status] = statuses[name].get(status, 0) + 1
                started_at = utc_from_db(started)
                if started_at is not None:
                    lateness[name].append((started_at - slot_at).total_seconds())
    return {name: {**summary_ms(values), "statuses": statuses[name]}
            for name, values in lateness.items()}


def loaded(args: argparse.Namespace, port: int, out: Path,
           phases: dict[str, tuple[datetime, datetime]], name: str,
           measure: Any) -> tuple[Any, dict[str, int]]:
    """Run the load worker against ``port`` while ``measure()`` runs (phase ``name``)."""
    worker = subprocess.Popen(
        [*niced(args), sys.executable, __file__, "--worker", str(port), str(args.seconds + 2),
         str(args.idle_sockets), str(args.sse), str(out)])
    time.sleep(2)  # the worker starts and opens its sockets
    start = datetime.now(UTC)
    measured = measure()
    phases[name] = (start, datetime.now(UTC))
    worker.wait(timeout=args.seconds + 60)
    return measured, json.loads(out.read_text()) if out.exists() else {}


def niced(args: argparse.Namespace) -> list[str]:
    """The prefix that runs the load generator and the sink at ``--load-nice``."""
    return ["nice", "-n", str(args.load_nice)] if args.load_nice else []


def p99_ratio(lateness: dict[str, Any], over: str, under: str) -> float:
    top, bottom = lateness[over]["p99_ms"], lateness[under]["p99_ms"]
    return round(top / bottom, 2) if bottom > 0 else float("inf")


def load_average() -> str:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return "unknown"


def run(args: argparse.Namespace) -> dict[str, Any]:
    loadavg = {"start": load_average()}
    with tempfile.TemporaryDirectory(prefix="reconciler-api-load-") as tmp:
        root = Path(tmp)
        write_manifests(root / "m", args.tasks)
        db = f"sqlite:///{root / 's.db'}"
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = dict(os.environ, RECONCILER_API_TOKEN=TOKEN)
        log_path = root / "daemon.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "reconciler", "run", "--manifests", str(root / "m"),
                 "--database", db, "--listen", f"127.0.0.1:{port}", "--log-level", "warning"],
                env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_ready(base, proc, log_path, 120)
            time.sleep(2)  # the first slots after start-up are not part of a phase
            phases: dict[str, tuple[datetime, datetime]] = {}
            start = datetime.now(UTC)
            idle_probe = probe(base, args.seconds)
            phases["idle"] = (start, datetime.now(UTC))
            sink_port = free_port()
            sink = subprocess.Popen([*niced(args), sys.executable, __file__, "--sink",
                                     str(sink_port), str(args.seconds + 6)])
            time.sleep(1)  # the sink listens
            counts = {"sink": loaded(args, sink_port, root / "sink.json", phases, "sink",
                                     lambda: probe(base, args.seconds))[1]}
            sink.wait(timeout=args.seconds + 60)
            load_probe, counts["load"] = loaded(args, port, root / "load.json", phases,
                                                "load", lambda: probe(base, args.seconds))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        lateness = lateness_by_phase(db, phases)
        ratio = p99_ratio(lateness, "load", "idle")
        return {
            "tasks": args.tasks, "seconds_per_phase": args.seconds, "cpus": os.cpu_count(),
            "idle_sockets": args.idle_sockets, "sse_clients": args.sse,
            "load_nice": args.load_nice,
            "loadavg": {**loadavg, "end": load_average()},
            "lateness": lateness,
            "p99_ratio_load_over_idle": ratio,
            "p99_ratio_sink_over_idle": p99_ratio(lateness, "sink", "idle"),
            "p99_ratio_load_over_sink": p99_ratio(lateness, "load", "sink"),
            "healthz": {"idle": idle_probe, "load": load_probe},
            "load_worker": counts,
            "target": {"p99_ratio": 2.0, "met": ratio <= 2.0},
        }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--sink":
        sink_worker(int(sys.argv[2]), float(sys.argv[3]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _, _, port, seconds, idle, sse, out = sys.argv
        load_worker(int(port), float(seconds), int(idle), int(sse), out)
        return
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--tasks", type=int, default=30)
    parser.add_argument("--idle-sockets", type=int, default=600)
    parser.add_argument("--sse", type=int, default=400)
    parser.add_argument("--load-nice", type=int, default=19, help=(
        "niceness of the load generator and the sink (0: as the daemon). On a machine "
        "with few cores the generator otherwise takes the daemon's CPU, which is what "
        "the sink phase measures; nice 19 stands for load that comes from other hosts"))
    print(json.dumps(run(parser.parse_args()), indent=2))


if __name__ == "__main__":
    main()
