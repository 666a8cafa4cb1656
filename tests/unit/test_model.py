"""The manifest model: strictness, canonical form, durations."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from reconciler.core.durations import format_duration, parse_duration
from reconciler.core.errors import DurationError
from reconciler.core.model import TaskDef, TaskManifest


def doc(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"schedule": "* * * * *", "run": {"command": ["true"]}}
    base.update(spec)
    return {"apiVersion": "reconciler/v1", "kind": "Task", "metadata": {"name": "t"}, "spec": base}


def errors(data: dict[str, Any]) -> list[tuple[tuple[Any, ...], str]]:
    with pytest.raises(ValidationError) as info:
        TaskManifest.model_validate(data)
    return [(e["loc"], e["msg"]) for e in info.value.errors()]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("1m30s", 90), ("2h", 7200), ("1h30m", 5400), ("500ms", 0.5), ("1d", 86400),
     ("1.5h", 5400)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "10", "-5s", "5 s", "1x", "s", "400d", "0s", 10, True, None])
def test_bad_durations(text: Any) -> None:
    with pytest.raises(DurationError):
        parse_duration(text)


def test_format_duration_is_canonical() -> None:
    assert format_duration(timedelta(seconds=90)) == "1m30s"
    assert format_duration(timedelta(hours=26)) == "1d2h"
    assert format_duration(timedelta(milliseconds=1500)) == "1s500ms"


def test_unknown_fields_are_errors() -> None:
    assert errors(doc(timout="5m"))[0][0] == ("spec", "timout")


def test_types_are_strict() -> None:
    locs = [loc for loc, _ in errors(doc(suspend="yes", maxCatchUp="3"))]
    assert ("spec", "suspend") in locs and ("spec", "maxCatchUp") in locs


def test_exactly_one_run_target() -> None:
    (loc, msg), = errors(doc(run={"command": ["a"], "shell": "b"}))
    assert loc == ("spec", "run") and "exactly one of" in msg and "command, shell" in msg
    (loc, msg), = errors(doc(run={"env": {"A": "b"}}))
    assert "exactly one of" in msg


def test_labels_and_names() -> None:
    bad = doc()
    bad["metadata"] = {"name": "Bad_Name", "labels": {"team": 3}}
    locs = [loc for loc, _ in errors(bad)]
    assert ("metadata", "name") in locs and ("metadata", "labels", "team") in locs
    long = doc()
    long["metadata"] = {"name": "a" * 64}
    assert errors(long)[0][0] == ("metadata", "name")


def test_env_values_and_paths() -> None:
    ok = doc(run={"command": ["x"], "env": {"A": "1", "B": {"fromEnv": "TOKEN"},
                                            "C": {"fromFile": "/run/secrets/c"}}})
    TaskManifest.model_validate(ok)
    locs = [loc for loc, _ in errors(doc(run={"command": ["x"], "workingDir": "relative"}))]
    assert locs == [("spec", "run", "workingDir")]


def test_canonical_form_drops_defaults_and_normalises_durations() -> None:
    t = TaskDef.from_document(doc(timeout="90s", suspend=False, catchUp="Latest"), "a.yaml")
    assert t.document["spec"] == {"schedule": "* * * * *", "run": {"command": ["true"]},
                                  "timeout": "1m30s"}
    again = TaskDef.from_document(t.document, "a.yaml")
    assert again.hash == t.hash and again.document == t.document


def test_manifest_is_frozen() -> None:
    m = TaskManifest.model_validate(doc())
    with pytest.raises(ValidationError):
        m.spec.suspend = True  # type: ignore[misc]
