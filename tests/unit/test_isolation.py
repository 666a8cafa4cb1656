"""The pure isolation decisions (``reconciler/core/isolation.py``)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from reconciler.core.isolation import IDEMPOTENCY_HEADER, idempotency_header, idempotency_key
from reconciler.core.model import HttpTarget

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
