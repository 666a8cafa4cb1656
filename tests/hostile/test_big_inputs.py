"""Inputs too big to check in, generated into ``tmp_path``: 10 MB files, thousands of
documents, floods of nodes, errors and aliases, deep nesting, megabyte strings.

Each one must fail with a clear error, within the time bound, with a bounded peak of
Python allocations (tracemalloc; libyaml's own buffers are bounded by the 1 MiB file
limit), and leave the runtime table untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from reconciler.manifests import MAX_ERRORS_PER_FILE, MAX_FILE_BYTES, load_directory, load_paths
from tests.hostile._harness import (
    ALIAS_BOMB_SECONDS,
    BIG_PEAK_BYTES,
    LOAD_SECONDS,
    Expect,
    Scene,
    check_errors,
    timed,
    traced_peak,
    valid_task,
)

HEADER = (
    "apiVersion: reconciler/v1\n"  # 1
    "kind: Task\n"  # 2
    "metadata:\n"  # 3
    "  name: victim\n"  # 4
)
SPEC = (
    "spec:\n"
    '  schedule: "30 2 * * *"\n'
    "  run:\n"
    "    command: [/usr/bin/report]\n"
)


@dataclass(frozen=True)
class Big:
    content: Callable[[], bytes]
    expect: Expect
    seconds: float = LOAD_SECONDS
    max_errors: int = MAX_ERRORS_PER_FILE + 1


def ten_megabytes() -> bytes:
    # Real bytes (not a sparse file): a valid manifest with a 10 MB annotation.
    size = 10 << 20
    text = HEADER + "  annotations:\n    note: |\n" + ("      " + "x" * 93 + "\n") * (size // 100)
    return text.encode().ljust(size, b"x")[:size]


def documents(n: int) -> bytes:
    return "---\n".join(valid_task(f"t-{i}") for i in range(n)).encode()


def duplicate_keys(n: int) -> bytes:
    keys = "".join(f"      K{i}: x\n" for i in range(n))
    return (HEADER + SPEC + "    env:\n" + keys + keys).encode()


def alias_fanout(items: int, uses: int) -> bytes:
    anchor = "    big: &big [" + ",".join(["x"] * items) + "]\n"
    return (HEADER + "  annotations:\n" + anchor + f"    more: [{', '.join(['*big'] * uses)}]\n"
            + SPEC).encode()


DOC_LINES = valid_task("x").count("\n") + 1  # lines per document, "---" included

CASES: dict[str, Big] = {
    "ten-megabyte-file": Big(
        ten_megabytes, Expect(None, None, "file is 10.0 MiB, larger than the 1 MiB limit")
    ),
    "one-byte-over-the-limit": Big(
        lambda: b"#" * (MAX_FILE_BYTES + 1), Expect(None, None, "larger than the 1 MiB limit")
    ),
    "megabyte-annotation": Big(
        lambda: (HEADER + '  annotations:\n    note: "' + "x" * (MAX_FILE_BYTES - 200) + '"\n'
                 + SPEC).encode(),
        Expect(6, "metadata.annotations.note", "at most 65536 characters"),
    ),
    "megabyte-explicit-key": Big(
        lambda: (HEADER + SPEC + "  ? " + "k" * (MAX_FILE_BYTES - 300) + "\n  : 1\n").encode(),
        Expect(9, "spec.kkkkkkkk*", "unknown field"),
    ),
    "megabyte-schedule": Big(
        lambda: (HEADER + 'spec:\n  schedule: "' + "1," * (MAX_FILE_BYTES // 2 - 100)
                 + ' * * * *"\n  run:\n    command: [x]\n').encode(),
        Expect(6, "spec.schedule", "at most 1024 characters"),
    ),
    "five-thousand-documents": Big(
        lambda: documents(5000),
        Expect(1000 * DOC_LINES + 1, None, "more than 1,000 documents in one file"),
    ),
    "a-megabyte-of-empty-documents": Big(
        lambda: b"---\n" * (MAX_FILE_BYTES // 4),
        # (an empty document's position is the line after its "---")
        Expect(1002, None, "more than 1,000 documents in one file"),
    ),
    "thousands-of-invalid-documents": Big(
        lambda: b"".join(b"--- {kind: Task, apiVersion: reconciler/v1}\n" for _ in range(900)),
        Expect(51, None, "more than 100 errors"),  # two errors per document
    ),
    "200k-node-flow-list": Big(
        lambda: (HEADER + "  annotations: {a: [" + "x," * 200_000 + "]}\n").encode(),
        Expect(5, None, "document has more than 10,000 nodes"),
    ),
    "2400-duplicate-keys": Big(
        lambda: duplicate_keys(2400),
        Expect(9 + 2400 + 100 + 1, None, "more than 100 errors"),
    ),
    "4000-invalid-list-items": Big(
        lambda: (HEADER + 'spec:\n  schedule: "30 2 * * *"\n  run:\n    command: ['
                 + ",".join(["1"] * 4000) + "]\n").encode(),
        Expect(8, None, "more than 100 errors"),
    ),
    "4000-unknown-fields": Big(
        lambda: (HEADER + SPEC + "".join(f"  unknown{i}: v\n" for i in range(4000))).encode(),
        Expect(109, None, "more than 100 errors"),
    ),
    "10000-open-brackets": Big(
        lambda: (HEADER + "  annotations: {a: " + "[" * 10_000 + "\n").encode(),
        Expect(5, None, "nesting"),
    ),
    "100000-open-braces": Big(
        lambda: (HEADER + "  annotations: " + "{a: " * 100_000 + "\n").encode(),
        Expect(5, None, "nesting"),
    ),
    "500-levels-of-block-nesting": Big(
        lambda: (HEADER + "  annotations:\n"
                 + "".join(" " * (i + 3) + f"k{i}:\n" for i in range(500)) + SPEC).encode(),
        Expect(67, None, "nesting is deeper than 64 levels"),
    ),
    "alias-fanout-100k-uses": Big(
        lambda: alias_fanout(5000, 100_000),
        Expect(7, None, "aliases expand to more than 10,000 nodes"),
        seconds=ALIAS_BOMB_SECONDS,
    ),
    "billion-laughs-30-levels": Big(
        lambda: (HEADER + "  annotations:\n    l0: &a0 [lol, lol]\n"
                 + "".join(f"    l{i}: &a{i} [*a{i - 1}, *a{i - 1}]\n" for i in range(1, 31))
                 + SPEC).encode(),
        Expect(17, None, "aliases expand to more than 10,000 nodes"),
        seconds=ALIAS_BOMB_SECONDS,
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_big_input(case: str, scene: Scene) -> None:
    big = CASES[case]
    name = f"{case}.yaml"
    scene.apply_valid({name: ("victim",)})
    scene.write(name, big.content())

    state, seconds = timed(lambda: load_directory(scene.manifests))
    assert seconds < big.seconds, f"{seconds:.2f}s"
    check_errors(state, name, big.expect)
    assert len(state.errors) <= big.max_errors, len(state.errors)

    typed = str(scene.manifests / name)
    single, peak = traced_peak(lambda: load_paths([typed]))
    assert peak < BIG_PEAK_BYTES, f"{peak / (1 << 20):.0f} MiB"
    check_errors(single, typed, big.expect)

    result = scene.reconcile_changes_nothing()
    assert "victim" in scene.kept(result)
