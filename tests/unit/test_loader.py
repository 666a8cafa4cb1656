"""Manifest loading: which files, YAML safety, error positions, symlinks, cache, pool."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import reconciler.core.model as model_module
from reconciler.core.errors import ManifestLoadError, ScheduleError
from reconciler.core.model import DesiredState, ManifestError
from reconciler.manifests import (
    MAX_DOCUMENTS_PER_FILE,
    MAX_FILE_BYTES,
    LoadCache,
    _cache,
    _jobs,
    _parallel,
    _yaml,
    load_directory,
    load_paths,
    load_tree,
    loader,
    parse_file,
)


def task_yaml(name: str = "nightly-report", extra: str = "", schedule: str = '"0 3 * * *"') -> str:
    """A valid Task; ``extra`` lines go into ``spec`` starting at line 9."""
    return (
        "apiVersion: reconciler/v1\n"  # 1
        "kind: Task\n"  # 2
        "metadata:\n"  # 3
        f"  name: {name}\n"  # 4
        "spec:\n"  # 5
        f"  schedule: {schedule}\n"  # 6
        "  run:\n"  # 7
        "    command: [/bin/report, --all]\n" + extra  # 8
    )


def write(root: Path, rel: str, content: str | bytes) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


def only_error(state: DesiredState) -> ManifestError:
    assert len(state.errors) == 1, state.errors
    return state.errors[0]


def errors_of(content: str | bytes, label: str = "f.yaml") -> tuple[ManifestError, ...]:
    data = content.encode() if isinstance(content, str) else content
    return parse_file(data, label=label).errors


# ----------------------------------------------------------------------------- files


def test_loads_yaml_and_yml_files_recursively_in_sorted_order(tmp_path: Path) -> None:
    write(tmp_path, "b.yaml", task_yaml("b"))
    write(tmp_path, "a.yml", task_yaml("a"))
    write(tmp_path, "team/c.yaml", task_yaml("c"))
    write(tmp_path, "team/deep/d.YAML", task_yaml("d"))
    state = load_directory(tmp_path)
    assert state.ok
    assert [(t.name, t.source_file, t.source_line) for t in state.tasks] == [
        ("a", "a.yml", 1),
        ("b", "b.yaml", 1),
        ("c", "team/c.yaml", 1),
        ("d", "team/deep/d.YAML", 1),
    ]
    assert state.files == {"a.yml", "b.yaml", "team/c.yaml", "team/deep/d.YAML"}
    assert state.failed_files == frozenset()
    assert state.tasks[0].document["spec"]["run"] == {"command": ["/bin/report", "--all"]}


def test_hidden_backup_and_other_files_are_ignored(tmp_path: Path) -> None:
    write(tmp_path, "ok.yaml", task_yaml("ok"))
    for rel in (
        ".hidden.yaml",
        ".git/config.yaml",
        "team/.cache/x.yaml",
        "ok.yaml~",
        ".#ok.yaml",
        "#ok.yaml#",
        ".ok.yaml.swp",
        "ok.yaml.swp",
        "ok.yaml.swx",
        "notes.txt",
        "README.md",
        "ok.json",
    ):
        write(tmp_path, rel, "not: [valid")
    state = load_directory(tmp_path)
    assert state.ok, state.errors
    assert state.files == {"ok.yaml"}
    assert [t.name for t in state.tasks] == ["ok"]


def test_several_documents_per_file_and_empty_documents(tmp_path: Path) -> None:
    text = (
        "# leading comment only\n"  # 1
        "---\n"  # 2
        "# an empty document\n"  # 3
        "---\n"  # 4
        + task_yaml("first")  # 5..12
        + "---\n"  # 13
        + task_yaml("second")  # 14..
        + "---\n---\n"
    )
    write(tmp_path, "multi.yaml", text)
    state = load_directory(tmp_path)
    assert state.ok
    assert [(t.name, t.source_line) for t in state.tasks] == [("first", 5), ("second", 14)]


def test_a_comment_only_file_contributes_nothing_and_an_empty_one_is_an_error(
    tmp_path: Path,
) -> None:
    write(tmp_path, "comments.yaml", "# nothing here\n")
    state = load_directory(tmp_path)
    assert state.ok and state.tasks == ()
    write(tmp_path, "empty.yaml", "")  # what a truncate-then-write save looks like midway
    state = load_directory(tmp_path)
    assert state.failed_files == {"empty.yaml"}
    assert "file is empty" in state.errors[0].message
    assert state.files == {"empty.yaml", "comments.yaml"}


def test_missing_directory_sets_the_flag_without_errors(tmp_path: Path) -> None:
    state = load_directory(tmp_path / "nope")
    assert state.directory_missing
    assert state.errors == () and state.tasks == ()
    assert not state.ok


def test_a_file_instead_of_a_directory_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "x.yaml", task_yaml())
    with pytest.raises(ManifestLoadError, match="not a directory"):
        load_directory(path)


# ------------------------------------------------------------------ error positions


def test_unknown_field_points_at_its_key(tmp_path: Path) -> None:
    write(tmp_path, "reports.yaml", task_yaml(extra="  timout: 5m\n"))
    state = load_directory(tmp_path)
    error = only_error(state)
    assert (error.file, error.line, error.column) == ("reports.yaml", 9, 3)
    assert error.field == "spec.timout"
    assert error.task == "nightly-report"
    assert error.message == 'unknown field "timout" (did you mean "timeout"?)'
    assert state.tasks == ()
    assert state.failed_files == {"reports.yaml"}


def test_value_error_message_and_position(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def check_time_zone(name: str) -> None:
        raise ScheduleError(f'unknown time zone "{name}"')

    monkeypatch.setattr(model_module, "check_time_zone", check_time_zone)
    extra = "  timeZone: Europe/Berln\n"
    write(tmp_path, "examples/reports.yaml", task_yaml(extra=extra))
    error = only_error(load_directory(tmp_path))
    assert str(error) == (
        "examples/reports.yaml:9:13: nightly-report: spec.timeZone: "
        'unknown time zone "Europe/Berln"'
    )
    assert error.field == "spec.timeZone"


def test_value_error_prefix_is_stripped() -> None:
    (error,) = errors_of(task_yaml(extra="  timeout: 5\n"))
    assert (error.line, error.column, error.field) == (9, 12, "spec.timeout")
    assert error.message.startswith("expected a duration string")


def test_list_item_error_uses_index_in_the_field_path() -> None:
    text = task_yaml().replace("[/bin/report, --all]", "[/bin/report, 42]")
    (error,) = errors_of(text)
    assert (error.line, error.column) == (8, 28)
    assert error.field == "spec.run.command[1]"
    assert error.message == "expected a string, got an integer"


def test_missing_field_points_at_the_parent_mapping() -> None:
    text = task_yaml().replace('  schedule: "0 3 * * *"\n', "")
    (error,) = errors_of(text)
    assert error.field == "spec.schedule"
    assert error.message == 'missing required field "schedule"'
    assert (error.line, error.column) == (6, 3)  # where the spec mapping starts


def test_strict_types_are_reported_in_yaml_terms() -> None:
    errors = errors_of(task_yaml(extra='  suspend: "yes"\n  retries: {limit: 1.5}\n'))
    assert [(e.field, e.line, e.column, e.message) for e in errors] == [
        ("spec.suspend", 9, 12, "expected a boolean (true or false), got a string"),
        ("spec.retries.limit", 10, 20, "expected an integer, got a number"),
    ]


def test_model_validator_error_points_at_the_object() -> None:
    text = task_yaml().replace("  run:\n", "  run:\n    shell: echo hi\n")
    (error,) = errors_of(text)
    assert (error.field, error.line, error.column) == ("spec.run", 8, 5)
    assert (
        error.message
        == "exactly one of command, shell, http or python is required (got command, shell)"
    )


def test_one_error_per_pydantic_error_sorted_by_position(tmp_path: Path) -> None:
    extra = "  catchUp: Sometimes\n  maxCatchUp: 0\n"
    write(
        tmp_path,
        "x.yaml",
        task_yaml(extra=extra).replace("  name: nightly-report", "  name: Bad_Name"),
    )
    state = load_directory(tmp_path)
    assert [(e.line, e.field) for e in state.errors] == [
        (4, "metadata.name"),
        (9, "spec.catchUp"),
        (10, "spec.maxCatchUp"),
    ]
    assert {e.task for e in state.errors} == {"Bad_Name"}


def test_dict_keys_and_unions_are_located() -> None:
    extra = (
        "  run:\n"
        "    command: [x]\n"
        "    env:\n"  # 11
        "      GOOD: text\n"
        "      1bad: x\n"  # 13
        "      A: {fromEnv: B, x: 1}\n"  # 14
        "      B: [1]\n"  # 15
        "      C: {fromFile: relative}\n"  # 16
    )
    text = task_yaml(extra=extra).replace("  run:\n    command: [/bin/report, --all]\n", "", 1)
    errors = errors_of(text)
    got = [(e.line, e.column, e.field, e.message) for e in errors]
    assert got[0][:3] == (13 - 2, 7, 'spec.run.env["1bad"]')
    assert got[0][3].startswith("invalid key: String should match pattern")
    assert got[1] == (12, 23, "spec.run.env.A.x", 'unknown field "x"')
    assert got[2] == (
        13,
        10,
        "spec.run.env.B",
        "expected a string, {fromEnv: ...} or {fromFile: ...}, got a list",
    )
    assert got[3][:3] == (14, 21, "spec.run.env.C.fromFile")
    assert len(errors) == 4


def test_labels_with_dots_are_quoted_in_the_field_path() -> None:
    text = task_yaml().replace(
        "  name: nightly-report\n",
        "  name: nightly-report\n  labels:\n    app.example.com/tier: 3\n",
    )
    (error,) = errors_of(text)
    assert error.field == 'metadata.labels["app.example.com/tier"]'
    assert (error.line, error.column) == (6, 27)


def test_non_mapping_document_unknown_kind_and_api_version() -> None:
    (e,) = errors_of("- a\n- b\n")
    assert (e.line, e.column) == (1, 1)
    assert "must be a mapping" in e.message and "not a list" in e.message
    (e,) = errors_of("apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: x}\n")
    assert (e.line, e.column, e.field) == (2, 7, "kind")
    assert e.message == 'unknown kind "CronJob" (supported: Task, Channel, Calendar)'
    (e,) = errors_of(task_yaml().replace("reconciler/v1", "reconciler/v2"))
    assert (e.line, e.column, e.field, e.task) == (1, 13, "apiVersion", "nightly-report")
    assert (
        e.message
        == 'unsupported apiVersion "reconciler/v2" for kind Task (supported: reconciler/v1)'
    )
    (e,) = errors_of(task_yaml().replace("kind: Task\n", ""))
    assert e.field == "kind" and e.message.startswith('missing required field "kind"')
    (e,) = errors_of("just text\n")
    assert "not a string" in e.message


# ------------------------------------------------------------------------ YAML safety


def test_duplicate_keys_are_errors_naming_both_lines() -> None:
    (e,) = errors_of(task_yaml(extra="  suspend: true\n  suspend: false\n"))
    assert (e.line, e.column) == (10, 3)
    assert e.message == 'duplicate key "suspend" (first defined at line 9)'
    assert e.task == "nightly-report"
    (e,) = errors_of("{a: 1, b: 2, a: 3}")
    assert (e.line, e.column) == (1, 14)


def test_python_and_custom_tags_are_refused_with_their_line() -> None:
    text = (
        "apiVersion: reconciler/v1\nkind: Task\nx: !!python/object/apply:os.system ['echo pwned']\n"
    )
    (e,) = errors_of(text)
    assert (e.line, e.column) == (3, 4)
    assert "!!python/object/apply:os.system is not allowed" in e.message
    (e,) = errors_of("a: 1\nb: !foo bar\n")
    assert (e.line, e.column) == (2, 4)
    assert "tag !foo is not allowed" in e.message
    (e,) = errors_of("a: !!binary aGVsbG8=\n")
    assert "!!binary is not allowed" in e.message


def test_explicit_standard_tags_are_fine() -> None:
    text = task_yaml(extra="  suspend: !!bool true\n").replace("--all", "!!str 42")
    result = parse_file(text.encode(), label="f.yaml")
    assert result.errors == ()
    assert result.tasks[0].document["spec"]["run"]["command"] == ["/bin/report", "42"]


def test_merge_keys_are_refused() -> None:
    (e,) = errors_of("base: &b {x: 1}\nother:\n  <<: *b\n  y: 2\n")
    assert (e.line, e.column) == (3, 3)
    assert e.message.startswith("merge keys (<<) are not supported")


def test_billion_laughs_fails_fast() -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 9) + "]")
    started = time.perf_counter()
    (e,) = errors_of("\n".join(lines) + "\n")
    assert time.perf_counter() - started < 0.5
    assert "aliases expand to more than 10,000 nodes" in e.message
    assert (e.line, e.column) == (5, 4)  # the first alias that goes over budget


def test_aliases_within_budget_are_allowed() -> None:
    text = task_yaml(extra="  retries: &r {limit: 2}\n").replace(
        "[/bin/report, --all]", "&c [a, b]"
    )
    text += "---\n" + task_yaml("second").replace("[/bin/report, --all]", "[x]")
    result = parse_file(text.encode(), label="f.yaml")
    assert result.errors == ()
    assert [t.name for t in result.tasks] == ["nightly-report", "second"]


def test_recursive_alias_is_an_error() -> None:
    (e,) = errors_of("a: &x [1, *x]\n")
    assert "recursive alias" in e.message and e.line == 1


def test_undefined_alias_is_a_yaml_error() -> None:
    (e,) = errors_of("a: *nope\n")
    assert (e.line, e.column) == (1, 4)
    assert "undefined alias" in e.message


def test_deep_flow_nesting_gives_an_error_not_a_crash() -> None:
    (e,) = errors_of("[" * 10_000 + "]" * 10_000)
    assert e.line == 1 and e.column is not None
    assert "nesting" in e.message


def test_deep_block_nesting_is_limited() -> None:
    text = "a:\n" + "".join("  " * i + "-\n" for i in range(200))
    (e,) = errors_of(text)
    assert e.message == "nesting is deeper than 64 levels"
    text = "a:\n" + "".join("  " * i + "- \n" for i in range(60))
    assert "nesting" not in errors_of(text)[0].message  # 61 levels: fine (not a Task)


def test_too_many_nodes_in_one_document() -> None:
    text = "items:\n" + "".join(f"- {i}\n" for i in range(12_000))
    (e,) = errors_of(text)
    assert e.message == "document has more than 10,000 nodes"


def test_too_many_documents_in_one_file() -> None:
    text = "--- 1\n" * (MAX_DOCUMENTS_PER_FILE + 1)
    with pytest.raises(_yaml.YamlProblem) as caught:
        list(_yaml.compose_documents(text.encode()))
    assert caught.value.message == "more than 1,000 documents in one file"
    assert caught.value.line == MAX_DOCUMENTS_PER_FILE + 1


def test_errors_per_file_are_capped() -> None:
    errors = errors_of("--- 1\n" * 150)
    assert len(errors) == loader.MAX_ERRORS_PER_FILE + 1
    assert "more than 100 errors" in errors[-1].message


def test_big_files_are_refused_before_parsing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (tmp_path / "huge.yaml").open("wb") as f:
        f.truncate(10 * MAX_FILE_BYTES)  # sparse: nothing to read, and we must not
    write(tmp_path, "big.yaml", "a: " + "x" * 2_000_000 + "\n")
    write(tmp_path, "ok.yaml", task_yaml())
    parsed: list[int] = []
    real = _jobs.parse_file

    def counting(data: bytes, **kwargs: str) -> loader.FileResult:
        parsed.append(len(data))
        return real(data, **kwargs)

    monkeypatch.setattr(_jobs, "parse_file", counting)
    state = load_directory(tmp_path, workers=1)
    assert [(e.file, e.message) for e in state.errors] == [
        ("big.yaml", "file is 1.9 MiB, larger than the 1 MiB limit"),
        ("huge.yaml", "file is 10.0 MiB, larger than the 1 MiB limit"),
    ]
    assert parsed == [len(task_yaml().encode())]
    assert [t.name for t in state.tasks] == ["nightly-report"]
    assert (
        parse_file(b"#" * (MAX_FILE_BYTES + 1), label="x")
        .errors[0]
        .message.startswith("file is 1.0 MiB")
    )


def test_binary_junk_and_invalid_utf8() -> None:
    (e,) = errors_of(bytes(range(256)) * 4)
    assert e.message.startswith("file contains NUL bytes")
    (e,) = errors_of(b"a: 1\nb: caf\xe9 au lait\n")
    assert (e.line, e.column) == (2, 7)
    assert e.message.startswith("invalid UTF-8")
    (e,) = errors_of(b"a: 1\nb: \x07\n")
    assert (e.line, e.column) == (2, 4)
    assert "control characters are not allowed" in e.message


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-be", "utf-32"])
def test_utf16_and_utf32_with_bom_are_decoded(codec: str) -> None:
    data = task_yaml().encode(codec)
    if codec == "utf-16-be":
        data = b"\xfe\xff" + data
    result = parse_file(data, label="f.yaml")
    assert result.errors == ()
    assert result.tasks[0].name == "nightly-report"


def test_utf16_without_bom_is_refused_and_utf8_bom_accepted() -> None:
    (e,) = errors_of(task_yaml().encode("utf-16-le"))
    assert "UTF-16 without a byte order mark" in e.message
    result = parse_file(b"\xef\xbb\xbf" + task_yaml().encode(), label="f.yaml")
    assert result.errors == () and len(result.tasks) == 1
    (e,) = errors_of(b"\xff\xfea\x00:\x00 \x00\x00\xd8")  # unpaired surrogate
    assert e.message.startswith("invalid UTF-16")


def test_tabs_for_indentation_are_explained() -> None:
    (e,) = errors_of("apiVersion: reconciler/v1\nmetadata:\n\tname: x\n")
    assert (e.line, e.column) == (3, 1)
    assert "tabs cannot be used for indentation" in e.message


def test_yaml_syntax_error_after_good_documents_fails_the_file(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", task_yaml("one") + "---\nkey: [unclosed\n")
    write(tmp_path, "b.yaml", task_yaml("two"))
    state = load_directory(tmp_path)
    error = only_error(state)
    assert (error.file, error.line) == ("a.yaml", 11)
    assert state.failed_files == {"a.yaml"}
    assert [t.name for t in state.tasks] == ["two"]


def test_scalars_resolve_like_safe_load() -> None:
    text = (
        "s: hello\nq: 'yes'\nb1: yes\nb2: Off\nn1: ~\nn2: null\nn3:\ni1: 42\ni2: 0x1F\n"
        "i3: 010\ni4: -7\ni5: 1_000\ni6: 1:30\nf1: 1.5\nf2: .inf\nf3: -.Inf\nf4: 6.8523015e+5\n"
        "d: 2024-01-31\nt: 2001-12-14t21:59:43.10-05:00\nk: {1: one, 2.5: two}\nl: [a, [b, c]]\n"
        "e: !!str 12\ns2: 12abc\nv: 0o17\n"
    )
    (root,) = _yaml.compose_documents(text.encode())
    ours = _yaml.Constructor(aliases_possible=False).construct(root)
    assert ours == yaml.safe_load(text)
    assert _yaml.Constructor(aliases_possible=True).construct(root) == ours


def test_a_plain_equals_sign_is_a_string() -> None:
    (root,) = _yaml.compose_documents(b"a: =\n")
    assert _yaml.Constructor().construct(root) == {"a": "="}


@settings(max_examples=300, deadline=None, database=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    result = parse_file(data, label="x.yaml")
    assert all(e.file == "x.yaml" for e in result.errors)


@settings(max_examples=300, deadline=None, database=None)
@given(st.text(alphabet=st.sampled_from(list("ab:-[]{}&*!|>'\"#\t \n?,%@`~<=0")), max_size=200))
def test_arbitrary_yamlish_text_never_raises(text: str) -> None:
    result = parse_file(text.encode(), label="x.yaml")
    assert all(e.file == "x.yaml" and e.line >= 1 for e in result.errors)


# ------------------------------------------------------------------- duplicate names


def test_duplicate_names_across_files_name_both_locations(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", task_yaml("dup") + "---\n" + task_yaml("keep-a"))
    write(tmp_path, "team/b.yaml", task_yaml("other") + "---\n" + task_yaml("dup"))
    write(tmp_path, "z.yaml", task_yaml("dup"))
    state = load_directory(tmp_path)
    assert [(e.file, e.line, e.column, e.task, e.field, e.message) for e in state.errors] == [
        (
            "team/b.yaml",
            13,
            9,
            "dup",
            "metadata.name",
            'task name "dup" is declared more than once (first declared at a.yaml:4)',
        ),
        (
            "z.yaml",
            4,
            9,
            "dup",
            "metadata.name",
            'task name "dup" is declared more than once (first declared at a.yaml:4)',
        ),
    ]
    assert state.frozen_names == {"dup"}
    assert state.failed_files == {"team/b.yaml", "z.yaml"}
    assert [t.name for t in state.tasks] == ["keep-a"]  # nothing named dup, nothing from b


def test_duplicate_name_within_one_file(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", task_yaml("x") + "---\n" + task_yaml("x"))
    state = load_directory(tmp_path)
    error = only_error(state)
    assert (error.file, error.line) == ("a.yaml", 13)
    assert "first declared at a.yaml:4" in error.message
    assert state.tasks == () and state.frozen_names == {"x"}


def test_invalid_declarations_still_count_as_duplicates(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", task_yaml("x"))
    write(tmp_path, "b.yaml", task_yaml("x", extra="  bogus: 1\n"))
    state = load_directory(tmp_path)
    assert state.frozen_names == {"x"}
    assert state.tasks == ()
    assert {e.field for e in state.errors} == {"metadata.name", "spec.bogus"}


def test_one_bad_document_fails_the_whole_file(tmp_path: Path) -> None:
    write(tmp_path, "mixed.yaml", task_yaml("good") + "---\n" + task_yaml("bad", extra="  x: 1\n"))
    write(tmp_path, "fine.yaml", task_yaml("fine"))
    state = load_directory(tmp_path)
    assert [t.name for t in state.tasks] == ["fine"]
    assert state.failed_files == {"mixed.yaml"}
    assert only_error(state).task == "bad"


# -------------------------------------------------------------------- file system


def test_symlink_to_a_file_inside_is_fine(tmp_path: Path) -> None:
    write(tmp_path, ".shared/base.yaml", task_yaml("shared"))
    write(tmp_path, "real.yaml", task_yaml("real"))
    (tmp_path / "team").mkdir()
    (tmp_path / "team/shared.yaml").symlink_to("../.shared/base.yaml")
    (tmp_path / "alias.yaml").symlink_to("real.yaml")  # real.yaml is loaded anyway
    state = load_directory(tmp_path)
    assert state.ok, state.errors
    assert [(t.name, t.source_file) for t in state.tasks] == [
        ("real", "real.yaml"),
        ("shared", "team/shared.yaml"),
    ]


def test_symlinks_out_of_the_directory_are_refused(tmp_path: Path) -> None:
    outside = write(tmp_path, "outside/secret.yaml", task_yaml("secret"))
    root = tmp_path / "manifests"
    write(root, "ok.yaml", task_yaml("ok"))
    (root / "leak.yaml").symlink_to(outside)
    (root / "leakdir").symlink_to(outside.parent)
    (root / "README.md").symlink_to(tmp_path / "nowhere.md")  # not a manifest: ignored
    state = load_directory(root)
    assert [(e.file, e.message) for e in state.errors] == [
        ("leak.yaml", "symlink points outside the manifests directory"),
        ("leakdir", "symlink points outside the manifests directory"),
    ]
    assert [t.name for t in state.tasks] == ["ok"]
    assert state.failed_files == {"leak.yaml", "leakdir"}


def test_symlink_loops_are_errors_not_hangs(tmp_path: Path) -> None:
    (tmp_path / "self.yaml").symlink_to("self.yaml")
    (tmp_path / "ping.yaml").symlink_to("pong.yaml")
    (tmp_path / "pong.yaml").symlink_to("ping.yaml")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub/up").symlink_to("..")  # a directory cycle: not followed
    (tmp_path / "broken.yaml").symlink_to("missing.yaml")
    state = load_directory(tmp_path)
    assert [(e.file, e.message) for e in state.errors] == [
        ("broken.yaml", "broken symlink: No such file or directory"),
        ("ping.yaml", "symlink loop"),
        ("pong.yaml", "symlink loop"),
        ("self.yaml", "symlink loop"),
    ]


def test_the_root_may_be_a_symlink_that_is_swapped(tmp_path: Path) -> None:
    rev1 = tmp_path / "rev-1"
    rev2 = tmp_path / "rev-2"
    write(rev1, "a.yaml", task_yaml("one"))
    write(rev1, "b.yaml", task_yaml("bee"))
    (rev1 / "link.yaml").symlink_to(rev1 / "b.yaml")  # absolute, inside the resolved root
    (rev1 / "escape.yaml").symlink_to("../rev-2/a.yaml")  # another revision: outside
    write(rev2, "a.yaml", task_yaml("two"))
    current = tmp_path / "current"
    current.symlink_to("rev-1")
    state = load_directory(current)
    assert [t.name for t in state.tasks] == ["one", "bee"]
    assert [(e.file, e.message) for e in state.errors] == [
        ("escape.yaml", "symlink points outside the manifests directory")
    ]
    (tmp_path / "next").symlink_to("rev-2")
    os.replace(tmp_path / "next", current)
    state = load_directory(current)
    assert state.ok and [t.name for t in state.tasks] == ["two"]


def test_permission_denied_is_an_error_for_that_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "secret.yaml", task_yaml("secret"))
    write(tmp_path, "ok.yaml", task_yaml("ok"))
    real_open = os.open

    def fake_open(path: str, flags: int, *args: int, **kwargs: object) -> int:
        if str(path).endswith("secret.yaml"):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", fake_open)
    state = load_directory(tmp_path, workers=1)
    assert [(e.file, e.message, e.line) for e in state.errors] == [
        ("secret.yaml", "cannot read file: permission denied", None)
    ]
    assert state.failed_files == {"secret.yaml"}
    assert [t.name for t in state.tasks] == ["ok"]


def test_a_file_vanishing_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "gone.yaml", task_yaml("gone"))
    real_open = os.open

    def fake_open(path: str, flags: int, *args: int, **kwargs: object) -> int:
        if str(path).endswith("gone.yaml"):
            os.unlink(path)
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", fake_open)
    state = load_directory(tmp_path, workers=1)
    error = only_error(state)
    assert error.file == "gone.yaml"
    assert error.message == "file disappeared while the manifests were being read"
    assert state.failed_files == {"gone.yaml"}


def test_unlistable_subdirectory_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "team/a.yaml", task_yaml("a"))
    write(tmp_path, "b.yaml", task_yaml("b"))
    real_scandir = os.scandir

    def fake_scandir(path: str) -> object:
        if str(path).endswith("team"):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", fake_scandir)
    state = load_directory(tmp_path)
    assert [(e.file, e.message) for e in state.errors] == [
        ("team", "cannot list directory: Permission denied")
    ]
    assert state.failed_files == {"team"}
    assert [t.name for t in state.tasks] == ["b"]


def test_unlistable_root_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_scandir(path: str) -> object:
        raise PermissionError(errno.EACCES, "Permission denied", path)

    monkeypatch.setattr(os, "scandir", fake_scandir)
    with pytest.raises(ManifestLoadError, match="cannot list manifests directory"):
        load_directory(tmp_path)


def test_a_directory_named_like_a_manifest(tmp_path: Path) -> None:
    write(tmp_path, "x.yaml/inner.yaml", task_yaml("inner"))
    state = load_directory(tmp_path)
    assert [(e.file, e.message) for e in state.errors] == [
        ("x.yaml", "is a directory, not a manifest file")
    ]
    assert [t.source_file for t in state.tasks] == ["x.yaml/inner.yaml"]


def test_special_files_are_not_opened(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.yaml")
    state = load_directory(tmp_path)
    assert [(e.file, e.message) for e in state.errors] == [("pipe.yaml", "not a regular file")]


# --------------------------------------------------------------------------- cache


def make_tree(root: Path, n: int) -> None:
    for i in range(n):
        write(root, f"team{i % 3}/t{i:03d}.yaml", task_yaml(f"t{i:03d}"))


@pytest.fixture
def trust_fresh_stats(monkeypatch: pytest.MonkeyPatch) -> None:
    """Trust a stat as soon as the file's ctime is in the past (instead of sleeping)."""
    monkeypatch.setattr(_cache, "RACY_WINDOW_NS", 0)
    monkeypatch.setattr(_cache, "RACY_WINDOW_COARSE_NS", 0)


