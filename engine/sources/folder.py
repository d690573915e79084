"""Folder sources: notice that a workspace folder's YAML changed (polling).

`fingerprint(folder)` summarises every file under `.workflows/` (path, size, mtime); the
poller (`engine.sources.poller`) reloads a folder workspace when it changes.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

WORKFLOWS = ".workflows"


def fingerprint(folder: Path) -> str:
    """A digest of the names, sizes and mtimes of the files under `folder/.workflows`."""
    digest = hashlib.sha256()
    root = folder / WORKFLOWS
    entries: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for filename in filenames:
            path = Path(dirpath) / filename
            try:
                stat = path.stat()
            except OSError:
                continue
            entries.append(f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}")
    for entry in sorted(entries):
        digest.update(entry.encode("utf-8", "surrogateescape") + b"\n")
    return digest.hexdigest()
