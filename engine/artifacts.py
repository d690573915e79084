"""A job's artifacts: the files its steps wrote under `$ARTIFACTS_DIR` (DESIGN §6, §8).

Step `s` of job `j` writes into `<root>/<j>/<s>/`; an artifact is named by its path
relative to that folder. This module lists and finds them for the API, never letting a
name leave the folder (`..`, absolute paths, backslashes, NUL, links), gives each a safe
content type (only a few are shown inline; everything else is an attachment), and
enforces the size limits after a step ends (`enforce_limits`).

Every step that runs a program gets its folder before it starts (`make_step_dir`).
Creating a directory costs ~0.15 ms of CPU (an inode and a journal write), so the empty
folders of ended steps are kept for reuse (`SpareFolders`): renaming one into place
costs a fraction of that. A step that wrote nothing has no folder afterwards.
"""

from __future__ import annotations

import itertools
import mimetypes
import os
import secrets
import shutil
import stat
from collections import deque
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from engine.errors import NotFound

MiB = 1024 * 1024
SAFE_INLINE = frozenset({
    "text/plain", "application/json", "image/png", "image/jpeg", "image/gif", "image/webp",
})
_TEXT_SUFFIXES = (".log", ".txt", ".jsonl", ".csv", ".md")


@dataclass(frozen=True, slots=True)
class ArtifactLimits:
    """Size limits: one file, and all the files of one job together."""

    per_file: int = 100 * MiB
    per_job: int = 1024 * MiB

    @classmethod
    def from_env(cls, environ: os._Environ[str] | dict[str, str] | None = None) -> ArtifactLimits:
        """`PARTITUR_ARTIFACTS_PER_FILE` / `PARTITUR_ARTIFACTS_PER_JOB` (bytes) override."""
        env = os.environ if environ is None else environ
        default = cls()
        return cls(per_file=int(env.get("PARTITUR_ARTIFACTS_PER_FILE", default.per_file)),
                   per_job=int(env.get("PARTITUR_ARTIFACTS_PER_JOB", default.per_job)))


@dataclass(frozen=True, slots=True)
class Artifact:
    """One artifact: `{name, step, size, content_type, url}` in the API, plus `inline`."""

    job_id: str
    name: str
    step: str
    size: int
    content_type: str
    path: Path

    @property
    def inline(self) -> bool:
        """Whether it may be shown in the browser; otherwise `Content-Disposition:
        attachment`."""
        return self.content_type in SAFE_INLINE

    @property
    def url(self) -> str:
        return (f"/api/jobs/{self.job_id}/artifacts/{quote(self.name)}"
                f"?step={quote(self.step)}")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "step": self.step, "size": self.size,
                "content_type": self.content_type, "url": self.url}

    def headers(self) -> dict[str, str]:
        """Response headers for a download of this artifact."""
        filename = PurePosixPath(self.name).name
        disposition = "inline" if self.inline else "attachment"
        return {
            "Content-Type": self.content_type,
            "Content-Disposition": f"{disposition}; filename*=UTF-8''{quote(filename)}",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox; default-src 'none'",
        }


def content_type(name: str) -> str:
    """A content type for `name`: text for logs and text files, else a guess, else bytes.

    HTML, SVG and scripts keep their real type but are never served inline.
    """
    if name.lower().endswith(_TEXT_SUFFIXES):
        return "text/plain"
    guessed, _ = mimetypes.guess_type(name)
    return guessed or "application/octet-stream"


def safe_name(name: str) -> PurePosixPath:
    """`name` as a relative path that stays inside its folder; `NotFound` otherwise."""
    parts = name.split("/")
    if not name or name.startswith("/") or "\\" in name or "\x00" in name \
            or any(part in ("", ".", "..") for part in parts):
        raise NotFound(f"artifact {name!r} not found")
    return PurePosixPath(name)


def job_dir(root: Path, job_id: str) -> Path:
    safe_name(job_id)
    return root / job_id


def _regular_files(step_dir: Path) -> list[Path]:
    """Regular files under `step_dir`, never following a link."""
    found: list[Path] = []
    for current, dirs, files in os.walk(step_dir, followlinks=False):
        base = Path(current)
        dirs[:] = sorted(d for d in dirs if not (base / d).is_symlink())
        for name in sorted(files):
            path = base / name
            mode = path.lstat().st_mode
            if stat.S_ISREG(mode):
                found.append(path)
    return found


def list_artifacts(root: Path, job_id: str, step: str | None = None) -> list[Artifact]:
    """The artifacts of a job (of one step when given), by step then name."""
    base = job_dir(root, job_id)
    if not base.is_dir():
        return []
    steps = [step] if step is not None else sorted(p.name for p in base.iterdir())
    out: list[Artifact] = []
    for name in steps:
        step_dir = base / name
        if step_dir.is_symlink() or not step_dir.is_dir():
            continue
        for path in _regular_files(step_dir):
            rel = path.relative_to(step_dir).as_posix()
            out.append(Artifact(job_id=job_id, name=rel, step=name,
                                size=path.lstat().st_size, content_type=content_type(rel),
                                path=path))
    return out


