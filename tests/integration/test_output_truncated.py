"""Every executor says whether it cut the output to its tail (``outputTruncated``)."""

from __future__ import annotations

import httpx
import pytest

from reconciler.core.model import RunSpec
from tests.integration.test_executors import PY, execute, http_run, mock

SCRIPT = "import sys; sys.stdout.write('x' * int(sys.argv[1]))"


@pytest.mark.parametrize(("size", "cut"), [(100, False), (101, True), (0, False)])
def test_process_output(size: int, cut: bool) -> None:
    for run in (RunSpec(command=[PY, "-c", SCRIPT, str(size)]),
                RunSpec(shell=f"{PY} -c \"{SCRIPT}\" {size}"),
                RunSpec(command=[PY, "-c", SCRIPT + "; sys.exit(3)", str(size)])):
        result = execute(run, output_limit=100)
        assert result.output_truncated is cut, run
        assert len(result.output_tail) == min(size, 100)


@pytest.mark.parametrize(("size", "cut"), [(100, False), (101, True)])
def test_http_body(size: int, cut: bool) -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"y" * size)

    result = execute(http_run(), executor=mock(handler), output_limit=100)
    assert result.output_truncated is cut and result.output_tail == "y" * min(size, 100)
