"""The HTTP API against a real daemon in-process (SQLite, fake clock, fake executor)."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx

from reconciler.core.runtime import RunStatus
from reconciler.core.scheduling import jitter_delay
from tests.api.conftest import AUTH, SECRET, Harness, harness, run


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    assert {"code", "message"} <= set(body["error"]), body
    return dict(body["error"])


# ------------------------------------------------------------------------ health


def test_health_and_readiness(tmp_path: Path) -> None:
    async def scenario() -> None:
        h = Harness(tmp_path)
        try:
            r = await h.client.get("/healthz")
            assert r.status_code == 200 and r.json() == {"status": "ok"}
            await h.daemon.worker.bulk(h.store.upgrade)
            r = await h.client.get("/readyz")
            assert r.status_code == 503
            assert r.json()["checks"]["reconcile"]["ok"] is False
            assert r.json()["checks"]["database"]["ok"] is True
            await h.start()
            r = await h.client.get("/readyz")
            assert r.status_code == 200 and r.json()["ready"] is True
            h.daemon.api.stopping()
            r = await h.client.get("/readyz")
            assert r.status_code == 503 and r.json()["checks"]["stopping"]["ok"] is False
        finally:
            await h.close()

    run(scenario)


# ------------------------------------------------------------------------- reads


def test_task_list_shows_schedules_in_words_zones_and_labels(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with harness(tmp_path) as h:
            r = await h.client.get("/api/v1/tasks")
            assert r.status_code == 200
            body = r.json()
            names = [t["name"] for t in body["items"]]
            assert names == sorted(names) and body["count"] == body["total"] == 5
            report = next(t for t in body["items"] if t["name"] == "nightly-report")
            assert report["scheduleText"] == "at 02:30 every day"
            assert report["timeZone"] == "Europe/Berlin" and report["labels"] == {"team": "data"}
            assert report["nextFireAt"] == "2026-03-03T01:30:00+00:00"
            assert report["nextFireAtLocal"] == "2026-03-03T02:30:00+01:00"
            assert report["runType"] == "command" and report["suspended"] is False
            assert report["source"] == {"file": "reports.yaml", "revision": None,
                                        "generation": 1}
            paused = next(t for t in body["items"] if t["name"] == "paused-in-git")
            assert paused["suspended"] and paused["suspension"]["source"] == "git"
            assert paused["nextFireAt"] is None

            r = await h.client.get("/api/v1/tasks", params={"selector": "team=data"})
            assert [t["name"] for t in r.json()["items"]] == ["nightly-report", "weekly-summary"]
            r = await h.client.get("/api/v1/tasks",
                                   params={"selector": "team in (data,platform),tier!=batch"})
            assert [t["name"] for t in r.json()["items"]] == ["nightly-backup", "nightly-report"]
            r = await h.client.get("/api/v1/tasks", params={"selector": "!tier"})
            assert {t["name"] for t in r.json()["items"]} == {
                "heartbeat", "nightly-report", "paused-in-git"}
            r = await h.client.get("/api/v1/tasks", params={"state": "suspended"})
            assert [t["name"] for t in r.json()["items"]] == ["paused-in-git"]
            r = await h.client.get("/api/v1/tasks", params={"selector": "team in (data"})
            assert r.status_code == 400 and error_of(r)["code"] == "invalid_selector"
            r = await h.client.get("/api/v1/tasks", params={"state": "sleeping"})
            assert r.status_code == 422 and error_of(r)["code"] == "invalid_request"

    run(scenario)


def test_task_detail_redacts_credentials_and_lists_fire_times(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with harness(tmp_path) as h:
            r = await h.client.get("/api/v1/tasks/nightly-report")
            assert r.status_code == 200
            t = r.json()
            env = t["spec"]["run"]["env"]
            assert env == {"REPORT_FORMAT": "text", "DB_PASSWORD": "***",
                           "API_TOKEN": {"fromEnv": "REPORT_API_TOKEN"}}
            assert "hunter2" not in r.text
            assert t["annotations"] == {"owner": "data@example.com"}
            assert [x["local"] for x in t["nextFireTimes"][:2]] == [
                "2026-03-03T02:30:00+01:00", "2026-03-04T02:30:00+01:00"]
            assert len(t["nextFireTimes"]) == 5 and t["runCounts"] == {}
            r = await h.client.get("/api/v1/tasks/paused-in-git")
            http = r.json()["spec"]["run"]["http"]
            assert http["url"] == "https://user:***@example.com/hook?token=***&x=1"
            assert http["headers"] == {"Authorization": "***", "X-Trace": "1"}
            assert r.json()["nextFireTimes"] == [] and r.json()["suspendedInGit"] is True
            assert "xyz" not in r.text and "pw@" not in r.text

            r = await h.client.get("/api/v1/tasks/no-such-task")
            assert r.status_code == 404 and error_of(r) == {
                "code": "not_found", "message": "task 'no-such-task' not found"}
            r = await h.client.get("/api/v1/tasks/Not_A_Name")
            assert r.status_code == 422 and error_of(r)["code"] == "invalid_request"
            r = await h.client.get("/api/v1/tasks/no-such-task/runs")
            assert r.status_code == 404

    run(scenario)


def test_errors_are_json_for_unknown_paths_and_methods(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with harness(tmp_path) as h:
            r = await h.client.get("/api/v1/nothing")
            assert r.status_code == 404 and error_of(r)["code"] == "not_found"
            r = await h.client.get("/api/v1/tasks/heartbeat/trigger")
            assert r.status_code == 405 and error_of(r)["code"] == "method_not_allowed"
            r = await h.client.delete("/api/v1/tasks/heartbeat")
            assert r.status_code == 405
            r = await h.client.get("/api/v1/runs/0")
            assert r.status_code == 422
            r = await h.client.get(f"/api/v1/runs/{2**70}")
            assert r.status_code == 422
            r = await h.client.get("/api/v1/runs/999")
            assert r.status_code == 404 and error_of(r)["message"] == "run 999 not found"
            r = await h.client.get("/api/v1/tasks/heartbeat/runs", params={"status": "bogus"})
            assert r.status_code == 400

    run(scenario)


def test_security_headers_and_request_size_limit(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with harness(tmp_path) as h:
            for path in ("/", "/api/v1/tasks", "/static/app.js", "/api/v1/nothing"):
                r = await h.client.get(path)
                assert r.headers["x-content-type-options"] == "nosniff", path
                assert r.headers["x-frame-options"] == "DENY"
                assert r.headers["referrer-policy"] == "no-referrer"
                assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
                assert "script-src 'self'" in r.headers["content-security-policy"]
                assert "access-control-allow-origin" not in r.headers
            assert (await h.client.get("/api/v1/tasks")).headers["cache-control"] == "no-store"
            big = {"note": "x" * (70 * 1024)}
            r = await h.client.post("/api/v1/tasks/heartbeat/suspend", json=big, headers=AUTH)
            assert r.status_code == 413 and error_of(r)["code"] == "payload_too_large"

            async def chunks() -> Any:  # no Content-Length: counted while reading
                for _ in range(40):
                    yield b"x" * 4096

            r = await h.client.post("/api/v1/tasks/heartbeat/suspend", content=chunks(),
                                    headers=AUTH)
            assert r.status_code == 413
            r = await h.client.post("/api/v1/tasks/heartbeat/suspend",
                                    json={"note": "y" * 2000}, headers=AUTH)
            assert r.status_code == 422  # longer than the 1024 characters a note may have
            r = await h.client.post("/api/v1/tasks/heartbeat/suspend",
                                    json={"note": "ok", "command": "rm -rf /"}, headers=AUTH)
            assert r.status_code == 422  # no field can carry a command
            assert not (await h.client.get("/api/v1/tasks/heartbeat")).json()["suspended"]

    run(scenario)


# --------------------------------------------------------------------- security


def test_mutations_need_a_configured_token(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with harness(tmp_path, token=None) as h:
            r = await h.client.post("/api/v1/tasks/heartbeat/trigger", headers=AUTH)
            assert r.status_code == 403
            e = error_of(r)
            assert e["code"] == "mutations_disabled" and "RECONCILER_API_TOKEN" in e["message"]
            assert (await h.client.get("/api/v1/tasks")).status_code == 200

    run(scenario)


def test_bearer_tokens_are_checked(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with harness(tmp_path) as h:
            r = await h.client.post("/api/v1/tasks/heartbeat/trigger")
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
            for bad in ("Bearer nope", f"Basic {SECRET}", f"Bearer {SECRET}x", "Bearer "):
                r = await h.client.post("/api/v1/tasks/heartbeat/trigger",
                                        headers={"Authorization": bad})
                assert r.status_code == 401, bad
                assert error_of(r)["code"] == "unauthorized"
            r = await h.client.post("/api/v1/tasks/heartbeat/trigger",
                                    headers={"Authorization": f"bearer {SECRET}"})
            assert r.status_code == 202

    run(scenario)


def test_token_file_is_reread_and_removed_tokens_stop_working(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("# operators\nalice:alice-token-0123456789\nbob:bob-token-0123456789\n")

    async def scenario() -> None:
        async with harness(tmp_path, token=None, token_file=tokens) as h:
            bob = {"Authorization": "Bearer bob-token-0123456789"}
            r = await h.client.post("/api/v1/tasks/heartbeat/suspend", headers=bob,
                                    json={"note": "by bob"})
            assert r.status_code == 200
            assert r.json()["task"]["suspension"]["actor"] == "bob"
            tokens.write_text("alice:alice-token-0123456789\n")  # bob removed
            r = await h.client.post("/api/v1/tasks/heartbeat/resume", headers=bob)
            assert r.status_code == 401
            assert error_of(r)["message"] == "invalid, expired or removed token"
            h.daemon.api.reload_tokens()  # what SIGHUP does
            alice = {"Authorization": "Bearer alice-token-0123456789"}
            r = await h.client.post("/api/v1/tasks/heartbeat/resume", headers=alice)
            assert r.status_code == 200 and r.json()["changed"] is True
            tokens.unlink()  # fail closed
            r = await h.client.post("/api/v1/tasks/heartbeat/resume", headers=alice)
            assert r.status_code == 403 and error_of(r)["code"] == "mutations_disabled"

    run(scenario)


def test_auth_reads(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with harness(tmp_path, auth_reads=True) as h:
            for path in ("/api/v1/tasks", "/api/v1/tasks/heartbeat", "/metrics",
                         "/api/v1/status", "/api/v1/events"):
                r = await h.client.get(path)
                assert r.status_code == 401, path
            assert (await h.client.get("/api/v1/tasks", headers=AUTH)).status_code == 200
            assert (await h.client.get("/healthz")).status_code == 200
            assert (await h.client.get("/readyz")).status_code == 200
            assert (await h.client.get("/")).status_code == 200  # the page asks for a token

    run(scenario)


# --------------------------------------------------------------------- mutations


def test_trigger_runs_now_and_is_audited(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with harness(tmp_path) as h:
            r = await h.client.post("/api/v1/tasks/nightly-report/trigger", headers=AUTH)
            assert r.status_code == 202
            started = r.json()["run"]
            assert started["status"] == "running" and started["trigger"] == "manual"
            assert started["reason"] == "triggered by alice (API)"
            await h.settle()
            r = await h.client.get(f"/api/v1/runs/{started['id']}")
            assert r.json()["status"] == "succeeded"
            assert r.json()["outputTail"] == "hello from nightly-report\n"
            r = await h.client.get(f"/api/v1/runs/{started['id']}/log")
            assert r.text == "hello from nightly-report\n"
            assert r.headers["content-type"].startswith("text/plain")
            r = await h.client.get("/api/v1/tasks/nightly-report/runs")
            assert [x["id"] for x in r.json()["items"]] == [started["id"]]
            t = (await h.client.get("/api/v1/tasks/nightly-report")).json()
            assert t["lastRun"]["status"] == "succeeded" and t["runCounts"] == {"succeeded": 1}
            assert t["lastResult"]["id"] == started["id"]
            audit = (await h.client.get("/api/v1/audit")).json()["items"]
            assert audit[0]["actor"] == "alice" and audit[0]["action"] == "trigger"
            assert audit[0]["target"] == "nightly-report" and audit[0]["outcome"] == "ok"
            assert audit[0]["detail"] == {"run": started["id"]}
            r = await h.client.post("/api/v1/tasks/nope/trigger", headers=AUTH)
            assert r.status_code == 404

    run(scenario)


def test_trigger_refuses_a_second_run_when_forbid(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with harness(tmp_path) as h:
            h.executor.blocked.add("nightly-backup")
            r = await h.client.post("/api/v1/tasks/nightly-backup/trigger", headers=AUTH)
            assert r.status_code == 202
            r = await h.client.post("/api/v1/tasks/nightly-backup/trigger", headers=AUTH)
            assert r.status_code == 409 and "Forbid" in error_of(r)["message"]
            listed = (await h.client.get("/api/v1/tasks", params={"state": "running"})).json()
            assert [t["name"] for t in listed["items"]] == ["nightly-backup"]
            assert listed["items"][0]["running"] == 1
            audit = (await h.client.get("/api/v1/audit", params={"limit": 1})).json()["items"]
            assert audit[0]["outcome"] == "conflict"

    run(scenario)


def test_suspend_and_resume_are_idempotent(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with harness(tmp_path) as h:
            url = "/api/v1/tasks/nightly-report"
            r = await h.client.post(f"{url}/suspend", json={"note": "storage migration"},
                                    headers=AUTH)
            assert r.status_code == 200 and r.json()["changed"] is True
            first = r.json()["task"]
            assert first["suspended"] and first["suspension"]["note"] == "storage migration"
            assert first["suspension"]["source"] == "override"
            assert first["suspension"]["actor"] == "alice" and first["nextFireAt"] is None
            assert h.daemon.scheduler.timeline.slot_of("nightly-report") is None
            r = await h.client.post(f"{url}/suspend", json={"note": "again"}, headers=AUTH)
            assert r.status_code == 200 and r.json() == {"task": first, "changed": False,
                                                         "run": None}
            r = await h.client.post(f"{url}/suspend", headers=AUTH)  # no body
            assert r.status_code == 200 and r.json()["changed"] is False
            r = await h.client.post(f"{url}/resume", headers=AUTH)
            assert r.status_code == 200 and r.json()["changed"] is True
            assert r.json()["task"]["nextFireAt"] == "2026-03-03T01:30:00+00:00"
            r = await h.client.post(f"{url}/resume", headers=AUTH)
            assert r.status_code == 200 and r.json()["changed"] is False
            # A task suspended in git is resumed with an override.
            r = await h.client.post("/api/v1/tasks/paused-in-git/resume", headers=AUTH)
            t = (await h.client.get("/api/v1/tasks/paused-in-git")).json()
            assert not t["suspended"] and t["override"]["suspended"] is False
            assert t["override"]["actor"] == "alice" and t["suspendedInGit"] is True
            actions = [(a["action"], a["outcome"]) for a in
                       (await h.client.get("/api/v1/audit")).json()["items"]]
            assert actions == [("resume", "ok"), ("resume", "unchanged"), ("resume", "ok"),
                               ("suspend", "unchanged"), ("suspend", "unchanged"),
                               ("suspend", "ok")]

    run(scenario)


def test_resume_with_catch_up_runs_the_slot_missed_while_suspended(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with harness(tmp_path) as h:
            url = "/api/v1/tasks/heartbeat"
            await h.client.post(f"{url}/suspend", headers=AUTH)
            await h.advance(25)  # slots 12:00:00, :10, :20 pass while suspended
            assert (await h.client.get(f"{url}/runs")).json()["items"] == []
            r = await h.client.post(f"{url}/resume", json={"catchUp": True}, headers=AUTH)
            caught = r.json()["run"]
            assert caught["trigger"] == "catch-up" and caught["slot"] == "2026-03-02T12:00:20+00:00"
            await h.settle()
            run_doc = (await h.client.get(f"/api/v1/runs/{caught['id']}")).json()
            assert run_doc["status"] == "succeeded"
            assert run_doc["latenessSeconds"] > 0

    run(scenario)


def test_cancel_a_live_run_and_idempotency(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with harness(tmp_path) as h:
            h.executor.blocked.add("nightly-report")
            run_id = (await h.client.post("/api/v1/tasks/nightly-report/trigger",
                                          headers=AUTH)).json()["run"]["id"]
            live = (await h.client.get(f"/api/v1/runs/{run_id}")).json()
            assert live["live"] is True and live["outputTail"] == "hello from nightly-report\n"
            r = await h.client.post(f"/api/v1/runs/{run_id}/cancel", headers=AUTH)
            assert r.status_code == 202 and r.json()["changed"] is True
            r2 = await h.client.post(f"/api/v1/runs/{run_id}/cancel", headers=AUTH)
            assert r2.json()["changed"] is False or r2.json()["run"]["status"] == "cancelled"
            h.executor.blocked.clear()  # settle() waits for it now
            await h.settle()
            done = (await h.client.get(f"/api/v1/runs/{run_id}")).json()
            assert done["status"] == "cancelled" and done["reason"] == "cancelled by alice (API)"
            r = await h.client.post(f"/api/v1/runs/{run_id}/cancel", headers=AUTH)
            assert r.status_code == 200 and r.json()["changed"] is False
            ok_id = (await h.client.post("/api/v1/tasks/heartbeat/trigger",
                                         headers=AUTH)).json()["run"]["id"]
            await h.settle()
            r = await h.client.post(f"/api/v1/runs/{ok_id}/cancel", headers=AUTH)
            assert r.status_code == 409 and "already finished: succeeded" in error_of(r)["message"]
            r = await h.client.post("/api/v1/runs/4242/cancel", headers=AUTH)
            assert r.status_code == 404

    run(scenario)


def test_cancel_a_pending_run(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from reconciler.core.protocols import NewRun
    from reconciler.core.runtime import Trigger

    async def scenario() -> None:
        async with harness(tmp_path) as h:
            pending = h.store.insert_run(NewRun(
                task_name="heartbeat", slot=datetime(2026, 3, 2, tzinfo=UTC), attempt=1,
                trigger=Trigger.MANUAL, status=RunStatus.PENDING))
            r = await h.client.post(f"/api/v1/runs/{pending.id}/cancel", headers=AUTH)
            assert r.status_code == 200 and r.json()["run"]["status"] == "cancelled"

    run(scenario)


# ------------------------------------------------------------------ live output


def test_log_streams_while_the_run_is_live(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with harness(tmp_path) as h:
            h.executor.blocked.add("nightly-report")
            run_id = (await h.client.post("/api/v1/tasks/nightly-report/trigger",
                                          headers=AUTH)).json()["run"]["id"]
            r = await h.client.get(f"/api/v1/runs/{run_id}/log", params={"follow": "false"})
            assert r.text == "hello from nightly-report\n"
            follower = asyncio.ensure_future(h.client.get(f"/api/v1/runs/{run_id}/log"))
            live = h.daemon.api.ops.live_run("nightly-report", run_id)
            assert live is not None
            deadline = asyncio.get_running_loop().time() + 10
            while not live.waiter()._waiters:  # type: ignore[attr-defined]  # following now
                assert asyncio.get_running_loop().time() < deadline, "the log never followed"
                await asyncio.sleep(0.002)
            events = h.executor.events[run_id]
            events.output("line 2\n")
            await asyncio.sleep(0)
            events.output("<script>alert(1)</script>\n")
            assert not follower.done()
            h.executor.release.set()
            r = await asyncio.wait_for(follower, timeout=10)
            assert r.status_code == 200
            assert r.text == "hello from nightly-report\nline 2\n<script>alert(1)</script>\n"

    run(scenario)


def test_events_stream_runs_and_task_changes(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with harness(tmp_path) as h:
            stream = asyncio.ensure_future(h.client.get("/api/v1/events"))
            deadline = asyncio.get_running_loop().time() + 10
            while not h.daemon.api.events.subscribers:
                assert asyncio.get_running_loop().time() < deadline, "never subscribed"
                await asyncio.sleep(0.002)
            assert h.daemon.api.events.subscribers == 1
            await h.client.post("/api/v1/tasks/heartbeat/trigger", headers=AUTH)
            await h.settle()
            await h.client.post("/api/v1/tasks/nightly-report/suspend", headers=AUTH)
            h.daemon.api.events.close()
            r = await asyncio.wait_for(stream, timeout=10)
            assert r.headers["content-type"].startswith("text/event-stream")
            kinds = [line.split(": ", 1)[1] for line in r.text.splitlines()
                     if line.startswith("event: ")]
            assert kinds[0] == "hello"
            assert "task" in kinds
            statuses = [json.loads(line[6:])["run"]["status"] for line in r.text.splitlines()
                        if line.startswith('data: {"task":"heartbeat"')]
            assert statuses == ["pending", "running", "succeeded"]

    run(scenario)


# ------------------------------------------------------------ metrics, plan, status


def test_metrics(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with harness(tmp_path) as h:
            await h.advance(2)  # 12:00:00: heartbeat's scheduled slot
            await h.settle()
            h.executor.fail.add("nightly-backup")
            await h.client.post("/api/v1/tasks/nightly-backup/trigger", headers=AUTH)
            await h.settle()
            r = await h.client.get("/metrics")
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
            text = r.text
            for name in (
                "reconciler_runs_total", "reconciler_run_duration_seconds_bucket",
                "reconciler_run_lateness_seconds_bucket", "reconciler_tasks",
                "reconciler_manifest_errors", "reconciler_reconcile_duration_seconds_bucket",
                "reconciler_last_reconcile_timestamp_seconds", "reconciler_is_writer",
                "reconciler_zookeeper_state", "reconciler_next_fire_timestamp_seconds",
            ):
                assert f"\n{name}" in text, name
            assert 'reconciler_runs_total{status="succeeded",task="heartbeat"} 1.0' in text
            assert 'reconciler_runs_total{status="failed",task="nightly-backup"} 1.0' in text
            assert 'reconciler_tasks{state="suspended"} 1.0' in text
            assert 'reconciler_tasks{state="failing"} 1.0' in text
            assert 'reconciler_zookeeper_state{state="disabled"} 1.0' in text
            assert "reconciler_is_writer 1.0" in text
            assert 'reconciler_next_fire_timestamp_seconds{task="paused-in-git"}' not in text
            assert 'reconciler_next_fire_timestamp_seconds{task="nightly-report"} 1.7725014e+09' \
                in text
            assert not re.search(r"^\w+_created[{ ]", text, re.MULTILINE)  # no companions
            assert 'reconciler_last_success_timestamp_seconds{task="heartbeat"}' in text
            assert 'reconciler_schedule_interval_seconds{task="heartbeat"} 10.0' in text
            failing = (await h.client.get("/api/v1/tasks", params={"state": "failing"})).json()
            assert [t["name"] for t in failing["items"]] == ["nightly-backup"]

    run(scenario)


def test_missed_slots_are_counted(tmp_path: Path) -> None:
    manifests = {"late.yaml": """\