def find_artifact(root: Path, job_id: str, name: str, step: str | None = None) -> Artifact:
    """The artifact `name` (of `step`, or of the first step that has it); `NotFound`
    for an unknown or unsafe name."""
    rel = safe_name(name)
    base = job_dir(root, job_id)
    if step is not None:
        safe_name(step)
    steps = [step] if step is not None else (
        sorted(p.name for p in base.iterdir()) if base.is_dir() else [])
    for candidate in steps:
        step_dir = base / candidate
        path = step_dir / rel
        if step_dir.is_symlink() or not step_dir.is_dir():
            continue
        # Every component must be a real directory or file, not a link.
        current = step_dir
        ok = True
        for part in rel.parts:
            current = current / part
            if current.is_symlink():
                ok = False
                break
        if not ok or not path.is_file():
            continue
        if not path.resolve().is_relative_to(step_dir.resolve()):
            continue
        return Artifact(job_id=job_id, name=rel.as_posix(), step=candidate,
                        size=path.stat().st_size, content_type=content_type(rel.name),
                        path=path)
    raise NotFound(f"artifact {name!r} not found in job {job_id}")


def enforce_limits(root: Path, job_id: str, step: str, limits: ArtifactLimits) -> list[str]:
    """Check a step's artifacts after it ended; remove what breaks a limit or is not a
    regular file (links, fifos). Returns one message per problem (empty: all fine)."""
    step_dir = job_dir(root, job_id) / step
    # One lstat and one listing for the usual case (runs after every step).
    try:
        mode = os.lstat(step_dir).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return []
    if stat.S_ISLNK(mode):
        step_dir.unlink()
        return [f"the artifacts folder of step {step} was replaced by a link; removed"]
    if not stat.S_ISDIR(mode):
        return []
    with os.scandir(step_dir) as entries:
        if next(entries, None) is None:
            return []  # the usual case: the step wrote no artifact
    problems: list[str] = []
    for current, dirs, files in os.walk(step_dir, followlinks=False):
        base = Path(current)
        for name in [*dirs, *files]:
            path = base / name
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode) or not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                path.unlink()
                rel = path.relative_to(step_dir).as_posix()
                problems.append(f"artifact {rel} is not a regular file; removed")
        dirs[:] = [d for d in dirs if (base / d).is_dir() and not (base / d).is_symlink()]
    mine = list_artifacts(root, job_id, step)
    for artifact in mine:
        if artifact.size > limits.per_file:
            artifact.path.unlink()
            problems.append(f"artifact {artifact.name} is {artifact.size} bytes; the limit "
                            f"per file is {limits.per_file}; removed")
    others = sum(a.size for a in list_artifacts(root, job_id) if a.step != step)
    total = others
    for artifact in list_artifacts(root, job_id, step):
        total += artifact.size
        if total > limits.per_job:
            artifact.path.unlink()
            total -= artifact.size
            problems.append(f"artifact {artifact.name} would take the job over its "
                            f"{limits.per_job} byte limit; removed")
    return problems


SPARE_PREFIX = ".spare-"
_SPARES: dict[str, SpareFolders] = {}


class SpareFolders:
    """Empty step folders of ended steps, kept under `<root>/.spare-<token>/` for the
    next steps of this process (at most `keep`). `take` runs on the spawning threads,
    `give` on the event loop: the free list is a deque (atomic append and pop)."""

    def __init__(self, root: Path, keep: int = 32) -> None:
        self.root = root
        self.dir = root / f"{SPARE_PREFIX}{secrets.token_hex(6)}"
        self.keep = keep
        self._free: deque[str] = deque()
        self._names = itertools.count()
        _SPARES[str(root)] = self

    def take(self, dest: Path) -> bool:
        """Move a spare folder to `dest` (which must not hold anything); False if there
        is none or it cannot be moved there (the caller creates `dest`)."""
        try:
            spare = self._free.pop()
        except IndexError:
            return False
        try:
            os.rename(spare, dest)
        except OSError:
            self._free.append(spare)  # `dest`'s job folder is new, or `dest` holds files
            return False
        return True

    def give_if_empty(self, step_dir: Path) -> bool:
        """Keep `step_dir` for reuse if it is a real, empty folder (True: it is gone
        from the job's folder). False, and nothing moved, otherwise."""
        if len(self._free) >= self.keep:
            return False
        try:
            fd = os.open(step_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return False  # missing, a link or not a folder: `enforce_limits` decides
        try:
            with os.scandir(fd) as entries:
                if next(entries, None) is not None:
                    return False
        finally:
            os.close(fd)
        target = f"{self.dir}/{next(self._names)}"
        try:
            os.rename(step_dir, target)
        except FileNotFoundError:
            try:
                os.mkdir(self.dir)
                os.rename(step_dir, target)
            except OSError:
                return False
        except OSError:
            return False
        self._free.append(target)
        return True

    def close(self) -> None:
        """Remove the spare folders (they are empty)."""
        if _SPARES.get(str(self.root)) is self:
            del _SPARES[str(self.root)]
        self._free.clear()
        shutil.rmtree(self.dir, ignore_errors=True)


def make_step_dir(path: Path) -> None:
    """Create a step's artifacts folder `<root>/<job>/<step>` (it may exist: a retry),
    reusing a spare folder of the root's `SpareFolders` when there is one."""
    spares = _SPARES.get(str(path.parent.parent))
    if spares is not None and spares.take(path):
        return
    try:
        os.mkdir(path)
    except FileNotFoundError:
        os.makedirs(path, exist_ok=True)
    except FileExistsError:
        if not os.path.isdir(path):
            raise
