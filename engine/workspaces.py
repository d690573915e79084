"""The workspace registry: named workspaces, their current revision, secrets and errors.

A workspace comes from a folder, or from a git repository (`engine.sources.git`: one
checkout per commit in a cache, the commit sha is the revision). The registry keeps the
last good revision serving when a reload fails and records the load error (every issue
with file and line). Every job is pinned to the revision it started on: `track` (an
`Orchestrator.on_events` listener) counts the jobs using each revision, and a revision
is kept (in memory, and for git and snapshots on disk) while a job uses it. A job of a
revision that is no longer in memory (after a restart) gets it loaded again from its
checkout or snapshot.

With `snapshot_folders` (what a server does), a folder workspace configured at start is
loaded from a snapshot (`engine.sources.snapshot`: a copy of the folder per revision, the
revision is a hash of every file copied), so its jobs run their revision's files however
the folder changes later; the snapshot is removed when no job uses it. A process killed
with jobs running releases nothing, so at start, once recovery has pinned every unfinished
job, `prune` removes every snapshot and git checkout that is neither current nor used by
an unfinished job (and half-made copies). Without it (the
one-shot `partitur run`), and for folders registered with `add` (deployments and builds,
which never change in place), the files are read in place.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.compiler.secrets import resolve_connections, resolve_secrets, secret_values
from engine.compiler.validate import LoadedWorkspace, load_workspace
from engine.errors import Issue, NotFound, PartiturError, WorkspaceInvalid
from engine.sources.git import GitRepo, GitSpec
from engine.sources.snapshot import FolderSnapshots

if TYPE_CHECKING:
    from engine.core.events import Event
    from engine.core.state import JobState

log = logging.getLogger("partitur.workspaces")

DEFAULT_CACHE = Path(".partitur/git")


@dataclass
class Workspace:
    """One named workspace and what is known about it right now."""

    name: str
    path: Path
    current: LoadedWorkspace | None = None
    load_error: list[Issue] = field(default_factory=list)
    secrets: dict[str, Any] = field(default_factory=dict)
    connections: dict[str, dict[str, Any]] = field(default_factory=dict)
    secret_values: list[str] = field(default_factory=list)
    revisions: dict[str, LoadedWorkspace] = field(default_factory=dict)
    git: GitRepo | None = None
    commit: str | None = None
    """The last commit fetched from git (loaded or not)."""
    users: dict[str, int] = field(default_factory=dict)
    """Revision → number of unfinished jobs pinned to it."""
    snapshots: FolderSnapshots | None = None
    """A folder workspace's snapshots (None: its files are read in place)."""

    @property
    def source(self) -> str:
        return "git" if self.git is not None else "folder"

    def require(self) -> LoadedWorkspace:
        """The current revision, or an error saying why there is none."""
        if self.current is None:
            detail = "; ".join(str(i) for i in self.load_error) or "not loaded"
            raise WorkspaceInvalid(f"workspace {self.name!r} does not load: {detail}",
                                   issues=self.load_error)
        return self.current

    def load_error_text(self) -> str | None:
        return "; ".join(str(i) for i in self.load_error) or None


