"""One reading of the ``CI`` variable, and one rule for a missing service.

``CI`` counts as set when it is ``true``, ``1`` or ``yes`` (any case, spaces ignored):
CI systems say ``true`` (GitHub Actions, GitLab) or ``1``. Then a service or tool a test
needs and cannot find is a **failure**, never a skip, so a broken CI machine can never
turn a test into a silent no-op. Outside CI the test is skipped with the reason.

A machine can *declare* a capability missing: ``RECONCILER_TEST_UNAVAILABLE`` lists
capability names (comma-separated, e.g. ``cgroup2``). A test whose capability is
missing *and* declared is skipped, in CI too, with its reason and the declaration;
missing and not declared, it is :func:`unavailable` as usual (a failure in CI). A
declaration never skips a test whose capability is there: it runs. So a CI
configuration that accepts a machine without, say, cgroup v2 says so in writing
(``.ci/run``), and a CI machine that loses a capability nobody declared fails.
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


DECLARED_VARIABLE = "RECONCILER_TEST_UNAVAILABLE"


def declared_unavailable(capability: str) -> bool:
    """Whether ``RECONCILER_TEST_UNAVAILABLE`` lists ``capability``."""
    listed = os.environ.get(DECLARED_VARIABLE, "")
    return capability in {item.strip() for item in listed.split(",")}


def require_capability(capability: str, missing: str | None) -> None:
    """Nothing when ``missing`` is None; a skip when ``capability`` is missing and
    declared (see the module docstring), else :func:`unavailable`."""
    if missing is None:
        return
    if declared_unavailable(capability):
        import pytest

        pytest.skip(f"{missing} (declared unavailable: {DECLARED_VARIABLE} lists "
                    f"{capability})")
    unavailable(missing)
