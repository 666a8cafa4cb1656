"""Time zone names: which IANA names a schedule may use, resolved safely."""

from __future__ import annotations

import functools
import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from reconciler.core.errors import ScheduleError

_ZONE_NAME = re.compile(r"[A-Za-z0-9_+\-]+(?:/[A-Za-z0-9_+\-]+)*")
#: Names that exist in a zoneinfo directory but are not portable IANA zones.
_REFUSED_ZONE_PREFIXES = ("posix/", "right/")
_REFUSED_ZONES = frozenset({"localtime", "posixrules", "Factory"})


@functools.lru_cache(maxsize=1024)
def check_time_zone(name: str) -> ZoneInfo:
    """The :class:`ZoneInfo` for an IANA name, or :class:`ScheduleError`.

    Only ``A-Z a-z 0-9 _ + -`` separated by single ``/`` are accepted, so relative or
    absolute paths (``../../etc/passwd``, ``/etc/localtime``) never reach the file
    system; host-specific entries (``localtime``) and the ``posix/``/``right/`` copies
    are refused too.
    """
    if (
        not isinstance(name, str)
        or len(name) > 255
        or not _ZONE_NAME.fullmatch(name)
        or name in _REFUSED_ZONES
        or name.startswith(_REFUSED_ZONE_PREFIXES)
    ):
        raise ScheduleError(f'unknown time zone "{name}"')
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ScheduleError(f'unknown time zone "{name}"') from None
