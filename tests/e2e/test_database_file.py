"""End-to-end: the SQLite file is truncated, deleted or replaced under the real daemon.

Before, ``/readyz`` stayed 200 while the daemon wrote into the unlinked file, and the
runs of that time were gone after a restart. Now ``/readyz`` answers 503 with a
``database`` check naming what happened, the error is logged once, and no run is
started or written into a file that is gone (the slot's row cannot be recorded, so the
slot is not run).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.conftest import DaemonProcess, task_yaml, wait_until
from tests.faults.test_database_faults import readyz

pytestmark = pytest.mark.e2e

REFUSED_SLOT = re.compile(r"could not record \d+ run\(s\): ")


def refused_slot(daemon: DaemonProcess) -> bool:
    """A slot's run row was refused: the slot was not run."""
    return bool(REFUSED_SLOT.search(daemon.log.read_text()))


def truncate(db: Path) -> None:
    os.truncate(db, 0)


def delete(db: Path) -> None:
    db.unlink()


def replace(db: Path) -> None:
    """A restore as people do it: a copy of the database renamed over the file."""
    copy = db.with_name("restored.db")
    copy.write_bytes(db.read_bytes())
    copy.rename(db)


@pytest.mark.parametrize(("fault", "reason"), [
    (truncate, "the database file was truncated: "),
    (delete, "the database file was deleted: "),
    (replace, "the database file was replaced: "),
], ids=["truncate", "delete", "replace"])
def test_a_vanished_database_file_makes_the_daemon_not_ready(
    daemon: DaemonProcess, fault: Callable[[Path], None], reason: str
) -> None:
    db = daemon.root / "state.db"
    daemon.write("tick.yaml", task_yaml("tick", "@every 1s", "command: ['true']"))
    daemon.start()
    wait_until(lambda: readyz(daemon)[0] == 200, what="/readyz 200")
    wait_until(lambda: daemon.runs("tick"), what="a first run")
    daemon.store.close()  # the test's own connections: only the daemon's are checked
    fault(db)

    def not_ready() -> str | None:
        code, body = readyz(daemon)
        check = body.get("checks", {}).get("database", {})
        return check.get("message") if code == 503 and not check.get("ok") else None

    message = wait_until(not_ready, what="/readyz 503 naming the database file")
    assert message.startswith(reason) and str(db) in message
    # the next slot is refused rather than run into the lost file
    wait_until(lambda: refused_slot(daemon), what="a refused slot")
    assert readyz(daemon)[0] == 503
    log = daemon.log.read_text()
    assert log.count(f"ERROR reconciler.store: {reason}") == 1, log
    if fault is delete:
        assert not db.exists()  # no new, empty database at the path
    assert not daemon.exited()


def test_the_file_moved_back_is_used_again(daemon: DaemonProcess) -> None:
    db, aside = daemon.root / "state.db", daemon.root / "aside.db"
    daemon.write("tick.yaml", task_yaml("tick", "@every 1s", "command: ['true']"))
    daemon.start()
    wait_until(lambda: daemon.runs("tick"), what="a first run")
    daemon.store.close()
    db.rename(aside)
    wait_until(lambda: readyz(daemon)[0] == 503, what="/readyz 503")
    wait_until(lambda: refused_slot(daemon), what="a refused slot")
    aside.rename(db)
    wait_until(lambda: readyz(daemon)[0] == 200, what="/readyz 200 again")
    assert "is back; using it again" in daemon.log.read_text()
    # the slots of the outage are recorded late (missed), and runs go on
    wait_until(lambda: any("database unavailable" in (r.reason or "")
                           for r in daemon.runs("tick")), what="the outage's slots")
    count = len(daemon.runs("tick"))
    wait_until(lambda: len(daemon.runs("tick")) > count, what="a run after the outage")
