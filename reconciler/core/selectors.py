"""Kubernetes-style label selectors: ``team=data,tier!=batch,env in (prod,staging),!legacy``.

Supported requirements (all must hold; separated by commas):

==================  ===============================================
``key=value``       the label is set to ``value`` (``==`` also works)
``key!=value``      the label is not set to ``value`` (or not set)
``key``             the label is set (any value)
``!key``            the label is not set
``key in (a,b)``    the label is one of the values
``key notin (a,b)`` the label is none of the values (or not set)
==================  ===============================================
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from reconciler.core.model import LABEL_KEY_PATTERN, LABEL_VALUE_PATTERN

_KEY = re.compile(LABEL_KEY_PATTERN)
_VALUE = re.compile(LABEL_VALUE_PATTERN)
_SET = re.compile(r"^(?P<key>\S+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)$")
MAX_LENGTH = 4096

Labels = Mapping[str, str]


class SelectorError(ValueError):
    """A selector that cannot be parsed; the message says where."""


@dataclass(frozen=True, slots=True)
class Selector:
    text: str
    tests: tuple[Callable[[Labels], bool], ...]

    def matches(self, labels: Labels) -> bool:
        return all(test(labels) for test in self.tests)


def _split(text: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
            if depth > 1:
                raise SelectorError("nested parentheses")
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError("unbalanced ')'")
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth:
        raise SelectorError("unbalanced '('")
    parts.append(text[start:])
    return [p.strip() for p in parts]


def _key(key: str, requirement: str) -> str:
    if not _KEY.match(key) or len(key) > 253:
        raise SelectorError(f"{requirement!r}: {key!r} is not a valid label key")
    return key


def _value(value: str, requirement: str) -> str:
    if not _VALUE.match(value) or len(value) > 63:
        raise SelectorError(f"{requirement!r}: {value!r} is not a valid label value")
    return value


def _requirement(req: str) -> Callable[[Labels], bool]:
    if not req:
        raise SelectorError("empty requirement (two commas in a row, or a trailing comma?)")
    m = _SET.match(req)
    if m:
        key = _key(m["key"], req)
        values = frozenset(_value(v.strip(), req) for v in m["values"].split(","))
        if m["op"] == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    for op in ("!=", "==", "="):
        if op in req:
            key, _, value = req.partition(op)
            key, value = _key(key.strip(), req), _value(value.strip(), req)
            if op == "!=":
                return lambda labels: labels.get(key) != value
            return lambda labels: labels.get(key) == value
    if req.startswith("!"):
        key = _key(req[1:].strip(), req)
        return lambda labels: key not in labels
    key = _key(req, req)
    return lambda labels: key in labels


def parse_selector(text: str) -> Selector:
    """Parse ``text``; raises :class:`SelectorError` with a readable message."""
    if len(text) > MAX_LENGTH:
        raise SelectorError(f"selector longer than {MAX_LENGTH} characters")
    text = text.strip()
    if not text:
        return Selector("", ())
    return Selector(text, tuple(_requirement(r) for r in _split(text)))
