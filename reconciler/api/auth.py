"""Bearer tokens for the HTTP API.

Where tokens come from
    * ``RECONCILER_API_TOKEN``: one token. ``name:token`` gives it a name (the audit
      actor); a value without a leading ``name:`` is the token itself, named ``default``.
      It has no expiry.
    * ``--api-token-file``: one token per line, ``name:token``, optionally followed by
      whitespace and ``expires=<instant>``::

          # name:token [expires=<ISO 8601 instant with Z or an offset>]
          alice:3f9c...e1
          ci:77aa...90 expires=2027-01-31T00:00:00Z
          bob:0b1d...c4 expires=2026-12-24T18:00:00+01:00

      Blank lines and lines starting with ``#`` are ignored. Several lines may share a
      name (rotation). A token is accepted while the clock is before its expiry and
      refused from that instant on (401 ``token_expired``; the first refusal of each
      token is logged by name, once). The instant must carry a time zone (``Z`` or
      ``+hh:mm``); a line with a malformed or unknown option is ignored with a warning
      naming the file and line number, so a typo never silently yields a token that
      does not expire. A token itself therefore cannot contain whitespace.

      The file is re-read when it changes (checked on every authentication, by its
      size, mtime and inode) and on SIGHUP, so a removed line stops working at once.
      A file that disappears or cannot be read yields no tokens (fail closed).

Comparison
    The presented token and every configured one are hashed with SHA-256 and compared
    with :func:`hmac.compare_digest`, always against *all* configured tokens, expired
    ones included: the time taken does not depend on which token matched, on how much
    of it matched, on its length or on whether it expired. Expiry is decided after the
    loop, from the clock (an injectable :class:`~reconciler.core.clock.Clock`). Tokens
    are never logged, and no response ever echoes one.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from reconciler.core.clock import Clock, SystemClock
from reconciler.core.errors import ReconcilerError

log = logging.getLogger("reconciler.api.auth")

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,127}$")
DEFAULT_NAME = "default"
MIN_LENGTH = 16


@dataclass(frozen=True, slots=True)
class TokenLine:
    """One usable line of a token file."""

    name: str
    token: str
    expires: datetime | None = None


@dataclass(frozen=True, slots=True)
class _Token:
    name: str
    digest: bytes
    expires: datetime | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a presented token is: ``name`` is set when it matched a configured token."""

    name: str | None = None
    expired_at: datetime | None = None

    @property
    def ok(self) -> bool:
        return self.name is not None and self.expired_at is None


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def parse_env_token(value: str) -> tuple[str, str]:
    """``name:token`` -> (name, token); anything else -> (``default``, value)."""
    name, sep, token = value.partition(":")
    if sep and token and NAME.match(name):
        return name, token
    return DEFAULT_NAME, value


def _parse_expiry(value: str) -> datetime | None:
    try:
        instant = datetime.fromisoformat(value)
    except ValueError:
        return None
    return instant if instant.tzinfo is not None else None


def parse_token_file(text: str, source: str = "token file") -> list[TokenLine]:
    """The usable lines of a token file; bad lines are logged (never their token) and skipped."""
    out: list[TokenLine] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, rest = line.partition(":")
        name = name.strip()
        fields = rest.split()
        if not sep or not fields or not NAME.match(name):
            log.warning("%s:%d: ignored: expected 'name:token [expires=<instant>]' (name: "
                        "letters, digits, '_.@+-')", source, number)
            continue
        expires: datetime | None = None
        problem = None
        for option in fields[1:]:
            key, eq, value = option.partition("=")
            if key != "expires" or not eq:
                problem = "unknown option (the only option is expires=<instant>)"
            elif expires is not None:
                problem = "expires= given twice"
            else:
                expires = _parse_expiry(value)
                if expires is None:
                    problem = ("expires= needs an ISO 8601 instant with a time zone, "
                               "e.g. expires=2027-01-31T00:00:00Z")
            if problem:
                break
        if problem:
            log.warning("%s:%d: ignored (token %r): %s", source, number, name, problem)
            continue
        out.append(TokenLine(name, fields[0], expires))
    return out


def parse_token_lines(text: str, source: str = "token file") -> list[tuple[str, str]]:
    """The ``(name, token)`` pairs of a token file (see :func:`parse_token_file`)."""
    return [(line.name, line.token) for line in parse_token_file(text, source)]


