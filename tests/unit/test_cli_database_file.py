"""A SQLite path that does not exist: a typo for the commands that read, a new database
for the ones that create it (``apply``, ``db upgrade``; ``run`` too, see the e2e tests).

Before, ``reconciler get tasks --database sqlite:///typo.db`` created an empty
database and printed an empty table, as if the tasks were gone.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.cli import main as cli
from tests.e2e.conftest import task_yaml

READERS = [
    ["get", "tasks"],
    ["runs", "nightly"],
    ["logs", "1"],
    ["status"],
    ["diff", "--manifests", "m"],
    ["next", "nightly"],
    ["trigger", "nightly"],
    ["suspend", "nightly"],
    ["resume", "nightly"],
]


@pytest.fixture(autouse=True)
def _cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("RECONCILER_DATABASE_URL", "RECONCILER_SERVER"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "nightly.yaml").write_text(
        task_yaml("nightly", "0 3 * * *", "command: ['true']"))


@pytest.mark.parametrize("argv", READERS, ids=lambda a: a[0])
def test_a_missing_sqlite_file_is_refused(argv: list[str], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([*argv, "--database", "sqlite:///typo.db"]) == 1
    out, err = capsys.readouterr()
    assert err == ("error: database sqlite:///typo.db does not exist "
                   "(apply, run or db upgrade create it)\n")
    assert out == ""
    assert not (tmp_path / "typo.db").exists()


@pytest.mark.parametrize("argv", READERS[:2], ids=lambda a: a[0])
def test_the_default_file_is_not_created_by_a_reader(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 1
    assert "state.db does not exist (apply, run or db upgrade create it)" in (
        capsys.readouterr().err)
    assert not (tmp_path / ".reconciler").exists()


def test_apply_creates_it_and_readers_then_read_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "sqlite:///new.db"
    assert cli.main(["apply", "--manifests", "m", "--database", url]) == 0
    assert (tmp_path / "new.db").exists()
    capsys.readouterr()
    assert cli.main(["get", "tasks", "--database", url]) == 0
    assert "nightly" in capsys.readouterr().out
    assert cli.main(["diff", "--manifests", "m", "--database", url]) == 0


def test_db_upgrade_creates_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["db", "upgrade", "--database", "sqlite:///made.db"]) == 0
    assert "up to date" in capsys.readouterr().out
    assert (tmp_path / "made.db").stat().st_size > 0
    assert cli.main(["status", "--database", "sqlite:///made.db"]) == 1  # no daemon
    assert "does not exist" not in capsys.readouterr().err


@pytest.mark.parametrize("url", ["sqlite:///:memory:", "sqlite://"])
def test_an_in_memory_database_still_works(url: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["get", "tasks", "--database", url]) == 0
    assert cli.main(["diff", "--manifests", "m", "--database", url]) == 2  # a create
    assert "error" not in capsys.readouterr().err
