"""From a constructed document (and its node tree) to a :class:`TaskDef` or errors.

Every pydantic error is mapped back to the YAML text: the error's ``loc`` (field
aliases such as ``spec``/``timeZone``, dict keys and 0-based list indices) is followed
through the composed node tree to the deepest node that exists. An unknown field points
at its *key*, a missing field at the mapping that should contain it, an invalid dict key
(``[key]``) at that key, anything else at the offending value.

Unions (``env: {NAME: "text" | {fromEnv: ...} | {fromFile: ...}}``) make pydantic report
one error per alternative; reporting all of them buries the real problem, so only the
alternative that fits best is kept (the one with the fewest errors among those whose
type matches; when none matches, a single "expected a string, {fromEnv: ...} or
{fromFile: ...}" error). This is the one place where pydantic errors and
:class:`ManifestError` are not one-to-one.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from pydantic import BaseModel, ValidationError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from reconciler.core.calendars import CALENDAR_KIND, CalendarManifest, calendar_def, check_calendar
from reconciler.core.channels import CHANNEL_KIND, ChannelManifest, channel_def
from reconciler.core.isolation import HOST_FIELDS, with_field_lines
from reconciler.core.model import (
    API_VERSION,
    KIND,
    ManifestError,
    NamedDef,
    TaskDef,
    TaskManifest,
)
from reconciler.core.scheduling import FieldProblem, check_task
from reconciler.manifests._yaml import STR_TAG, mark_position

if TYPE_CHECKING:
    from pydantic_core import ErrorDetails


@dataclass(frozen=True, slots=True)
class _Kind:
    api_versions: tuple[str, ...]
    model: type[BaseModel]
    build: Callable[[Any, str, int], TaskDef | NamedDef]
    #: What the fields cannot say alone (the core's rules across fields), as
    #: (field path, message) problems located in the file like pydantic's errors.
    check: Callable[[Any], list[FieldProblem]]


def _build_task(manifest: Any, source_file: str, source_line: int) -> TaskDef:
    assert isinstance(manifest, TaskManifest)
    return TaskDef.from_manifest(manifest, source_file=source_file, source_line=source_line)


def _build_channel(manifest: Any, source_file: str, source_line: int) -> NamedDef:
    assert isinstance(manifest, ChannelManifest)
    return channel_def(manifest, source_file, source_line)


def _build_calendar(manifest: Any, source_file: str, source_line: int) -> NamedDef:
    assert isinstance(manifest, CalendarManifest)
    return calendar_def(manifest, source_file, source_line)


def _check_task(manifest: Any) -> list[FieldProblem]:
    assert isinstance(manifest, TaskManifest)
    return check_task(manifest)


def _check_channel(manifest: Any) -> list[FieldProblem]:
    return []  # a channel's rules are all in its fields


def _check_calendar(manifest: Any) -> list[FieldProblem]:
    assert isinstance(manifest, CalendarManifest)
    return check_calendar(manifest)


#: Supported ``kind`` values and, for each, the ``apiVersion`` values it accepts.
KINDS: Final[dict[str, _Kind]] = {
    KIND: _Kind((API_VERSION,), TaskManifest, _build_task, _check_task),
    CHANNEL_KIND: _Kind((API_VERSION,), ChannelManifest, _build_channel, _check_channel),
    CALENDAR_KIND: _Kind((API_VERSION,), CalendarManifest, _build_calendar, _check_calendar),
}


def notify_references(root: Node) -> tuple[tuple[str, int, int, str], ...]:
    """``(channel, line, column, field)`` of every ``spec.notify[i].channel`` of a valid
    Task document, for the cross-document check that the channel exists."""
    return _references(root, "notify", "channel")


def calendar_references(root: Node) -> tuple[tuple[str, int, int, str], ...]:
    """``(calendar, line, column, field)`` of every ``spec.calendars[i]`` of a valid
    Task document, for the cross-document check that the calendar exists."""
    return _references(root, "calendars", None)


def _references(root: Node, key: str, item_key: str | None
                ) -> tuple[tuple[str, int, int, str], ...]:
    found = child(root, "spec")
    items = child(found[1], key) if found else None
    out = []
    if items is not None and isinstance(items[1], SequenceNode):
        for i, item in enumerate(items[1].value):
            name = child(item, item_key) if item_key is not None else (None, item)
            if name is not None and isinstance(name[1], ScalarNode):
                line, column = mark_position(name[1])
                field = f"spec.{key}[{i}]" + (f".{item_key}" if item_key else "")
                out.append((name[1].value, line, column, field))
    return tuple(out)


# ------------------------------------------------------------------------ node access


def child(node: Node | None, key: str | int) -> tuple[Node | None, Node] | None:
    """The (key node, value node) of ``key`` in a mapping, or (None, item) in a list."""
    if isinstance(node, MappingNode) and isinstance(key, str):
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.value == key:
                return key_node, value_node
        return None
    if isinstance(node, MappingNode):  # a non-string dict key (e.g. an int label key)
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.value == str(key):
                return key_node, value_node
        return None
    if (
        isinstance(node, SequenceNode)
        and isinstance(key, int)
        and not isinstance(key, bool)
        and 0 <= key < len(node.value)
    ):
        return None, node.value[key]
    return None


class _Children:
    """:func:`child` with each mapping indexed on first use: locating thousands of
    errors in one mapping by scanning it each time was quadratic (5,000 unknown keys
    took seconds)."""

    def __init__(self) -> None:
        self._maps: dict[int, tuple[Node, dict[str, tuple[Node, Node]]]] = {}

    def __call__(self, node: Node | None, key: str | int) -> tuple[Node | None, Node] | None:
        if not isinstance(node, MappingNode):
            return child(node, key)
        cached = self._maps.get(id(node))
        if cached is None or cached[0] is not node:
            index: dict[str, tuple[Node, Node]] = {}
            for key_node, value_node in node.value:
                if isinstance(key_node, ScalarNode):
                    index.setdefault(key_node.value, (key_node, value_node))
            cached = self._maps[id(node)] = (node, index)
        return cached[1].get(key if isinstance(key, str) else str(key))


#: A ``metadata.name`` longer than this is not used to name the document in errors (or
#: to look for duplicates): it cannot be valid, and it would be repeated in every line.
MAX_IDENTITY_NAME: Final = 253


@dataclass(frozen=True, slots=True)
class Identity:
    """What a document says it is, read from the nodes (so even a broken one has it)."""

    kind: str | None = None
    name: str | None = None
    name_node: Node | None = None


_NO_IDENTITY: Final = Identity()


def identify(root: Node) -> Identity:
    """``kind`` and ``metadata.name`` when they are plain strings (one pass, no errors)."""
    if type(root) is not MappingNode:
        return _NO_IDENTITY
    kind = None
    metadata = None
    for key_node, value_node in root.value:
        key = key_node.value
        if key == "kind":
            if type(value_node) is ScalarNode and value_node.tag == STR_TAG:
                kind = value_node.value
        elif key == "metadata":
            metadata = value_node
    if type(metadata) is MappingNode:
        for key_node, value_node in metadata.value:
            if key_node.value == "name":
                if (
                    type(value_node) is ScalarNode
                    and value_node.tag == STR_TAG
                    and value_node.value
                    and len(value_node.value) <= MAX_IDENTITY_NAME
                ):
                    return Identity(kind, value_node.value, value_node)
                break
    return Identity(kind) if kind is not None else _NO_IDENTITY


# ------------------------------------------------------------------------- validation


def validate_document(
    root: Node,
    value: object,
    *,
    label: str,
    source_file: str,
    task: str | None = None,
    max_errors: int | None = None,
) -> tuple[TaskDef | NamedDef | None, list[ManifestError]]:
    """Validate one constructed document; exactly one of the results is meaningful.

    ``task`` is the document's name for error messages (see :func:`identify`);
    ``max_errors``: at most this many errors are worked out and returned.
    """

    def error(node: Node, message: str, field: str | None = None) -> ManifestError:
        line, column = mark_position(node)
        return ManifestError(label, message, line, column, task, field)

    if not isinstance(value, dict):
        return None, [
            error(
                root,
                f"a manifest must be a mapping (apiVersion, kind, metadata, spec), "
                f"not a {_python_kind(value)}",
            )
        ]
    supported = ", ".join(KINDS)
    if "kind" not in value:
        message = f'missing required field "kind" (supported: {supported})'
        return None, [error(root, message, "kind")]
    kind_value = value["kind"]
    if not isinstance(kind_value, str):
        message = f"kind must be a string (supported: {supported})"
        return None, [error(_value_node(root, "kind") or root, message, "kind")]
    kind = KINDS.get(kind_value)
    if kind is None:
        message = f'unknown kind "{kind_value}" (supported: {supported})'
        return None, [error(_value_node(root, "kind") or root, message, "kind")]
    versions = ", ".join(kind.api_versions)
    if "apiVersion" not in value:
        return None, [
            error(root, f'missing required field "apiVersion" (expected {versions})', "apiVersion")
        ]
    api_version = value["apiVersion"]
    if api_version not in kind.api_versions:
        shown = f'"{api_version}"' if isinstance(api_version, str) else repr(api_version)
        return None, [
            error(
                _value_node(root, "apiVersion") or root,
                f"unsupported apiVersion {shown} for kind {kind_value} (supported: {versions})",
                "apiVersion",
            )
        ]
    if kind.model is TaskManifest:
        _on_keys(root, value)
    try:
        manifest = kind.model.model_validate(value)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        return None, map_errors(errors, root, kind.model, label, task, limit=max_errors)
    except Exception as exc:  # a validator that raised something pydantic does not wrap
        return None, [error(root, f"cannot validate the document: {_describe(exc)}")]
    problems = kind.check(manifest)
    if problems:
        return None, [_problem_error(p, root, label, task) for p in problems][:max_errors]
    built = kind.build(manifest, source_file, root.start_mark.line + 1)
    if isinstance(built, TaskDef):
        built = with_field_lines(built, _host_fields(root))
    return built, []


def _host_fields(root: Node) -> dict[str, tuple[int, int]]:
    """Where the fields of :data:`HOST_FIELDS` are (their keys), when present."""
    found: dict[str, tuple[int, int]] = {}
    for path in HOST_FIELDS:
        node: Node | None = root
        key_node: Node | None = None
        for part in path.split("."):
            pair = child(node, part)
            if pair is None:
                break
            key_node, node = pair
        else:
            if key_node is not None:
                found[path] = mark_position(key_node)
    return found


def _on_keys(root: Node, value: dict[Any, Any]) -> None:
    """YAML 1.1 reads a plain ``on`` key as the boolean true; in ``spec.notify[i]`` it
    is meant as the string (as in ``on: [failed]``), so it is put back, in place."""
    rules = value.get("spec", {}).get("notify") if isinstance(value.get("spec"), dict) else None
    spec = child(root, "spec")
    nodes = child(spec[1], "notify") if spec else None
    if not isinstance(rules, list) or nodes is None or not isinstance(nodes[1], SequenceNode):
        return
    for rule, node in zip(rules, nodes[1].value, strict=False):
        if not isinstance(rule, dict) or True not in rule or "on" in rule:
            continue
        if isinstance(node, MappingNode) and any(
            isinstance(k, ScalarNode) and k.value == "on" and not k.style for k, _ in node.value
        ):
            rule["on"] = rule.pop(True)


def _problem_error(problem: FieldProblem, root: Node, label: str,
                   task: str | None) -> ManifestError:
    """A rule across fields, at the value of the field it names (or the deepest node of
    its path that the file has)."""
    node = root
    for part in problem.path:
        found = child(node, part)
        if found is None:
            break
        node = found[1]
    line, column = mark_position(node)
    return ManifestError(label, problem.message, line, column, task, format_path(problem.path))


def _value_node(root: Node, key: str) -> Node | None:
    found = child(root, key)
    return found[1] if found else None


def _python_kind(value: object) -> str:
    if isinstance(value, list):
        return "list"
    if value is None:
        return "null value"
    if isinstance(value, str):
        return "string"
    return f"{type(value).__name__} value"


def _describe(exc: BaseException) -> str:
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ------------------------------------------------------------------- error locating


@dataclass(slots=True)
class _Located:
    error: ErrorDetails
    node: Node
    parts: list[str | int]
    union: tuple[tuple[str | int, ...], str] | None  # (parts before it, member tag)
    union_is_last: bool  # the member tag ends the loc: a "wrong type" for that member


def _locate(root: Node, error: ErrorDetails, child: Callable[..., Any] = child) -> _Located:
    loc = error["loc"]
    etype = error["type"]
    node = root
    key_node: Node | None = None
    parts: list[str | int] = []
    union: tuple[tuple[str | int, ...], str] | None = None
    union_is_last = False
    point: Node | None = None
    for i, seg in enumerate(loc):
        last = i == len(loc) - 1
        if seg == "[key]":
            point = key_node
            continue
        found = child(node, seg)
        if found is not None:
            key_node, node = found
            parts.append(seg)
            continue
        if last and etype == "missing":
            parts.append(seg)
            break
        if union is None and isinstance(seg, str):
            union = (tuple(parts), seg)
            union_is_last = last
            continue
        parts.append(seg)  # not in the YAML (should not happen): keep it in the path
    if point is None:
        point = key_node if etype == "extra_forbidden" and key_node is not None else node
    return _Located(error, point, parts, union, union_is_last)


def map_errors(
    errors: Sequence[ErrorDetails],
    root: Node,
    model: type[BaseModel],
    label: str,
    task: str | None,
    *,
    limit: int | None = None,
) -> list[ManifestError]:
    """One :class:`ManifestError` per pydantic error (unions: see the module doc); with
    ``limit``, only the first ``limit`` of them."""
    children = _Children()
    located = [_locate(root, e, children) for e in errors]
    groups: dict[tuple[str | int, ...], dict[str, list[_Located]]] = {}
    for item in located:
        if item.union is not None:
            groups.setdefault(item.union[0], {}).setdefault(item.union[1], []).append(item)
    keep: list[_Located | tuple[_Located, str]] = []
    done: set[tuple[str | int, ...]] = set()
    for item in located:
        if item.union is None:
            keep.append(item)
            continue
        prefix = item.union[0]
        if prefix in done:
            continue
        done.add(prefix)
        members = groups[prefix]
        viable = {
            tag: items
            for tag, items in members.items()
            if not (len(items) == 1 and items[0].union_is_last and _is_type_error(items[0]))
        }
        if viable:
            best = min(viable.values(), key=len)  # min keeps the first of equals
            keep.extend(best)
        else:
            got = _yaml_kind(item.node)
            keep.append((item, f"{_expected(list(members), model)}, got {got}"))
    out = []
    for entry in keep if limit is None else keep[:limit]:
        if isinstance(entry, tuple):
            item, message = entry
        else:
            item, message = entry, _message(entry, model)
        line, column = mark_position(item.node)
        out.append(ManifestError(label, message, line, column, task, format_path(item.parts)))
    return out


def _is_type_error(item: _Located) -> bool:
    etype = item.error["type"]
    return etype.endswith("_type") or etype in ("model_attributes_type", "is_instance_of")


_PREFIXES: Final = ("Value error, ", "Assertion failed, ")

#: Type errors, said in YAML terms (pydantic says "instance of Metadata", "dictionary").
_EXPECTED: Final = {
    "string_type": "a string",
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "a boolean (true or false)",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}
_TAG_KINDS: Final = {
    "tag:yaml.org,2002:str": "a string",
    "tag:yaml.org,2002:int": "an integer",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:bool": "a boolean",
    "tag:yaml.org,2002:null": "null",
    "tag:yaml.org,2002:timestamp": "a date",
}


def _yaml_kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return _TAG_KINDS.get(node.tag, "a scalar")


def _message(item: _Located, model: type[BaseModel]) -> str:
    error = item.error
    etype = error["type"]
    if etype == "extra_forbidden" and item.parts:
        name = item.parts[-1]
        message = f'unknown field "{name}"'
        allowed = _fields_at(model, item.parts[:-1], item.union)
        if allowed and isinstance(name, str) and len(name) <= 100:  # difflib is O(len)
            close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
            if close:
                message += f' (did you mean "{close[0]}"?)'
        return message
    if etype == "missing" and item.parts:
        return f'missing required field "{item.parts[-1]}"'
    expected = _EXPECTED.get(etype)
    if expected is not None and "[key]" not in error["loc"]:
        return f"expected {expected}, got {_yaml_kind(item.node)}"
    message = str(error["msg"])
    for prefix in _PREFIXES:
        if message.startswith(prefix):
            message = message[len(prefix) :]
            break
    if "[key]" in error["loc"]:
        message = f"invalid key: {message}"
    return message


def _expected(tags: list[str], model: type[BaseModel]) -> str:
    shown = []
    for tag in tags:
        member = _model_named(model, tag)
        if member is not None:
            keys = ", ".join(f.alias or name for name, f in member.model_fields.items())
            shown.append(f"{{{keys}: ...}}")
        elif tag.startswith("list["):
            shown.append("a list of strings" if "str" in tag else "a list")
        elif "str" in tag:
            shown.append("a string")
        else:
            shown.append(tag)
    if len(shown) > 1:
        return "expected " + ", ".join(shown[:-1]) + " or " + shown[-1]
    return "expected " + shown[0]


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def format_path(parts: Sequence[str | int]) -> str | None:
    """``["spec", "run", "command", 0]`` -> ``spec.run.command[0]``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENT.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += '["' + part.replace("\\", "\\\\").replace('"', '\\"') + '"]'
    return out or None


