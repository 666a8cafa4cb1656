"""``specs/task.schema.json`` against the loader, checked by an independent validator.

``check-jsonschema`` (its CLI, as an editor or a CI step would run it) validates:

* every hostile document the loader rejects for a *structural* reason: the schema must
  reject it too. Multi-document files are split first; each document is given to the
  loader alone, and its errors decide. An error is structural when it is about the
  shape of one document as JSON sees it: a wrong type, a missing or unknown field, a
  wrong constant or enum value, a length, range or pattern, an invalid map key, or
  ``run`` without exactly one executor. Not structural (the schema may accept them):
  - errors without a field about a mapping: the loader's YAML reader refuses what a
    generic parser accepts (syntax, tabs, tags, aliases over budget, merge keys,
    duplicate keys, encodings); a document that does not parse is not data at all;
  - the meaning of a string in ``SEMANTIC_FIELDS`` (a cron expression that never
    fires, a time zone that does not exist, a duration under 1 ms): checked by code;
  - a value with no JSON form (a YAML timestamp): a schema only sees JSON;
  - a name declared twice: a rule across documents and files.
* the three cases the schema used to accept, by name;
* every Task document under ``examples/``: the schema must accept it.
"""

from __future__ import annotations

import codecs
import datetime
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.core.model import ManifestError
from reconciler.manifests import parse_file
from tests.hostile.expectations import EXPECT

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "specs" / "task.schema.json"
CORPUS = ROOT / "tests" / "hostile" / "corpus"
EXAMPLES = ROOT / "examples"
CHECK_JSONSCHEMA = [sys.executable, "-m", "check_jsonschema"]

SEMANTIC_FIELDS = {
    "spec.schedule": "cron syntax and firing dates are checked by code",
    "spec.timeZone": "the zone must exist in the IANA time zone database",
    "spec.timeout": "a duration's magnitude (at least 1 ms, representable)",
    "spec.startingDeadline": "a duration's magnitude",
    "spec.retries.backoff": "a duration's magnitude",
    "spec.retries.maxBackoff": "a duration's magnitude",
    "spec.jitter": "checked against the shortest interval between the slots",
    "spec.deadline": "checked against the jitter",
    "spec.activeFrom": "a date or an instant with its offset, checked by code",
    "spec.activeUntil": "the window must not end before it starts",
}
_INDEX = re.compile(r"\[(\d+)\]$")
_BOMS = ((codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF32_LE, "utf-32"),
         (codecs.BOM_UTF16_BE, "utf-16"), (codecs.BOM_UTF16_LE, "utf-16"))
_SEPARATOR = re.compile(r"^---[ \t]*$\n?", re.MULTILINE)

BASE = """\
apiVersion: reconciler/v1
kind: Task
metadata: {name: named-case}
spec:
  schedule: "@daily"
  run: %s
"""
NAMED = {
    "command-and-shell": "{command: [/bin/true], shell: 'true'}",
    "no-executor": "{workingDir: /tmp}",
    "env-name-1BAD-NAME": "{shell: 'true', env: {1BAD-NAME: x}}",
}


def _text(data: bytes) -> str | None:
    for bom, codec in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(codec)
            except UnicodeDecodeError:
                return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None


def documents(data: bytes) -> list[str]:
    """The documents of a manifest file as texts (none when it is not text)."""
    text = _text(data)
    if text is None or "\x00" in text:
        return []
    return [doc for doc in _SEPARATOR.split(text) if doc.strip()]


def _value_at(document: Any, field: str) -> Any:
    """The value at a field path (``spec.schedule[1]`` too)."""
    index = _INDEX.search(field)
    for part in _INDEX.sub("", field).split("."):
        if not isinstance(document, dict) or part not in document:
            return None
        document = document[part]
    if index is not None:
        n = int(index.group(1))
        return document[n] if isinstance(document, list) and n < len(document) else None
    return document


def why_not_structural(error: ManifestError, document: Any) -> str | None:
    """``None`` when ``error`` is structural (see the module docstring), else the reason."""
    if error.field is None:
        if isinstance(document, dict):
            return "refused by the YAML reader"
        return None  # a document that is a list or a scalar: not a mapping
    if "declared more than once" in error.message:
        return "a rule across documents"
    field = _INDEX.sub("", error.field)  # an item of spec.schedule: a schedule too
    if field in SEMANTIC_FIELDS and isinstance(_value_at(document, error.field), str):
        return SEMANTIC_FIELDS[field]
    return None


