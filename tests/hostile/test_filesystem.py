"""The file system around a manifest turns hostile: symlinks out of the directory or in a
loop, special files, a directory named ``x.yaml``, permission denied, files vanishing or
being rewritten while they are read, a broken ``.reconcilerignore``.

Made at test time (none of this can be checked in). Each case: ``x.yaml`` (task
``victim``) and ``00-bystander.yaml`` are applied, the fault is injected, then the load
must report it (no line: there is no text) and reconcile must change nothing.

Permission denied: the suite runs as root, and root reads a mode-000 file anyway. The
in-process cases make ``os.open``/``os.scandir`` fail with ``EACCES`` (monkeypatch);
``test_cli.py`` gets a real denial from the kernel by dropping ``CAP_DAC_OVERRIDE`` and
``CAP_DAC_READ_SEARCH`` in the child (or by plain ``chmod 000`` when not root).
"""

from __future__ import annotations

import errno
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.core.errors import ManifestLoadError
from reconciler.manifests import load_directory, load_paths
from reconciler.service import reconcile
from tests.hostile._harness import (
    BYSTANDER,
    LOAD_SECONDS,
    Expect,
    Scene,
    check_errors,
    deadline,
    snapshot,
    timed,
    valid_file,
    valid_task,
)

X = "x.yaml"


def no_line(fragment: str) -> Expect:
    return Expect(None, None, fragment)


def assert_hostile(
    scene: Scene, label: str, expect: Expect, *, also: tuple[str, ...] = (), kept: str = "victim"
) -> None:
    """The directory and the typed paths report ``expect``; reconcile changes nothing."""
    with deadline(10):
        state, seconds = timed(lambda: load_directory(scene.manifests))
    assert seconds < LOAD_SECONDS
    check_errors(state, label, expect, also=also)
    assert BYSTANDER in {t.name for t in state.tasks}
    typed = f"{scene.manifests}/"
    with deadline(10):
        check_errors(load_paths([typed]), typed + label, expect, also=[typed + a for a in also])
    with deadline(10):
        result = scene.reconcile_changes_nothing()
    assert kept in scene.kept(result)


@pytest.fixture
def applied(scene: Scene) -> Scene:
    scene.apply_valid({X: ("victim",)})
    return scene


# ----------------------------------------------------------------------- symlinks


def test_symlink_to_a_file_outside(applied: Scene, tmp_path: Path) -> None:
    outside = tmp_path / "outside.yaml"
    outside.write_text(valid_task("victim", "* * * * *"))  # a valid, *different* task
    applied.remove(X)
    (applied.manifests / X).symlink_to(outside)
    assert_hostile(applied, X, no_line("symlink points outside the manifests directory"))


def test_symlink_to_etc_passwd_and_dev_zero(applied: Scene) -> None:
    applied.remove(X)
    (applied.manifests / X).symlink_to("/etc/passwd")
    (applied.manifests / "zero.yaml").symlink_to("/dev/zero")
    assert_hostile(
        applied, X, no_line("symlink points outside the manifests directory"), also=("zero.yaml",)
    )


def test_symlink_escaping_with_dot_dot(applied: Scene) -> None:
    applied.remove(X)
    (applied.manifests / X).symlink_to("../../../../../../etc/hostname")
    assert_hostile(applied, X, no_line("symlink points outside the manifests directory"))


def test_symlinked_directory_outside_named_like_a_manifest(applied: Scene, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "evil.yaml").write_text(valid_task("evil"))
    applied.remove(X)
    (applied.manifests / X).symlink_to(outside, target_is_directory=True)
    assert_hostile(applied, X, no_line("symlink points outside the manifests directory"))
    assert "evil" not in snapshot(applied.store)


def test_symlink_to_itself(applied: Scene) -> None:
    applied.remove(X)
    (applied.manifests / X).symlink_to(X)
    assert_hostile(applied, X, no_line("symlink loop"))


def test_symlink_loop_of_two(applied: Scene) -> None:
    applied.remove(X)
    (applied.manifests / X).symlink_to("y.yml")
    (applied.manifests / "y.yml").symlink_to(X)
    assert_hostile(applied, X, no_line("symlink loop"), also=("y.yml",))


def test_dangling_symlink(applied: Scene) -> None:
    applied.remove(X)
    (applied.manifests / X).symlink_to("was-renamed.yaml")
    assert_hostile(applied, X, no_line("broken symlink"))


# ------------------------------------------------------------------ special files


def test_a_directory_named_x_yaml(applied: Scene) -> None:
    applied.remove(X)
    (applied.manifests / X).mkdir()
    assert_hostile(applied, X, no_line("is a directory, not a manifest file"))


def test_a_fifo_named_x_yaml_does_not_block(applied: Scene) -> None:
    applied.remove(X)
    os.mkfifo(applied.manifests / X)
    assert_hostile(applied, X, no_line("not a regular file"))


