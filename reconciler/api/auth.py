"""Bearer tokens for the HTTP API.

Where tokens come from
    * ``RECONCILER_API_TOKEN``: one token. ``name:token`` gives it a name (the audit
      actor); a value without a leading ``name:`` is the token itself, named ``default``.
    * ``--api-token-file``: one ``name:token`` per line; blank lines and lines starting
      with ``#`` are ignored. Several lines may share a name (rotation). The file is
      re-read when it changes (checked on every authentication, by its size, mtime and
      inode) and on SIGHUP, so a removed line stops working at once. A file that
      disappears or cannot be read yields no tokens (fail closed).

Comparison
    The presented token and every configured one are hashed with SHA-256 and compared
    with :func:`hmac.compare_digest`, always against *all* configured tokens: the time
    taken does not depend on which token matched, on how much of it matched, or on its
    length. Tokens are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from reconciler.core.errors import ReconcilerError

log = logging.getLogger("reconciler.api.auth")

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,127}$")
DEFAULT_NAME = "default"
MIN_LENGTH = 16


@dataclass(frozen=True, slots=True)
class _Token:
    name: str
    digest: bytes


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def parse_env_token(value: str) -> tuple[str, str]:
    """``name:token`` -> (name, token); anything else -> (``default``, value)."""
    name, sep, token = value.partition(":")
    if sep and token and NAME.match(name):
        return name, token
    return DEFAULT_NAME, value


def parse_token_lines(text: str, source: str = "token file") -> list[tuple[str, str]]:
    """The ``(name, token)`` pairs of a token file; bad lines are logged and skipped."""
    out: list[tuple[str, str]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, token = line.partition(":")
        name, token = name.strip(), token.strip()
        if not sep or not token or not NAME.match(name):
            log.warning("%s:%d: ignored: expected 'name:token' (name: letters, digits, "
                        "'_.@+-')", source, number)
            continue
        out.append((name, token))
    return out


class TokenStore:
    """The configured tokens; :meth:`authenticate` maps a presented token to its name."""

    def __init__(self, env_token: str | None = None, token_file: str | Path | None = None) -> None:
        self._lock = threading.Lock()
        self._static: list[_Token] = []
        if env_token:
            name, token = parse_env_token(env_token)
            self._warn_if_weak(name, token, "RECONCILER_API_TOKEN")
            self._static.append(_Token(name, _digest(token)))
        self.token_file = Path(token_file) if token_file else None
        self._from_file: list[_Token] = []
        self._file_key: tuple[int, int, int, int] | None = None
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
            pairs = parse_token_lines(text, str(self.token_file))
            for name, token in pairs:
                self._warn_if_weak(name, token, str(self.token_file))
            before = len(self._from_file)
            self._from_file = [_Token(name, _digest(token)) for name, token in pairs]
            self._file_key = key
            if self._file_key is not None and before != len(self._from_file):
                log.info("API token file %s: %d token(s)", self.token_file, len(self._from_file))

    def _refresh(self) -> None:
        if self.token_file is not None and self._stat_key() != self._file_key:
            self.reload()

    # ---------------------------------------------------------------- checking

    @property
    def configured(self) -> bool:
        """True when at least one token can be used."""
        self._refresh()
        return bool(self._static or self._from_file)

    def names(self) -> list[str]:
        self._refresh()
        return sorted({t.name for t in (*self._static, *self._from_file)})

    def authenticate(self, presented: str) -> str | None:
        """The name of the token ``presented`` is, or ``None`` (constant time)."""
        self._refresh()
        candidate = _digest(presented)
        found: str | None = None
        for token in (*self._static, *self._from_file):
            if hmac.compare_digest(candidate, token.digest) and found is None:
                found = token.name
        return found


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, else ``None``."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    value = value.strip()
    return value or None
