"""Task program for tests/faults/test_task_faults.py: processes that do not want to stop.

Usage: ``stubborn.py MODE MARKER PIDFILE [CHILDREN]``

* ``hold``: ignore SIGTERM, fork CHILDREN children that ignore it too (one of them
  moves into a process group of its own, one forks a grandchild), and never exit.
* ``leave``: the same tree, but the parent exits 0 once every child is up, leaving
  them behind holding the output pipe.
* ``forever``: never exit (SIGTERM is honoured).
* ``forever-ignoring``: never exit and ignore SIGTERM.

Every process appends its pid to PIDFILE once it is in place, and all of them keep
MARKER in their command line (fork copies it), so a test can find leftovers by it.
"""

from __future__ import annotations

import os
import signal
import sys


def note(pidfile: str) -> None:
    with open(pidfile, "a") as f:
        f.write(f"{os.getpid()}\n")


def sleep_forever() -> None:
    while True:
        signal.pause()


def child(index: int, pidfile: str, ready: int) -> None:
    if index == 0:
        os.setpgid(0, 0)  # leaves the task's process group, stays in its session
    if index == 1 and os.fork() == 0:
        note(pidfile)
        os.write(ready, b"g")
        sleep_forever()
    note(pidfile)
    os.write(ready, b"c")
    sleep_forever()


def tree(pidfile: str, children: int) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited by every child
    read_end, write_end = os.pipe()
    for index in range(children):
        if os.fork() == 0:
            os.close(read_end)
            child(index, pidfile, write_end)
    os.close(write_end)
    expected = children + (1 if children > 1 else 0)  # the grandchild
    got = 0
    while got < expected:
        chunk = os.read(read_end, expected - got)
        if not chunk:
            break
        got += len(chunk)
    note(pidfile)
    print(f"tree up: {got} descendants", flush=True)


def main() -> None:
    mode, _marker, pidfile = sys.argv[1:4]
    children = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    if mode in ("hold", "leave"):
        tree(pidfile, children)
        if mode == "leave":
            return
        sleep_forever()
    if mode == "forever-ignoring":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if mode.startswith("forever"):
        note(pidfile)
        print("up", flush=True)
        sleep_forever()
    raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