def test_cache_reparses_only_the_changed_file(tmp_path: Path) -> None:
    make_tree(tmp_path, 30)
    cache = LoadCache()
    first = load_directory(tmp_path, cache=cache)
    assert cache.stats.parsed == 30 and len(cache) == 30
    # Same content, just rewritten: read and hashed again, but not parsed.
    write(tmp_path, "team1/t004.yaml", task_yaml("t004"))
    write(tmp_path, "team2/t005.yaml", task_yaml("t005", extra="  suspend: true\n"))
    second = load_directory(tmp_path, cache=cache)
    assert cache.stats.parsed == 1
    assert cache.stats.files == 30
    changed = {t.name: t for t in second.tasks}["t005"]
    assert changed.suspend and changed.hash != {t.name: t for t in first.tasks}["t005"].hash
    assert [t.name for t in second.tasks] == [t.name for t in first.tasks]


@pytest.mark.usefixtures("trust_fresh_stats")
def test_cache_trusts_old_stats_without_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_tree(tmp_path, 20)
    cache = LoadCache()
    first = load_directory(tmp_path, cache=cache)
    opened: list[str] = []
    real_open = os.open

    def counting_open(path: str, flags: int, *args: int, **kwargs: object) -> int:
        opened.append(str(path))
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", counting_open)
    again = load_directory(tmp_path, cache=cache)
    assert opened == []
    assert cache.stats.stat_hits == 20 and cache.stats.parsed == 0
    assert again is first  # nothing changed at all: the same state object
    write(tmp_path, "team0/t000.yaml", task_yaml("t000", extra="  suspend: true\n"))
    third = load_directory(tmp_path, cache=cache)
    assert [os.path.basename(p) for p in opened] == ["t000.yaml"]
    assert cache.stats.parsed == 1 and cache.stats.stat_hits == 19
    assert third.tasks[0].suspend


