"""The real ``reconciler`` command on hostile input, in a child process: exit 1, the
error as ``file:line:column: task: field: message`` on stderr, never a traceback, bounded
time and peak RSS (``wait4``), and ``apply`` leaves the table alone.

One run validates the whole corpus at once (every expectation checked in its output,
text and JSON); single files, generated monsters and real file-system faults (a
kernel-enforced permission denial, a FIFO) get a run each.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.hostile._harness import (
    BYSTANDER,
    BYSTANDER_FILE,
    CORPUS,
    Expect,
    Scene,
    check_cli_failure,
    cli_line_for,
    drop_dac_capabilities,
    run_cli,
    snapshot,
    valid_task,
)
from tests.hostile.expectations import EXPECT
from tests.hostile.test_big_inputs import CASES as BIG
from tests.hostile.test_corpus import CORPUS_FILES
from tests.services.ci import unavailable

#: One file per attack category (the whole corpus is also run in one go below).
REPRESENTATIVE = [
    "syntax-missing-colon.yaml",
    "tab-indentation.yaml",
    "type-env-value-integer.yaml",
    "unknown-field-typo.yaml",
    "alias-billion-laughs.yaml",
    "tag-python-object-apply.yaml",
    "binary-random-bytes.yaml",
    "dupkey-schedule-twice.yaml",
    "cron-feb-31.yaml",
    "range-integer-5000-digits.yaml",
]


def copy_corpus(manifests: Path) -> None:
    manifests.mkdir()
    (manifests / BYSTANDER_FILE).write_text(valid_task(BYSTANDER, "0 * * * *"))
    for name in CORPUS_FILES:
        shutil.copyfile(CORPUS / name, manifests / name)


def test_validate_the_whole_corpus_at_once(tmp_path: Path) -> None:
    copy_corpus(tmp_path / "manifests")
    run = run_cli(["validate", "manifests/"], tmp_path)
    check_cli_failure(run, [])
    for name in CORPUS_FILES:
        cli_line_for(run.stderr, f"manifests/{name}", EXPECT[name])
    assert all(len(line) < 2_000 for line in run.stderr.splitlines())


def test_validate_json_reports_every_corpus_file(tmp_path: Path) -> None:
    copy_corpus(tmp_path / "manifests")
    run = run_cli(["validate", "-o", "json", "manifests/"], tmp_path)
    assert run.code == 1 and "Traceback" not in run.stderr, run.stderr
    report = json.loads(run.stdout)
    assert report["valid"] is False
    for name in CORPUS_FILES:
        expect = EXPECT[name]
        field = expect.field
        found = [
            e
            for e in report["errors"]
            if e["file"] == f"manifests/{name}"
            and e["line"] == expect.line
            and expect.fragment in e["message"]
            and (
                e["field"] == field
                or (field and field.endswith("*") and (e["field"] or "").startswith(field[:-1]))
            )
        ]
        assert found, (name, [e for e in report["errors"] if e["file"].endswith(name)])
        assert found[0]["line"] is None or found[0]["column"] >= 1


@pytest.mark.parametrize("name", REPRESENTATIVE)
def test_validate_one_hostile_file(name: str, tmp_path: Path) -> None:
    (tmp_path / "manifests").mkdir()
    shutil.copyfile(CORPUS / name, tmp_path / "manifests" / name)
    run = run_cli(["validate", f"manifests/{name}"], tmp_path)
    check_cli_failure(run, [])
    cli_line_for(run.stderr, f"manifests/{name}", EXPECT[name])
    assert run.stdout == ""


@pytest.mark.parametrize(
    "case", ["ten-megabyte-file", "five-thousand-documents", "alias-fanout-100k-uses"]
)
def test_validate_a_generated_monster(case: str, tmp_path: Path) -> None:
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / f"{case}.yaml").write_bytes(BIG[case].content())
    run = run_cli(["validate", "manifests/"], tmp_path)
    check_cli_failure(run, [])
    cli_line_for(run.stderr, f"manifests/{case}.yaml", BIG[case].expect)


def special(kind: str, path: Path, outside: Path) -> None:
    if kind == "symlink-outside":
        outside.write_text(valid_task("victim"))
        path.symlink_to(outside)
    elif kind == "symlink-loop":
        path.symlink_to(path.name)
    elif kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("symlink-outside", "symlink points outside the manifests directory"),
        ("symlink-loop", "symlink loop"),
        ("directory", "is a directory, not a manifest file"),
        ("fifo", "not a regular file"),
    ],
)
def test_validate_file_system_faults(kind: str, message: str, tmp_path: Path) -> None:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "ok.yaml").write_text(valid_task("ok"))
    special(kind, manifests / "x.yaml", tmp_path / "outside.yaml")
    run = run_cli(["validate", "manifests/"], tmp_path, timeout=20)
    check_cli_failure(run, [f"manifests/x.yaml: {message}"])


def test_a_fifo_reconcilerignore_does_not_hang_validate(tmp_path: Path) -> None:
    """It used to: ``open()`` on a FIFO waits for a writer, forever."""
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "ok.yaml").write_text(valid_task("ok"))
    os.mkfifo(manifests / ".reconcilerignore")
    run = run_cli(["validate", "manifests/"], tmp_path, timeout=20)
    check_cli_failure(run, ["reconcilerignore: not a regular file"])


def real_denial() -> dict[str, object]:
    """Arguments for run_cli under which mode 000 really denies access."""
    if os.geteuid() != 0:
        return {}
    try:  # can this process drop capabilities at all? (try it in a throwaway child)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            try:
                drop_dac_capabilities()
            except OSError:
                os._exit(1)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
    except OSError:
        status = 1
    if os.waitstatus_to_exitcode(status) != 0:
        unavailable("running as root without CAP_SETPCAP: cannot make a file unreadable")
    return {"preexec": drop_dac_capabilities}


def test_permission_denied_for_real(scene: Scene) -> None:
    """The kernel refuses the read; validate names the file, apply keeps its tasks."""
    options = real_denial()
    scene.apply_valid({"x.yaml": ("victim",), "team/y.yaml": ("victim-2",)})
    (scene.manifests / "x.yaml").chmod(0)
    (scene.manifests / "team").chmod(0)
    try:
        run = run_cli(["validate", "manifests/"], scene.root, **options)  # type: ignore[arg-type]
        check_cli_failure(
            run,
            [
                "manifests/x.yaml: cannot read file: permission denied",
                "manifests/team: cannot list directory: Permission denied",
            ],
        )
        db = f"sqlite:///{scene.root / 's.db'}"
        args = ["apply", "--manifests", "manifests", "--database", db]
        run = run_cli(args, scene.root, **options)  # type: ignore[arg-type]
        check_cli_failure(run, ["x.yaml: cannot read file: permission denied"])
    finally:
        (scene.manifests / "x.yaml").chmod(0o644)
        (scene.manifests / "team").chmod(0o755)
    assert snapshot(scene.store) == scene.before


@pytest.mark.parametrize(
    "name", ["syntax-unclosed-flow-sequence.yaml", "dupname-across-files.yaml"]
)
def test_apply_keeps_the_table(name: str, scene: Scene) -> None:
    expect: Expect = EXPECT[name]
    scene.apply_valid({name: expect.names})
    shutil.copyfile(CORPUS / name, scene.manifests / name)
    db = f"sqlite:///{scene.root / 's.db'}"
    run = run_cli(["apply", "--manifests", "manifests", "--database", db], scene.root)
    check_cli_failure(run, [])
    assert expect.fragment in run.stdout + run.stderr
    assert snapshot(scene.store) == scene.before
    run = run_cli(["diff", "--manifests", "manifests", "--database", db], scene.root)
    assert run.code == 1 and "Traceback" not in run.stderr
    assert "(tasks kept)" in run.stdout + run.stderr
