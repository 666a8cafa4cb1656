"""The pure isolation decisions (``reconciler/core/isolation.py``)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from reconciler.core.isolation import (
    IDEMPOTENCY_HEADER,
    HostFacts,
    IsolationMode,
    admit_on_host,
    cgroup_settings,
    idempotency_header,
    idempotency_key,
    memory_verdict,
    parse_quantity,
    process_rlimits,
    rlimits,
)
from reconciler.core.model import DesiredState, HttpTarget, Limits
from reconciler.manifests import load_tree
from reconciler.service import reconcile
from reconciler.store import create_store

SLOT = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)


def test_the_key_is_a_uuid5_of_the_task_and_the_slot() -> None:
    key = idempotency_key("nightly", SLOT)
    assert uuid.UUID(key).version == 5
    assert key == idempotency_key("nightly", SLOT)  # any replica, attempt or restart
    # pinned: a change of the derivation would give every stored slot a new key
    assert key == str(uuid.uuid5(uuid.UUID("5f0c6b7e-2d1a-4c55-9a53-6a0e1f6b8d21"),
                                 "nightly\n2026-03-29T01:00:00.000000+00:00"))


def test_the_key_names_the_instant_not_its_spelling() -> None:
    berlin = SLOT.astimezone(timezone(timedelta(hours=2)))
    assert idempotency_key("nightly", berlin) == idempotency_key("nightly", SLOT)


@pytest.mark.parametrize(("task", "slot"), [
    ("nightly", SLOT + timedelta(microseconds=1)),  # a manual run one tick later
    ("nightly", SLOT + timedelta(days=1)),
    ("nightly-2", SLOT),
])
def test_other_slots_and_tasks_have_other_keys(task: str, slot: datetime) -> None:
    assert idempotency_key(task, slot) != idempotency_key("nightly", SLOT)


def test_a_naive_slot_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        idempotency_key("nightly", SLOT.replace(tzinfo=None))


def test_the_header_is_sent_unless_opted_out_or_set_by_the_task() -> None:
    url = "http://svc/hook"
    assert idempotency_header(HttpTarget(url=url), "k") == (IDEMPOTENCY_HEADER, "k")
    assert idempotency_header(HttpTarget(url=url, idempotency_key=False), "k") is None
    own = HttpTarget(url=url, headers={"idempotency-KEY": "mine"})
    assert idempotency_header(own, "k") is None


# ------------------------------------------------------------------ run as, limits

TASK = """\
apiVersion: reconciler/v1
kind: Task
metadata:
  name: backup
spec:
  schedule: "@daily"
  run:
    command: [id, -u]
    user: nobody
