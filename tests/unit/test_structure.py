"""The package's shape: no module over 700 lines (migrations aside), no function over
100, no import cycle between modules (imports under TYPE_CHECKING count too)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "reconciler"
MAX_MODULE_LINES = 700
MAX_FUNCTION_LINES = 100


def _modules() -> dict[str, tuple[Path, ast.Module, int]]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        source = path.read_text()
        out[".".join(parts)] = (path, ast.parse(source), len(source.splitlines()))
    return out


def _imports(name: str, path: Path, tree: ast.Module, names: set[str]) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # ``from package import submodule`` depends on the submodule; a name defined
            # in the module itself depends on the module
            subs = [f"{module}.{a.name}" for a in node.names]
            targets = [t for t in subs if t in names]
            if len(targets) < len(subs):
                targets.append(module)
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        found.update(t for t in targets if t in names and t != name)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            # a package and its own submodules are one unit (it re-exports them)
            if len({c for c in component if not any(o.startswith(c + ".")
                                                     for o in component)}) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_module_and_function_sizes_and_no_import_cycles() -> None:
    modules = _modules()
    sizes = {str(p.relative_to(PACKAGE.parent)): n for p, _, n in modules.values()
             if "migrations" not in p.parts}
    functions = {}
    for path, tree, _ in modules.values():
        if "migrations" in path.parts:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                where = f"{path.relative_to(PACKAGE.parent)}:{node.lineno}:{node.name}"
                functions[where] = (node.end_lineno or node.lineno) - node.lineno + 1
    longest_file = max(sizes.items(), key=lambda kv: kv[1])
    longest_function = max(functions.items(), key=lambda kv: kv[1])
    print(f"\nlongest module: {longest_file[0]} ({longest_file[1]} lines)")
    print(f"longest function: {longest_function[0]} ({longest_function[1]} lines)")
    names = set(modules)
    graph = {n: _imports(n, p, t, names) for n, (p, t, _) in modules.items()}
    assert [f for f, n in sizes.items() if n > MAX_MODULE_LINES] == []
    assert [f for f, n in functions.items() if n > MAX_FUNCTION_LINES] == []
    assert _cycles(graph) == []