def test_a_unix_socket_named_x_yaml(applied: Scene, monkeypatch: pytest.MonkeyPatch) -> None:
    applied.remove(X)
    monkeypatch.chdir(applied.manifests)  # AF_UNIX paths are limited to ~100 bytes
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(X)
        assert_hostile(applied, X, no_line("not a regular file"))


# ------------------------------------------------------ permission denied (simulated)


def deny(monkeypatch: pytest.MonkeyPatch, name: str, call: str = "open") -> None:
    real: Callable[..., object] = getattr(os, call)

    def denied(path: object, *args: object, **kwargs: object) -> object:
        if os.fspath(path).endswith(os.sep + name):  # type: ignore[call-overload]
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, call, denied)


def test_unreadable_file(applied: Scene, monkeypatch: pytest.MonkeyPatch) -> None:
    deny(monkeypatch, X)
    assert_hostile(applied, X, no_line("cannot read file: permission denied"))


def test_unlistable_subdirectory(scene: Scene, monkeypatch: pytest.MonkeyPatch) -> None:
    scene.apply_valid({"team/x.yaml": ("victim",)})
    deny(monkeypatch, "team", call="scandir")
    assert_hostile(scene, "team", no_line("cannot list directory: Permission denied"))


# --------------------------------------------------------- files changing under us


def swap_at_open(
    monkeypatch: pytest.MonkeyPatch, path: Path, replace_with: Callable[[Path], None] | None
) -> None:
    """Between the directory listing and ``os.open``, ``path`` is moved away (and
    something else put in its place); it is put back right after the open, so every
    load in the test meets the same race."""
    real_open = os.open
    aside = path.with_name(".aside")

    def racing_open(target: str, flags: int, *args: int) -> int:
        if os.fspath(target) != str(path):
            return real_open(target, flags, *args)
        os.rename(path, aside)
        if replace_with is not None:
            replace_with(path)
        try:
            return real_open(target, flags, *args)
        finally:
            if path.is_dir() and not path.is_symlink():
                path.rmdir()
            elif os.path.lexists(path):
                path.unlink()
            os.rename(aside, path)

    monkeypatch.setattr(os, "open", racing_open)


def test_file_vanishes_between_listing_and_reading(
    applied: Scene, monkeypatch: pytest.MonkeyPatch
) -> None:
    swap_at_open(monkeypatch, applied.manifests / X, None)
    assert_hostile(applied, X, no_line("file disappeared while the manifests were being read"))


