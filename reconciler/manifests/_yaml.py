"""Safe, bounded YAML reading: bytes -> composed node trees -> plain Python values.

Why not ``yaml.safe_load``: it is slow (its constructor is pure Python generators),
it silently keeps the last of two duplicate keys, it expands aliases without a budget
and it forgets where values came from. Here:

* libyaml (``yaml._yaml.CParser``, C) parses and composes the node tree, keeping the
  start mark (line/column) of every node; only our resolver (memoised) and two hooks
  run in Python. libyaml's composer recurses in C, so input that could nest deeply or
  hold many nodes (more than ~5 KB, or more than 200 indicator characters) goes through
  hooks that count nodes and depth *while* composing: a document that is too big or too
  deep (10,000 nested ``[``) stops early with a clear error, never a stack overflow.
  Smaller input cannot exceed the node budget and nests at most 200 levels.
* :class:`Constructor` turns nodes into ``dict``/``list``/scalars in one recursive pass
  (depth capped at :data:`MAX_DEPTH`): duplicate keys are errors (naming the first
  line), only the standard scalar/collection tags are allowed, merge keys (``<<``) are
  refused, and every use of an alias is charged the full size of what it refers to, so
  an alias bomb ("billion laughs") fails on the first alias that goes over budget; the
  expanded structure is never built (aliased values are shared, not copied). Files
  without ``&`` cannot contain aliases and take a faster path without that accounting.
* Scalars resolve exactly like ``yaml.safe_load`` (YAML 1.1: ``yes`` is a bool, ``010``
  is octal 8, ``2024-01-01`` is a date), with one leniency: a plain ``=`` is the string
  ``"="`` (PyYAML refuses it).

Positions handed out (:class:`YamlProblem`) are 1-based.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any, Final

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

try:  # libyaml is part of every PyYAML wheel; the pure-Python parser is a slow fallback
    from yaml._yaml import CParser as _BaseParser

    HAVE_LIBYAML = True
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    HAVE_LIBYAML = False

    class _BaseParser(  # type: ignore[no-redef]
        yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser, yaml.composer.Composer
    ):
        def __init__(self, stream: str | bytes) -> None:
            yaml.reader.Reader.__init__(self, stream)
            yaml.scanner.Scanner.__init__(self)
            yaml.parser.Parser.__init__(self)
            yaml.composer.Composer.__init__(self)


#: Largest number of nodes (scalars, keys, collections) composed for one document.
MAX_NODES_PER_DOCUMENT: Final = 10_000
#: Deepest nesting of collections allowed in a document.
MAX_DEPTH: Final = 64
#: Total number of nodes that aliases may stand for, per file (each use of ``*a``
#: costs the size of the node anchored as ``&a``).
MAX_ALIAS_EXPANSION: Final = 10_000
#: Largest number of YAML documents (``---``) in one file.
MAX_DOCUMENTS_PER_FILE: Final = 1_000

STR_TAG: Final = "tag:yaml.org,2002:str"
NULL_TAG: Final = "tag:yaml.org,2002:null"
BOOL_TAG: Final = "tag:yaml.org,2002:bool"
INT_TAG: Final = "tag:yaml.org,2002:int"
FLOAT_TAG: Final = "tag:yaml.org,2002:float"
TIMESTAMP_TAG: Final = "tag:yaml.org,2002:timestamp"
SEQ_TAG: Final = "tag:yaml.org,2002:seq"
MAP_TAG: Final = "tag:yaml.org,2002:map"
MERGE_TAG: Final = "tag:yaml.org,2002:merge"
_YAML_PREFIX: Final = "tag:yaml.org,2002:"

_SCALAR_TAGS: Final = frozenset({STR_TAG, NULL_TAG, BOOL_TAG, INT_TAG, FLOAT_TAG, TIMESTAMP_TAG})


class YamlProblem(Exception):
    """Something wrong with the YAML text itself, at a 1-based line/column if known."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column


def mark_position(node: Node) -> tuple[int, int]:
    """The 1-based (line, column) where ``node`` starts."""
    mark = node.start_mark
    return mark.line + 1, mark.column + 1


def _at(message: str, node: Node) -> YamlProblem:
    line, column = mark_position(node)
    return YamlProblem(message, line, column)


def short_tag(tag: str) -> str:
    """``tag:yaml.org,2002:python/object`` -> ``!!python/object``."""
    if tag.startswith(_YAML_PREFIX):
        return "!!" + tag[len(_YAML_PREFIX) :]
    return tag


# --------------------------------------------------------------------------- decoding

