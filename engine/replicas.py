"""What keeps several `partitur serve` replicas on one PostgreSQL in step (DESIGN §6–§7).

Each replica LISTENs on three channels:
- `partitur_events`: an orchestrator that holds a job in memory folds the events other
  replicas appended to it (timers, waiters and the end of the job follow), and WebSocket
  streams of that job are nudged to read the new status frames from the store; when a
  job ended, the jobs queued here for a concurrency slot try to start;
- `partitur_logs`: lines stored by another replica are read from the log table and
  published on this replica's live bus, so a stream on any replica tails every line
  (streams drop lines they already sent, by seq);
- `partitur_work`: idle long-polling workers are woken when any replica queues a step.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from engine.core import events as ev
from engine.logs.bus import LiveBus
from engine.orchestrator import Orchestrator
from engine.store.pgnotify import Listener
from engine.store.work import WORK_CHANNEL

log = logging.getLogger("partitur.replicas")

_JOB_END = (ev.JobCompleted, ev.JobFailed, ev.JobCancelled, ev.JobSkipped)


class ReplicaSync:
    """Turns other replicas' notifications into local wake-ups."""

    def __init__(self, store: Any, logs: Any, bus: LiveBus, orchestrator: Orchestrator,
                 wake_workers: Any | None = None) -> None:
        self.store = store  # a PostgresStore
        self.logs = logs  # a PostgresLogStore
        self.bus = bus
        self.orchestrator = orchestrator
        self.wake_workers = wake_workers
        self._event_seq = 0
        self._notified = 0  # the highest global seq announced on `partitur_events`
        self._line_seq: dict[str, int] = {}
        self._events_due = asyncio.Event()
        self._lines_due: set[str] = set()
        self._lines_event = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._listeners: list[Listener] = []

    async def start(self) -> None:
        import asyncpg

        self._event_seq = self._notified = await self.store.last_seq()

        async def relisten() -> None:
            self._lines_due.update(self._line_seq)
            self._lines_event.set()

        starts = [self.store.listen(self._on_event),
                  self.logs.listen(self._on_line, on_reconnect=relisten)]
        if self.wake_workers is not None:
            url = self.store.url

            async def connect() -> Any:
                return await asyncpg.connect(url, timeout=5.0)

            wake = self.wake_workers
            work = Listener(connect, WORK_CHANNEL, lambda _p: wake(), on_reconnect=_async(wake))
            starts.append(work.start())
        # Each listener has a connection of its own: they connect at the same time.
        outcomes = await asyncio.gather(*starts, return_exceptions=True)
        self._listeners = [o for o in outcomes if isinstance(o, Listener)]
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                for listener in self._listeners:
                    await listener.close()
                self._listeners = []
                raise outcome
        self._tasks = [asyncio.ensure_future(self._events_loop()),
                       asyncio.ensure_future(self._lines_loop())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for listener in self._listeners:
            await listener.close()

    def _on_event(self, seq: int) -> None:
        self._notified = max(self._notified, seq)
        self._events_due.set()

    def _on_line(self, job_id: str, _seq: int) -> None:
        if self.bus.subscribers(job_id):
            self._lines_due.add(job_id)
            self._lines_event.set()

    async def _lines_loop(self) -> None:
        while True:
            await self._lines_event.wait()
            self._lines_event.clear()
            due, self._lines_due = self._lines_due, set()
            for job_id in due:
                try:
                    lines = await self.logs.read(job_id, after=self._line_seq.get(job_id, 0))
                except Exception as exc:
                    log.warning("cannot read new log lines of %s: %s", job_id, exc)
                    continue
                for line in lines:
                    self.bus.publish(job_id, line)
                if lines:
                    self._line_seq[job_id] = lines[-1].seq

    async def _events_loop(self) -> None:
        while True:
            await self._events_due.wait()
            self._events_due.clear()
            notified = self._notified
            if notified > self._event_seq:
                # The notification may come before the answer of the append it tells of.
                await self.store.own_appends_answered()
            if notified > self._event_seq and self.store.own_appends_cover(
                self._event_seq, notified
            ):
                # Only this process's own appends: already folded and published here.
                self._event_seq = notified
                continue
            try:
                while True:
                    records = await self.store.tail(self._event_seq, limit=1000)
                    if not records:
                        break
                    await self._apply(records)
                    self._event_seq = records[-1].global_seq
            except Exception as exc:
                log.warning("cannot follow the event log: %s", exc)
                await asyncio.sleep(0.5)
                self._events_due.set()

    async def _apply(self, records: list[Any]) -> None:
        jobs: dict[str, bool] = {}
        versions: dict[str, int] = {}
        for record in records:
            ended = isinstance(record.event(), _JOB_END)
            jobs[record.stream_id] = jobs.get(record.stream_id, False) or ended
            versions[record.stream_id] = record.version
        for job_id, ended in jobs.items():
            # This process's own appends come back here too: those are already folded.
            await self.orchestrator.refresh(job_id, versions[job_id])
            if self.bus.subscribers(job_id):
                self.bus.publish(job_id, {"type": "nudge"})
                if ended:
                    self._line_seq.pop(job_id, None)
                    self.bus.close_job(job_id)
        if any(jobs.values()):
            # A job that ended may have freed a concurrency slot that jobs queued here
            # wait for (`engine.concurrency`: the slots are shared through the store).
            # After the refreshes: an ended job held here must not count as running.
            self.orchestrator.spawn(self.orchestrator.concurrency.release_all())


def _async(fn: Any) -> Any:
    async def call() -> None:
        fn()

    return call
