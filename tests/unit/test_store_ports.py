"""Every store method used outside ``reconciler/store`` is declared on a port.

The callers (apply, the scheduler, the API, the CLI, the daemon) are typed against the
Protocols of :mod:`reconciler.core.protocols`; a method called on a store but on no
port would be unchecked by mypy and missing from the contract suite, and an in-memory
store could not stand in for the SQL one there.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import reconciler
from reconciler.core.protocols import STORE_PORTS
from reconciler.store import DatabaseStore, MemoryStore, SQLStore, create_store

PACKAGE = Path(reconciler.__file__).parent
#: What only a daemon needs from its store (the database engine), not a store port.
DATABASE_ONLY = {"engine"}


def port_members() -> set[str]:
    return {name for port in STORE_PORTS for name in dir(port) if not name.startswith("_")}


def store_uses(source: str) -> set[str]:
    """Attribute names read off anything called ``store`` (``store.X``, ``self.store.X``)."""
    used: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Attribute):
            continue
        base = node.value
        named = (isinstance(base, ast.Name) and base.id == "store") or (
            isinstance(base, ast.Attribute) and base.attr == "store"
        )
        if named:
            used.add(node.attr)
    return used


def uses_outside_the_store() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if (PACKAGE / "store") in path.parents:
            continue
        for name in store_uses(path.read_text(encoding="utf-8")):
            out.setdefault(name, set()).add(str(path.relative_to(PACKAGE)))
    return out


def test_the_walk_sees_store_calls() -> None:
    src = "await w.call(self.store.get_run, 1)\nstore.load_tasks()\nd.store.upgrade\nx.other.y\n"
    assert store_uses(src) == {"get_run", "load_tasks", "upgrade"}


def test_every_store_method_used_outside_the_store_is_on_a_port() -> None:
    used = uses_outside_the_store()
    assert len(used) >= 20, sorted(used)  # the walk found the callers at all
    missing = {
        name: sorted(files)
        for name, files in used.items()
        if name not in port_members() and name not in DATABASE_ONLY
    }
    assert missing == {}, f"store methods used but declared on no port: {missing}"


@pytest.mark.parametrize("implementation", [SQLStore, MemoryStore])
def test_both_stores_implement_every_port_member(implementation: type) -> None:
    absent = sorted(m for m in port_members() if not callable(getattr(implementation, m, None)))
    assert absent == []


def test_the_daemon_store_is_a_database_store() -> None:
    assert set(dir(DatabaseStore)) - set(dir(STORE_PORTS[-1])) >= DATABASE_ONLY


def test_create_store_memory_url() -> None:
    store = create_store("memory://")
    assert isinstance(store, MemoryStore)
    store.upgrade()
    assert store.load_tasks() == []
    assert create_store("memory://") is not store  # nothing shared, nothing kept