class TokenStore:
    """The configured tokens; :meth:`verify` maps a presented token to a :class:`Verdict`."""

    def __init__(self, env_token: str | None = None, token_file: str | Path | None = None,
                 clock: Clock | None = None) -> None:
        self._lock = threading.Lock()
        self.clock: Clock = clock or SystemClock()
        self._static: list[_Token] = []
        if env_token:
            name, token = parse_env_token(env_token)
            self._warn_if_weak(name, token, "RECONCILER_API_TOKEN")
            self._static.append(_Token(name, _digest(token)))
        self.token_file = Path(token_file) if token_file else None
        self._from_file: list[_Token] = []
        self._file_key: tuple[int, int, int, int] | None = None
        self._expiry_logged: set[tuple[str, datetime]] = set()
        if self.token_file is not None:
            try:  # fail fast at start-up: an unreadable file is an error, not "no tokens"
                self.token_file.read_bytes()
            except OSError as exc:
                raise ReconcilerError(
                    f"cannot read the API token file {self.token_file}: "
                    f"{exc.strerror or exc.__class__.__name__}"
                ) from None
            self.reload()

    # ------------------------------------------------------------------ loading

    @staticmethod
    def _warn_if_weak(name: str, token: str, source: str) -> None:
        if len(token) < MIN_LENGTH:
            log.warning("%s: the token named %r is shorter than %d characters; use a long "
                        "random one (e.g. `openssl rand -hex 32`)", source, name, MIN_LENGTH)

    def _stat_key(self) -> tuple[int, int, int, int] | None:
        assert self.token_file is not None
        try:
            st = os.stat(self.token_file)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def reload(self) -> None:
        """Re-read the token file (SIGHUP, or a change seen by :meth:`authenticate`)."""
        if self.token_file is None:
            return
        with self._lock:
            key = self._stat_key()
            try:
                text = self.token_file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                if self._from_file or self._file_key is None:
                    log.error("cannot read the API token file %s (%s): its tokens no "
                              "longer work", self.token_file, exc.__class__.__name__)
                self._from_file, self._file_key = [], key
                return
            if key is not None and os.name == "posix":
                try:
                    mode = os.stat(self.token_file).st_mode
                except OSError:
                    mode = 0
                if mode & 0o004:
                    log.warning("the API token file %s is world-readable; chmod 600 it",
                                self.token_file)
            lines = parse_token_file(text, str(self.token_file))
            for line in lines:
                self._warn_if_weak(line.name, line.token, str(self.token_file))
            before = len(self._from_file)
            self._from_file = [_Token(line.name, _digest(line.token), line.expires)
                               for line in lines]
            self._file_key = key
            if self._file_key is not None and before != len(self._from_file):
                log.info("API token file %s: %d token(s)", self.token_file, len(self._from_file))

    def _refresh(self) -> None:
        if self.token_file is not None and self._stat_key() != self._file_key:
            self.reload()

    # ---------------------------------------------------------------- checking

    @property
    def configured(self) -> bool:
        """True when at least one token is listed (expired ones count: they get a 401)."""
        self._refresh()
        return bool(self._static or self._from_file)

    def names(self) -> list[str]:
        self._refresh()
        return sorted({t.name for t in (*self._static, *self._from_file)})

    def verify(self, presented: str) -> Verdict:
        """Which configured token ``presented`` is, and whether it expired (constant time).

        Every configured token is compared, whatever matched first. A value listed
        both expired and unexpired (rotation) is accepted under the unexpired line.
        """
        self._refresh()
        now = self.clock.now()
        candidate = _digest(presented)
        found: str | None = None
        expired: _Token | None = None
        for token in (*self._static, *self._from_file):
            match = hmac.compare_digest(candidate, token.digest)
            if match and token.expires is not None and now >= token.expires:
                expired = expired or token
            elif match and found is None:
                found = token.name
        if found is not None:
            return Verdict(found)
        if expired is not None:
            assert expired.expires is not None
            key = (expired.name, expired.expires)
            if key not in self._expiry_logged:
                self._expiry_logged.add(key)
                log.warning("API: the token named %r expired at %s and is refused; issue a "
                            "new one in %s", expired.name, expired.expires.isoformat(),
                            self.token_file)
            return Verdict(expired.name, expired.expires)
        return Verdict()

    def authenticate(self, presented: str) -> str | None:
        """The name of the valid, unexpired token ``presented`` is, or ``None``."""
        verdict = self.verify(presented)
        return verdict.name if verdict.ok else None


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, else ``None``."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    value = value.strip()
    return value or None
