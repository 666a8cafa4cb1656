"""The parallel loader's worker processes: a worker that crashes or hangs is replaced
by the parent (real processes and real timeouts, so not a unit test)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from reconciler.manifests import _jobs, _parallel, load_directory


def make_tree(root: Path, n: int) -> None:
    for i in range(n):
        path = root / f"team{i % 3}" / f"t{i:03d}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            "apiVersion: reconciler/v1\nkind: Task\n"
            f"metadata:\n  name: t{i:03d}\n"
            "spec:\n  schedule: \"0 3 * * *\"\n  run:\n    command: [\"true\"]\n")


def wait_for(path: Path, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.001)


@pytest.mark.parametrize("failure", ["crash", "hang"])
def test_a_failing_worker_is_replaced_by_the_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    root = tmp_path / "m"
    make_tree(root, 10)
    marker = tmp_path / "child-started"
    parent = os.getpid()
    real = _jobs._run_job

    def failing(job: _jobs._Job) -> _jobs._Outcome:
        if os.getpid() != parent:
            marker.touch()
            if failure == "crash":
                os._exit(3)
            time.sleep(60)  # killed by the parent long before
        wait_for(marker)  # the child has claimed (and lost) a chunk
        return real(job)

    monkeypatch.setattr(_jobs, "_run_job", failing)
    monkeypatch.setattr(_parallel, "MIN_CHUNK", 1)
    monkeypatch.setattr(_parallel, "CHILD_GRACE_SECONDS", 0.2)
    started = time.perf_counter()
    state = load_directory(root, workers=2)
    assert time.perf_counter() - started < 5
    assert marker.exists()
    assert state.ok and len(state.tasks) == 10


