"""``describe``: the English shown for a schedule, beyond the cases of test_schedule.py.

The CLI (``get``, ``diff``), the API and the dashboard show this text next to the
expression. These cases reach the branches a mutation run found unpinned: seconds in
the time of day, the switch from a list of times to a description, steps of days and
hours, nth weekdays, month lists and ``@every`` steps of each unit.
"""

from __future__ import annotations

import pytest

from reconciler.core.schedule import describe


@pytest.mark.parametrize(("expr", "text"), [
    ("15 30 9 * * *", "at 09:30:15 every day"),
    ("*/20 0 9 * * *", "at 09:00:00, 09:00:20 and 09:00:40 every day"),
    ("0,30 * * * * *", "every 30 seconds"),
    ("* 5 * * * *", "at second 0-59 of minute 5 of every hour"),
    ("* * 3 * * *", "at second 0-59 of every minute past hour 3"),
    ("0 0,30 8-10 * * *", "at 08:00, 08:30, 09:00, 09:30, 10:00 and 10:30 every day"),
    ("*/15 9 * * *", "at 09:00, 09:15, 09:30 and 09:45 every day"),
    ("0 */3 * * *", "every 3 hours at :00"),
    ("* * * * 1", "every minute on Monday"),
    ("0 12 * * 0", "at 12:00 on Sunday"),
    ("0 0 */2 * *", "at 00:00 on every 2nd day of the month"),
    ("0 0 1-7 * 1", "at 00:00 on day 1-7 of the month or on Monday"),
    ("0 0 1,15 * *", "at 00:00 on day 1 or 15 of the month"),
    ("0 0 * * 2#1,4#3", "at 00:00 on the first Tuesday or the third Thursday"),
    ("0 0 * * 1,3,5", "at 00:00 on Monday, Wednesday and Friday"),
    ("0 0 * * 1-3,5", "at 00:00 on Monday, Tuesday, Wednesday and Friday"),
    ("0 0 * 1,7 *", "at 00:00 in January and July"),
    ("0 0 1 1 *", "at 00:00 on January 1"),
    ("@every 1s", "every second"),
    ("@every 2m", "every 2 minutes"),
    ("@every 1h", "every hour"),
    ("@every 36h", "every 36 hours"),
    ("@every 1d", "every day"),
    ("@every 90m", "every 1h30m"),
])
def test_describe_more(expr: str, text: str) -> None:
    assert describe(expr) == text
