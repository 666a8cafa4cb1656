"""Reading manifests: a directory (or an in-memory tree) -> ``DesiredState``.

See :mod:`reconciler.manifests.loader` for the rules (which files, symlinks, errors,
limits) and :mod:`reconciler.manifests._yaml` for how YAML is read safely.
"""

from __future__ import annotations

from reconciler.manifests.loader import (
    MAX_ALIAS_EXPANSION,
    MAX_DEPTH,
    MAX_DOCUMENTS_PER_FILE,
    MAX_ERRORS_PER_FILE,
    MAX_FILE_BYTES,
    MAX_NODES_PER_DOCUMENT,
    LoadCache,
    LoadStats,
    is_manifest_name,
    load_directory,
    load_paths,
    load_tree,
    parse_file,
)

__all__ = [
    "MAX_ALIAS_EXPANSION",
    "MAX_DEPTH",
    "MAX_DOCUMENTS_PER_FILE",
    "MAX_ERRORS_PER_FILE",
    "MAX_FILE_BYTES",
    "MAX_NODES_PER_DOCUMENT",
    "LoadCache",
    "LoadStats",
    "is_manifest_name",
    "load_directory",
    "load_paths",
    "load_tree",
    "parse_file",
]