def _parsed(text: str) -> tuple[bool, Any]:
    try:
        return True, yaml.safe_load(text)
    except Exception:  # anything PyYAML refuses, or Python's int digit limit
        return False, None


def structural_rejections() -> dict[str, tuple[Any, list[ManifestError]]]:
    """``file#n`` -> (the JSON data, the loader's errors) of each such document."""
    found: dict[str, tuple[Any, list[ManifestError]]] = {}
    for path in sorted(CORPUS.glob("*.yaml")):
        for n, text in enumerate(documents(path.read_bytes()), 1):
            errors = parse_file(text.encode("utf-8"), label=path.name).errors
            if not errors:
                continue
            ok, data = _parsed(text)
            structural = [e for e in errors if why_not_structural(e, data) is None]
            if not ok or not structural:
                continue
            try:  # only now: an alias bomb (refused by the YAML reader) expands here
                json.dumps(data)
            except (TypeError, ValueError):
                continue  # no JSON form (a timestamp)
            found[f"{path.stem}#{n}"] = (data, structural)
    return found


def _iso(value: Any) -> str:
    if isinstance(value, datetime.date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} has no JSON form")


def check(instances: dict[str, Any], tmp_path: Path) -> tuple[set[str], dict[str, Any]]:
    """Run check-jsonschema over ``instances`` (name -> data): the names it rejects."""
    files = {}
    for i, (name, data) in enumerate(sorted(instances.items())):
        path = tmp_path / f"{i:04d}.json"
        # An unquoted date (activeFrom: 2026-06-01) is a string to an editor's YAML 1.2
        # language server; PyYAML (YAML 1.1) makes it a date: give the schema the string.
        path.write_text(json.dumps(data, default=_iso))
        files[path.name] = name
    result = subprocess.run(
        [*CHECK_JSONSCHEMA, "--schemafile", str(SCHEMA), "-o", "json", *sorted(files)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )
    report = json.loads(result.stdout)
    assert not report.get("parse_errors"), report
    errors = report.get("errors", [])
    assert result.returncode == (1 if errors else 0), result.stderr
    rejected = {files[Path(e["filename"]).name] for e in errors}
    return rejected, report


def test_structural_classification_covers_the_corpus() -> None:
    found = structural_rejections()
    files = {key.partition("#")[0] + ".yaml" for key in found}
    assert files <= set(EXPECT)
    # Every category of shape error in the corpus is among them, and none of the others.
    for prefix in ("type-", "kind-", "apiversion-", "name-", "unknown-", "run-", "enum-",
                   "range-", "label-"):
        assert any(f.startswith(prefix) for f in files), prefix
    for prefix in ("syntax-", "tab-", "alias-", "tag-", "dupkey-", "dupname-", "binary-"):
        assert not any(f.startswith(prefix) for f in files), prefix
    assert len(found) >= 40, sorted(found)


def test_schema_rejects_every_structural_rejection(tmp_path: Path) -> None:
    found = structural_rejections()
    rejected, _ = check({k: data for k, (data, _) in found.items()}, tmp_path)
    missed = {k: [str(e) for e in found[k][1]] for k in sorted(set(found) - rejected)}
    assert not missed, f"the schema accepts documents the loader rejects: {missed}"


@pytest.mark.parametrize("case", sorted(NAMED))
def test_schema_rejects_the_named_cases(case: str, tmp_path: Path) -> None:
    text = BASE % NAMED[case]
    errors = parse_file(text.encode(), label="case.yaml").errors
    assert [e.field for e in errors if e.field and e.field.startswith("spec.run")], errors
    rejected, report = check({case: yaml.safe_load(text)}, tmp_path)
    assert rejected == {case}, report


def test_schema_accepts_every_example(tmp_path: Path) -> None:
    instances: dict[str, Any] = {}
    for path in sorted(EXAMPLES.rglob("*.yaml")):
        for n, text in enumerate(documents(path.read_bytes()), 1):
            data = yaml.safe_load(text)
            if isinstance(data, dict) and data.get("kind") == "Task":
                assert parse_file(text.encode(), label=path.name).errors == ()
                instances[f"{path.relative_to(EXAMPLES)}#{n}"] = data
    assert len(instances) >= 5
    rejected, report = check(instances, tmp_path)
    assert rejected == set(), report


def test_schema_accepts_a_null_beside_the_one_executor(tmp_path: Path) -> None:
    text = BASE % "{command: null, http: null, shell: 'true'}"
    assert parse_file(text.encode(), label="case.yaml").errors == ()
    rejected, report = check({"null-beside-shell": yaml.safe_load(text)}, tmp_path)
    assert rejected == set(), report
