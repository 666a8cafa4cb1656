"""Run parameters (``spec.params``): the one check of the values (``core/params.py``),
the declarations in a manifest (errors with file, line and field), the trigger
operation every door calls, and ``reconciler trigger --param`` / ``runs`` on a database."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from reconciler.cli import main as cli
from reconciler.core.clock import FakeClock
from reconciler.core.errors import OperationRefused
from reconciler.core.model import DesiredState, Param, TaskDef
from reconciler.core.params import (
    ParamError,
    bind_params,
    coerce,
    defaults,
    environment,
    missing_required,
    parse_assignments,
    row_values,
    shown_values,
)
from reconciler.core.plan import plan
from reconciler.core.runtime import RunStatus, Trigger
from reconciler.core.scheduling import SlotDecision, TaskPolicy, Verdict, run_params
from reconciler.manifests import load_tree
from reconciler.service.operations import Caller, TaskOperations
from reconciler.store import MemoryStore, SQLStore

T0 = datetime(2026, 3, 2, 12, 0, 30, tzinfo=UTC)
CLI = Caller("alice@host", "cli", "CLI")
DECLS: dict[str, Any] = {
    "region": {"type": "enum", "values": ["eu", "us"], "default": "eu"},
    "dryRun": {"type": "boolean", "default": True},
    "count": {"type": "integer", "default": 3},
    "ratio": {"type": "number", "default": 0.5},
    "label": {"type": "string", "required": True, "description": "what to call it"},
    "note": {"type": "string"},
    "token": {"secret": True, "fromEnv": "REPORT_TOKEN"},
}


def params(spec: dict[str, Any] = DECLS) -> dict[str, Param]:
    return {name: Param.model_validate(d) for name, d in spec.items()}


# ----------------------------------------------------------------- the values


@pytest.mark.parametrize(("kind", "given", "value"), [
    ("string", "us", "us"), ("string", "", ""),
    ("integer", "42", 42), ("integer", "-7", -7), ("integer", 42, 42),
    ("number", "1.5", 1.5), ("number", "2", 2), ("number", "1e3", 1000.0), ("number", 3, 3),
    ("number", 0.25, 0.25),
    ("boolean", "false", False), ("boolean", "TRUE", True), ("boolean", True, True),
    ("enum", "us", "us"),
])
def test_every_type_reads_text_and_json(kind: str, given: object, value: object) -> None:
    got = coerce(kind, ["eu", "us"], given)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize(("kind", "given", "message"), [
    ("string", 3, "expected a string, got 3"),
    ("string", "a\x00b", "contains a NUL character"),
    ("string", "x" * 4097, "longer than 4096 characters"),
    ("integer", "1.5", 'expected an integer, got "1.5"'),
    ("integer", True, "expected an integer, got true"),
    ("integer", 2.0, "expected an integer, got 2.0"),
    ("number", "abc", 'expected a number, got "abc"'),
    ("number", "nan", 'expected a number, got "nan"'),
    ("number", float("inf"), "expected a finite number, got inf"),
    ("number", False, "expected a number, got false"),
    ("boolean", "yes", 'expected true or false, got "yes"'),
    ("boolean", 1, "expected true or false, got 1"),
    ("enum", "asia", 'expected one of eu, us, got "asia"'),
    ("enum", None, "expected one of the values, got null"),
])
def test_every_type_refuses_what_it_is_not(kind: str, given: object, message: str) -> None:
    with pytest.raises(ValueError) as exc:
        coerce(kind, ["eu", "us"], given)
    assert str(exc.value) == message


def test_bind_fills_defaults_and_overrides_them() -> None:
    values = bind_params(params(), {"region": "us", "dryRun": "false", "label": "q1"})
    assert values == {"region": "us", "dryRun": False, "count": 3, "ratio": 0.5,
                      "label": "q1"}
    assert list(values) == ["region", "dryRun", "count", "ratio", "label"]  # declared order


def test_bind_names_every_bad_parameter() -> None:
    with pytest.raises(ParamError) as exc:
        bind_params(params(), {"regoin": "us", "count": "many", "token": "x"})
    assert exc.value.problems == (
        "unknown parameter 'regoin' (declared: region, dryRun, count, ratio, label, note, "
        "token)",
        "parameter 'count': expected an integer, got \"many\"",
        "parameter 'token' is secret: it is taken from its fromEnv or fromFile only, never "
        "from the command line or the API",
        "parameter 'label' is required and has no value",
    )


def test_defaults_and_what_the_row_records() -> None:
    declared = params()
    assert defaults(declared) == {"region": "eu", "dryRun": True, "count": 3, "ratio": 0.5}
    assert row_values(declared, {"region": "eu"}) == {"region": "eu", "token": "***"}
    assert row_values({}, {}) is None
    assert missing_required(declared, defaults(declared)) == (
        "parameter 'label' is required and has no value (runs of the schedule use the "
        "defaults)")
    assert shown_values({"apiToken": "abc", "region": "us", "n": 1}) == {
        "apiToken": "***", "region": "us", "n": 1}


def test_environment_variables_as_written_in_json() -> None:
    assert environment({"region": "us", "dryRun": False, "count": 3, "ratio": 0.5,
                        "big": 1e21}) == {
        "RECONCILER_PARAM_REGION": "us", "RECONCILER_PARAM_DRYRUN": "false",
        "RECONCILER_PARAM_COUNT": "3", "RECONCILER_PARAM_RATIO": "0.5",
        "RECONCILER_PARAM_BIG": "1e+21"}


def test_param_assignments_of_the_command_line() -> None:
    assert parse_assignments(["region=us", "q=a=b", "empty="]) == {
        "region": "us", "q": "a=b", "empty": ""}
    with pytest.raises(ParamError, match="--param 'region': expected NAME=VALUE"):
        parse_assignments(["region"])
    with pytest.raises(ParamError, match="parameter 'a' is given twice"):
        parse_assignments(["a=1", "a=2"])


def test_runs_of_the_schedule_get_the_defaults_and_retries_keep_theirs() -> None:
    doc = {"apiVersion": "reconciler/v1", "kind": "Task", "metadata": {"name": "t"},
           "spec": {"schedule": "@daily", "run": {"command": ["true"]}, "params": DECLS}}
    policy = TaskPolicy.from_document("t", 1, doc, False, {})
    scheduled = SlotDecision(T0, Verdict.RUN)
    assert run_params(policy, scheduled) == {"region": "eu", "dryRun": True, "count": 3,
                                             "ratio": 0.5, "token": "***"}
    retry = SlotDecision(T0, Verdict.RUN, Trigger.RETRY, params={"region": "us"})
    assert run_params(policy, retry) == {"region": "us"}


# ------------------------------------------------------------- declarations


def task_yaml(params_block: str) -> str:
    return ("apiVersion: reconciler/v1\nkind: Task\nmetadata: {name: report}\nspec:\n"
            "  schedule: \"@daily\"\n  run: {command: [\"true\"]}\n  params:\n" + params_block)


@pytest.mark.parametrize(("block", "line", "field", "message"), [
    ("    1region: {type: string}\n", 8, 'spec.params["1region"]', "should match pattern"),
    ("    region: {type: text}\n", 8, "spec.params.region.type", "string"),
    ("    region: {type: enum}\n", 8, "spec.params.region",
     "values is required for type enum and only for it"),
    ("    region: {type: enum, values: [eu, eu]}\n", 8, "spec.params.region",
     "a value is listed twice in values"),
    ("    region: {type: enum, values: [eu], default: us}\n", 8, "spec.params.region",
     'default: expected one of eu, got "us"'),
    ("    n: {type: integer, default: \"3\"}\n", 8, "spec.params.n",
     "default: expected a integer value, not a string"),
    ("    n: {type: integer, default: 1.5}\n", 8, "spec.params.n",
     "default: expected an integer, got 1.5"),
    ("    b: {type: boolean, default: 1}\n", 8, "spec.params.b",
     "default: expected true or false, got 1"),
    ("    n: {required: true, default: x}\n", 8, "spec.params.n",
     "required and default exclude each other"),
    ("    tok: {secret: true}\n", 8, "spec.params.tok",
     "a secret parameter takes exactly one of fromEnv or fromFile"),
    ("    tok: {secret: true, fromEnv: T, default: x}\n", 8, "spec.params.tok",
     "a secret parameter has no default and is not required"),
    ("    tok: {secret: true, type: integer, fromEnv: T}\n", 8, "spec.params.tok",
     "a secret parameter has type string"),
    ("    tok: {fromEnv: T}\n", 8, "spec.params.tok",
     "fromEnv and fromFile are for secret parameters"),
    ("    dryRun: {type: boolean}\n    dryrun: {type: boolean}\n", 8, "spec.params",
     "parameters 'dryRun' and 'dryrun' would both be RECONCILER_PARAM_DRYRUN"),
    ("    region: {type: string, colour: red}\n", 8, "spec.params.region.colour",
     "unknown field"),
])
def test_bad_declarations_name_file_line_and_field(block: str, line: int, field: str,
                                                   message: str) -> None:
    state = load_tree({"tasks/report.yaml": task_yaml(block).encode()})
    (error,) = state.errors
    assert (error.file, error.line, error.field) == ("tasks/report.yaml", line, field)
    assert message in error.message


def test_http_params_as_json_is_the_body() -> None:
    text = ("apiVersion: reconciler/v1\nkind: Task\nmetadata: {name: report}\nspec:\n"
            "  schedule: \"@daily\"\n  run:\n    http: {url: \"http://x/\", body: \"{}\", "
            "paramsAs: json}\n")
    (error,) = load_tree({"r.yaml": text.encode()}).errors
    assert error.field == "spec.run.http" and "body must be empty" in error.message


# -------------------------------------------------------- the trigger operation


def store_with(spec_params: dict[str, Any] = DECLS) -> MemoryStore:
    store = MemoryStore(clock=FakeClock(T0))
    doc = {"apiVersion": "reconciler/v1", "kind": "Task", "metadata": {"name": "t"},
           "spec": {"schedule": "@daily", "run": {"command": ["true"]},
                    "params": spec_params, "concurrencyPolicy": "Allow"}}
    desired = DesiredState(tasks=(TaskDef.from_document(doc, "t.yaml"),))
    store.apply_plan(plan(desired, store.load_tasks()), actor="test", revision=None, now=T0)
    return store


def test_trigger_records_the_values_on_the_run_row() -> None:
    store = store_with()
    ops = TaskOperations(store, FakeClock(T0))
    run = asyncio.run(ops.trigger("t", CLI, {"region": "us", "count": 9, "label": "x"}))
    stored = store.get_run(run.id)
    assert stored is not None and stored.status is RunStatus.PENDING
    assert stored.params == {"region": "us", "dryRun": True, "count": 9, "ratio": 0.5,
                             "label": "x", "token": "***"}
    (audit,) = store.list_audit()
    assert audit["detail"]["params"] == {"region": "us", "count": 9, "label": "x"}


@pytest.mark.parametrize("given", [{"nope": "1"}, {"count": "x", "label": "a"}, {},
                                   {"label": "a", "token": "s3cret"}])
def test_trigger_refuses_bad_values_with_422_and_writes_no_row(given: dict[str, Any]) -> None:
    store = store_with()
    with pytest.raises(OperationRefused) as exc:
        asyncio.run(TaskOperations(store, FakeClock(T0)).trigger("t", CLI, given))
    assert exc.value.status == 422 and exc.value.code == "invalid_params"
    assert "parameter '" in exc.value.message
    assert store.list_runs("t") == []
    assert [a["outcome"] for a in store.list_audit()] == ["invalid_params"]
    assert "s3cret" not in json.dumps(store.list_audit(), default=str)


def test_a_task_without_params_refuses_any() -> None:
    store = store_with({})
    with pytest.raises(OperationRefused, match=r"unknown parameter 'x' \(declared: none\)"):
        asyncio.run(TaskOperations(store, FakeClock(T0)).trigger("t", CLI, {"x": "1"}))
    run = asyncio.run(TaskOperations(store, FakeClock(T0)).trigger("t", CLI))
    assert run.params is None


# ------------------------------------------------- the CLI on the database


def test_cli_trigger_with_params_and_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    monkeypatch.setenv("RECONCILER_DATABASE_URL", url)
    monkeypatch.delenv("RECONCILER_SERVER", raising=False)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "t.yaml").write_text(task_yaml(
        "    region: {type: enum, values: [eu, us], default: eu}\n"
        "    dryRun: {type: boolean, default: true}\n"))
    assert cli.main(["apply", "--manifests", str(tmp_path / "m")]) == 0
    capsys.readouterr()
    assert cli.main(["trigger", "report", "--param", "dryRun=maybe"]) == 1
    err = capsys.readouterr().err
    assert "parameter 'dryRun': expected true or false, got \"maybe\"" in err
    assert cli.main(["trigger", "report", "--param", "colour=red"]) == 1
    assert "unknown parameter 'colour'" in capsys.readouterr().err
    assert cli.main(["trigger", "report", "--param", "region"]) == 1
    assert "expected NAME=VALUE" in capsys.readouterr().err
    assert cli.main(["trigger", "report", "--param", "region=us",
                     "--param", "dryRun=false"]) == 0
    store = SQLStore(url)
    try:
        (run,) = store.list_runs("report")
    finally:
        store.close()
    assert run.params == {"region": "us", "dryRun": False}
    capsys.readouterr()
    assert cli.main(["runs", "report"]) == 0
    out = capsys.readouterr().out
    assert "PARAMS" in out and "region=us,dryRun=false" in out
    assert cli.main(["runs", "report", "-o", "json"]) == 0
    (doc,) = json.loads(capsys.readouterr().out)
    assert doc["params"] == {"region": "us", "dryRun": False}
