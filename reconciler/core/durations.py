"""Go/Kubernetes style durations: ``90s``, ``1m30s``, ``2h``, ``1h30m``, ``500ms``.

Manifests are reviewed by people, so a duration is always a string with units:
a bare number is refused (is ``600`` seconds or minutes?). Values print back in one
canonical form, which is what makes ``90s`` and ``1m30s`` the same spec (no diff).
"""

from __future__ import annotations

import re
from datetime import timedelta

from reconciler.core.errors import DurationError

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")

#: The largest duration any manifest field accepts; anything longer is a typo.
MAX_DURATION = timedelta(days=366)


def parse_duration(text: object, *, allow_zero: bool = False) -> timedelta:
    """Parse ``text`` into a :class:`timedelta` or raise :class:`DurationError`."""
    if isinstance(text, bool) or not isinstance(text, str):
        raise DurationError(
            f"expected a duration string such as \"90s\", \"5m\" or \"1h30m\", got {text!r}"
        )
    s = text.strip()
    if s.startswith("-"):
        raise DurationError(f"duration {text!r} is negative")
    if not s or not _WHOLE.fullmatch(s):
        raise DurationError(
            f"invalid duration {text!r}: use a number with a unit (ms, s, m, h, d), e.g. \"1m30s\""
        )
    total = 0.0
    for number, unit in _PART.findall(s):
        total += float(number) * _UNITS[unit]
    if total > MAX_DURATION.total_seconds():
        raise DurationError(f"duration {text!r} is longer than the maximum of 366d")
    value = timedelta(seconds=total)
    if value <= timedelta(0) and not allow_zero:
        raise DurationError(f"duration {text!r} must be greater than zero")
    return value


def format_duration(value: timedelta) -> str:
    """Canonical text for ``value``: ``1h30m``, ``90s`` -> ``1m30s``, ``0.5s`` -> ``500ms``."""
    ms = round(value.total_seconds() * 1000)
    if ms == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        n, ms = divmod(ms, size)
        if n:
            parts.append(f"{n}{unit}")
    if ms:
        parts.append(f"{ms}ms")
    return "".join(parts)
