"""The assembled engine: store, logs, live bus, workspaces, orchestrator and executor.

`partitur serve` and `partitur run` both build one `Runtime`; the HTTP layer only talks
to it (and through it to the orchestrator and the store).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.clock import Clock
from engine.executor import LocalExecutor
from engine.leader import Leader
from engine.leases import LeaseSweeper
from engine.logs.bus import LiveBus
from engine.logs.store import JsonlLogStore, LogStore
from engine.orchestrator import Orchestrator
from engine.retention import JobRetention
from engine.scheduler import Scheduler
from engine.sources.git import GitSpec
from engine.sources.poller import SourcePoller
from engine.store.base import EventStore
from engine.store.factory import open_store
from engine.store.work import work_store
from engine.triggers.events import EventTriggers
from engine.workqueue import WorkQueue
from engine.workspaces import WorkspaceRegistry

if TYPE_CHECKING:
    from engine.replicas import ReplicaSync

RETENTION_INTERVAL = 3_600.0


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
    snapshot_folders: bool = True  # jobs of folder workspaces run in a per-revision copy
    worker_mode: str = "auto"  # local | remote | auto (remote when concurrency is 0)
    lease_timeout: float = 30.0  # recovery.heartbeat_timeout
    aging: float | None = None  # scheduling.aging: one priority level per this many seconds
    job_days: float = 0.0  # retention.job_days: 0 keeps finished jobs forever
    retention_interval: float = RETENTION_INTERVAL  # seconds between retention sweeps


class Runtime:
    """Everything the engine runs, opened and closed together."""

    def __init__(self, options: RuntimeOptions, *, clock: Clock | None = None,
                 rand: Callable[[], float] | None = None) -> None:
        self.options = options
        self.store: EventStore = open_store(options.db_url, base_dir=options.base_dir)
        self.postgres_url: str | None = _postgres_url(self.store)
        self.logs: LogStore
        if self.postgres_url is not None:
            from engine.logs.pgstore import PostgresLogStore

            self.logs = PostgresLogStore(self.postgres_url)
        else:
            self.logs = JsonlLogStore(options.logs_dir)
        self.bus = LiveBus()
        sources: dict[str, Path | GitSpec] = {**options.workspaces, **options.git_workspaces}
        self.workspaces = WorkspaceRegistry(
            sources, options.environ,
            cache_dir=options.cache_dir or options.logs_dir.parent / "git",
            snapshot_folders=options.snapshot_folders)
        kwargs = {"clock": clock} if clock is not None else {}
        if rand is not None:
            kwargs["rand"] = rand  # type: ignore[assignment]
        self.orchestrator = Orchestrator(self.store, self.logs, self.bus, self.workspaces,
                                         **kwargs)  # type: ignore[arg-type]
        self.executor: LocalExecutor | None = None
        self.queue: WorkQueue | None = None
        work = work_store(self.store)
        remote = options.worker_mode == "remote" or (
            options.worker_mode == "auto" and options.concurrency <= 0)
        if work is not None:
            self.queue = WorkQueue(self.orchestrator, work, lease_timeout=options.lease_timeout,
                                   aging=options.aging)
        if remote and self.queue is not None:
            self.orchestrator.attach(self.queue)
        elif options.concurrency > 0:
            self.executor = LocalExecutor(self.orchestrator, concurrency=options.concurrency,
                                          artifacts_root=options.artifacts_dir,
                                          aging=options.aging)
            self.orchestrator.attach(self.executor)
        self.orchestrator.on_events(self.workspaces.track)
        self.scheduler = Scheduler(self.orchestrator)
        self.event_triggers = EventTriggers(self.orchestrator)
        self.sources = SourcePoller(self.workspaces, folder_interval=options.folder_interval,
                                    on_change=lambda _name: self.scheduler.wake())
        self.sweeper = (LeaseSweeper(self.queue, timeout=options.lease_timeout)
                        if self.queue is not None else None)
        self.retention = JobRetention(self.store, self.logs, options.artifacts_dir,
                                      options.job_days, interval=options.retention_interval,
                                      now=self.orchestrator.clock.now)
        self.leader = Leader(self.postgres_url, self._lead, self._unlead)
        self.replicas: ReplicaSync | None = None  # replicas on one Postgres stay in sync
        self._triggers_started = False
        self.on_open: list[Callable[[], Awaitable[None]]] = []
        """Called once the store and workspaces are open, before jobs are recovered."""
        self.on_lead: list[Callable[[], Awaitable[None]]] = []
        """More duties of the leader, started after the scheduler (the callback deliverer)."""
        self.on_unlead: list[Callable[[], Awaitable[None]]] = []
        """Stop them when this process no longer leads."""
        self.on_recovered: list[Callable[[], Awaitable[None]]] = []
        """Called once every unfinished job is recovered (its revision pinned)."""

    async def open(self) -> None:
        """Open the store (migrations), load workspaces, recover unfinished jobs."""
        self.options.logs_dir.mkdir(parents=True, exist_ok=True)
        self.options.artifacts_dir.mkdir(parents=True, exist_ok=True)
        if self.postgres_url is not None:
            # The two pools connect and check the migrations at the same time.
            await _all(self.store.open(), self.logs.open())  # type: ignore[attr-defined]
        else:
            await self.store.open()
        await self.workspaces.refresh_all()
        for opened in self.on_open:
            await opened()
        if self.postgres_url is not None:
            from engine.replicas import ReplicaSync

            self.replicas = ReplicaSync(self.store, self.logs, self.bus, self.orchestrator,
                                        self.queue.waker.wake if self.queue else None)
            await self.replicas.start()
        await self.orchestrator.recover()
        self.workspaces.prune()  # revisions only a crash kept
        for recovered in self.on_recovered:
            await recovered()

    def start_triggers(self) -> None:
        """Start the scheduler, event triggers and source polling (`partitur serve`)."""
        if self._triggers_started:
            return
        self._triggers_started = True
        self.orchestrator.on_events(self.event_triggers.listener)
        self.leader.start()
        self.sources.start()

    async def _lead(self) -> None:
        """This process became the leader: run the scheduler, the lease sweeper, job
        retention and the duties of `on_lead`."""
        self.scheduler.start()
        if self.sweeper is not None:
            self.sweeper.start()
        self.retention.start()
        for duty in self.on_lead:
            await duty()

    async def _unlead(self) -> None:
        await self.scheduler.stop()
        if self.sweeper is not None:
            await self.sweeper.stop()
        await self.retention.stop()
        for duty in self.on_unlead:
            await duty()

    async def close(self, grace: float = 0.0) -> None:
        """Stop executing (running steps get `grace` seconds), then close everything."""
        await self.sources.stop()
        await self.leader.stop()
        await self.scheduler.stop()
        await self.retention.stop()
        if self.replicas is not None:
            await self.replicas.stop()
        if self.queue is not None:
            await self.queue.close()
        await self.event_triggers.close()
        if self.executor is not None:
            await self.executor.close(grace)
        await self.orchestrator.close()
        await self.logs.close()
        await self.store.close()


def _postgres_url(store: EventStore) -> str | None:
    """The URL of a Postgres store, or None for any other backend.

    asyncpg is imported only when a Postgres store was opened: `partitur run` and an
    embedded server on SQLite start faster without it.
    """
    if "engine.store.postgres" not in sys.modules:
        return None
    from engine.store.postgres import PostgresStore

    return store.url if isinstance(store, PostgresStore) else None


async def _all(*steps: Awaitable[Any]) -> None:
    """Await `steps` together; when one fails, the others still finish, then the first
    failure is raised."""
    for outcome in await asyncio.gather(*steps, return_exceptions=True):
        if isinstance(outcome, BaseException):
            raise outcome
