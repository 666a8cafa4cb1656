"""The channel table (``kind: Channel``) through ``apply_plan`` and ``load_channels``, on
memory, SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reconciler.core.channels import ChannelManifest, channel_def
from reconciler.core.errors import PlanRefusedError, StoreError
from reconciler.core.model import ChannelDef, DesiredState, TaskDef
from reconciler.core.plan import Action, plan
from reconciler.core.protocols import Store
from reconciler.core.runtime import GitRevision

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
REV = GitRevision("c" * 40)


def channel(name: str, url: str = "http://127.0.0.1:9/hook", **extra: Any) -> ChannelDef:
    manifest = ChannelManifest.model_validate({
        "apiVersion": "reconciler/v1", "kind": "Channel", "metadata": {"name": name},
        "spec": {"webhook": {"url": url, **extra}},
    })
    return channel_def(manifest, f"channels/{name}.yaml")


def task(name: str, *channels: str) -> TaskDef:
    return TaskDef.from_document({
        "apiVersion": "reconciler/v1", "kind": "Task", "metadata": {"name": name},
        "spec": {"schedule": "@daily", "run": {"shell": "true"},
                 "notify": [{"channel": c} for c in channels]},
    }, f"tasks/{name}.yaml")


def apply(store: Store, tasks: tuple[TaskDef, ...], channels: tuple[ChannelDef, ...],
          now: datetime = T0) -> None:
    p = plan(DesiredState(tasks=tasks, channels=channels), store.load_tasks(),
             channels=store.load_channels())
    store.apply_plan(p, actor="test", revision=REV, now=now)


def test_channels_are_created_updated_and_deleted_with_the_plan(store: Store) -> None:
    apply(store, (task("a", "ops"),), (channel("ops"), channel("dev")))
    rows = store.load_channels()
    assert [c.name for c in rows] == ["dev", "ops"]
    ops = rows[1]
    assert ops.generation == 1 and ops.source_revision == REV.sha
    assert ops.document["spec"]["webhook"]["url"] == "http://127.0.0.1:9/hook"
    assert ops.hash == channel("ops").hash

    apply(store, (task("a", "ops"),), (channel("ops", "http://127.0.0.1:10/x"),),
          now=T0 + timedelta(minutes=1))
    (ops,) = store.load_channels()
    assert ops.generation == 2
    assert ops.document["spec"]["webhook"]["url"] == "http://127.0.0.1:10/x"
    assert ops.updated_at == T0 + timedelta(minutes=1)


def test_a_secret_is_stored_as_its_reference_only(store: Store) -> None:
    apply(store, (), (channel("ops", secret={"fromEnv": "HOOK_KEY"}),))
    (ops,) = store.load_channels()
    assert ops.document["spec"]["webhook"]["secret"] == {"fromEnv": "HOOK_KEY"}


def test_deleting_a_channel_a_task_still_notifies_is_refused(store: Store) -> None:
    apply(store, (task("a", "ops"), task("b", "ops")), (channel("ops"),))
    # the task's file is in error (it names a channel no longer declared): the task is
    # kept as in the table, which still names the channel
    desired = DesiredState(tasks=(), channels=(), failed_files=frozenset({"tasks/a.yaml",
                                                                          "tasks/b.yaml"}))
    p = plan(desired, store.load_tasks(), channels=store.load_channels())
    assert [c.action for c in p.channels] == [Action.DELETE]
    assert p.refusals == ('plan deletes channel "ops" but task(s) a, b still notify it; '
                          "remove it from their spec.notify first",)
    with pytest.raises(PlanRefusedError):
        store.apply_plan(p, actor="test", revision=REV, now=T0)
    assert [c.name for c in store.load_channels()] == ["ops"]


def test_a_channel_changed_since_the_plan_is_a_conflict(store: Store) -> None:
    apply(store, (), (channel("ops"),))
    stale = plan(DesiredState(tasks=(), channels=(channel("ops", "http://127.0.0.1:1/a"),)),
                 [], channels=store.load_channels())
    apply(store, (), (channel("ops", "http://127.0.0.1:2/b"),))
    with pytest.raises(StoreError, match="channel"):
        store.apply_plan(stale, actor="test", revision=REV, now=T0)
    (ops,) = store.load_channels()
    assert ops.document["spec"]["webhook"]["url"] == "http://127.0.0.1:2/b"
    apply(store, (), ())
    assert store.load_channels() == []
