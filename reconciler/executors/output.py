"""Captured output: a bounded tail buffer, the ``::progress`` parser and live streaming.

Why a *tail*: the run record keeps the end of a task's output, which is where the
error usually is. A task that prints a gigabyte must not make the daemon hold a
gigabyte, so :class:`TailBuffer` never keeps more than about twice its limit (it
trims in batches, which keeps appends amortised O(1)) and hands out exactly the last
``limit`` bytes. Decoding happens once at the end, and a cut that falls inside a
multibyte UTF-8 sequence drops the orphaned continuation bytes instead of producing
a replacement character.

Progress protocol (command, shell and python runs): a line written to stdout of the
form ::

    ::progress <percent> [message]     e.g.  ::progress 42.5 copying files
    ::progress - <message>             e.g.  ::progress - waiting for lock

reports progress; ``percent`` is a number from 0 to 100 (a trailing ``%`` is
accepted) or ``-`` for "no percentage". The line must start at the beginning of a
line; ``\\r\\n`` endings are accepted. Progress lines stay part of the captured output.
Lines may arrive split over several reads: the parser keeps the partial line, but
only while it can still be a protocol line and is at most
:data:`MAX_PROGRESS_LINE` bytes long. Anything else (a malformed number, a value
outside 0-100, an over-long line) is ordinary output.

Secrets: a task that prints a secret value it was given (``fromEnv``/``fromFile``),
or dies with a traceback that shows it, must not have the value stored in its run
record or streamed to the dashboard. The sink masks every secret value of useful
length with ``***`` in the live stream (holding back just enough characters to catch
a value split over two reads) and in the tail it hands out. What cannot be masked:
a value cut by the start of the tail (its last characters stay) and transformed
values (base64, reversed); the task's own log files are outside our reach.
"""

from __future__ import annotations

import codecs
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # not at run time: the python-run child imports this module
    from reconciler.core.protocols import ExecutionEvents

logger = logging.getLogger(__name__)

PROGRESS_PREFIX = b"::progress"
#: Protocol lines longer than this (in bytes) are ignored.
MAX_PROGRESS_LINE = 4096

ProgressCallback = Callable[[float | None, str | None], None]

#: Secret values shorter than this are not masked (replacing every "1" or "ab" in a
#: message would make it unreadable and protects little).
MIN_REDACT_LENGTH = 4

REDACTED = "***"


def redact(text: str | None, secrets: Iterable[str]) -> str | None:
    """Replace every occurrence of a secret value (of useful length) in ``text``."""
    if not text:
        return text
    # longest first: a secret that contains a shorter one is masked whole
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= MIN_REDACT_LENGTH and secret in text:
            text = text.replace(secret, REDACTED)
    return text


class _StreamMask:
    """Masks secrets in text that arrives in pieces.

    Holds back the last ``longest - 1`` characters of what it has seen: a secret that
    starts there may continue in the next piece. Masking the held-back text together
    with the new piece catches it; anything longer than the hold-back was complete.
    When no secret contains a line break, text up to the last one goes out at once (a
    task that prints a line and then waits shows the whole line).
    """

    __slots__ = ("_hold", "_lines", "_pending", "_secrets")

    def __init__(self, secrets: Sequence[str]) -> None:
        self._secrets = tuple(sorted((s for s in secrets if len(s) >= MIN_REDACT_LENGTH),
                                     key=len, reverse=True))
        self._hold = max((len(s) for s in self._secrets), default=1) - 1
        #: No secret spans a line break: a complete line can go out at once.
        self._lines = not any("\n" in s for s in self._secrets)
        self._pending = ""

    def __bool__(self) -> bool:
        return bool(self._secrets)

    @property
    def secrets(self) -> tuple[str, ...]:
        return self._secrets

    def feed(self, text: str) -> str:
        text = redact(self._pending + text, self._secrets) or ""
        cut = max(0, len(text) - self._hold)
        if self._lines:
            cut = max(cut, text.rfind("\n") + 1)
        self._pending = text[cut:]
        return text[:cut]

    def flush(self) -> str:
        text, self._pending = self._pending, ""
        return text


class TailBuffer:
    """Keeps the last ``limit`` bytes written to it, in bounded memory."""

    __slots__ = ("_buf", "_limit", "_total")

    def __init__(self, limit: int) -> None:
        self._limit = max(0, limit)
        self._buf = bytearray()
        self._total = 0

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def total_bytes(self) -> int:
        """How many bytes were written in all."""
        return self._total

    @property
    def truncated(self) -> bool:
        return self._total > self._limit

    def append(self, data: bytes) -> None:
        self._total += len(data)
        limit = self._limit
        if limit == 0 or not data:
            return
        if len(data) >= limit:
            self._buf[:] = memoryview(data)[len(data) - limit :]
            return
        self._buf += data
        if len(self._buf) > 2 * limit:
            del self._buf[: len(self._buf) - limit]

    def getvalue(self) -> bytes:
        """Exactly the last ``limit`` bytes (fewer if less was written)."""
        if len(self._buf) > self._limit:
            del self._buf[: len(self._buf) - self._limit]
        return bytes(self._buf)

    def text(self) -> str:
        """The tail decoded as UTF-8 (``errors="replace"``), see :func:`decode_tail`."""
        return decode_tail(self.getvalue(), cut=self.truncated)


def decode_tail(data: bytes, *, cut: bool) -> str:
    """Decode ``data``; when ``cut``, skip continuation bytes of a character split at the cut."""
    start = 0
    if cut:
        while start < min(3, len(data)) and (data[start] & 0xC0) == 0x80:
            start += 1
    return data[start:].decode("utf-8", errors="replace")