class WorkspaceRegistry:
    """Named workspaces loaded from folders and git repositories."""

    def __init__(self, sources: Mapping[str, Path | GitSpec],
                 environ: Mapping[str, str] | None = None, *,
                 cache_dir: Path | None = None, snapshot_folders: bool = False) -> None:
        self._environ = dict(os.environ if environ is None else environ)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE
        self._workspaces: dict[str, Workspace] = {}
        for name, source in sources.items():
            if isinstance(source, GitSpec):
                repo = GitRepo(source, self.cache_dir / name)
                self._workspaces[name] = Workspace(name, repo.cache, git=repo)
            else:
                snaps = (FolderSnapshots(Path(source), self.cache_dir / name / "snap")
                         if snapshot_folders else None)
                self._workspaces[name] = Workspace(name, Path(source), snapshots=snaps)
        self._jobs: dict[str, tuple[str, str]] = {}  # job id → (workspace, revision)

    # --- loading ---------------------------------------------------------------------

    def load_all(self) -> None:
        """Load every folder workspace (git ones need `refresh_all`); failures are recorded."""
        for name in self._workspaces:
            self.reload(name)

    async def refresh_all(self) -> None:
        """Fetch every git workspace and load every workspace; failures are recorded."""
        await asyncio.gather(*(self.refresh(name) for name in self._workspaces))

    def reload(self, name: str) -> Workspace:
        """Load the workspace again from what is on disk (for git: the last fetched commit).

        A failing load keeps the last good revision serving and records `load_error`.
        """
        ws = self.get(name)
        if ws.git is None:
            return self._load_folder(ws)
        if ws.commit is None:
            if not ws.load_error:
                ws.load_error = [Issue(message=f"git workspace {name!r} was not fetched yet")]
            return ws
        return self._load(ws, ws.git.path_of(ws.commit), ws.commit)

    async def refresh(self, name: str) -> Workspace:
        """Fetch the workspace's source (git) and load it; see `reload`."""
        ws = self.get(name)
        repo = ws.git
        if repo is None:
            return self.reload(name)
        try:
            sha = await asyncio.to_thread(repo.fetch)
            if ws.current is not None and ws.current.revision == sha and not ws.load_error:
                return ws
            await asyncio.to_thread(repo.checkout, sha)
        except PartiturError as exc:
            ws.load_error = [Issue(message=exc.message)]
            return ws
        ws.commit = sha
        return self._load(ws, repo.path_of(sha), sha)

    def _load_folder(self, ws: Workspace) -> Workspace:
        snaps = ws.snapshots
        if snaps is None or not (ws.path / ".workflows").is_dir():
            return self._load(ws, ws.path, None)
        try:
            revision, path = snaps.take()
        except OSError as exc:
            ws.load_error = [Issue(message=f"cannot snapshot {ws.path}: {exc}")]
            return ws
        self._load(ws, path, revision)
        if ws.current is None or ws.current.revision != revision:
            self._drop_if_unused(ws, revision)  # the new files did not load
        return ws

    def _load(self, ws: Workspace, path: Path, revision: str | None) -> Workspace:
        try:
            loaded = load_workspace(path, ws.name)
            if revision is not None:
                loaded = dataclasses.replace(loaded, revision=revision)
            secrets = resolve_secrets(loaded.spec, self._environ)
            connections = resolve_connections(loaded.spec, secrets)
        except WorkspaceInvalid as exc:
            ws.load_error = exc.issues or [Issue(message=exc.message)]
            return ws
        except PartiturError as exc:
            ws.load_error = [Issue(message=exc.message)]
            return ws
        previous = ws.current
        ws.current = loaded
        ws.load_error = []
        ws.secrets = secrets
        ws.connections = connections
        ws.secret_values = secret_values(secrets, connections, loaded.spec)
        ws.revisions[loaded.revision] = loaded
        if previous is not None and previous.revision != loaded.revision:
            self._drop_if_unused(ws, previous.revision)
        return ws

    def add(self, name: str, path: Path) -> Workspace:
        """Register (or re-register) the folder workspace `name` and load it (an uploaded
        deployment); a failing load is recorded as for any workspace."""
        ws = self._workspaces.get(name)
        if ws is None or ws.path != Path(path):
            ws = Workspace(name, Path(path))
            self._workspaces[name] = ws
        return self._load(ws, ws.path, None)

    def discard(self, name: str) -> bool:
        """Unregister the workspace `name` (a deployment whose files go away) unless an
        unfinished job uses it; False when one does. Unknown names are ignored."""
        if self.in_use(name):
            return False
        self._workspaces.pop(name, None)
        return True

    # --- lookup ----------------------------------------------------------------------

    def get(self, name: str) -> Workspace:
        try:
            return self._workspaces[name]
        except KeyError:
            raise NotFound(f"workspace {name!r} not found") from None

    def all(self) -> list[Workspace]:
        return list(self._workspaces.values())

    def revision(self, name: str, revision: str) -> LoadedWorkspace:
        """A revision a job is pinned to (the current one when it is no longer kept)."""
        ws = self.get(name)
        loaded = ws.revisions.get(revision)
        if loaded is not None:
            return loaded
        kept: Path | None = None
        if ws.git is not None:
            kept = ws.git.path_of(revision)
        elif ws.snapshots is not None:
            kept = ws.snapshots.path_of(revision)
        if kept is not None and kept.is_dir():
            try:
                loaded = dataclasses.replace(load_workspace(kept, name), revision=revision)
            except PartiturError:
                loaded = None
            if loaded is not None:
                ws.revisions[revision] = loaded
        return loaded if loaded is not None else ws.require()

    # --- pinning ---------------------------------------------------------------------

    def track(self, state: JobState, events: Sequence[Event]) -> None:
        """`Orchestrator.on_events` listener: pin a job's revision while it is unfinished."""
        job_id = state.job_id
        if not state.terminal and job_id not in self._jobs:
            self._jobs[job_id] = (state.workspace, state.revision)
            self.acquire(state.workspace, state.revision)
        elif state.terminal and job_id in self._jobs:
            workspace, revision = self._jobs.pop(job_id)
            self.release(workspace, revision)

    def in_use(self, name: str) -> set[str]:
        """The revisions of workspace `name` that unfinished jobs are pinned to."""
        return {rev for ws, rev in self._jobs.values() if ws == name}

    def prune(self) -> list[str]:
        """Remove the snapshots and git checkouts whose revision is neither current nor
        used by an unfinished job, and half-made copies; `workspace/revision` of each
        removed. Call it once recovery has pinned every unfinished job (a job of a
        removed revision would run the current one). A workspace with no current
        revision (its load failed) is left as it is."""
        removed: list[str] = []
        for ws in list(self._workspaces.values()):
            if ws.current is None or (ws.git is None and ws.snapshots is None):
                continue
            keep = self.in_use(ws.name) | set(ws.users) | {ws.current.revision}
            if ws.git is not None:
                if ws.commit is not None:
                    keep.add(ws.commit)
                ws.git.remove_partial()
                stale = [r for r in ws.git.checkouts() if r not in keep]
                for revision in stale:
                    ws.git.remove(revision)
            else:
                assert ws.snapshots is not None
                ws.snapshots.remove_partial()
                stale = [r for r in ws.snapshots.snapshots() if r not in keep]
                for revision in stale:
                    ws.snapshots.remove(revision)
            for revision in stale:
                ws.revisions.pop(revision, None)
                removed.append(f"{ws.name}/{revision}")
        if removed:
            log.info("removed %d unused revision folders: %s", len(removed),
                     ", ".join(removed))
        return removed

    def acquire(self, name: str, revision: str) -> None:
        """Keep `revision` while a job uses it."""
        ws = self._workspaces.get(name)
        if ws is not None:
            ws.users[revision] = ws.users.get(revision, 0) + 1

    def release(self, name: str, revision: str) -> None:
        """A job of `revision` ended; drop the revision when nothing needs it any more."""
        ws = self._workspaces.get(name)
        if ws is None:
            return
        left = ws.users.get(revision, 0) - 1
        if left > 0:
            ws.users[revision] = left
            return
        ws.users.pop(revision, None)
        self._drop_if_unused(ws, revision)

    def _drop_if_unused(self, ws: Workspace, revision: str) -> None:
        if ws.users.get(revision) or (ws.current is not None
                                      and ws.current.revision == revision):
            return
        ws.revisions.pop(revision, None)
        if ws.git is not None and revision != ws.commit:
            ws.git.remove(revision)
        if ws.snapshots is not None:
            ws.snapshots.remove(revision)
