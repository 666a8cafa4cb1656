"""``H`` and jitter as properties: uniform over the field, identical in every process,
and jitter delays always in ``[0, jitter)``.

The chi-square bounds are the 0.999 quantiles for the degrees of freedom (a fair hash
fails one of them about once in a thousand name sets; the names are fixed, so the
result is too).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.schedule import normalize
from reconciler.core.scheduling import jitter_delay

ROOT = Path(__file__).resolve().parents[2]
NAMES = [f"task-{i:05d}" for i in range(10_000)]
#: field -> (position in the normalized expression, values, chi-square 0.999 bound)
FIELDS = {
    "minute": ("H 0 1 1 *", 0, range(0, 60), 98.32),
    "hour": ("0 H 1 1 *", 1, range(0, 24), 49.73),
    "day-of-month": ("0 0 H 1 *", 2, range(1, 29), 55.48),
    "month": ("0 0 1 H *", 3, range(1, 13), 31.26),
    "day-of-week": ("0 0 * * H", 4, range(0, 7), 22.46),
}
SLOT = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)


def h_values(names: list[str]) -> dict[str, list[int]]:
    return {field: [int(normalize(expr, n).split()[pos]) for n in names]
            for field, (expr, pos, _, _) in FIELDS.items()}


def chi_square(values: list[int], support: range) -> float:
    counts = Counter(values)
    expected = len(values) / len(support)
    return sum((counts.get(v, 0) - expected) ** 2 / expected for v in support)


def test_h_is_uniform_over_each_field() -> None:
    values = h_values(NAMES)
    for field, (_, _, support, bound) in FIELDS.items():
        assert set(values[field]) <= set(support), field
        statistic = chi_square(values[field], support)
        assert statistic < bound, f"{field}: chi-square {statistic:.1f} >= {bound}"


def test_an_hourly_herd_spreads_out() -> None:
    # 1,000 "H * * * *" tasks: no minute gets more than a few of them (vs 1,000 at :00)
    minutes = Counter(normalize("H * * * *", f"job-{i}").split()[0] for i in range(1000))
    assert len(minutes) == 60 and max(minutes.values()) <= 35


_CHILD = """
import json, sys
from datetime import timedelta
from tests.unit.test_spread_properties import NAMES, SLOT, h_values
from reconciler.core.scheduling import jitter_delay
out = h_values(NAMES)
out["jitter"] = [jitter_delay(n, SLOT, timedelta(minutes=10)) // timedelta(milliseconds=1)
                 for n in NAMES]
json.dump(out, sys.stdout)
"""


def test_h_and_jitter_are_the_same_in_another_process() -> None:
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(ROOT)}
    child = subprocess.run([sys.executable, "-c", _CHILD], cwd=ROOT, env=env, check=True,
                           capture_output=True, text=True, timeout=120)
    theirs = json.loads(child.stdout)
    ours: dict[str, list[int]] = dict(h_values(NAMES))
    ours["jitter"] = [jitter_delay(n, SLOT, timedelta(minutes=10)) // timedelta(milliseconds=1)
                      for n in NAMES]
    differ = sorted(k for k in ours if theirs.get(k) != ours[k])  # (a cheap message)
    assert not differ, f"values differ in another process: {differ}"


names = st.text(min_size=1, max_size=63)
slots = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1),
                     timezones=st.just(UTC))
jitters = st.integers(min_value=1, max_value=366 * 86_400_000).map(
    lambda ms: timedelta(milliseconds=ms))


@settings(max_examples=300, deadline=None)
@given(name=names, slot=slots, jitter=jitters)
def test_jitter_delays_lie_in_zero_to_jitter(name: str, slot: datetime,
                                             jitter: timedelta) -> None:
    delay = jitter_delay(name, slot, jitter)
    assert timedelta(0) <= delay < jitter
    assert delay == jitter_delay(name, slot, jitter)  # stable
    assert delay % timedelta(milliseconds=1) == timedelta(0)
    if jitter % timedelta(seconds=1) == timedelta(0):
        assert delay % timedelta(seconds=1) == timedelta(0)  # whole seconds for whole jitter


@settings(max_examples=300, deadline=None)
@given(name=names, field=st.sampled_from(sorted(FIELDS)),
       step=st.integers(min_value=1, max_value=7))
def test_h_with_a_step_stays_on_its_grid(name: str, field: str, step: int) -> None:
    expr, pos, support, _ = FIELDS[field]
    parts = expr.split()
    parts[pos] = f"H/{step}"
    text = normalize(" ".join(parts), name).split()[pos]
    top = support[-1] if field != "day-of-month" else 31
    values = list(range(support[0], top + 1)) if text == "*" else [  # H/1: every value
        int(v) for v in text.split(",")]
    assert values == list(range(values[0], top + 1, step))
    assert support[0] <= values[0] < support[0] + step
