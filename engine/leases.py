"""The lease sweeper: steps whose worker stopped renewing its lease are lost (DESIGN §6).

A lease not renewed within `recovery.heartbeat_timeout` is closed (outcome `lost`) and
its step failed with kind `worker_lost` — re-run only where `retry.on_lost: true` (the
decision is `engine.core.decide`'s). A server restart is not a worker death: no lease
expires during the first timeout after the sweeper starts, so workers that were only
waiting for the server get to heartbeat first.

The sweeper also re-queues ready steps that have no queue row (a server that died between
appending `StepReady` and queueing it). It runs on the leader only (`engine.leader`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from engine.core import commands as cmd
from engine.core.state import StepStatus
from engine.errors import Conflict, NotFound, PartiturError
from engine.store.work import Held
from engine.workqueue import WorkQueue

log = logging.getLogger("partitur.leases")


class LeaseSweeper:
    """Fails the steps of lost workers and re-queues ready steps lost between processes."""

    def __init__(self, queue: WorkQueue, *, timeout: float, interval: float | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.queue = queue
        self.timeout = timeout
        self.interval = interval if interval is not None else max(0.2, min(5.0, timeout / 4))
        self.clock = clock
        self.started_at: float | None = None
        self.lost = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self.started_at = self.clock()
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            try:
                await self.sweep()
            except PartiturError as exc:
                log.warning("lease sweep failed: %s", exc)
            except Exception:
                log.exception("lease sweep failed")
            await asyncio.sleep(self.interval)

    async def sweep(self) -> int:
        """One pass; returns how many leases it declared lost."""
        now = self.clock()
        started = self.started_at if self.started_at is not None else now
        lost = 0
        if now - started >= self.timeout:
            for held in await self.queue.work.expired(before=now - self.timeout):
                if await self._lose(held, now):
                    lost += 1
        await self._requeue()
        self.lost += lost
        return lost

    async def _lose(self, held: Held, now: float) -> bool:
        """Fail the step of an expired lease, then close the lease.

        The step is failed first: were the lease closed first and the failure not recorded
        (the store unreachable, this leader gone), the step would stay running with no
        lease left to expire. Until the lease is closed, calls under it are refused all
        the same (`WorkQueue.fenced` also wants the step running), and a failed attempt
        is retried by the next sweep.
        """
        orch = self.queue.orchestrator
        fresh = await self.queue.work.held(held.lease)
        if fresh is None or fresh.finished_at is not None \
                or fresh.renewed_at >= now - self.timeout:
            return False  # reported, swept or renewed meanwhile
        try:
            state = await self.queue.current_state(held.job_id)
            step = state.steps.get(held.step)
            if step is None or step.status is not StepStatus.RUNNING or step.lease != held.lease:
                await self.queue.work.finish(held.lease, "lost", now)
                return False  # reported meanwhile
            await orch.command(held.job_id, cmd.Fail(
                step=held.step, attempt=held.attempt, kind="worker_lost",
                error=(f"worker {held.worker_id} stopped renewing its lease "
                       f"(no heartbeat for {now - held.renewed_at:.1f}s)")))
        except (Conflict, NotFound) as exc:
            log.info("lost lease of step %s, job %s: %s", held.step, held.job_id, exc)
            await self.queue.work.finish(held.lease, "lost", now)
            return False
        await self.queue.work.finish(held.lease, "lost", now)
        log.warning("step %s of job %s lost with worker %s", held.step, held.job_id,
                    held.worker_id)
        return True

    async def _requeue(self) -> None:
        for job_id, step, attempt in await self.queue.work.unqueued_ready():
            try:
                state = await self.queue.current_state(job_id)
            except NotFound:
                continue
            if state.paused or state.cancel_requested:
                continue  # its ready steps are handed out on resume, or cancelled
            current = state.steps.get(step)
            if current is not None and current.status is StepStatus.READY \
                    and current.attempt == attempt:
                self.queue.dispatch(state, step)