_BOMS: Final = (
    (b"\x00\x00\xfe\xff", "utf-32-be", "UTF-32"),
    (b"\xff\xfe\x00\x00", "utf-32-le", "UTF-32"),
    (b"\xfe\xff", "utf-16-be", "UTF-16"),
    (b"\xff\xfe", "utf-16-le", "UTF-16"),
)


def prepare(data: bytes) -> bytes:
    """UTF-8 bytes for the parser: UTF-8 as it is (libyaml validates it and skips a
    UTF-8 BOM), UTF-16/32 with a byte order mark re-encoded; NUL bytes (binary junk,
    UTF-16 without a BOM) are refused up front."""
    if data[:1] in (b"\xff", b"\xfe", b"\x00"):
        for bom, codec, name in _BOMS:
            if data.startswith(bom):
                body = data[len(bom) :]
                try:
                    text = body.decode(codec)
                except UnicodeDecodeError as exc:
                    line, column = text_position(body[: exc.start].decode(codec, "replace"))
                    raise YamlProblem(f"invalid {name} text: {exc.reason}", line, column) from None
                return text.encode("utf-8", "surrogatepass")
    nul = data.find(b"\x00")
    if nul >= 0:
        line, column = byte_position(data, nul)
        raise YamlProblem(
            "file contains NUL bytes: not a YAML text file (binary, or UTF-16 without a "
            "byte order mark?)",
            line,
            column,
        )
    return data


#: What libyaml counts as a line break (YAML 1.1): CRLF, CR, LF, NEL, LS, PS.
_LINE_BREAK: Final = re.compile("\r\n|[\r\n\x85\u2028\u2029]")


def byte_position(data: bytes, offset: int) -> tuple[int, int]:
    """1-based line and (character) column of a byte offset in UTF-8 ``data``, counting
    lines the way libyaml does (so a CR-only file gets the same lines in every error)."""
    offset = max(0, min(offset, len(data)))
    return text_position(data[:offset].decode("utf-8", "replace"))


def text_position(text: str) -> tuple[int, int]:
    """1-based line and column of the end of ``text`` (a BOM does not count)."""
    line = 1
    start = 1 if text.startswith("\ufeff") else 0
    for match in _LINE_BREAK.finditer(text):
        line += 1
        start = match.end()
    return line, len(text) - start + 1


# ------------------------------------------------------------------------ composition

_Matcher = Callable[[str], object]


def _implicit_table() -> dict[str, tuple[tuple[str, _Matcher], ...]]:
    table: dict[str, list[tuple[str, _Matcher]]] = {}
    for first, resolvers in Resolver.yaml_implicit_resolvers.items():
        for tag, regexp in resolvers:
            if tag.endswith((":value", ":yaml")):  # '=' stays a string; '!&*' can't be plain
                continue
            table.setdefault(first or "", []).append((tag, regexp.match))
    return {k: tuple(v) for k, v in table.items()}


_IMPLICIT: Final = _implicit_table()


class _LimitExceeded(Exception):
    def __init__(self, problem: YamlProblem) -> None:
        super().__init__(problem.message)
        self.problem = problem


# Plain scalar -> tag. Keys and enum-like values repeat across manifests; skipping the
# regular expressions for them saves ~15% of composing. Bounded, short values only.
_RESOLVED: dict[str, str] = {}
_RESOLVED_MAX = 4096


class _Composer(_BaseParser):
    """libyaml's composer with our resolver; no limits (see :func:`_needs_limits`)."""

    def descend_resolver(self, parent: Node | None, index: object) -> None:
        pass

    def ascend_resolver(self) -> None:
        pass

    def resolve(
        self,
        kind: type[Node],
        value: str | None,
        implicit: Any,
        _scalar: type[Node] = ScalarNode,
        _sequence: type[Node] = SequenceNode,
        _cache: dict[str, str] = _RESOLVED,
    ) -> str:
        if kind is _scalar:
            if implicit[0]:
                assert value is not None
                tag = _cache.get(value)
                if tag is None:
                    tag = STR_TAG
                    for candidate, match in _IMPLICIT.get(value[:1], ()):
                        if match(value):
                            tag = candidate
                            break
                    if len(value) <= 64 and len(_cache) < _RESOLVED_MAX:
                        _cache[value] = tag
                return tag
            return STR_TAG
        return SEQ_TAG if kind is _sequence else MAP_TAG