def test_cached_reloads_always_match_a_fresh_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_tree(tmp_path, 12)
    cache = LoadCache()
    incremental: list[bool] = []
    real_updated = loader._updated

    def updated(*args: Any) -> DesiredState | None:
        state = real_updated(*args)
        incremental.append(state is not None)
        return state

    monkeypatch.setattr(loader, "_updated", updated)
    load_directory(tmp_path, cache=cache)
    edits = [
        ("team0/t000.yaml", task_yaml("t000", extra="  suspend: true\n")),  # same name
        ("team1/t001.yaml", task_yaml("t001", schedule='"*/5 * * * *"')),
        ("team1/t001.yaml", "\n\n" + task_yaml("t001")),  # lines move
        ("team2/t002.yaml", task_yaml("t000")),  # a duplicate appears
        ("team2/t002.yaml", task_yaml("t002")),  # and goes away
        ("team0/t003.yaml", task_yaml("t003", extra="  bogus: 1\n")),  # an error
        ("team0/t003.yaml", task_yaml("t003")),  # fixed
        ("team0/t003.yaml", task_yaml("renamed")),
        ("new.yaml", task_yaml("new")),
        ("team0/t003.yaml", task_yaml("t003") + "---\n" + task_yaml("extra")),
    ]
    for rel, text in edits:
        write(tmp_path, rel, text)
        cached = load_directory(tmp_path, cache=cache)
        fresh = load_directory(tmp_path)
        assert cached == fresh, rel
        assert [t.document for t in cached.tasks] == [t.document for t in fresh.tasks]
        assert [t.source_line for t in cached.tasks] == [t.source_line for t in fresh.tasks]
    assert load_directory(tmp_path, cache=cache) == fresh
    assert incremental[:3] == [True, True, True]  # the quick path was taken, and right
    assert False in incremental


