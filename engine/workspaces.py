"""The workspace registry: named workspaces, their current revision, secrets and errors.

A workspace source is a folder (git sources come later through the same registry). The
registry keeps the last good revision serving when a reload fails, records the load
error, and keeps older revisions that jobs still run on (every job is pinned to the
revision it started on).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.compiler.secrets import resolve_connections, resolve_secrets, secret_values
from engine.compiler.validate import LoadedWorkspace, load_workspace
from engine.errors import Issue, NotFound, PartiturError, WorkspaceInvalid


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
    """Named workspaces loaded from folders."""

    def __init__(self, sources: Mapping[str, Path], environ: Mapping[str, str] | None = None):
        self._environ = dict(os.environ if environ is None else environ)
        self._workspaces = {name: Workspace(name, Path(path)) for name, path in sources.items()}

    def load_all(self) -> None:
        """Load every workspace; failures are recorded, not raised."""
        for name in self._workspaces:
            self.reload(name)

    def reload(self, name: str) -> Workspace:
        """Load the workspace again; a failing load keeps the last good revision serving."""
        ws = self.get(name)
        try:
            loaded = load_workspace(ws.path, name)
            secrets = resolve_secrets(loaded.spec, self._environ)
            connections = resolve_connections(loaded.spec, secrets)
        except WorkspaceInvalid as exc:
            ws.load_error = exc.issues or [Issue(message=exc.message)]
            return ws
        except PartiturError as exc:
            ws.load_error = [Issue(message=exc.message)]
            return ws
        ws.current = loaded
        ws.load_error = []
        ws.secrets = secrets
        ws.connections = connections
        ws.secret_values = secret_values(secrets, connections, loaded.spec)
        ws.revisions[loaded.revision] = loaded
        return ws

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
        return loaded if loaded is not None else ws.require()
