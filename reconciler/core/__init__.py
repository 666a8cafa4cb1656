"""The pure core: manifest model, schedule math, the DST policy and the plan.

Nothing in this package touches a database, ZooKeeper, the file system watcher or
the network. That is enforced by an import-linter contract (see pyproject.toml), so
the rules that decide *what* should happen can be unit-tested with plain values
and a fake clock, while adapters decide *how* it happens.
"""