class _CheckedComposer(_Composer):
    """Counts nodes and nesting depth *while* composing and stops at the limits."""

    _depth = 0
    _nodes = 0

    # Called by the composer before each (non-alias) node, with the collection it is in.
    def descend_resolver(self, parent: Node | None, index: object) -> None:
        if parent is None:  # the root of a new document
            self._depth = self._nodes = 1
            return
        depth = self._depth = self._depth + 1
        nodes = self._nodes = self._nodes + 1
        if depth > MAX_DEPTH:
            raise _LimitExceeded(_at(f"nesting is deeper than {MAX_DEPTH} levels", parent))
        if nodes > MAX_NODES_PER_DOCUMENT:
            raise _LimitExceeded(
                _at(f"document has more than {MAX_NODES_PER_DOCUMENT:,} nodes", parent)
            )

    def ascend_resolver(self) -> None:
        self._depth -= 1


# A document of n bytes has at most 2n + 2 nodes, and every level of nesting needs its
# own indicator ('[', '{', '-', ':' or '?'). Below these bounds libyaml's composer (which
# recurses in C) can run without our per-node hooks: the node budget cannot be exceeded,
# and the C stack stays small even in a thread with a small stack. The depth policy
# (MAX_DEPTH) is then enforced by the constructor.
_UNCHECKED_MAX_BYTES: Final = (MAX_NODES_PER_DOCUMENT - 2) // 2
_UNCHECKED_MAX_INDICATORS: Final = 200


def _needs_limits(source: bytes) -> bool:
    if len(source) > _UNCHECKED_MAX_BYTES:
        return True
    count = source.count
    indicators = count(b"[") + count(b"{") + count(b"-") + count(b":") + count(b"?")
    return indicators > _UNCHECKED_MAX_INDICATORS


def compose_documents(source: bytes) -> Iterator[Node]:
    """Yield the root node of every non-empty document of UTF-8 ``source``, in order.

    Raises :class:`YamlProblem` for syntax errors and exceeded limits (documents before
    the problem have already been yielded).
    """
    count = 0
    try:
        parser = (_CheckedComposer if _needs_limits(source) else _Composer)(source)
        while parser.check_node():
            node = parser.get_node()
            if node is None:  # pragma: no cover - check_node said there is one
                break
            count += 1  # empty documents count too: 250,000 '---' would take seconds
            if count > MAX_DOCUMENTS_PER_FILE:
                raise _at(f"more than {MAX_DOCUMENTS_PER_FILE:,} documents in one file", node)
            if node.tag == NULL_TAG and node.value == "" and type(node) is ScalarNode:
                continue  # an empty document (only comments, or a bare '---')
            yield node
    except _LimitExceeded as exc:
        raise exc.problem from None
    except yaml.MarkedYAMLError as exc:
        raise _marked_problem(exc, source) from None
    except yaml.reader.ReaderError as exc:
        raise _reader_problem(exc, source) from None
    except UnicodeDecodeError as exc:
        raise YamlProblem(f"invalid UTF-8: {exc.reason}") from None
    except (RecursionError, MemoryError) as exc:  # pragma: no cover - defensive
        raise YamlProblem(f"cannot parse: {type(exc).__name__}") from None


def _marked_problem(exc: yaml.MarkedYAMLError, source: bytes) -> YamlProblem:
    problem = exc.problem or exc.context or "invalid YAML"
    mark = exc.problem_mark or exc.context_mark
    message = problem
    if exc.context and exc.problem:
        cm = exc.context_mark
        if cm is not None and (mark is None or (cm.line, cm.column) != (mark.line, mark.column)):
            message += f" ({exc.context} at line {cm.line + 1}, column {cm.column + 1})"
        else:
            message += f" ({exc.context})"
    if mark is None:
        return YamlProblem(message)
    if "tab" not in message and _char_at(source, mark.line, mark.column) == "\t":
        message += "; tabs cannot be used for indentation in YAML, use spaces"
    elif "tab" in message:
        message += "; use spaces for indentation"
    elif mark.column > _MAX_SIMPLE_KEY and (
        "mapping values are not allowed" in message or "expected ':'" in message
    ):
        message += f"; a key cannot be longer than {_MAX_SIMPLE_KEY} characters"
    return YamlProblem(message, mark.line + 1, mark.column + 1)


#: libyaml gives up on an implicit (``key: value``) key longer than this.
_MAX_SIMPLE_KEY: Final = 1024


def _char_at(source: bytes, line: int, column: int) -> str:
    lines = source.decode("utf-8", "replace").split("\n", line + 1)
    if line < len(lines) and column < len(lines[line]):
        return lines[line][column]
    return ""


