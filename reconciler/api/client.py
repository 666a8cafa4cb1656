"""A small synchronous client of the HTTP API, for ``reconciler --server URL ...``.

Errors become :class:`ApiClientError` (a :class:`ReconcilerError`, so the CLI prints
``error: <message>`` and exits 1) carrying the server's ``{"error": ...}`` message.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote

import httpx

from reconciler.api.views import RunDoc
from reconciler.core.errors import ReconcilerError

API = "/api/v1"


class ApiClientError(ReconcilerError):
    def __init__(self, message: str, status: int | None = None, code: str | None = None
                 ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def normalize_server(url: str) -> str:
    url = url.strip().rstrip("/")
    if not url:
        raise ApiClientError("--server: empty URL")
    if "://" not in url:
        url = "http://" + url
    if not url.startswith(("http://", "https://")):
        raise ApiClientError(f"--server {url!r}: only http:// and https:// are supported")
    return url


class ApiClient:
    def __init__(self, server: str, token: str | None = None, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.server = normalize_server(server)
        headers = {"Accept": "application/json", "User-Agent": "reconciler-cli"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=self.server, headers=headers, timeout=timeout,
                                  transport=transport, follow_redirects=False)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ plumbing

    def _fail(self, response: httpx.Response) -> ApiClientError:
        code = None
        try:
            body = response.json()
            error = body.get("error", {}) if isinstance(body, dict) else {}
            message = str(error.get("message") or response.reason_phrase)
            code = error.get("code")
        except (ValueError, AttributeError):
            message = f"HTTP {response.status_code} {response.reason_phrase}"
        if response.status_code == 401:
            message += " (pass --token or set RECONCILER_TOKEN)"
        return ApiClientError(message, response.status_code, code)

    def _request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                 body: Any = None) -> httpx.Response:
        try:
            response = self._http.request(
                method, path, params={k: v for k, v in (params or {}).items() if v is not None},
                json=body,
            )
        except httpx.HTTPError as exc:
            raise ApiClientError(f"cannot reach the daemon at {self.server}: {exc}") from None
        if response.status_code >= 400:
            raise self._fail(response)
        return response

    def get(self, path: str, **params: Any) -> Any:
        return self._request("GET", API + path, params=params).json()

    def post(self, path: str, body: Any = None) -> Any:
        return self._request("POST", API + path, body=body).json()

    # ------------------------------------------------------------------ calls

    def tasks(self, selector: str | None = None, state: str | None = None) -> list[Any]:
        items: list[Any] = self.get("/tasks", selector=selector, state=state)["items"]
        return items

    def task_list(self) -> dict[str, Any]:
        """``GET /api/v1/tasks`` as it is: the document ``get tasks -o json`` prints."""
        document: dict[str, Any] = self.get("/tasks")
        return document

    def task(self, name: str) -> Any:
        return self.get(f"/tasks/{quote(name, safe='')}")

    def runs(self, name: str, limit: int = 20) -> list[RunDoc]:
        items: list[RunDoc] = self.get(f"/tasks/{quote(name, safe='')}/runs",
                                       limit=limit)["items"]
        return items

    def notifications(self, task: str | None = None, limit: int = 50) -> dict[str, Any]:
        """``{"items": [NotificationDoc...], "backlog": N}``."""
        doc: dict[str, Any] = self.get("/notifications", task=task, limit=limit)
        return doc

    def run(self, run_id: int) -> RunDoc:
        doc: RunDoc = self.get(f"/runs/{run_id}")
        return doc

    def log(self, run_id: int, follow: bool = False) -> Iterator[str]:
        """The run's output; with ``follow``, streamed until the run ends."""
        params = {"follow": "true" if follow else "false"}
        try:
            with self._http.stream("GET", f"{API}/runs/{run_id}/log", params=params,
                                   timeout=httpx.Timeout(30.0, read=None)) as response:
                if response.status_code >= 400:
                    response.read()
                    raise self._fail(response)
                yield from response.iter_text()
        except httpx.HTTPError as exc:
            raise ApiClientError(f"cannot reach the daemon at {self.server}: {exc}") from None

    def trigger(self, name: str, params: Mapping[str, str] | None = None) -> Any:
        body = {"params": dict(params)} if params else None
        return self.post(f"/tasks/{quote(name, safe='')}/trigger", body)

    def suspend(self, name: str, note: str | None) -> Any:
        return self.post(f"/tasks/{quote(name, safe='')}/suspend", {"note": note})

    def resume(self, name: str, catch_up: bool) -> Any:
        return self.post(f"/tasks/{quote(name, safe='')}/resume", {"catchUp": catch_up})

    def cancel(self, run_id: int) -> Any:
        return self.post(f"/runs/{run_id}/cancel")

    def backfill(self, name: str, start: str, end: str, *, parallel: int = 1,
                 rerun: bool = False, dry_run: bool = False) -> Any:
        """``{"backfill": BackfillDoc, "changed": true}`` (``dry_run``: the preview)."""
        return self.post(f"/tasks/{quote(name, safe='')}/backfill", {
            "from": start, "to": end, "parallel": parallel, "rerun": rerun,
            "dryRun": dry_run})

    def backfills(self, task: str | None = None, limit: int = 50) -> Any:
        params: dict[str, Any] = {"limit": limit}
        if task is not None:
            params["task"] = task
        return self.get("/backfills", **params)

    def cancel_backfill(self, backfill_id: int) -> Any:
        return self.post(f"/backfills/{backfill_id}/cancel")

    def status(self) -> Any:
        return self.get("/status")

    def plan(self) -> Any:
        return self.get("/plan")


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)