def test_cache_follows_added_and_removed_files(tmp_path: Path) -> None:
    make_tree(tmp_path, 5)
    cache = LoadCache()
    load_directory(tmp_path, cache=cache)
    (tmp_path / "team0/t000.yaml").unlink()
    write(tmp_path, "new.yaml", task_yaml("new"))
    state = load_directory(tmp_path, cache=cache)
    assert cache.stats.parsed == 1
    assert "team0/t000.yaml" not in state.files and "new.yaml" in state.files
    assert sorted(t.name for t in state.tasks) == ["new", "t001", "t002", "t003", "t004"]
    assert len(cache) == 5


@pytest.mark.usefixtures("trust_fresh_stats")
def test_cache_keeps_reporting_errors_of_unchanged_files(tmp_path: Path) -> None:
    write(tmp_path, "bad.yaml", task_yaml("bad", extra="  nope: 1\n"))
    write(tmp_path, "a.yaml", task_yaml("a"))
    write(tmp_path, "b.yaml", task_yaml("a"))
    cache = LoadCache()
    first = load_directory(tmp_path, cache=cache)
    second = load_directory(tmp_path, cache=cache)
    assert cache.stats.stat_hits == 3
    assert second.errors == first.errors and len(second.errors) == 2
    assert second.frozen_names == {"a"}


