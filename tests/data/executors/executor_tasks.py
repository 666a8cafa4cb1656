"""Task functions for the python-executor tests (tests/integration/test_executors.py).

The tests make this directory importable in the task's child process by putting it
on ``PYTHONPATH`` in the task's ``env``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time


def succeed(ctx):
    print(f"hello from {ctx.task}")
    ctx.progress(25, "a quarter")
    ctx.progress(None, "just a message")
    ctx.logger.info("logged via ctx.logger")
    return 42


def describe(ctx):
    print(
        json.dumps(
            {
                "task": ctx.task,
                "run_id": ctx.run_id,
                "slot": ctx.slot.isoformat(),
                "attempt": ctx.attempt,
                "deadline": ctx.deadline.isoformat() if ctx.deadline else None,
                "cancelled": ctx.cancelled,
                "pid": os.getpid(),
                "pgid": os.getpgid(0),
                "cwd": os.getcwd(),
                "env": {k: v for k, v in os.environ.items() if k.startswith("RECONCILER_")},
            }
        )
    )


def fail(ctx):
    print("about to fail")
    raise ValueError("boom: the widget is broken")


def leak_secret(ctx):
    raise RuntimeError(f"token was {os.environ['API_TOKEN']}")


def exit_three(ctx):
    sys.exit(3)


async def async_ok(ctx):
    await asyncio.sleep(0)
    ctx.progress(100, "async done")
    print("async function ran")


def wait_for_cancel(ctx):
    print("ready", flush=True)
    cancelled = ctx.wait(30)
    print(f"cancelled flag: {cancelled} {ctx.is_cancelled()}", flush=True)


def ignore_cancel(ctx):
    print("ready", flush=True)
    ctx.wait(30)
    print("ignoring the cancel request", flush=True)
    time.sleep(30)  # until SIGKILL


not_callable = 5


def print_params(ctx):
    """ctx.params as JSON, with the type of each value."""
    print(json.dumps({k: [v, type(v).__name__] for k, v in ctx.params.items()},
                     sort_keys=True))
