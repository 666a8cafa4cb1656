"""The file-driven clock offset used to step a running daemon's clock in fault tests."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest

from reconciler.cli.clockfile import FileOffsetClock, parse_offset
from reconciler.core.errors import DurationError


@pytest.mark.parametrize(("text", "expected"), [
    ("+1h", timedelta(hours=1)), ("-10m", timedelta(minutes=-10)), ("90s", timedelta(seconds=90)),
    (" 0s\n", timedelta(0)),
])
def test_parse_offset(text: str, expected: timedelta) -> None:
    assert parse_offset(text) == expected


def test_parse_offset_rejects_junk() -> None:
    with pytest.raises(DurationError):
        parse_offset("soon")


def test_offset_follows_the_file(tmp_path: Path) -> None:
    path = tmp_path / "offset"
    clock = FileOffsetClock(path)
    assert clock.offset == timedelta(0)  # no file: no offset
    path.write_text("+1h")
    assert clock.offset == timedelta(hours=1)
    path.write_text("-10m")
    os.utime(path, ns=(1, 1))  # a different mtime even on a coarse-grained filesystem
    assert clock.offset == timedelta(minutes=-10)
    path.write_text("garbage!")
    os.utime(path, ns=(2, 2))
    assert clock.offset == timedelta(0)  # unparsable: no offset, never a crash
    path.unlink()
    assert clock.offset == timedelta(0)
    before = clock.monotonic()
    assert clock.monotonic() >= before
    assert clock.now().tzinfo is not None