def test_cache_with_a_swapped_root_reuses_identical_content(tmp_path: Path) -> None:
    make_tree(tmp_path / "rev-1", 10)
    make_tree(tmp_path / "rev-2", 10)
    write(tmp_path / "rev-2", "team0/t000.yaml", task_yaml("t000", extra="  suspend: true\n"))
    (tmp_path / "current").symlink_to("rev-1")
    cache = LoadCache()
    load_directory(tmp_path / "current", cache=cache)
    (tmp_path / "next").symlink_to("rev-2")
    os.replace(tmp_path / "next", tmp_path / "current")
    state = load_directory(tmp_path / "current", cache=cache)
    assert cache.stats.hash_hits == 9 and cache.stats.parsed == 1
    assert {t.name: t.suspend for t in state.tasks}["t000"] is True


# ----------------------------------------------------------------- pool, tree, paths


def test_parallel_load_gives_the_same_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_tree(tmp_path, 40)
    write(tmp_path, "bad.yaml", task_yaml("bad", extra="  nope: 1\n"))
    write(tmp_path, "dup.yaml", task_yaml("t001"))
    serial = load_directory(tmp_path, workers=1)
    parallel = load_directory(tmp_path, workers=2)
    monkeypatch.setattr(_parallel, "MIN_CHUNK", 1)  # many small chunks
    assert load_directory(tmp_path, workers=3) == serial
    assert parallel == serial
    assert [t.document for t in parallel.tasks] == [t.document for t in serial.tasks]
    assert len(parallel.tasks) == 39 and len(parallel.errors) == 2


