"""The long-running service: watch, reconcile, schedule, execute, record."""

from reconciler.daemon.app import Daemon, DaemonConfig
from reconciler.daemon.compose import build_daemon, run_daemon
from reconciler.daemon.scheduler import Scheduler, SchedulerConfig

__all__ = ["Daemon", "DaemonConfig", "Scheduler", "SchedulerConfig", "build_daemon",
           "run_daemon"]
