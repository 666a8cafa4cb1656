"""The DST policy checked against a brute-force oracle around real transitions.

The oracle takes the matching wall-clock times from the same expression evaluated in
UTC (no DST there), classifies each with plain ``zoneinfo`` round trips and applies the
policy by hand: ordinary -> one instant; repeated -> first pass only (fixed hour) or
both passes (wildcard hour); skipped -> the first instant after the gap, found by
scanning minute by minute (fixed hour) or nothing (wildcard hour). ``between``,
``next_after`` and ``previous_before`` must agree with it everywhere near the
transition, including at, just before and just after every slot.
"""

from __future__ import annotations

import bisect
import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from reconciler.core.schedule import Schedule

# Transitions (UTC) in 2024, checked in test_transitions_are_where_the_tests_expect.
TRANSITIONS = {
    "America/New_York": ["2024-03-10 07:00", "2024-11-03 06:00"],
    "Europe/Berlin": ["2024-03-31 01:00", "2024-10-27 01:00"],
    "Australia/Lord_Howe": ["2024-04-06 15:00", "2024-10-05 15:30"],
    "America/Havana": ["2024-03-10 05:00", "2024-11-03 05:00"],
    "America/Santiago": ["2024-04-07 03:00", "2024-09-08 04:00"],
    "Asia/Beirut": ["2024-03-30 22:00", "2024-10-26 21:00"],
}

EXPRESSIONS = [
    "30 2 * * *",
    "0,30 2 * * *",
    "45 1 * * *",
    "0 0 * * *",
    "30 23 * * *",
    "*/20 0-3 * * *",
    "* 2 * * *",
    "*/30 * * * *",
    "15 * * * *",
    "*/10 * * * *",
    "0 */2 * * *",
    "0 0 * * 0",  # only on Sundays (most transitions are on Sunday or at its start)
]

MINUTE = timedelta(minutes=1)


def parse(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=UTC)


def oracle(expr: str, tz: str, lo: datetime, hi: datetime) -> list[datetime]:
    zone = ZoneInfo(tz)
    fields = expr.split()
    wildcard = fields[-4].startswith("*")  # the hour field, 5 or 6 fields
    # the wall times that can map into (lo, hi], with a margin for the DST shift
    offsets = [x.astimezone(zone).utcoffset() or timedelta(0) for x in (lo, hi)]
    margin = timedelta(hours=3)
    walls = Schedule.parse(expr, "UTC").between(
        lo + min(offsets) - margin, hi + max(offsets) + margin
    )
    out: set[datetime] = set()
    for w in (t.replace(tzinfo=None) for t in walls):
        a = w.replace(tzinfo=zone).astimezone(UTC)
        b = w.replace(tzinfo=zone, fold=1).astimezone(UTC)
        a_exists = a.astimezone(zone).replace(tzinfo=None) == w
        b_exists = b.astimezone(zone).replace(tzinfo=None) == w
        if a_exists and b_exists:
            out.add(a)
            if wildcard:
                out.add(b)  # equal to a for an ordinary time
        elif a_exists or b_exists:  # pragma: no cover - zoneinfo maps both folds alike
            out.add(a if a_exists else b)
        elif not wildcard:
            after = w.replace(tzinfo=zone, fold=1).utcoffset()
            # b is before the transition; walk to the first instant with the new offset
            t = b.replace(second=0)
            while t.astimezone(zone).utcoffset() != after:
                t += MINUTE
            out.add(t)
    return sorted(x for x in out if lo < x <= hi)


def test_transitions_are_where_the_tests_expect() -> None:
    for tz, when in TRANSITIONS.items():
        zone = ZoneInfo(tz)
        for text in when:
            t = parse(text)
            assert (t - timedelta(seconds=1)).astimezone(zone).utcoffset() != t.astimezone(
                zone
            ).utcoffset(), (tz, text)


@pytest.mark.parametrize("tz", sorted(TRANSITIONS))
@pytest.mark.parametrize("expr", EXPRESSIONS)
def test_policy_matches_oracle(expr: str, tz: str) -> None:
    s = Schedule.parse(expr, tz)
    for text in TRANSITIONS[tz]:
        t = parse(text)
        lo, hi = t - timedelta(hours=30), t + timedelta(hours=30)
        extra = timedelta(days=8 if expr.endswith(" 0") else 1)  # weekly needs a wider view
        expected = oracle(expr, tz, lo - extra, hi + extra)
        inside = [x for x in expected if lo < x <= hi]
        assert s.between(lo, hi) == inside, (expr, tz, text)
        # point queries near the transition, at and around every slot
        near = [x for x in expected if abs(x - t) <= timedelta(hours=2)]
        probes = {t + k * timedelta(minutes=11) for k in range(-22, 23)}
        for x in near:
            probes |= {x, x - timedelta(microseconds=1), x + timedelta(seconds=1)}
        for p in sorted(probes):
            i = bisect.bisect_right(expected, p)
            assert 0 < i < len(expected)
            assert s.next_after(p) == expected[i], (expr, tz, p)
            assert s.previous_before(p) == expected[i - 1], (expr, tz, p)


@pytest.mark.parametrize("tz", ["Europe/Berlin", "Australia/Lord_Howe", "America/Havana"])
@pytest.mark.parametrize(
    ("expr", "extra"),
    [("*/30 * * * * *", 3), ("10 30 2 * * *", 50), ("*/15 */2 * * * *", 3)],
)
def test_seconds_schedules_match_oracle(expr: str, extra: int, tz: str) -> None:
    s = Schedule.parse(expr, tz)
    for text in TRANSITIONS[tz]:
        t = parse(text)
        lo, hi = t - timedelta(hours=2), t + timedelta(hours=2)
        expected = oracle(expr, tz, lo - timedelta(hours=extra), hi + timedelta(hours=extra))
        assert s.between(lo, hi) == [x for x in expected if lo < x <= hi], (expr, tz, text)
        for x in [x for x in expected if abs(x - t) <= timedelta(minutes=90)][::7]:
            i = bisect.bisect_right(expected, x)
            assert s.next_after(x) == expected[i]
            assert s.previous_before(x - timedelta(microseconds=1)) == expected[i - 2]


def test_iteration_is_strictly_increasing_through_transitions() -> None:
    for tz, when in TRANSITIONS.items():
        for expr in ("*/30 * * * *", "30 2 * * *", "0 0 * * *"):
            for text in when:
                t = parse(text)
                slots = Schedule.parse(expr, tz).between(t - timedelta(days=2),
                                                         t + timedelta(days=2))
                assert all(a < b for a, b in itertools.pairwise(slots))