def tree_of(root: Path) -> dict[str, bytes]:
    files = {}
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath) / name
            files[path.relative_to(root).as_posix()] = path.read_bytes()
    return files


def test_load_tree_is_equivalent_to_load_directory(tmp_path: Path) -> None:
    make_tree(tmp_path, 12)
    write(tmp_path, "bad.yaml", task_yaml("bad", extra="  timout: 5m\n"))
    write(tmp_path, "dup.yaml", task_yaml("t003"))
    write(tmp_path, "junk.yaml", b"\x00\x01")
    write(tmp_path, "multi.yml", task_yaml("m1") + "---\n" + task_yaml("m2"))
    write(tmp_path, ".hidden/x.yaml", "nope: [")
    write(tmp_path, "notes.txt", "nope: [")
    on_disk = load_directory(tmp_path)
    in_memory = load_tree(tree_of(tmp_path))
    assert in_memory == on_disk
    assert [t.document for t in in_memory.tasks] == [t.document for t in on_disk.tasks]
    assert len(on_disk.errors) == 3


def test_load_tree_label_prefix_only_changes_error_files(tmp_path: Path) -> None:
    write(tmp_path, "team/bad.yaml", task_yaml("bad", extra="  timout: 5m\n"))
    write(tmp_path, "team/ok.yaml", task_yaml("ok"))
    state = load_tree(tree_of(tmp_path), label_prefix="origin/main:")
    error = only_error(state)
    assert str(error).startswith("origin/main:team/bad.yaml:9:3: bad: spec.timout")
    assert state.failed_files == {"team/bad.yaml"}
    assert state.files == {"team/bad.yaml", "team/ok.yaml"}
    assert state.tasks[0].source_file == "team/ok.yaml"


def test_load_tree_rejects_paths_escaping_the_tree() -> None:
    state = load_tree({"../x.yaml": b"", "/abs.yaml": b"", "./ok.yaml": task_yaml().encode()})
    assert sorted(e.message for e in state.errors) == ["invalid path in the tree"] * 2
    assert [t.source_file for t in state.tasks] == ["ok.yaml"]


def test_load_paths_labels_with_the_typed_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "examples/team/bad.yaml", task_yaml("bad", extra="  timout: 5m\n"))
    write(tmp_path, "examples/good.yaml", task_yaml("good"))
    write(tmp_path, "single.txt", task_yaml("single"))
    state = load_paths(["examples/", "single.txt", "missing.yaml", "examples/good.yaml"])
    assert [(e.file, e.line, e.message) for e in state.errors] == [
        ("examples/team/bad.yaml", 9, 'unknown field "timout" (did you mean "timeout"?)'),
        ("missing.yaml", None, "no such file or directory"),
    ]
    assert [(t.name, t.source_file) for t in state.tasks] == [
        ("good", "examples/good.yaml"),
        ("single", "single.txt"),
    ]
    assert not state.frozen_names  # the same file given twice is loaded once
