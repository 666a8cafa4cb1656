"""A wall clock whose offset is read from a file: a testing aid for clock jumps.

Why it exists
    The daemon's promise under a stepped wall clock (NTP correcting a drifted host,
    a VM resumed after a pause) must be shown on the real process, not only with the
    fake clock of the unit tests. ``reconciler run --clock-offset-file PATH`` (hidden,
    like ``--clock-offset``) makes the daemon read its offset from ``PATH``: writing
    ``+1h`` or ``-10m`` there moves the daemon's "now" at once, exactly as a stepped
    system clock would, while monotonic time keeps running.

The file holds one signed duration (``+1h``, ``-10m``, ``0s``); a missing, empty or
unparsable file means no offset. It is re-read when its mtime or size changes, so the
cost in normal operation is one ``stat`` per call.
"""

from __future__ import annotations

import os
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from reconciler.core.durations import parse_duration
from reconciler.core.errors import DurationError


def parse_offset(text: str) -> timedelta:
    """``+1h`` / ``-10m`` / ``90s`` -> a signed timedelta (raises DurationError)."""
    text = text.strip()
    sign = -1 if text.startswith("-") else 1
    magnitude = text.lstrip("+-")
    if re.fullmatch(r"0+(ms|s|m|h|d)?", magnitude):
        return timedelta(0)  # "0s", "0m", "0": no offset
    return sign * parse_duration(magnitude)


class FileOffsetClock:
    """``datetime.now(UTC)`` plus the offset written in a file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._key: tuple[int, int] | None = None
        self._offset = timedelta(0)

    @property
    def offset(self) -> timedelta:
        try:
            st = os.stat(self.path)
        except OSError:
            self._key, self._offset = None, timedelta(0)
            return self._offset
        key = (st.st_mtime_ns, st.st_size)
        if key != self._key:
            self._key = key
            try:
                self._offset = parse_offset(self.path.read_text(encoding="utf-8") or "0s")
            except (OSError, UnicodeDecodeError, DurationError):
                self._offset = timedelta(0)
        return self._offset

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def monotonic(self) -> float:
        return time.monotonic()
