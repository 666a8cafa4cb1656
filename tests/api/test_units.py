"""The API's building blocks on their own: tokens, selectors, redaction, index, events."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler.api.auth import TokenStore, bearer_token, parse_env_token, parse_token_lines
from reconciler.api.events import EventHub
from reconciler.api.index import TaskIndex
from reconciler.api.metrics import Metrics, missed_reason
from reconciler.api.server import ListenError, parse_listen
from reconciler.api.views import redacted_spec
from reconciler.core.errors import ReconcilerError
from reconciler.core.redaction import redact_url
from reconciler.core.runtime import ActualTask, RunRecord, RunStatus, SuspendOverride, Trigger
from reconciler.core.selectors import SelectorError, parse_selector

T = datetime(2026, 3, 2, 12, tzinfo=UTC)


# ------------------------------------------------------------------------ tokens


def test_env_token_forms() -> None:
    assert parse_env_token("alice:abc:def") == ("alice", "abc:def")
    assert parse_env_token("just-a-token") == ("default", "just-a-token")
    assert parse_env_token(":tok") == ("default", ":tok")
    assert parse_env_token("bad name:tok") == ("default", "bad name:tok")


def test_token_file_lines(caplog: pytest.LogCaptureFixture) -> None:
    text = "# comment\n\nalice:one\n  bob : two  \nnocolon\n:empty-name\ncarol:\n"
    assert parse_token_lines(text) == [("alice", "one"), ("bob", "two")]
    assert "token file:5: ignored" in caplog.text
    assert "one" not in caplog.text and "two" not in caplog.text  # tokens never logged


def test_token_store_names_and_constant_time_check(tmp_path: Path) -> None:
    f = tmp_path / "tokens"
    f.write_text("alice:a-very-long-token-000001\nalice:a-very-long-token-000002\n")
    os.chmod(f, 0o600)
    store = TokenStore("ci:ci-token-0000000000001", f)
    assert store.configured and store.names() == ["alice", "ci"]
    assert store.authenticate("a-very-long-token-000002") == "alice"
    assert store.authenticate("ci-token-0000000000001") == "ci"
    assert store.authenticate("ci-token-000000000000") is None  # a prefix is not a match
    assert store.authenticate("") is None
    f.write_text("bob:b-very-long-token-0000001\n")
    assert store.authenticate("a-very-long-token-000001") is None
    assert store.authenticate("b-very-long-token-0000001") == "bob"
    assert TokenStore().configured is False
    with pytest.raises(ReconcilerError, match="cannot read the API token file"):
        TokenStore(None, tmp_path / "missing")


def test_bearer_header_parsing() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer   abc  ") == "abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token("Bearer") is None
    assert bearer_token(None) is None


# --------------------------------------------------------------------- selectors


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("team=data", {"team": "data"}, True),
        ("team==data", {"team": "web"}, False),
        ("team!=data", {}, True),
        ("team", {"team": ""}, True),
        ("!team", {"team": "x"}, False),
        ("team in (data, web),tier notin (batch)", {"team": "web", "tier": "x"}, True),
        ("team in (data, web),tier notin (batch)", {"team": "web", "tier": "batch"}, False),
        ("example.com/owner=ops", {"example.com/owner": "ops"}, True),
        ("", {"anything": "x"}, True),
        ("team=", {"team": ""}, True),  # an empty value is a value (as in Kubernetes)
    ],
)
def test_selectors(text: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_selector(text).matches(labels) is expected


@pytest.mark.parametrize("text", ["a,,b", "team in (a", "team in ((a))", "=x",
                                  "bad key=x", "a=b c", "x" * 5000])
def test_bad_selectors(text: str) -> None:
    with pytest.raises(SelectorError):
        parse_selector(text)


# --------------------------------------------------------------------- redaction


def test_redaction() -> None:
    spec = redacted_spec({"spec": {"run": {
        "env": {"PLAIN": "x", "GITHUB_TOKEN": "ghp_x", "PASSWORD_FILE": {"fromFile": "/s/p"}},
        "http": {"url": "https://u:p@h/x?api_key=k&page=2", "headers": {"Cookie": "c"}},
    }}})
    run = spec["run"]
    assert run["env"] == {"PLAIN": "x", "GITHUB_TOKEN": "***",
                          "PASSWORD_FILE": {"fromFile": "/s/p"}}
    assert run["http"]["url"] == "https://u:***@h/x?api_key=***&page=2"
    assert run["http"]["headers"] == {"Cookie": "***"}
    assert redact_url("http://h/p?q=1") == "http://h/p?q=1"


# ------------------------------------------------------------------------ listen


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_listen(":9000") == ("127.0.0.1", 9000)
    assert parse_listen("[::1]:0") == ("::1", 0)
    for bad in ("8080", "host:port", "h:70000", "[::1]"):
        with pytest.raises(ListenError):
            parse_listen(bad)


# ------------------------------------------------------------------------- index


def row(name: str, *, labels: dict[str, str] | None = None, suspended: bool = False,
        generation: int = 1, override: SuspendOverride | None = None) -> ActualTask:
    doc = {"apiVersion": "reconciler/v1", "kind": "Task",
           "metadata": {"name": name, "labels": labels or {}},
           "spec": {"schedule": "*/5 * * * *", "timeZone": "Europe/Berlin",
                    "suspend": suspended, "run": {"shell": "true"}}}
    return ActualTask(name=name, document=doc, hash=f"h{generation}", generation=generation,
                      source_file=f"{name}.yaml", override=override)


def record(run_id: int, task: str, status: RunStatus) -> RunRecord:
    return RunRecord(id=run_id, task_name=task, slot=T, attempt=1, trigger=Trigger.SCHEDULE,
                     status=status, started_at=T, finished_at=None if not status.finished
                     else T)


def test_index_incremental_list_matches_a_full_render() -> None:
    async def scenario() -> None:
        index = TaskIndex()
        for i in range(300):
            index.upsert(row(f"t{i:03d}", labels={"team": "a" if i % 2 else "b"}))
        first = json.loads(await index.render_list())
        assert first["count"] == first["total"] == 300
        assert await index.render_list() is await index.render_list()  # cached bytes
        index.set_next("t007", T)
        index.run_changed(record(1, "t008", RunStatus.RUNNING))
        index.run_changed(record(2, "t009", RunStatus.FAILED))
        index.upsert(row("t010", generation=2, override=SuspendOverride(True, "n", "a", T)))
        index.remove("t011")
        index.upsert(row("t999"))
        incremental = json.loads(await index.render_list())
        full = json.loads(await index.render_list(limit=10_000))  # the filtering path
        assert incremental["items"] == full["items"]
        by_name = {t["name"]: t for t in incremental["items"]}
        assert "t011" not in by_name and "t999" in by_name
        assert by_name["t007"]["nextFireAtLocal"] == "2026-03-02T13:00:00+01:00"
        assert by_name["t008"]["running"] == 1 and by_name["t009"]["failing"] is True
        assert by_name["t010"]["suspension"]["note"] == "n"
        assert index.counts() == {"active": 299, "suspended": 1, "running": 1, "failing": 1}
        team_a = json.loads(await index.render_list(parse_selector("team=a")))
        assert {t["labels"]["team"] for t in team_a["items"]} == {"a"}
        # a row whose scheduler columns moved is not a change
        assert index.upsert(row("t000")) is False

    asyncio.run(scenario())


# ----------------------------------------------------------------- events, metrics


def test_event_hub_drops_to_a_resync_for_slow_subscribers() -> None:
    async def scenario() -> list[bytes]:
        hub = EventHub(queue_size=3)
        stream = hub.stream({"hello": 1})
        got = [await anext(stream)]
        hub.publish("run", {"i": 0})
        got.append(await anext(stream))
        for i in range(10):  # nobody reads: the queue overflows
            hub.publish("run", {"i": i})
        got.append(await anext(stream))
        hub.close()
        with pytest.raises(StopAsyncIteration):
            await anext(stream)
        return got

    hello, first, second = asyncio.run(scenario())
    assert b"event: hello" in hello
    assert first.startswith(b"event: run") and b'"i":0' in first
    assert second.startswith(b"event: resync")


def test_metrics_setters_and_reasons() -> None:
    m = Metrics()
    m.set_writer(False)
    m.set_zookeeper_state("connected")
    with pytest.raises(ValueError, match="unknown ZooKeeper state"):
        m.set_zookeeper_state("weird")
    m.set_next_fire("a", T)
    m.set_next_fire("a", None)
    m.set_next_fire("never-set", None)
    text = m.render().decode()
    assert "reconciler_is_writer 0.0" in text
    assert 'reconciler_zookeeper_state{state="connected"} 1.0' in text
    assert 'reconciler_zookeeper_state{state="disabled"} 0.0' in text
    assert 'task="a"' not in text
    missed = RunRecord(id=1, task_name="a", slot=T, attempt=1, trigger=Trigger.SCHEDULE,
                       status=RunStatus.MISSED, reason="downtime: catchUp is None")
    assert missed_reason(missed) == "catch_up"
    late = RunRecord(id=1, task_name="a", slot=T, attempt=1, trigger=Trigger.SCHEDULE,
                     status=RunStatus.MISSED, reason="started too late: 3s after the slot, "
                     "past startingDeadline 1s")
    assert missed_reason(late) == "deadline"
    skipped = RunRecord(id=1, task_name="a", slot=T, attempt=1, trigger=Trigger.SCHEDULE,
                        status=RunStatus.SKIPPED)
    assert missed_reason(skipped) == "concurrency"
