"""Job retention (`retention.job_days`): the leader deletes jobs that ended long ago.

`JobRetention.sweep` deletes, batch by batch (`engine.store.retention`, one transaction
per batch of 500 jobs), every terminal job that ended more than `job_days` days before
now and has no active child job, then removes its JSONL log file (SQLite; on PostgreSQL
the log rows go in the same transaction as the events) and its artifacts folder. The
leader runs one sweep when it starts leading and then one every `interval` seconds;
`job_days <= 0` keeps jobs forever and never sweeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from engine.logs.store import JsonlLogStore, LogStore
from engine.store.base import EventStore
from engine.store.retention import BATCH, delete_expired

log = logging.getLogger(__name__)

DAY = 86_400.0
INTERVAL = 3_600.0


class JobRetention:
    """Deletes expired jobs on a timer while started (on the leader only)."""

    def __init__(self, store: EventStore, logs: LogStore, artifacts_dir: Path,
                 job_days: float, *, interval: float = INTERVAL, batch: int = BATCH,
                 now: Callable[[], float] = time.time) -> None:
        self.store = store
        self.logs = logs
        self.artifacts_dir = artifacts_dir
        self.job_days = job_days
        self.interval = interval
        self.batch = batch
        self._now = now
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self.job_days > 0

    def start(self) -> None:
        """Sweep now and then every `interval` seconds (nothing when disabled)."""
        if self._task is None and self.enabled:
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def sweep(self, now: float | None = None) -> list[str]:
        """Delete every job that expired by `now` (default: the clock); their ids."""
        if not self.enabled:
            return []
        cutoff = (self._now() if now is None else now) - self.job_days * DAY
        deleted: list[str] = []
        while True:
            ids = await delete_expired(self.store, cutoff, batch=self.batch)
            if ids:
                if isinstance(self.logs, JsonlLogStore):
                    for job_id in ids:
                        await self.logs.finish(job_id)  # closes a file still held open
                await asyncio.to_thread(self._remove_files, ids)
            deleted.extend(ids)
            if len(ids) < self.batch:
                return deleted

    def _remove_files(self, job_ids: Sequence[str]) -> None:
        for job_id in job_ids:
            if isinstance(self.logs, JsonlLogStore):
                with contextlib.suppress(FileNotFoundError):
                    self.logs.path(job_id).unlink()
            folder = self.artifacts_dir / job_id
            if folder.is_dir():
                shutil.rmtree(folder, ignore_errors=True)

    async def _run(self) -> None:
        while True:
            try:
                deleted = await self.sweep()
                if deleted:
                    log.info("retention: deleted %d jobs that ended over %g days ago",
                             len(deleted), self.job_days)
            except Exception:
                log.exception("job retention sweep")
            await asyncio.sleep(self.interval)