def _reader_problem(exc: yaml.reader.ReaderError, source: bytes) -> YamlProblem:
    if "UTF-8" in exc.reason:
        # libyaml points past the start of the bad sequence and names the byte where it
        # noticed (or -1 at the end of the input): say what Python's decoder says.
        try:
            source.decode("utf-8")
        except UnicodeDecodeError as bad:
            line, column = byte_position(source, bad.start)
            byte = source[bad.start]
            message = f"invalid UTF-8: {bad.reason} (byte 0x{byte:02x}); save the file as UTF-8"
            return YamlProblem(message, line, column)
    line, column = byte_position(source, int(exc.position))
    char = exc.character
    code = char if isinstance(char, int) else ord(char) if char else -1
    if code < 0:
        what = ""
    elif code < 0x80:
        what = f" (byte 0x{code:02x})"
    else:
        what = f" (U+{code:04X})"
    return YamlProblem(f"{exc.reason}{what}", line, column)


# ----------------------------------------------------------------------- construction

_SAFE = SafeConstructor()
_NAMED_SCALARS: Final[dict[str, Callable[[ScalarNode], object]]] = {
    INT_TAG: _SAFE.construct_yaml_int,
    FLOAT_TAG: _SAFE.construct_yaml_float,
    TIMESTAMP_TAG: _SAFE.construct_yaml_timestamp,
    BOOL_TAG: _SAFE.construct_yaml_bool,
    NULL_TAG: _SAFE.construct_yaml_null,
}
_DECIMAL = re.compile(r"[1-9][0-9]*|0").fullmatch


def _scalar(node: ScalarNode) -> object:
    tag = node.tag
    value = node.value
    make = _NAMED_SCALARS.get(tag)
    if make is None:
        raise _at(_tag_message(tag, "scalar"), node)
    try:
        if tag == INT_TAG and _DECIMAL(value):
            return int(value)
        return make(node)
    except Exception:
        if tag == INT_TAG and len(value) > 1000:  # int() refuses > 4,300 digits
            digits = sum(c.isdigit() for c in value)
            raise _at(f"integer is too large ({digits:,} digits)", node) from None
        raise _at(f"invalid {short_tag(tag)} value {value!r}", node) from None


def _tag_message(tag: str, kind: str) -> str:
    if tag in _SCALAR_TAGS or tag in (SEQ_TAG, MAP_TAG):
        return f"tag {short_tag(tag)} cannot be used on a {kind}"
    if tag.startswith(_YAML_PREFIX + "python/"):
        return f"tag {short_tag(tag)} is not allowed: manifests are data, not Python objects"
    return (
        f"tag {short_tag(tag)} is not allowed (only plain YAML strings, numbers, booleans, "
        "null, lists and mappings)"
    )


_KIND_NAMES: Final = {ScalarNode: "scalar", SequenceNode: "list", MappingNode: "mapping"}


def kind_name(node: Node) -> str:
    return _KIND_NAMES.get(type(node), "node")


