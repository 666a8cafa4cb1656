"""Fixtures of the hostile-manifest suite: a migrated SQLite template and a scene."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hostile._harness import Scene, make_template_db


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_template_db(tmp_path_factory.mktemp("template"))


@pytest.fixture
def scene(tmp_path: Path, template_db: Path) -> Iterator[Scene]:
    s = Scene(tmp_path, template_db)
    try:
        yield s
    finally:
        s.close()
