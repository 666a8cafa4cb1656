"""Importers: crontabs, Kubernetes CronJobs and systemd timers -> Task manifests.

Each importer reads one kind of source and reports, task by task, what maps exactly,
what maps approximately (and how it differs) and what cannot be mapped
(:mod:`reconciler.importers.report`). The command is in :mod:`reconciler.importers.cli`.
"""
