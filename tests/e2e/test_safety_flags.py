"""The safety flags reach the plan through every command that plans: `diff`, `apply`
and the daemon (`run`). Each flag, each refusal message, through the real CLI."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import DaemonProcess, task_yaml, wait_until

NAMES = ("t1", "t2", "t3", "t4")
OVER_MAX = "plan deletes 3 tasks, more than --max-delete 2; use --force to apply it"
EMPTY = "manifests directory has no tasks; refusing to delete every task (use --allow-empty)"


def live(daemon: DaemonProcess) -> set[str]:
    return {t.name for t in daemon.store.load_tasks()}


def seed(daemon: DaemonProcess) -> None:
    for name in NAMES:
        daemon.write(f"{name}.yaml", task_yaml(name, "@yearly", "command: ['true']"))
    res = daemon.cli("apply", "--manifests", str(daemon.manifests))
    assert res.returncode == 0, res.stderr
    assert live(daemon) == set(NAMES)


def remove(daemon: DaemonProcess, *names: str) -> None:
    for name in names:
        (daemon.manifests / f"{name}.yaml").unlink()


def test_diff_and_apply_take_max_delete_and_force(daemon: DaemonProcess) -> None:
    seed(daemon)
    remove(daemon, "t1", "t2", "t3")
    m = ("--manifests", str(daemon.manifests))
    for command in ("diff", "apply"):
        res = daemon.cli(command, *m, "--max-delete", "2")
        assert res.returncode == 1, (command, res.stdout, res.stderr)
        assert f"refused: {OVER_MAX}" in res.stdout + res.stderr, (command, res.stdout)
    assert live(daemon) == set(NAMES)  # nothing applied
    res = daemon.cli("diff", *m, "--max-delete", "2", "--force")
    assert res.returncode == 2 and "refused" not in res.stdout, res.stdout  # 2: changes
    res = daemon.cli("apply", *m, "--max-delete", "3")  # the bound is inclusive
    assert res.returncode == 0, res.stdout + res.stderr
    assert live(daemon) == {"t4"}


def test_apply_takes_force_and_allow_empty(daemon: DaemonProcess) -> None:
    seed(daemon)
    remove(daemon, *NAMES)
    m = ("--manifests", str(daemon.manifests))
    res = daemon.cli("apply", *m, "--max-delete", "2", "--force")
    assert res.returncode == 1 and f"refused: {EMPTY}" in res.stdout, res.stdout
    assert live(daemon) == set(NAMES)  # --force does not override the empty guard
    res = daemon.cli("diff", *m, "--allow-empty")
    assert res.returncode == 2 and "refused" not in res.stdout, res.stdout  # 2: changes
    res = daemon.cli("apply", *m, "--allow-empty")
    assert res.returncode == 0, res.stdout + res.stderr
    assert live(daemon) == set()


@pytest.mark.parametrize(("flags", "removed", "refusal", "left"), [
    (("--max-delete", "2"), ("t1", "t2", "t3"), OVER_MAX, set(NAMES)),
    (("--max-delete", "2", "--force"), ("t1", "t2", "t3"), None, {"t4"}),
    ((), NAMES, EMPTY, set(NAMES)),
    (("--allow-empty",), NAMES, None, set()),
])
def test_the_daemon_takes_the_safety_flags(daemon: DaemonProcess, flags: tuple[str, ...],
                                           removed: tuple[str, ...], refusal: str | None,
                                           left: set[str]) -> None:
    seed(daemon)
    daemon.start(*flags)
    remove(daemon, *removed)
    if refusal is None:
        wait_until(lambda: live(daemon) == left, what=f"the deletes with {flags}")
    else:
        wait_until(lambda: f"plan refused: {refusal}" in daemon.log.read_text(),
                   what=f"the refusal with {flags}")
        assert live(daemon) == left
