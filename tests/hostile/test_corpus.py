"""Every file in ``corpus/``: a clear error (file, line, field), fast, small, and the
runtime table left exactly as it was. The expectations live in ``expectations.py``."""

from __future__ import annotations

import pytest

from reconciler.manifests import load_directory, load_paths
from tests.hostile._harness import (
    ALIAS_BOMB_SECONDS,
    BYSTANDER,
    CORPUS,
    HERE,
    LOAD_SECONDS,
    SMALL_PEAK_BYTES,
    Scene,
    check_errors,
    timed,
    traced_peak,
)
from tests.hostile.expectations import EXPECT

CORPUS_FILES = sorted(p.name for p in CORPUS.iterdir() if not p.name.startswith("."))


def test_the_corpus_is_complete_and_documented() -> None:
    assert len(CORPUS_FILES) >= 60
    assert set(CORPUS_FILES) == set(EXPECT), set(CORPUS_FILES) ^ set(EXPECT)
    readme = (HERE / "README.md").read_text(encoding="utf-8")
    missing = [name for name in CORPUS_FILES if f"`{name}`" not in readme]
    assert not missing, f"not described in tests/hostile/README.md: {missing}"


@pytest.mark.parametrize("name", CORPUS_FILES)
def test_corpus_file(name: str, scene: Scene) -> None:
    expect = EXPECT[name]
    scene.apply_valid({name: expect.names})
    scene.write(name, (CORPUS / name).read_bytes())
    frozen = {BYSTANDER} if expect.whole_dir else set()

    # The directory, as the daemon and `apply` load it: bounded time.
    state, seconds = timed(lambda: load_directory(scene.manifests))
    assert seconds < (ALIAS_BOMB_SECONDS if name.startswith("alias-") else LOAD_SECONDS)
    check_errors(state, name, expect)
    assert {t.name for t in state.tasks} == {BYSTANDER} - frozen

    # The file and the directory as `reconciler validate PATH` loads them: bounded memory.
    if not expect.whole_dir:
        typed = str(scene.manifests / name)
        single, peak = traced_peak(lambda: load_paths([typed]))
        assert peak < SMALL_PEAK_BYTES, peak
        check_errors(single, typed, expect)
        assert single.tasks == ()
    typed_dir = f"{scene.manifests}/"
    check_errors(load_paths([typed_dir]), typed_dir + name, expect)

    # The safety rule: nothing deleted, nothing changed; the file's tasks are kept.
    result = scene.reconcile_changes_nothing()
    assert set(expect.names) | frozen <= scene.kept(result)
