"""Stable hashing: the one source of "random" spread (``H`` in cron fields, jitter).

Every replica and every process must derive the same value from the same input, so
Python's :func:`hash` (salted per process for strings) is never used: the value is
the first 8 bytes of a SHA-256 digest. Taken modulo ``n`` (at most a few million
here) the bias is below 1e-12, so the values are uniform for every practical use.
"""

from __future__ import annotations

import hashlib


def stable_int(n: int, *parts: str) -> int:
    """A value in ``[0, n)`` derived from ``parts`` only (the same in every process)."""
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    digest = hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % n
