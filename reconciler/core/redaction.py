"""What of a task's spec is a secret, and the one function that hides it.

Every view of a stored or planned spec (the API's task detail and plan, ``reconciler
diff`` in text and JSON, audit details) goes through this module, so they cannot
disagree about what is shown. The rules, in order:

* ``fromEnv``/``fromFile`` references are shown: they are names, not values.
* A literal value of an ``env`` entry or an HTTP header whose *name* looks like a
  credential (:func:`is_secret_name`) is replaced by :data:`MASK` entirely.
* A literal Slack webhook URL of a channel (``spec.slack.url``) is masked entirely.
* In every other string (env values under plain names, the HTTP url and body, command
  arguments, shell scripts, annotations) the parts that look like credentials are
  masked: the password of a URL's userinfo (``postgresql://app:***@db``; a userinfo
  without password, often a token, is masked whole), URL query and fragment
  parameters named like a credential or ``sig``/``code`` (``?sig=***``),
  ``NAME=value`` and ``"name": "value"`` pairs and ``Name: value`` header lines whose
  name looks like a credential, and the value after a ``--password``-like flag (the
  next word of a script, the next item of a ``command`` list).

The rules for free text are a best effort; a secret belongs in ``fromEnv``/``fromFile``.
Pure functions of their input: no I/O, no state.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MASK = "***"

#: Whole words (of a name split at ``_``, ``-``, ``.`` and camelCase) that make it secret.
_SECRET_WORDS = frozenset({
    "secret", "secrets", "token", "tokens", "password", "passwords", "passwd", "pass",
    "pwd", "passphrase", "pw", "key", "keys", "apikey", "pat", "credential",
    "credentials", "creds", "auth", "oauth", "authorization", "cookie", "cookies",
    "session", "sessionid", "private", "dsn", "signature", "sig", "salt", "otp",
    "bearer", "jwt", "sas", "hmac",
})
#: Stems that make a name secret wherever they occur (``DBPASSWORD``, ``myApiKey``).
_SECRET_STEMS = ("secret", "token", "passw", "passphrase", "credential", "apikey",
                 "accesskey", "privatekey", "signingkey", "authorization", "cookie",
                 "signature")
#: URL query parameters masked besides those with a secret name.
_SECRET_QUERY = frozenset({"code", "x-amz-credential", "x-goog-credential"})
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_LETTERS = re.compile(r"[^a-z0-9]")


def is_secret_name(name: str) -> bool:
    """True when a value under ``name`` (env var, header, parameter) is taken as secret."""
    words = {w.lower() for w in _WORD.findall(name)}
    if words & _SECRET_WORDS:
        return True
    flat = _LETTERS.sub("", name.lower())
    return any(stem in flat for stem in _SECRET_STEMS)


def _secret_param(name: str) -> bool:
    return name.lower() in _SECRET_QUERY or is_secret_name(name)


_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<info>[^/?#\s]*)@")
_PARAM = re.compile(r"(?P<sep>[?&;#])(?P<name>[^=&;#?\s]+)=(?P<value>[^&;#\s]*)")


def redact_url(url: str) -> str:
    """``postgresql://app:pw@db/x?sig=abc&a=b`` -> ``postgresql://app:***@db/x?sig=***&a=b``."""

    def userinfo(m: re.Match[str]) -> str:
        user, colon, _ = m["info"].partition(":")
        shown = f"{user}:{MASK}" if colon else MASK
        return f"{m['scheme']}{shown}@"

    url = _USERINFO.sub(userinfo, url, count=1)
    return _PARAM.sub(
        lambda m: f"{m['sep']}{m['name']}={MASK}" if _secret_param(m["name"]) and m["value"]
        else m[0],
        url,
    )


_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")
_JSON_PAIR = re.compile(r'"(?P<name>[^"\\\n]{1,200})"(?P<op>\s*:\s*")(?P<value>(?:[^"\\]|\\.)*)"')
_ASSIGN = re.compile(
    r"(?<![A-Za-z0-9_])(?P<name>-{0,2}[A-Za-z_][A-Za-z0-9_.-]{0,200})(?P<op>=)"
    r"(?P<value>\"(?:[^\"\\]|\\.)*\"|'[^']*'|[^\s&;'\"]*)"
)
_HEADER_LINE = re.compile(
    r"(?P<name>(?<![A-Za-z0-9_-])[A-Za-z][A-Za-z0-9-]{0,200})(?P<op>:[ \t]*)"
    r"(?P<value>[^\s'\"][^\n'\"]*)"
)
_FLAG_VALUE = re.compile(
    r"(?<![A-Za-z0-9_-])(?P<name>--?[A-Za-z][A-Za-z0-9_-]{0,200})(?P<op>[ \t]+)"
    r"(?P<value>\"(?:[^\"\\]|\\.)*\"|'[^']*'|[^\s'\"-][^\s'\"]*)"
)
_FLAG = re.compile(r"^--?[A-Za-z][A-Za-z0-9_-]*$")


