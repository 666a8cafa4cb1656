"""``http`` runs: one HTTP request; success is decided by the response status.

* The request is ``method url`` with the target's headers and body. Header values may
  be ``fromEnv``/``fromFile`` references, resolved at run time like ``env`` (see
  :mod:`reconciler.executors.environment`); they are encoded to bytes here and
  refused if they contain CR, LF or NUL, so that neither a header-injection nor an
  HTTP library error message can carry a secret value.
* The whole call (connect, send, read the body) is bounded by the run's timeout, or
  :data:`DEFAULT_TIMEOUT` when the task has none; exceeding it is ``TIMED_OUT``.
* Success when the status matches ``successStatus``: a comma list of codes and
  classes, ``"2xx"`` by default, e.g. ``"200,204,3xx"``. Any other status is
  ``FAILED`` with error ``HTTP <status>`` and no exit code.
* The run's idempotency key goes in an ``Idempotency-Key`` header (the same for every
  attempt of a slot, :func:`~reconciler.core.isolation.idempotency_header`), unless the
  task says ``idempotencyKey: false`` or sets that header itself.
* The run's parameters (``spec.params``) go into the request when the target says
  ``paramsAs: query`` (added to the URL's query, as their environment variables
  carry them: ``true``/``false``, numbers as in JSON) or ``paramsAs: json`` (a JSON
  object with their types is the body, ``Content-Type: application/json`` unless
  the task sets one). Without ``paramsAs`` the request carries none.
* Redirects are **not** followed by default: a scheduled call hitting a redirect is
  usually a misconfigured URL, and following one would re-send credentials to another
  location. Pass ``follow_redirects=True`` to change that.
* The response body is streamed: every chunk goes to ``events.output`` and a bounded
  tail of ``output_limit`` bytes becomes ``output_tail``, so a huge body costs no
  memory. The ``::progress`` protocol does not apply to HTTP bodies.
* Environment proxy settings (``HTTP_PROXY``, ``HTTPS_PROXY``, ``NO_PROXY``) of the
  daemon are honoured, as httpx does by default.

Tests inject an ``httpx.AsyncBaseTransport`` (e.g. ``httpx.MockTransport``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, replace
from datetime import timedelta

import httpx

from reconciler.core.durations import format_duration
from reconciler.core.isolation import idempotency_header, idempotency_key
from reconciler.core.model import HttpTarget
from reconciler.core.params import ParamValue, text
from reconciler.core.protocols import ExecutionEvents, ExecutionRequest, ExecutionResult
from reconciler.core.runtime import RunStatus
from reconciler.executors.environment import (
    SecretResolutionError,
    redact,
    resolve_value,
    run_params,
    secret_values,
)
from reconciler.executors.output import OutputSink
from reconciler.executors.process import failed

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = timedelta(seconds=30)


def status_matches(status: int, success_status: str) -> bool:
    """Whether ``status`` is listed in ``success_status`` (``"200,3xx"``)."""
    for item in success_status.split(","):
        item = item.strip().lower()
        if not item:
            continue
        if item.endswith("xx"):
            if item[:-2].isdigit() and status // 100 == int(item[:-2]):
                return True
        elif item.isdigit() and status == int(item):
            return True
    return False


def resolve_headers(target: HttpTarget) -> tuple[dict[bytes, bytes], tuple[str, ...]]:
    """Header values resolved and encoded; plus the secret values among them."""
    headers: dict[bytes, bytes] = {}
    pairs = []
    for name, ref in target.headers.items():
        value = resolve_value(ref, f"header {name}")
        if "\r" in value or "\n" in value:  # resolve_value already refused NUL
            raise SecretResolutionError(f"header {name}: value contains a line break")
        headers[name.encode("ascii")] = value.encode("utf-8")
        pairs.append((ref, value))
    return headers, secret_values(pairs)


class HttpExecutor:
    """Runs ``run.http`` with ``httpx.AsyncClient`` (a new client per run)."""

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        follow_redirects: bool = False,
        default_timeout: timedelta = DEFAULT_TIMEOUT,
    ) -> None:
        self.transport = transport
        self.follow_redirects = follow_redirects
        self.default_timeout = default_timeout

    async def execute(
        self, request: ExecutionRequest, events: ExecutionEvents, cancel: asyncio.Event
    ) -> ExecutionResult:
        target = request.run.http
        if target is None:
            return failed(f"not an http run (run kind is {request.run.kind})")
        try:
            headers, secrets = resolve_headers(target)
            params = run_params(request)
        except SecretResolutionError as exc:
            logger.warning("run %s of task %s: %s", request.run_id, request.task, exc)
            return failed(str(exc))
        secrets = tuple(sorted({*secrets, *params.secrets}, key=len, reverse=True))
        call_params = _request_params(target, params.values, headers)
        extra = idempotency_header(target, idempotency_key(request.task, request.slot))
        if extra is not None:
            headers[extra[0].encode("ascii")] = extra[1].encode("ascii")
        if cancel.is_set():
            return ExecutionResult(RunStatus.CANCELLED, error="cancelled")
        timeout = request.timeout if request.timeout is not None else self.default_timeout
        sink = OutputSink(events, request.output_limit, parse_progress=False, secrets=secrets)
        call = asyncio.ensure_future(self._call(target, headers, timeout, sink, call_params))
        cancel_waiter = asyncio.ensure_future(cancel.wait())
        try:
            await asyncio.wait(
                {call, cancel_waiter},
                timeout=max(0.0, timeout.total_seconds()),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            cancel_waiter.cancel()
            if not call.done():
                call.cancel()
                await asyncio.gather(call, return_exceptions=True)
        sink.close()
        result = self._result(request, target, call, cancel, timeout, sink.text(), secrets)
        return replace(result, output_truncated=sink.tail.truncated)

    def _result(
        self,
        request: ExecutionRequest,
        target: HttpTarget,
        call: asyncio.Future[int],
        cancel: asyncio.Event,
        timeout: timedelta,
        output: str,
        secrets: tuple[str, ...],
    ) -> ExecutionResult:
        if call.cancelled():
            if cancel.is_set():
                return ExecutionResult(RunStatus.CANCELLED, error="cancelled", output_tail=output)
            return ExecutionResult(
                RunStatus.TIMED_OUT,
                error=f"timed out after {format_duration(timeout)}",
                output_tail=output,
            )
        problem = call.exception()
        if isinstance(problem, httpx.TimeoutException):  # httpx's own timer fired first
            return ExecutionResult(
                RunStatus.TIMED_OUT,
                error=f"timed out after {format_duration(timeout)}",
                output_tail=output,
            )
        if problem is not None:
            error = redact(f"HTTP request failed: {_describe(problem)}", secrets)
            logger.warning("run %s of task %s: %s", request.run_id, request.task, error)
            return failed(error or "HTTP request failed", output)
        status = call.result()
        logger.info(
            "run %s of task %s: %s %s -> HTTP %s",
            request.run_id,
            request.task,
            target.method,
            _safe_url(target.url),
            status,
        )
        if status_matches(status, target.success_status):
            return ExecutionResult(RunStatus.SUCCEEDED, output_tail=output)
        return failed(f"HTTP {status}", output)

    async def _call(
        self,
        target: HttpTarget,
        headers: dict[bytes, bytes],
        timeout: timedelta,
        sink: OutputSink,
        params: _Params,
    ) -> int:
        # httpx's per-operation timeouts are a backstop; the run's deadline is enforced
        # by execute() around the whole call.
        seconds = max(0.001, timeout.total_seconds()) + 1.0
        async with (
            httpx.AsyncClient(
                transport=self.transport,
                follow_redirects=self.follow_redirects,
                timeout=httpx.Timeout(seconds),
            ) as client,
            client.stream(
                target.method,
                # added to the URL's own query (httpx's params= would replace it)
                httpx.URL(target.url).copy_merge_params(params.query) if params.query
                else target.url,
                headers=headers,
                content=params.body if params.body is not None
                else target.body.encode("utf-8") if target.body else None,
            ) as response,
        ):
            async for chunk in response.aiter_bytes():
                sink.feed(chunk)
            return response.status_code


@dataclass(frozen=True, slots=True)
class _Params:
    """What the request carries of the run's parameters (``paramsAs``)."""

    query: dict[str, str] | None = None
    body: bytes | None = None


def _request_params(target: HttpTarget, values: dict[str, ParamValue],
                    headers: dict[bytes, bytes]) -> _Params:
    if target.params_as == "query":
        return _Params(query={name: text(value) for name, value in values.items()})
    if target.params_as == "json":
        if not any(name.lower() == b"content-type" for name in headers):
            headers[b"Content-Type"] = b"application/json"
        return _Params(body=json.dumps(values, ensure_ascii=False).encode("utf-8"))
    return _Params()


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _safe_url(url: str) -> str:
    """The URL without userinfo (``https://user:pass@host`` must not be logged)."""
    try:
        parsed = httpx.URL(url)
    except Exception:
        return "<invalid url>"
    return str(parsed.copy_with(username=None, password=None)) if parsed.userinfo else url
