"""Polls workspace sources and reloads a workspace when its source changed.

A folder is checked every `folder_interval` seconds (a fingerprint of `.workflows/`, or
of every file a snapshot copies when the workspace is snapshotted); a
git workspace is fetched every `poll_interval` of its config. A failed load leaves the
last good revision serving (see `engine.workspaces`). `on_change(name)` is called after
a workspace got a new revision (the scheduler uses it to look at triggers again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from engine.sources.folder import fingerprint
from engine.workspaces import Workspace, WorkspaceRegistry

log = logging.getLogger("partitur.sources")

FOLDER_INTERVAL = 2.0


class SourcePoller:
    """One background task per workspace, reloading it when its source changes."""

    def __init__(self, registry: WorkspaceRegistry, *, folder_interval: float = FOLDER_INTERVAL,
                 on_change: Callable[[str], None] | None = None) -> None:
        self.registry = registry
        self.folder_interval = folder_interval
        self.on_change = on_change
        self._prints: dict[str, str] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for ws in self.registry.all():
            if ws.git is None:
                self._prints[ws.name] = self._fingerprint(ws)
            self._tasks.append(asyncio.ensure_future(self._run(ws.name)))

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _interval(self, ws: Workspace) -> float:
        if ws.git is not None:
            return max(0.5, ws.git.spec.poll_interval)
        return self.folder_interval

    async def _run(self, name: str) -> None:
        while True:
            await asyncio.sleep(self._interval(self.registry.get(name)))
            try:
                await self.poll(name)
            except Exception:
                log.exception("polling workspace %s failed", name)

    @staticmethod
    def _fingerprint(ws: Workspace) -> str:
        if ws.snapshots is not None:
            return ws.snapshots.fingerprint()
        return fingerprint(ws.path)

    async def poll(self, name: str) -> bool:
        """Look at the source once; reload when it changed. True on a new revision."""
        ws = self.registry.get(name)
        before = ws.current.revision if ws.current is not None else None
        if ws.git is not None:
            await self.registry.refresh(name)
        else:
            now = await asyncio.to_thread(self._fingerprint, ws)
            if self._prints.get(name) == now:
                return False
            self._prints[name] = now
            self.registry.reload(name)
        after = ws.current.revision if ws.current is not None else None
        changed = after != before
        if changed:
            log.info("workspace %s: revision %s", name, after)
            if self.on_change is not None:
                self.on_change(name)
        return changed