def _pair(m: re.Match[str]) -> str:
    if not m["value"] or not is_secret_name(m["name"].lstrip("-")):
        return m[0]
    value = m["value"]
    quote = value[0] if value[0] in "\"'" and len(value) > 1 else ""
    return f"{m['name']}{m['op']}{quote}{MASK}{quote}"


def _json_pair(m: re.Match[str]) -> str:
    if not m["value"] or not is_secret_name(m["name"]):
        return m[0]
    return f'"{m["name"]}"{m["op"]}{MASK}"'


def redact_text(text: str) -> str:
    """Free text (a body, a script, an argument) with credential-looking parts masked."""
    if not text:
        return text
    text = _URL_IN_TEXT.sub(lambda m: redact_url(m[0]), text)
    text = _JSON_PAIR.sub(_json_pair, text)
    text = _ASSIGN.sub(_pair, text)
    text = _FLAG_VALUE.sub(_pair, text)
    return _HEADER_LINE.sub(_pair, text)


def _redact_args(args: list[Any]) -> list[Any]:
    """Command arguments: each as free text, and the one after ``--token``-like flags."""
    out: list[Any] = []
    hide_next = False
    for arg in args:
        if not isinstance(arg, str):
            out.append(redact(arg))
            continue
        out.append(MASK if hide_next and arg else redact_text(arg))
        hide_next = bool(_FLAG.match(arg)) and is_secret_name(arg.lstrip("-"))
    return out


def _named_value(name: str, value: Any) -> Any:
    """An env entry or a header: a literal under a secret name is masked whole."""
    if isinstance(value, str):
        return MASK if value and is_secret_name(name) else redact_text(value)
    return redact(value)  # a fromEnv/fromFile reference: names, shown


_NAMED_MAPS = (("spec", "run", "env"), ("spec", "run", "http", "headers"),
               ("spec", "webhook", "headers"))
#: Literal values that are credentials whole (a Slack webhook URL is its own token).
_SECRET_PATHS = frozenset({("spec", "slack", "url")})


def redact(value: Any, path: tuple[str, ...] = ()) -> Any:
    """``value`` (found at ``path`` of a task document) with its secrets masked.

    ``redact(document)`` hides the secrets of a whole task manifest; a part of one
    is passed with its ``path`` (``("spec", "run", "env")`` for an env mapping).
    """
    if isinstance(value, Mapping):
        if path in _NAMED_MAPS:
            return {k: _named_value(str(k), v) for k, v in value.items()}
        return {k: redact(v, (*path, str(k))) for k, v in value.items()}
    if isinstance(value, str):
        if path and path[:-1] in _NAMED_MAPS:
            return _named_value(path[-1], value)
        if path in _SECRET_PATHS:
            return MASK if value else value
        return redact_text(value)
    if isinstance(value, list | tuple):
        if path[-1:] == ("command",):
            return _redact_args(list(value))
        return [redact(v, path) for v in value]
    return value


def field_path(path: str) -> tuple[str, ...]:
    """The parts of a dotted diff path; a header name may itself contain dots."""
    for named in _NAMED_MAPS:
        prefix = ".".join(named) + "."
        if path.startswith(prefix):
            rest = path[len(prefix):]
            for ref in (".fromEnv", ".fromFile"):
                if rest.endswith(ref):
                    return (*named, rest[: -len(ref)], ref[1:])
            return (*named, rest)
    return tuple(path.split(".")) if path else ()


def redact_change(path: str, old: Any, new: Any) -> tuple[Any, Any, bool]:
    """``(old, new, masked)`` of one field change of a plan: the values with their
    secrets masked, and whether anything was (so a reviewer sees a secret changed)."""
    parts = field_path(path)
    shown_old, shown_new = redact(old, parts), redact(new, parts)
    return shown_old, shown_new, shown_old != old or shown_new != new


def redacted_document(document: Mapping[str, Any]) -> dict[str, Any]:
    """A task document (manifest or stored row) with every secret masked."""
    result: dict[str, Any] = redact(document)
    return result

