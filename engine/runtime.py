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
from engine.store.base import EventStore
from engine.store.factory import open_store
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


class Runtime:
    """Everything the engine runs, opened and closed together."""

    def __init__(self, options: RuntimeOptions, *, clock: Clock | None = None,
                 rand: Callable[[], float] | None = None) -> None:
        self.options = options
        self.store: EventStore = open_store(options.db_url, base_dir=options.base_dir)
        self.logs = JsonlLogStore(options.logs_dir)
        self.bus = LiveBus()
        self.workspaces = WorkspaceRegistry(options.workspaces, options.environ)
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

    async def open(self) -> None:
        """Open the store (migrations), load workspaces, recover unfinished jobs."""
        self.options.logs_dir.mkdir(parents=True, exist_ok=True)
        self.options.artifacts_dir.mkdir(parents=True, exist_ok=True)
        await self.store.open()
        self.workspaces.load_all()
        await self.orchestrator.recover()

    async def close(self, grace: float = 0.0) -> None:
        """Stop executing (running steps get `grace` seconds), then close everything."""
        if self.executor is not None:
            await self.executor.close(grace)
        await self.orchestrator.close()
        await self.logs.close()
        await self.store.close()