# ---------------------------------------------------------------- model introspection


def _strip(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _union_args(tp: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        return tuple(_strip(a) for a in typing.get_args(tp) if a is not type(None))
    return (tp,)


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _walk_type(tp: Any, parts: Sequence[str | int]) -> Any:
    for part in parts:
        tp = _strip(tp)
        args = _union_args(tp)
        if len(args) != 1:
            return None
        tp = args[0]
        if _is_model(tp):
            fields = tp.model_fields
            found = next(
                (f for n, f in fields.items() if part in (n, f.alias)),
                None,
            )
            if found is None:
                return None
            tp = found.annotation
            continue
        origin = typing.get_origin(tp)
        if origin is dict:
            tp = typing.get_args(tp)[1]
        elif origin is list:
            tp = typing.get_args(tp)[0]
        else:
            return None
    return tp


def _fields_at(
    model: type[BaseModel],
    parts: Sequence[str | int],
    union: tuple[tuple[str | int, ...], str] | None,
) -> list[str]:
    if union is not None and len(parts) >= len(union[0]):
        tp = _walk_type(model, union[0])
        member = next(
            (a for a in _union_args(_strip(tp)) if getattr(a, "__name__", None) == union[1]),
            None,
        )
        tp = _walk_type(member, parts[len(union[0]) :]) if member is not None else None
    else:
        tp = _walk_type(model, parts)
    if tp is None:
        return []
    args = _union_args(_strip(tp))
    if len(args) != 1 or not _is_model(args[0]):
        return []
    return [f.alias or n for n, f in args[0].model_fields.items()]


def _model_named(model: type[BaseModel], name: str) -> type[BaseModel] | None:
    seen: set[type[BaseModel]] = set()
    todo: list[Any] = [model]
    while todo:
        tp = _strip(todo.pop())
        if _is_model(tp):
            if tp in seen:
                continue
            seen.add(tp)
            if tp.__name__ == name:
                return typing.cast(type[BaseModel], tp)
            todo.extend(f.annotation for f in tp.model_fields.values())
        else:
            todo.extend(typing.get_args(tp))
    return None


__all__ = [
    "KINDS",
    "Identity",
    "calendar_references",
    "child",
    "format_path",
    "identify",
    "map_errors",
    "notify_references",
    "validate_document",
]
