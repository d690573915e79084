"""The assembled engine: store, logs, live bus, workspaces, orchestrator and executor.

`partitur serve` and `partitur run` both build one `Runtime`; the HTTP layer only talks
to it (and through it to the orchestrator and the store).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from engine.clock import Clock
from engine.executor import LocalExecutor
from engine.logs.bus import LiveBus
from engine.logs.store import JsonlLogStore
from engine.orchestrator import Orchestrator
from engine.scheduler import Scheduler
from engine.sources.git import GitSpec
from engine.sources.poller import SourcePoller
from engine.store.base import EventStore
from engine.store.factory import open_store
from engine.triggers.events import EventTriggers
from engine.workspaces import WorkspaceRegistry


@dataclass(frozen=True)
class RuntimeOptions:
    """What a runtime needs to know (from `server-config.yaml` or CLI flags)."""

    db_url: str
    logs_dir: Path
    artifacts_dir: Path
    workspaces: Mapping[str, Path] = field(default_factory=dict)
    concurrency: int = field(default_factory=lambda: os.cpu_count() or 2)
    base_dir: Path = field(default_factory=Path.cwd)
    environ: Mapping[str, str] | None = None
    git_workspaces: Mapping[str, GitSpec] = field(default_factory=dict)
    cache_dir: Path | None = None  # git checkouts; default: <logs_dir>/../git
    folder_interval: float = 2.0  # how often folder workspaces are checked for changes


class Runtime:
    """Everything the engine runs, opened and closed together."""

    def __init__(self, options: RuntimeOptions, *, clock: Clock | None = None,
                 rand: Callable[[], float] | None = None) -> None:
        self.options = options
        self.store: EventStore = open_store(options.db_url, base_dir=options.base_dir)
        self.logs = JsonlLogStore(options.logs_dir)
        self.bus = LiveBus()
        sources: dict[str, Path | GitSpec] = {**options.workspaces, **options.git_workspaces}
        self.workspaces = WorkspaceRegistry(
            sources, options.environ,
            cache_dir=options.cache_dir or options.logs_dir.parent / "git")
        kwargs = {"clock": clock} if clock is not None else {}
        if rand is not None:
            kwargs["rand"] = rand  # type: ignore[assignment]
        self.orchestrator = Orchestrator(self.store, self.logs, self.bus, self.workspaces,
                                         **kwargs)  # type: ignore[arg-type]
        self.executor: LocalExecutor | None = None
        if options.concurrency > 0:
            self.executor = LocalExecutor(self.orchestrator, concurrency=options.concurrency,
                                          artifacts_root=options.artifacts_dir)
            self.orchestrator.attach(self.executor)
        self.orchestrator.on_events(self.workspaces.track)
        self.scheduler = Scheduler(self.orchestrator)
        self.event_triggers = EventTriggers(self.orchestrator)
        self.sources = SourcePoller(self.workspaces, folder_interval=options.folder_interval,
                                    on_change=lambda _name: self.scheduler.wake())
        self._triggers_started = False

    async def open(self) -> None:
        """Open the store (migrations), load workspaces, recover unfinished jobs."""
        self.options.logs_dir.mkdir(parents=True, exist_ok=True)
        self.options.artifacts_dir.mkdir(parents=True, exist_ok=True)
        await self.store.open()
        await self.workspaces.refresh_all()
        await self.orchestrator.recover()

    def start_triggers(self) -> None:
        """Start the scheduler, event triggers and source polling (`partitur serve`)."""
        if self._triggers_started:
            return
        self._triggers_started = True
        self.orchestrator.on_events(self.event_triggers.listener)
        self.scheduler.start()
        self.sources.start()

    async def close(self, grace: float = 0.0) -> None:
        """Stop executing (running steps get `grace` seconds), then close everything."""
        await self.sources.stop()
        await self.scheduler.stop()
        await self.event_triggers.close()
        if self.executor is not None:
            await self.executor.close(grace)
        await self.orchestrator.close()
        await self.logs.close()
        await self.store.close()
