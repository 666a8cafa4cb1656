"""One reading of the ``CI`` variable, and one rule for a missing service.

``CI`` counts as set when it is ``true``, ``1`` or ``yes`` (any case, spaces ignored):
CI systems say ``true`` (GitHub Actions, GitLab) or ``1``. Then a service or tool a test
needs and cannot find is a **failure**, never a skip, so a broken CI machine can never
turn a test into a silent no-op. Outside CI the test is skipped with the reason.
"""

from __future__ import annotations

import os
from typing import NoReturn

TRUE_VALUES = ("1", "true", "yes")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in TRUE_VALUES


def unavailable(reason: str) -> NoReturn:
    """A service or tool is missing: fail in CI, skip elsewhere."""
    import pytest

    if in_ci():
        pytest.fail(f"{reason} (CI is set: a missing service is a failure, not a skip)",
                    pytrace=False)
    pytest.skip(reason)


def require(missing: str | None) -> None:
    """``require(why_missing())``: nothing when ``missing`` is None, else :func:`unavailable`."""
    if missing is not None:
        unavailable(missing)
