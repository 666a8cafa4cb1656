"""Run parameters reaching real processes and a real HTTP receiver: the
``RECONCILER_PARAM_*`` variables, ``ctx.params`` of a python task, an http task's query
or JSON body (``paramsAs``), secret parameters read at run time and masked in the
output, a required parameter without a value."""

from __future__ import annotations

import json

import pytest

from reconciler.core.model import HttpTarget, Param, RunSpec
from reconciler.core.runtime import RunStatus
from tests.integration.test_executors import execute, py_run
from tests.integration.test_isolation import receiver

__all__ = ["receiver"]  # the fixture: a real HTTP server that records each request

pytestmark = pytest.mark.integration

SPECS = {
    "region": Param(type="enum", values=["eu", "us"], default="eu"),
    "dryRun": Param(type="boolean", default=True),
    "limit": Param(type="integer"),
    "ratio": Param(type="number"),
    "label": Param(type="string"),
}
VALUES = {"region": "us", "dryRun": False, "limit": 25, "ratio": 0.5, "label": "a b&c=d"}
SECRET = "pa55-w0rd-value-1234"


def test_a_process_gets_its_params_as_variables() -> None:
    result = execute(RunSpec(shell="env | grep ^RECONCILER_PARAM_ | sort"),
                     params=VALUES, param_specs=SPECS)
    assert result.status is RunStatus.SUCCEEDED, result
    assert result.output_tail.splitlines() == [
        "RECONCILER_PARAM_DRYRUN=false", "RECONCILER_PARAM_LABEL=a b&c=d",
        "RECONCILER_PARAM_LIMIT=25", "RECONCILER_PARAM_RATIO=0.5",
        "RECONCILER_PARAM_REGION=us"]


def test_a_secret_param_is_read_at_run_time_and_masked_in_the_output(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REPORT_TOKEN", SECRET)
    specs = {"token": Param(secret=True, from_env="REPORT_TOKEN")}
    script = 'echo "token=$RECONCILER_PARAM_TOKEN len=${#RECONCILER_PARAM_TOKEN}"'
    result = execute(RunSpec(shell=script), params={"token": "***"}, param_specs=specs)
    assert result.status is RunStatus.SUCCEEDED, result
    assert result.output_tail == f"token=*** len={len(SECRET)}\n"
    monkeypatch.delenv("REPORT_TOKEN")
    result = execute(RunSpec(shell="true"), params={"token": "***"}, param_specs=specs)
    assert result.status is RunStatus.FAILED
    assert result.error == ("param token: environment variable REPORT_TOKEN is not set in "
                            "the daemon's environment")


def test_a_required_param_without_a_value_fails_the_run() -> None:
    specs = {"label": Param(required=True)}
    result = execute(RunSpec(shell="echo ran"), params={}, param_specs=specs)
    assert result.status is RunStatus.FAILED and "ran" not in result.output_tail
    assert result.error == ("parameter 'label' is required and has no value (runs of the "
                            "schedule use the defaults)")


def test_a_python_task_gets_typed_ctx_params(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPORT_TOKEN", SECRET)
    specs = {**SPECS, "token": Param(secret=True, from_env="REPORT_TOKEN")}
    result = execute(py_run("print_params"), params={**VALUES, "token": "***"},
                     param_specs=specs)
    assert result.status is RunStatus.SUCCEEDED, result
    seen = json.loads(result.output_tail.replace("***", SECRET))
    assert seen == {"region": ["us", "str"], "dryRun": [False, "bool"], "limit": [25, "int"],
                    "ratio": [0.5, "float"], "label": ["a b&c=d", "str"],
                    "token": [SECRET, "str"]}


def test_an_http_receiver_gets_the_params_as_query_or_json(
    receiver: tuple[str, list[dict[str, str]]],
) -> None:
    url, seen = receiver
    url += "?fixed=1"
    for params_as in ("query", "json", None):
        target = HttpTarget(url=url, params_as=params_as)
        result = execute(RunSpec(http=target), params=VALUES, param_specs=SPECS)
        assert result.status is RunStatus.SUCCEEDED, result
    query, body, neither = seen
    assert query[":path"] == ("/hook?fixed=1&region=us&dryRun=false&limit=25&ratio=0.5"
                              "&label=a+b%26c%3Dd")
    assert query[":body"] == ""
    assert body[":path"] == "/hook?fixed=1" and body["content-type"] == "application/json"
    assert json.loads(body[":body"]) == VALUES
    assert (neither[":path"], neither[":body"]) == ("/hook?fixed=1", "")
    assert "content-type" not in neither