class Constructor:
    """Build Python values from composed nodes, one file at a time.

    Problems are collected in :attr:`problems` (several per document are possible,
    e.g. two duplicate keys); a collection with a problem still yields a value, but the
    caller must not use a document that produced any. Alias budget problems and
    recursive aliases stop the file (:class:`YamlProblem` is raised).
    """

    _expanded = 0  # nodes charged to aliases, across the documents of the file

    def __init__(self, *, aliases_possible: bool = True) -> None:
        self.problems: list[YamlProblem] = []
        self._aliases_possible = aliases_possible
        self._first_keys: dict[int, tuple[Node, dict[object, Node]]] = {}

    def construct(self, root: Node) -> object:
        if not self._aliases_possible:
            if type(root) is ScalarNode:
                return self._scalar_value(root)
            return self._fast(root, 1)
        self._memo: dict[int, tuple[object, int]] = {}  # per document, like the anchors
        self._active: set[int] = set()
        return self._careful(root, 1, None)[0]

    def _scalar_value(self, node: Node) -> object:
        if node.tag == STR_TAG:
            return node.value
        try:
            return _scalar(node)  # type: ignore[arg-type]
        except YamlProblem as problem:
            self.problems.append(problem)
            return None

    # No anchors in the file: a tree. Scalars (most nodes) are handled inline.
    def _fast(self, node: Node, depth: int) -> object:
        if depth > MAX_DEPTH:
            raise _at(f"nesting is deeper than {MAX_DEPTH} levels", node)
        tag = node.tag
        if type(node) is MappingNode:
            if tag != MAP_TAG:
                self.problems.append(_at(_tag_message(tag, "mapping"), node))
            result: dict[object, object] = {}
            for key_node, value_node in node.value:
                if key_node.tag == STR_TAG and type(key_node) is ScalarNode:
                    key: object = key_node.value
                else:
                    key = self._key(key_node)
                    if key is _BAD:
                        continue
                if key in result:
                    self._duplicate(node, key_node, key)
                    continue
                if type(value_node) is ScalarNode:
                    if value_node.tag == STR_TAG:
                        result[key] = value_node.value
                    else:
                        result[key] = self._scalar_value(value_node)
                else:
                    result[key] = self._fast(value_node, depth + 1)
            return result
        if tag != SEQ_TAG:
            self.problems.append(_at(_tag_message(tag, "list"), node))
        items: list[object] = []
        for item in node.value:
            if type(item) is ScalarNode:
                items.append(item.value if item.tag == STR_TAG else self._scalar_value(item))
            else:
                items.append(self._fast(item, depth + 1))
        return items

    def _key(self, key_node: Node) -> object:
        if type(key_node) is not ScalarNode:
            self.problems.append(
                _at(f"a mapping key must be a scalar, not a {kind_name(key_node)}", key_node)
            )
            return _BAD
        tag = key_node.tag
        if tag == STR_TAG:
            return key_node.value
        if tag == MERGE_TAG:
            self.problems.append(
                _at(
                    "merge keys (<<) are not supported: write the keys out "
                    "(quote '<<' if it is meant as a plain key)",
                    key_node,
                )
            )
            return _BAD
        try:
            return _scalar(key_node)
        except YamlProblem as problem:
            self.problems.append(problem)
            return _BAD

    def _duplicate(self, mapping: Node, key_node: Node, key: object) -> None:
        # The first key equal to ``key``, from an index of the mapping built on its first
        # duplicate (scanning per duplicate is quadratic: 2,400 duplicates took 0.7 s).
        cached = self._first_keys.get(id(mapping))
        if cached is None or cached[0] is not mapping:
            index: dict[object, Node] = {}
            for other, _ in mapping.value:
                if type(other) is not ScalarNode:
                    continue
                try:
                    value = other.value if other.tag == STR_TAG else _scalar(other)
                    index.setdefault(value, other)
                except (YamlProblem, TypeError):
                    continue
            cached = self._first_keys[id(mapping)] = (mapping, index)
        first = cached[1].get(key)
        where = ""
        if first is not None and first is not key_node:
            where = f" (first defined at line {first.start_mark.line + 1})"
        self.problems.append(_at(f"duplicate key {_show(key)}{where}", key_node))

    # The file has anchors: share aliased values, charge aliases, refuse recursion.
    def _careful(self, node: Node, depth: int, where: Node | None) -> tuple[object, int]:
        # ``where``: what an alias over budget is reported at (an alias node has no
        # position of its own): the key it is the value of, or the enclosing list.
        nid = id(node)
        memo = self._memo.get(nid)
        if memo is not None:  # a second reference to the same node: an alias
            self._expanded += memo[1]
            if self._expanded > MAX_ALIAS_EXPANSION:
                raise _at(
                    f"aliases expand to more than {MAX_ALIAS_EXPANSION:,} nodes (an alias bomb?)",
                    where or node,
                )
            return memo
        if nid in self._active:
            raise _at("recursive alias: an anchor cannot contain an alias to itself", node)
        if depth > MAX_DEPTH:
            raise _at(f"nesting is deeper than {MAX_DEPTH} levels", node)
        cls = type(node)
        tag = node.tag
        size = 1
        value: object
        if cls is ScalarNode:
            value = self._scalar_value(node)
        else:
            self._active.add(nid)
            if cls is MappingNode:
                if tag != MAP_TAG:
                    self.problems.append(_at(_tag_message(tag, "mapping"), node))
                result: dict[object, object] = {}
                for key_node, value_node in node.value:
                    key = self._key(key_node)
                    size += 1
                    if key is _BAD:
                        continue
                    if key in result:
                        self._duplicate(node, key_node, key)
                        continue
                    item, item_size = self._careful(value_node, depth + 1, key_node)
                    result[key] = item
                    size += item_size
                value = result
            else:
                if tag != SEQ_TAG:
                    self.problems.append(_at(_tag_message(tag, "list"), node))
                items = []
                for item_node in node.value:
                    item, item_size = self._careful(item_node, depth + 1, node)
                    items.append(item)
                    size += item_size
                value = items
            self._active.discard(nid)
        out = (value, size)
        self._memo[nid] = out
        return out


_BAD: Final = object()


def _show(key: object) -> str:
    if isinstance(key, str):
        return f'"{key}"'
    return repr(key)


def may_have_aliases(source: bytes) -> bool:
    """Cheap pre-check: without an ``&`` there are no anchors, hence no aliases."""
    return b"&" in source
