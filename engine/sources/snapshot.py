"""Folder snapshots: one copy of a folder workspace's files per revision.

A folder workspace is loaded from a snapshot: `FolderSnapshots.take()` copies the folder
into a temporary folder under `<cache>/`, hashing every file as it is copied, and renames
the copy to `<cache>/<revision>/` (the revision is that hash, so a snapshot's files are
exactly what its revision names; an edited script makes a new revision). Jobs run in
their revision's snapshot, which is read-only by convention; the registry
(`engine.workspaces`) removes a snapshot no job uses any more, and at start (`prune`)
every snapshot that is neither current nor used by an unfinished job, with the half-made
copies a crash left behind.

Files are copied, never hard-linked: an editor that writes a file in place would change
a hard-linked snapshot too. Folders named in `SKIP_DIRS` (at any depth) are neither
copied nor hashed, nor is the cache folder itself when it lies inside the workspace.
Symbolic links are copied as links (their target text is hashed).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

SKIP_DIRS = frozenset({
    ".git", ".hg", ".svn", ".partitur", "node_modules", ".venv", "venv", "__pycache__",
    ".mypy_cache", ".pytest_cache", ".ruff_cache", ".tox",
})
"""Folders left out of snapshots, revisions and change detection."""

_CHUNK = 1 << 20


def walk(root: Path, exclude: Path | None = None) -> Iterator[tuple[str, Path, str]]:
    """`(relative posix path, path, kind)` of everything under `root` in sorted order;
    kind is `dir`, `file` or `link`. Skips `SKIP_DIRS` and the folder `exclude`."""
    skip = exclude.resolve() if exclude is not None else None
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        keep: list[str] = []
        for name in sorted(dirnames):
            path = base / name
            rel = path.relative_to(root).as_posix()
            if name in SKIP_DIRS or (skip is not None and path.resolve() == skip):
                continue
            if path.is_symlink():
                yield rel, path, "link"
                continue
            keep.append(name)
            yield rel, path, "dir"
        dirnames[:] = keep
        for name in sorted(filenames):
            path = base / name
            rel = path.relative_to(root).as_posix()
            yield rel, path, "link" if path.is_symlink() else "file"


def fingerprint(root: Path, exclude: Path | None = None) -> str:
    """A cheap digest of names, sizes, modes and mtimes of what a snapshot would copy."""
    digest = hashlib.sha256()
    for rel, path, kind in walk(root, exclude):
        try:
            st = path.lstat()
        except OSError:
            continue
        digest.update(f"{kind}\0{rel}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_mode}\n"
                      .encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def copy_and_hash(source: Path, exclude: Path | None, dest: Path | None) -> str:
    """The revision of the folder `source`: a hash of every file a snapshot holds (paths,
    contents, executable bits, link targets). With `dest`, the files are copied there."""
    digest = hashlib.sha256()
    for rel, path, kind in walk(source, exclude):
        target = dest / rel if dest is not None else None
        name = rel.encode("utf-8", "surrogateescape")
        if kind == "dir":
            if target is not None:
                target.mkdir(exist_ok=True)
            digest.update(b"d\0" + name + b"\0")
        elif kind == "link":
            link = os.readlink(path)
            if target is not None:
                os.symlink(link, target)
            digest.update(b"l\0" + name + b"\0" + os.fsencode(link) + b"\0")
        else:
            try:
                mode = path.stat().st_mode
                if not stat.S_ISREG(mode):
                    continue  # sockets, fifos, devices
                executable = b"x" if mode & stat.S_IXUSR else b"-"
                digest.update(b"f\0" + name + b"\0" + executable)
                with path.open("rb") as src:
                    out = target.open("wb") if target is not None else None
                    try:
                        while chunk := src.read(_CHUNK):
                            digest.update(chunk)
                            if out is not None:
                                out.write(chunk)
                    finally:
                        if out is not None:
                            out.close()
                if target is not None:
                    os.chmod(target, stat.S_IMODE(mode))
            except FileNotFoundError:
                continue  # removed while copying: the next change makes a new one
            digest.update(b"\0")
    return digest.hexdigest()[:16]


class FolderSnapshots:
    """The snapshots of the folder `source`, kept under `cache/<revision>/`."""

    def __init__(self, source: Path, cache: Path) -> None:
        self.source = Path(source)
        self.root = Path(cache)

    def path_of(self, revision: str) -> Path:
        return self.root / revision

    def fingerprint(self) -> str:
        return fingerprint(self.source, self.root)

    def take(self) -> tuple[str, Path]:
        """Copy the folder's files; `(revision, snapshot folder)`. An identical snapshot
        that exists already is reused (the fresh copy is dropped)."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".take-", dir=self.root))
        try:
            revision = self._copy(tmp)
            target = self.path_of(revision)
            if not target.is_dir():
                try:
                    tmp.rename(target)
                except OSError:
                    if not target.is_dir():
                        raise
            return revision, target
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def _copy(self, dest: Path) -> str:
        return copy_and_hash(self.source, self.root, dest)

    def remove(self, revision: str) -> None:
        """Delete the snapshot of `revision` (no job uses it any more)."""
        shutil.rmtree(self.path_of(revision), ignore_errors=True)

    def remove_partial(self) -> int:
        """Delete half-made copies (`.take-*`) a crash left behind; how many there were.
        Only call it when no `take` runs."""
        if not self.root.is_dir():
            return 0
        partial = [p for p in self.root.iterdir() if p.name.startswith(".take-")]
        for path in partial:
            shutil.rmtree(path, ignore_errors=True)
        return len(partial)

    def snapshots(self) -> list[str]:
        """The revisions with a snapshot on disk."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and not p.name.startswith("."))