"""


def _load(text: str) -> DesiredState:
    return load_tree({"m/backup.yaml": text.encode()})


def test_a_daemon_that_is_not_root_refuses_run_user_naming_file_line_and_field() -> None:
    desired = _load(TASK)
    assert [t.name for t in desired.tasks] == ["backup"] and desired.ok
    refused = admit_on_host(desired, HostFacts(root=False))
    assert refused.tasks == () and refused.failed_files == {"m/backup.yaml"}
    [error] = refused.errors
    assert str(error).startswith("m/backup.yaml:9:5: backup: spec.run.user: running as "
                                 "another user needs a daemon running as root")
    assert admit_on_host(desired, HostFacts(root=True)) is desired


def test_the_refusal_names_the_group_when_only_the_group_is_set() -> None:
    refused = admit_on_host(_load(TASK.replace("user: nobody", "group: 65534")),
                            HostFacts(root=False))
    assert [(e.line, e.field) for e in refused.errors] == [(9, "spec.run.group")]


def test_plan_and_apply_of_a_daemon_that_is_not_root_create_no_such_task(
    tmp_path: Path,
) -> None:
    (tmp_path / "backup.yaml").write_text(TASK)
    (tmp_path / "other.yaml").write_text(TASK.replace("backup", "other").replace(
        "    user: nobody\n", ""))
    store = create_store("memory://")
    result = reconcile(tmp_path, store, actor="t", host=HostFacts(root=False))
    assert [t.name for t in store.load_tasks()] == ["other"]
    assert [e.field for e in result.plan.errors] == ["spec.run.user"]
    reconcile(tmp_path, store, actor="t", host=HostFacts(root=True))
    assert [t.name for t in store.load_tasks()] == ["backup", "other"]


@pytest.mark.parametrize(("run", "message"), [
    ('    http: {url: "http://svc/x"}\n    user: nobody\n',
     "user and group apply to command and shell runs only (this is http)"),
    ('    python: "m:f"\n    group: staff\n',
     "user and group apply to command and shell runs only (this is python)"),
])
def test_run_as_is_for_command_and_shell_only(run: str, message: str) -> None:
    text = TASK.replace("    command: [id, -u]\n    user: nobody\n", run)
    [error] = _load(text).errors
    assert error.field == "spec.run" and message in error.message


@pytest.mark.parametrize(("limits", "field"), [
    ("{memory: 64MB}", "spec.limits.memory"),
    ("{memory: 64}", "spec.limits.memory"),  # a number, not a size string
    ("{cpu: 1.5}", "spec.limits.cpu"),  # a number: quote it
    ("{cpu: '-1'}", "spec.limits.cpu"),
    ("{processes: 0}", "spec.limits.processes"),
    ("{openFiles: 2}", "spec.limits.openFiles"),
    ("{fileSize: 1Gb}", "spec.limits.fileSize"),
    ("{swap: 1Gi}", "spec.limits.swap"),
])
def test_bad_limits_name_their_field_and_line(limits: str, field: str) -> None:
    [error] = _load(TASK + f"  limits: {limits}\n").errors
    assert (error.file, error.line, error.field) == ("m/backup.yaml", 10, field), error


def test_limits_of_an_http_task_are_refused() -> None:
    text = TASK.replace("    command: [id, -u]\n    user: nobody\n", '    http: {url: "http://s/"}\n')
    [error] = _load(text + "  limits: {memory: 64Mi}\n").errors
    assert "limits apply to command, shell and python runs (this is http)" in error.message


def test_limits_in_each_mode() -> None:
    limits = Limits(memory="512Mi", cpu="1.5", processes=256, open_files=1024, file_size="1G")
    assert rlimits(limits) == {"as": 512 << 20, "nproc": 256, "nofile": 1024,
                               "fsize": 1_000_000_000}
    assert cgroup_settings(limits) == {"memory.max": str(512 << 20), "memory.swap.max": "0",
                                       "pids.max": "256", "cpu.max": "150000 100000"}
    assert cgroup_settings(Limits(cpu="250m")) == {"cpu.max": "25000 100000"}
    assert process_rlimits(limits, "cgroup") == {"nofile": 1024, "fsize": 1_000_000_000}
    assert process_rlimits(limits, "rlimit") == rlimits(limits)
    assert rlimits(None) == cgroup_settings(None) == {}
    assert parse_quantity("2Ki") == 2048 and parse_quantity("3") == 3
    with pytest.raises(ValueError, match="not a size"):
        parse_quantity("1.5Gi")


@pytest.mark.parametrize(("exit_code", "output", "oom", "mode", "expected"), [
    (1, "Traceback...\nMemoryError\n", 0, "rlimit", True),
    (1, "x: Cannot allocate memory", 0, "rlimit", True),
    (-11, "", 0, "rlimit", True),  # SIGSEGV: a C program whose malloc failed
    (-9, "", 0, "rlimit", True),
    (1, "some other failure", 0, "rlimit", False),
    (0, "MemoryError", 0, "rlimit", False),  # it succeeded
    (-15, "", 0, "rlimit", False),
    (-9, "", 1, "cgroup", True),
    (-9, "MemoryError", 0, "cgroup", False),  # cgroup mode counts OOM kills, exactly
])
def test_memory_verdict(exit_code: int, output: str, oom: int, mode: IsolationMode,
                        expected: bool) -> None:
    limits = Limits(memory="64Mi")
    verdict = memory_verdict(limits, mode, exit_code=exit_code, output_tail=output,
                             oom_kills=oom)
    assert verdict == ("memory limit 64Mi exceeded" if expected else None)
    assert memory_verdict(None, mode, exit_code=exit_code, output_tail=output,
                          oom_kills=oom) is None
