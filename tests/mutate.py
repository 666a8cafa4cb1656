"""``make mutate``: run mutmut over chosen modules and print what survived.

Usage (from the repository root, with the project venv)::

    python -m tests.mutate [--workers N] [--report-only] PATH...

Each PATH is a file (``reconciler/core/plan.py``), a directory (``reconciler/core``) or
one function or method of a file (``reconciler/store/sql_tasks.py::SQLTasks.apply_plan``).
Every file must be listed in ``only_mutate`` of ``[tool.mutmut]`` in pyproject.toml,
which also names the unit tests that may kill a mutant. The previous ``mutants/``
directory is removed first, so every run starts from the current code and tests.

The report gives, per module, the mutants tried and how they ended, then the diff of
every survivor. It is also written to ``mutants/report.txt``.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import shutil
import subprocess
import sys
import tomllib
from collections import Counter
from pathlib import Path

MUTANTS = Path("mutants")
COLUMNS = ("killed", "survived", "timeout", "no tests", "not checked", "other")


def only_mutate() -> list[str]:
    config = tomllib.loads(Path("pyproject.toml").read_text("utf-8"))["tool"]["mutmut"]
    return list(config["only_mutate"])


def module_of(path: Path) -> str:
    return ".".join(path.with_suffix("").parts)


def selectors(targets: list[str]) -> list[str]:
    """Mutant-name globs for the targets (mutmut names a mutant ``module.x_func__mutmut_N``
    or ``module.xǁClassǁmethod__mutmut_N``)."""
    allowed = only_mutate()
    globs: list[str] = []
    for target in targets:
        file, _, function = target.partition("::")
        path = Path(file)
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        if not files or not all(f.is_file() for f in files):
            sys.exit(f"mutate: {target}: no such file or directory")
        for f in files:
            if not any(fnmatch.fnmatch(f.as_posix(), p) for p in allowed):
                sys.exit(f"mutate: {f} is not in only_mutate of [tool.mutmut] (pyproject.toml)")
        if function:
            owner, _, name = function.rpartition(".")
            mangled = f"xǁ{owner}ǁ{name}" if owner else f"x_{name}"
            # The trailing * also matches the function's own name, which mutmut uses to
            # pick the tests that cover it.
            globs.append(f"{module_of(path)}.{mangled}*")
        else:
            globs.extend(f"{module_of(f)}.*" for f in files if f.name != "__init__.py")
    return globs


def results(globs: list[str]) -> dict[str, dict[str, int | None]]:
    """Exit code of every selected mutant, by module."""
    by_module: dict[str, dict[str, int | None]] = {}
    for meta in sorted(MUTANTS.rglob("*.py.meta")):
        codes = json.loads(meta.read_text("utf-8"))["exit_code_by_key"]
        chosen = {k: v for k, v in codes.items() if any(fnmatch.fnmatch(k, g) for g in globs)}
        if chosen:
            source = meta.relative_to(MUTANTS).with_suffix("")
            by_module[source.as_posix()] = chosen
    return by_module


def report(globs: list[str]) -> str:
    from mutmut.mutation.diff_apply import get_diff_for_mutant
    from mutmut.stats import status_by_exit_code

    by_module = results(globs)
    lines = [f"{'module':<40} {'mutants':>7} " + " ".join(f"{c:>11}" for c in COLUMNS)]
    total: Counter[str] = Counter()
    survivors: list[tuple[str, str]] = []
    for module, codes in by_module.items():
        counts: Counter[str] = Counter()
        for name, code in sorted(codes.items()):
            status = status_by_exit_code[code]
            counts[status if status in COLUMNS else "other"] += 1
            if status == "survived":
                survivors.append((module, name))
        counts["mutants"] = len(codes)
        total.update(counts)
        lines.append(_row(module, counts))
    lines.append(_row("total", total))
    lines.append("")
    lines.append(f"{len(survivors)} surviving mutant(s):")
    for module, name in survivors:
        diff = get_diff_for_mutant(name, path=module)
        changed = [d for d in diff.splitlines()[2:] if d[:1] in "+-"]
        lines.append(f"\n{name}")
        lines.extend(f"    {d}" for d in changed)
    return "\n".join(lines)


def _row(label: str, counts: Counter[str]) -> str:
    return f"{label:<40} {counts['mutants']:>7} " + " ".join(f"{counts[c]:>8}" for c in COLUMNS)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="+", metavar="PATH")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--report-only", action="store_true",
                        help="summarise the last run's mutants/ without running again")
    args = parser.parse_args()
    globs = selectors(args.targets)
    if not args.report_only:
        shutil.rmtree(MUTANTS, ignore_errors=True)
        MUTANTS.mkdir()
        log = MUTANTS / "run.log"
        mutmut = Path(sys.executable).parent / "mutmut"
        print(f"mutate: mutmut run over {len(globs)} selector(s); progress in {log}", flush=True)
        with log.open("wb") as out:
            run = subprocess.run(
                [mutmut, "run", "--max-children", str(args.workers), *globs],
                stdout=out, stderr=subprocess.STDOUT, check=False,
            )
        if run.returncode != 0:
            tail = log.read_text("utf-8", errors="replace")[-3000:]
            print(f"{tail}\nmutate: mutmut run exited {run.returncode}", file=sys.stderr)
            return run.returncode
    text = report(globs)
    (MUTANTS / "report.txt").write_text(text + "\n", "utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
