"""load_directory(hint=...): a watcher's changed paths skip the directory walk safely."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.manifests import LoadCache, load_directory
from reconciler.manifests import loader as loader_module


def manifest(name: str, schedule: str = "* * * * *") -> str:
    return (f"apiVersion: reconciler/v1\nkind: Task\nmetadata: {{name: {name}}}\n"
            f"spec:\n  schedule: \"{schedule}\"\n  run: {{command: [\"true\"]}}\n")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for i in range(5):
        (tmp_path / f"t{i}.yaml").write_text(manifest(f"t{i}"))
    return tmp_path


def walks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = loader_module._walk

    def counting(root: str) -> object:
        calls.append(root)
        return real(root)

    monkeypatch.setattr(loader_module, "_walk", counting)
    return calls


def test_edit_with_hint_skips_the_walk(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = LoadCache()
    load_directory(tree, cache=cache)
    calls = walks(monkeypatch)
    target = tree / "t3.yaml"
    target.write_text(manifest("t3", "0 * * * *"))
    state = load_directory(tree, cache=cache, hint=[str(target), str(tree / ".t3.yaml.swp")])
    assert calls == []
    assert {t.name: t.schedule for t in state.tasks}["t3"] == "0 * * * *"
    assert len(state.tasks) == 5


@pytest.mark.parametrize("change", ["add", "delete"])
def test_adds_and_deletes_with_hint_skip_the_walk(
    tree: Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    cache = LoadCache()
    load_directory(tree, cache=cache)
    calls = walks(monkeypatch)
    if change == "add":
        path = tree / "new.yaml"
        path.write_text(manifest("new"))
    else:
        path = tree / "t0.yaml"
        path.unlink()
    state = load_directory(tree, cache=cache, hint=[str(path)])
    assert calls == []
    assert len(state.tasks) == (6 if change == "add" else 4)
    # And the next full walk agrees with the patched view.
    monkeypatch.undo()
    assert load_directory(tree, cache=cache).tasks == state.tasks


@pytest.mark.parametrize("change", ["dir", "outside", "symlinked-dir"])
def test_anything_unusual_falls_back_to_the_walk(
    tree: Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    cache = LoadCache()
    load_directory(tree, cache=cache)
    calls = walks(monkeypatch)
    if change == "symlinked-dir":
        (tree.parent / "real").mkdir()
        (tree.parent / "real" / "y.yaml").write_text(manifest("y"))
        (tree / "linked").symlink_to(tree.parent / "real")
        path = tree / "linked" / "y.yaml"
        expect = 5  # symlinked directories are never followed (an error, tasks kept)
    elif change == "dir":
        path = tree / "sub"
        path.mkdir()
        (path / "x.yaml").write_text(manifest("x"))
        expect = 6
    else:
        path = tree.parent / "elsewhere.yaml"
        expect = 5
    state = load_directory(tree, cache=cache, hint=[str(path)])
    assert len(calls) == 1
    assert len(state.tasks) == expect


def test_a_hint_without_a_warm_cache_walks(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = walks(monkeypatch)
    state = load_directory(tree, cache=LoadCache(), hint=[str(tree / "t1.yaml")])
    assert len(calls) == 1 and len(state.tasks) == 5


def test_reconcilerignore(tmp_path: Path) -> None:
    from reconciler.manifests import load_tree

    (tmp_path / "a.yaml").write_text(manifest("a"))
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy" / "argocd.yaml").write_text("apiVersion: argoproj.io/v1alpha1\n"
                                                    "kind: Application\n")
    (tmp_path / "x.draft.yaml").write_text("not: [valid")
    (tmp_path / "team").mkdir()
    (tmp_path / "team" / "b.yaml").write_text(manifest("b"))
    (tmp_path / "team" / "c.draft.yaml").write_text(manifest("c"))
    assert not load_directory(tmp_path).ok
    (tmp_path / ".reconcilerignore").write_text("# comment\ndeploy/\n*.draft.yaml\n")
    state = load_directory(tmp_path)
    assert state.ok and sorted(t.name for t in state.tasks) == ["a", "b"]
    tree = {str(p.relative_to(tmp_path)): p.read_bytes() for p in tmp_path.rglob("*")
            if p.is_file()}
    assert sorted(t.name for t in load_tree(tree).tasks) == ["a", "b"]
    # A watcher hint for an ignored file changes nothing.
    cache = LoadCache()
    load_directory(tmp_path, cache=cache)
    (tmp_path / "deploy" / "new.yaml").write_text("kind: Other\n")
    hinted = load_directory(tmp_path, cache=cache, hint=[str(tmp_path / "deploy" / "new.yaml")])
    assert hinted.ok and len(hinted.tasks) == 2
