"""Callables used by the tasks in ``examples/`` (``python: reconciler.demo:cleanup``).

They show the ``RunContext`` contract: report progress, honour cancellation, log.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any


def cleanup(ctx: Any) -> int:
    """Delete files older than ``CLEANUP_MAX_AGE_DAYS`` under ``CLEANUP_DIR``."""
    root = Path(os.environ.get("CLEANUP_DIR", "/tmp/reconciler-demo"))  # noqa: S108  # nosec B108
    max_age = float(os.environ.get("CLEANUP_MAX_AGE_DAYS", "7")) * 86400
    if not root.is_dir():
        ctx.logger.info("nothing to clean: %s does not exist", root)
        ctx.progress(100, "nothing to do")
        return 0
    files = [p for p in root.rglob("*") if p.is_file()]
    removed = 0
    cutoff = time.time() - max_age
    for i, path in enumerate(files, 1):
        if ctx.is_cancelled():
            ctx.logger.warning("cancelled after %d of %d files", i - 1, len(files))
            break
        if path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)
            removed += 1
        ctx.progress(100.0 * i / len(files), f"{i}/{len(files)} checked")
    day = time.strftime("%Y-%m-%d", time.gmtime(cutoff))
    ctx.logger.info("removed %d file(s) older than %s", removed, day)
    return removed
