"""The long-running service: watch, reconcile, schedule, execute, record."""

from reconciler.daemon.app import Daemon, DaemonConfig, run_daemon
from reconciler.daemon.scheduler import Scheduler, SchedulerConfig

__all__ = ["Daemon", "DaemonConfig", "Scheduler", "SchedulerConfig", "run_daemon"]