def test_file_replaced_by_a_symlink_before_it_is_opened(
    applied: Scene, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Listed as a regular file, a symlink to outside by the time it is opened
    (O_NOFOLLOW): never followed."""
    outside = tmp_path / "outside.yaml"
    outside.write_text(valid_task("victim", "* * * * *"))
    swap_at_open(monkeypatch, applied.manifests / X, lambda p: p.symlink_to(outside))
    assert_hostile(applied, X, no_line("file was replaced by a symlink while being read"))


def test_file_replaced_by_a_fifo_before_it_is_opened(
    applied: Scene, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opened non-blocking: a FIFO swapped in never waits for a writer."""
    swap_at_open(monkeypatch, applied.manifests / X, os.mkfifo)
    assert_hostile(applied, X, no_line("not a regular file"))


def test_file_replaced_by_a_directory_before_it_is_opened(
    applied: Scene, monkeypatch: pytest.MonkeyPatch
) -> None:
    swap_at_open(monkeypatch, applied.manifests / X, Path.mkdir)
    assert_hostile(applied, X, no_line("not a regular file"))


def test_file_deleted_after_it_was_opened(
    applied: Scene, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unlinking an open file leaves its content readable, but the unlink changes the
    inode (ctime): the read is refused for this round, nothing changes; the next load
    sees the file gone."""
    real_read = os.read
    path = applied.manifests / X
    target = path.stat().st_ino

    def read_after_unlink(fd: int, n: int) -> bytes:
        if os.fstat(fd).st_ino == target and path.exists():
            path.unlink()
        return real_read(fd, n)

    monkeypatch.setattr(os, "read", read_after_unlink)
    with deadline(10):
        result = reconcile(applied.manifests, applied.store, actor="t")
    assert not result.plan.has_changes and snapshot(applied.store) == applied.before
    check_errors(result.desired, X, no_line("file changed while it was being read"))


def rewrite_during_read(
    monkeypatch: pytest.MonkeyPatch, path: Path, new_content: bytes, written: int
) -> None:
    """The first read of ``path`` happens just after a writer truncated it and wrote the
    first ``written`` bytes of ``new_content`` (an editor saving in place)."""
    real_read = os.read
    inode = path.stat().st_ino
    done: list[bool] = []

    def racing_read(fd: int, n: int) -> bytes:
        if not done and os.fstat(fd).st_ino == inode:
            done.append(True)
            with open(path, "r+b") as writer:  # same inode: truncate, then write half
                writer.truncate(0)
                writer.write(new_content[:written])
        return real_read(fd, n)

    monkeypatch.setattr(os, "read", racing_read)


def test_file_rewritten_in_place_while_read(
    scene: Scene, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Truncate-then-write caught mid-way: the half we would read is *valid* YAML (it
    ends at a document boundary) and declares one task fewer. Before the fix the second
    task was deleted; now the read is refused because the file changed during it."""
    names = ("victim", "victim-2")
    scene.apply_valid({X: names})
    new = valid_file(names).replace("10m", "15m").encode()
    boundary = new.index(b"---\n")
    rewrite_during_read(monkeypatch, scene.manifests / X, new, boundary)
    with deadline(10):
        result = reconcile(scene.manifests, scene.store, actor="t")
    assert not result.plan.has_changes and result.applied is None
    assert snapshot(scene.store) == scene.before
    check_errors(result.desired, X, no_line("file changed while it was being read"))


def test_half_written_file_cut_mid_token_is_frozen(applied: Scene) -> None:
    """A consistent snapshot of a half-written file that ends inside a token."""
    new = valid_file(["victim"]).replace("10m", "15m").encode()
    cut = new.index(b'"--full"') + 4  # inside the quoted string
    applied.write(X, new[:cut])
    assert_hostile(applied, X, Expect(9, None, "found unexpected end of stream"))


def test_file_truncated_to_zero_bytes_keeps_its_tasks(applied: Scene) -> None:
    applied.write(X, b"")
    result = reconcile(applied.manifests, applied.store, actor="t")
    assert snapshot(applied.store) == applied.before, result.plan.deletes


@pytest.mark.xfail(
    strict=True,
    reason="known gap: a half-written file that ends at a document boundary is valid YAML "
    "declaring fewer tasks; the loader cannot tell it from an edit; see README.md",
)
def test_half_written_file_cut_at_a_document_boundary_keeps_its_tasks(scene: Scene) -> None:
    scene.apply_valid({X: ("victim", "victim-2")})
    new = valid_file(["victim", "victim-2"]).encode()
    scene.write(X, new[: new.index(b"---\n")])
    result = reconcile(scene.manifests, scene.store, actor="t")
    assert snapshot(scene.store) == scene.before, result.plan.deletes


# ------------------------------------------------------------ .reconcilerignore


@pytest.mark.parametrize(
    "kind", ["fifo", "directory", "binary", "outside", "dangling", "loop", "denied"]
)
def test_a_broken_reconcilerignore_stops_the_load(
    scene: Scene, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kind: str
) -> None:
    """Without its rules every hidden file would suddenly be declared (drafts created,
    Kubernetes objects failing): an ignore file that exists but cannot be used stops the
    whole load, like an unreadable directory. A FIFO used to hang the loader forever."""
    scene.apply_valid({X: ("victim",)})
    scene.write("drafts/wip.yaml", valid_task("draft-task"))
    ignore = scene.manifests / ".reconcilerignore"
    ignore.write_text("drafts/\n")
    assert reconcile(scene.manifests, scene.store, actor="t").applied is None  # ignored
    if kind == "fifo":
        ignore.unlink()
        os.mkfifo(ignore)
    elif kind == "directory":
        ignore.unlink()
        ignore.mkdir()
    elif kind == "binary":
        ignore.write_bytes(b"drafts/\n\xff\xfe\x00garbage\n")
    elif kind == "outside":
        (tmp_path / "rules").write_text("drafts/\n")
        ignore.unlink()
        ignore.symlink_to(tmp_path / "rules")
    elif kind == "dangling":
        ignore.unlink()
        ignore.symlink_to("nowhere")
    elif kind == "loop":
        ignore.unlink()
        ignore.symlink_to(ignore.name)
    else:
        deny(monkeypatch, ".reconcilerignore")
    with deadline(10), pytest.raises(ManifestLoadError, match=r"cannot use .*reconcilerignore"):
        load_directory(scene.manifests)
    with deadline(10):
        state = load_paths([str(scene.manifests)])
    assert [(e.file, e.line) for e in state.errors] == [(str(scene.manifests), None)]
    assert ".reconcilerignore" in state.errors[0].message
    with deadline(10), pytest.raises(ManifestLoadError):
        reconcile(scene.manifests, scene.store, actor="t")
    assert snapshot(scene.store) == scene.before


def test_the_daemon_can_be_slow_but_not_stuck(applied: Scene) -> None:
    """Many faults at once, one load: every broken entry reported, the rest loaded."""
    m = applied.manifests
    os.mkfifo(m / "pipe.yaml")
    (m / "dir.yaml").mkdir()
    (m / "loop.yaml").symlink_to("loop.yaml")
    (m / "out.yaml").symlink_to("/etc/passwd")
    (m / "gone.yaml").symlink_to("nothing.yaml")
    started = time.perf_counter()
    with deadline(10):
        state = load_directory(m)
    assert time.perf_counter() - started < LOAD_SECONDS
    assert {e.file for e in state.errors} == {
        "pipe.yaml", "dir.yaml", "loop.yaml", "out.yaml", "gone.yaml"
    }
    assert {t.name for t in state.tasks} == {BYSTANDER, "victim"}