apiVersion: reconciler/v1
kind: Task
metadata: {name: late}
spec:
  schedule: "@every 10s"
  startingDeadline: 1s
  run: {shell: "true"}
"""}

    async def scenario() -> None:
        async with harness(tmp_path, manifests=manifests) as h:
            await h.advance(5)  # 12:00:00 is handled 3 s late: past the 1 s deadline
            await h.settle()
            text = (await h.client.get("/metrics")).text
            assert 'reconciler_missed_slots_total{reason="deadline",task="late"} 1.0' in text
            assert 'reconciler_runs_total{status="missed",task="late"} 1.0' in text
            t = (await h.client.get("/api/v1/tasks/late")).json()
            assert t["lastRun"]["status"] == "missed" and t["lastResult"] is None

    run(scenario)


def test_plan_shows_pending_changes_and_manifest_errors(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with harness(tmp_path) as h:
            r = await h.client.get("/api/v1/plan")
            assert r.status_code == 200 and r.json()["plan"]["hasChanges"] is False
            (h.manifests / "broken.yaml").write_text(
                "apiVersion: reconciler/v1\nkind: Task\nmetadata: {name: broken}\n"
                "spec:\n  schedule: 'every day'\n  run: {shell: 'true'}\n")
            (h.manifests / "new.yaml").write_text(
                "apiVersion: reconciler/v1\nkind: Task\nmetadata: {name: brand-new}\n"
                "spec:\n  schedule: '@daily'\n  run: {shell: 'true'}\n")
            h.daemon.api.ops._plan = None
            plan = (await h.client.get("/api/v1/plan")).json()["plan"]
            assert [(c["name"], c["action"]) for c in plan["changes"]] == [("brand-new", "create")]
            assert plan["errors"][0]["file"] == "broken.yaml"
            assert plan["errors"][0]["line"] == 5
            status = (await h.client.get("/api/v1/status")).json()
            assert status["replica"] == "test-replica" and status["writer"] == "test-replica"
            assert status["mode"] == "single" and status["tasks"]["total"] == 5
            assert status["lastReconcile"]["error"] is None

    run(scenario)


def test_distributed_mode_state_is_read_from_the_coordinator(tmp_path: Path) -> None:
    class FakeCoordinator:
        state = "suspended"
        is_writer = False

    async def scenario() -> None:
        async with harness(tmp_path) as h:
            ops = h.daemon.api.ops
            single = ops.d
            # the API side's view of a daemon in distributed mode (the rest stays single)
            ops.d = replace(single, cluster=SimpleNamespace(coordinator=FakeCoordinator()))
            text = (await h.client.get("/metrics")).text
            assert "reconciler_is_writer 0.0" in text
            assert 'reconciler_zookeeper_state{state="suspended"} 1.0' in text
            r = await h.client.get("/readyz")
            assert r.status_code == 503
            assert r.json()["checks"]["zookeeper"] == {
                "ok": False, "message": "ZooKeeper session suspended"}
            status = (await h.client.get("/api/v1/status")).json()
            assert status["mode"] == "distributed" and status["writer"] is None
            FakeCoordinator.state, FakeCoordinator.is_writer = "connected", True
            assert (await h.client.get("/readyz")).status_code == 200
            status = (await h.client.get("/api/v1/status")).json()
            assert status["writer"] == "test-replica"
            ops.d = single

    run(scenario)


def test_a_task_with_two_schedules_h_and_jitter(tmp_path: Path) -> None:
    manifests = {"spread.yaml": """\
apiVersion: reconciler/v1
kind: Task
metadata: {name: backup-db}
spec:
  schedule: ["H 2 * * *", "0 12 * * 0,6"]
  timeZone: Europe/Berlin
  jitter: 10m
  run: {shell: echo backup}
"""}

    async def scenario() -> None:
        async with harness(tmp_path, manifests=manifests) as h:
            t = (await h.client.get("/api/v1/tasks/backup-db")).json()
            assert t["schedule"] == "H 2 * * *; 0 12 * * 0,6"
            assert t["scheduleText"] == "at 02:42 every day; at 12:00 on Saturday and Sunday"
            first = t["nextFireTimes"][0]
            slot = datetime.fromisoformat(first["at"])
            assert first["local"] == "2026-03-03T02:42:00+01:00"  # backup-db's H is 42
            delay = jitter_delay("backup-db", slot, timedelta(minutes=10))
            assert datetime.fromisoformat(first["start"]) == slot + delay
            assert t["nextFireAt"] == first["at"]

    run(scenario)
