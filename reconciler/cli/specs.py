"""Write every generated contract into ``specs/`` (``make specs``).

``check`` mode compares instead of writing; the test suite uses it so a stale
committed schema fails the build.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reconciler.core.specs import SPECS, render


def all_specs() -> dict[str, Callable[[], dict[str, Any]]]:
    return dict(SPECS)


def stale(directory: Path) -> list[str]:
    """Names of spec files in ``directory`` that differ from what the code generates."""
    out = []
    for name, make in all_specs().items():
        path = directory / name
        if not path.is_file() or path.read_text() != render(make()):
            out.append(name)
    return out


def write(directory: Path) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    for name, make in all_specs().items():
        (directory / name).write_text(render(make()))
    return sorted(all_specs())


def main(argv: list[str]) -> int:
    target = Path(argv[0] if argv else "specs")
    for name in write(target):
        print(f"wrote {target / name}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