class ProgressParser:
    """Finds ``::progress`` lines in a byte stream fed in arbitrary chunks."""

    __slots__ = ("_callback", "_pending", "_skipping")

    def __init__(self, callback: ProgressCallback) -> None:
        self._callback = callback
        self._pending: bytearray | None = None  # a partial line that may be a protocol line
        self._skipping = False  # inside a line that is not a protocol line

    def feed(self, data: bytes) -> None:
        pos = 0
        if self._pending is not None or self._skipping:
            newline = data.find(b"\n")
            if newline < 0:
                if self._pending is not None:
                    self._extend_pending(data)
                return
            if self._pending is not None:
                if len(self._pending) + newline <= MAX_PROGRESS_LINE:
                    self._handle(bytes(self._pending) + data[:newline])
                self._pending = None
            self._skipping = False
            pos = newline + 1
        line_start = pos
        search = pos
        while True:
            index = data.find(PROGRESS_PREFIX, search)
            if index < 0:
                break
            if index != line_start and data[index - 1] != 0x0A:
                search = index + 1
                continue
            newline = data.find(b"\n", index)
            if newline < 0:
                break  # an unfinished protocol line: handled as the tail below
            if newline - index <= MAX_PROGRESS_LINE:
                self._handle(data[index:newline])
            search = line_start = newline + 1
        last_newline = data.rfind(b"\n", pos)
        tail_start = pos if last_newline < 0 else last_newline + 1
        if len(data) - tail_start > MAX_PROGRESS_LINE:
            self._skipping = True
        elif tail_start < len(data):
            self._pending = bytearray()
            self._extend_pending(data[tail_start:])

    def close(self) -> None:
        """End of stream: a final protocol line without a newline still counts."""
        if self._pending is not None and len(self._pending) <= MAX_PROGRESS_LINE:
            self._handle(bytes(self._pending))
        self._pending = None
        self._skipping = False

    def _extend_pending(self, data: bytes) -> None:
        assert self._pending is not None
        if len(self._pending) + len(data) > MAX_PROGRESS_LINE:
            self._pending = None
            self._skipping = True
            return
        self._pending += data
        head = bytes(self._pending[: len(PROGRESS_PREFIX)])
        if not PROGRESS_PREFIX.startswith(head):
            self._pending = None
            self._skipping = True

    def _handle(self, line: bytes) -> None:
        parsed = parse_progress_line(line)
        if parsed is not None:
            self._callback(*parsed)


def parse_progress_line(line: bytes) -> tuple[float | None, str | None] | None:
    """``(percent, message)`` for a protocol line (without its newline), else None."""
    if not line.startswith(PROGRESS_PREFIX):
        return None
    rest = line[len(PROGRESS_PREFIX) :].decode("utf-8", errors="replace")
    if rest.endswith("\r"):
        rest = rest[:-1]
    if not rest or rest[0] not in " \t":
        return None
    parts = rest.strip().split(None, 1)
    if not parts:
        return None
    number = parts[0]
    message = parts[1].strip() if len(parts) > 1 else ""
    percent: float | None
    if number == "-":
        percent = None
    else:
        try:
            percent = float(number.removesuffix("%"))
        except ValueError:
            return None
        if not math.isfinite(percent) or not 0.0 <= percent <= 100.0:
            return None
    return percent, message or None


def format_progress_line(percent: float | None, message: str | None = None) -> str:
    """The protocol line (with newline) reporting ``percent`` and ``message``."""
    token = "-" if percent is None else f"{float(percent):g}"
    text = " ".join((message or "").split())  # one line, no control whitespace
    return f"::progress {token} {text}".rstrip() + "\n"


class OutputSink:
    """Everything done with a chunk of task output: tail, progress and live streaming.

    Exceptions raised by the event callbacks are logged and swallowed: a broken log
    streamer must not fail or hang the run.
    """

    def __init__(
        self,
        events: ExecutionEvents,
        limit: int,
        *,
        parse_progress: bool = True,
        secrets: Sequence[str] = (),
    ) -> None:
        self._events = events
        self._mask = _StreamMask(secrets)
        self.tail = TailBuffer(limit)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._parser = ProgressParser(self._progress) if parse_progress else None
        self._closed = False
        self._callback_failed = False

    def feed(self, data: bytes) -> None:
        if self._closed or not data:
            return
        self.tail.append(data)
        if self._parser is not None:
            self._parser.feed(data)
        text = self._decoder.decode(data)
        self._output(self._mask.feed(text) if self._mask else text)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._parser is not None:
            self._parser.close()
        text = self._decoder.decode(b"", final=True)
        if self._mask:
            text = self._mask.feed(text) + self._mask.flush()
        self._output(text)

    def text(self) -> str:
        text = self.tail.text()
        return (redact(text, self._mask.secrets) or "") if self._mask else text

    def _output(self, text: str) -> None:
        if not text:
            return
        try:
            self._events.output(text)
        except Exception:
            self._log_callback_failure("output")

    def _progress(self, percent: float | None, message: str | None) -> None:
        if self._mask:
            message = redact(message, self._mask.secrets)
        try:
            self._events.progress(percent, message)
        except Exception:
            self._log_callback_failure("progress")

    def _log_callback_failure(self, which: str) -> None:
        if not self._callback_failed:  # once per run, not once per chunk
            self._callback_failed = True
            logger.exception("events.%s callback failed; continuing the run", which)
