"""One exception hierarchy for the whole package.

Callers catch :class:`ReconcilerError` for anything the project raises on purpose;
the subclasses say which part failed. Manifest problems are *not* exceptions in the
normal path: they are collected as :class:`~reconciler.core.model.ManifestError`
values so that one bad file never hides the errors of the others.
"""

from __future__ import annotations


class ReconcilerError(Exception):
    """Base class of every error the project raises on purpose."""


class ScheduleError(ReconcilerError, ValueError):
    """A schedule expression or time zone that cannot be used."""


class DurationError(ReconcilerError, ValueError):
    """A duration string that cannot be parsed or is out of range."""


class ManifestLoadError(ReconcilerError):
    """Manifests could not be loaded at all (for example, an unreadable directory)."""


class PlanRefusedError(ReconcilerError):
    """A plan broke a safety rule (too many deletes, empty directory, invalid manifests)."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons


class StoreError(ReconcilerError):
    """The runtime table could not be read or written."""


class TaskNotFoundError(StoreError):
    """No live task has that name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"task {name!r} not found")
        self.name = name


class OperationRefused(ReconcilerError):
    """An operation (trigger, cancel, ...) that its rules refuse; ``status`` is the HTTP
    status the API answers with (the CLI exits 1), ``code`` the error code."""

    def __init__(self, message: str, *, status: int = 409, code: str = "conflict") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


class GitError(ReconcilerError):
    """A git operation (revision detection, reading a ref) failed."""


class DuplicateRunError(StoreError):
    """A run row with the same (task, slot, attempt) exists: another claimer won."""


class StaleFencingTokenError(StoreError):
    """An update came from a lock holder older than the one recorded on the row."""
