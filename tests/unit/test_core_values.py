"""Durations at their limits, and the fake clock every scheduling test stands on.

Pinned after a mutation run found them unpinned: the exact messages and boundaries of
``parse_duration`` (negative, the 366-day maximum, sub-millisecond manifest values),
``format_duration`` of zero, and ``FakeClock`` (moves only forward with ``advance``,
keeps its monotonic reading in step, refuses naive instants and always reads in UTC),
and the input format of the stored spec hash.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from reconciler.core.clock import FakeClock
from reconciler.core.durations import (
    MAX_DURATION,
    DurationError,
    format_duration,
    parse_duration,
)
from reconciler.core.model import TaskManifest, spec_hash

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("text", "message"), [
    ("-5s", "duration '-5s' is negative"),
    (" -1m", "duration ' -1m' is negative"),
    ("366d1ms", "duration '366d1ms' is longer than the maximum of 366d"),
])
def test_duration_errors_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(DurationError) as info:
        parse_duration(text)
    assert str(info.value) == message


def test_the_maximum_duration_itself_is_accepted() -> None:
    assert parse_duration("366d") == MAX_DURATION


@pytest.mark.parametrize(("value", "text"), [
    (timedelta(0), "0s"),
    (timedelta(microseconds=400), "0s"),
    (timedelta(milliseconds=1), "1ms"),
    (timedelta(seconds=90), "1m30s"),
])
def test_format_duration(value: timedelta, text: str) -> None:
    assert format_duration(value) == text


def manifest(timeout: str) -> TaskManifest:
    return TaskManifest.model_validate({
        "apiVersion": "reconciler/v1", "kind": "Task", "metadata": {"name": "t"},
        "spec": {"schedule": "@daily", "run": {"command": ["true"]}, "timeout": timeout},
    })


def test_a_manifest_duration_under_one_millisecond_is_refused() -> None:
    with pytest.raises(ValidationError) as info:
        manifest("0.4ms")
    assert "duration '0.4ms' is shorter than 1ms" in str(info.value)
    assert manifest("1ms").spec.timeout == timedelta(milliseconds=1)


def test_the_fake_clock_moves_forward_only_and_in_step() -> None:
    clock = FakeClock(T0)
    mono = clock.monotonic()
    assert clock.advance(timedelta(seconds=90)) == T0 + timedelta(seconds=90)
    assert clock.advance(0.5) == T0 + timedelta(seconds=90.5)
    assert clock.now() == T0 + timedelta(seconds=90.5)
    assert clock.monotonic() == mono + 90.5
    assert clock.advance(0) == clock.now()  # zero is allowed
    with pytest.raises(ValueError, match=r"^use set\(\) to move a FakeClock backwards$"):
        clock.advance(-1)
    assert clock.set(T0) == T0  # set() may go back; the monotonic reading does not
    assert clock.monotonic() == mono + 90.5


def test_the_fake_clock_reads_in_utc_and_refuses_naive_instants() -> None:
    clock = FakeClock(T0)
    paris = timezone(timedelta(hours=1))
    assert clock.set(datetime(2026, 3, 1, 14, 0, tzinfo=paris)).tzinfo is UTC
    assert clock.now() == datetime(2026, 3, 1, 13, 0, tzinfo=UTC)
    with pytest.raises(ValueError, match=r"^FakeClock needs timezone-aware instants$"):
        clock.set(datetime(2026, 3, 1))


def test_the_spec_hash_is_of_compact_sorted_utf8_json() -> None:
    # The hash is stored with every task: a change of its input format would make
    # every stored task look changed after an upgrade.
    expected = hashlib.sha256('{"a":1,"b":"é"}'.encode()).hexdigest()
    assert spec_hash({"b": "é", "a": 1}) == spec_hash({"a": 1, "b": "é"}) == expected
