"""The path of a log line from a runner to the store and the live bus (DESIGN §7).

`JobLogWriter.line` is synchronous and cheap: it redacts the text, appends it to the
store and publishes the stored line (with its `seq`) to the bus, in the order of the
calls. With a store that can append synchronously (`JsonlLogStore.append_sync`, a local
file write) that is all done inline; with another store, lines are queued and written
in batches by one background task, still in order (`flush` waits for them). On such a
store the server's notes (`store_notes`) wait up to `NOTES_DELAY` for company: they go
out with the next line of a step, the next notes, or on their own once the delay is up
(at once when asked `promptly`, as for a job's end), so a step's end and its notes cost
no write of their own most of the time.
`JobLogWriter.batch` stores a numbered batch of a series (a remote worker's lines under
one lease) through `LogStore.append_once`, so a batch sent twice is stored once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from engine.logs.bus import LiveBus
from engine.logs.model import SERVER_STEP, STDOUT, LogLine
from engine.logs.redact import Redactor
from engine.logs.store import LogStore

logger = logging.getLogger(__name__)

NOTES_DELAY = 0.02
"""Seconds the server's notes may wait to be written with other lines (asynchronous
stores only)."""


@runtime_checkable
class SyncAppend(Protocol):
    """A store that can append without awaiting (a local file)."""

    def append_sync(self, job_id: str, lines: Sequence[LogLine]) -> list[LogLine]: ...


class StepLog:
    """A `LogSink` for one step: `line(stream, text)` goes to the job's writer."""

    __slots__ = ("_writer", "step")

    def __init__(self, writer: JobLogWriter, step: str) -> None:
        self._writer = writer
        self.step = step

    def line(self, stream: str, text: str) -> None:
        self._writer.line(self.step, stream, text)


class JobLogWriter:
    """Writes one job's log lines: redact → store → bus."""

    def __init__(
        self,
        job_id: str,
        store: LogStore,
        bus: LiveBus | None = None,
        redactor: Redactor | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.job_id = job_id
        self.store = store
        self.bus = bus
        self.redactor = redactor or Redactor()
        self._clock = clock
        self._sync_append = store.append_sync if isinstance(store, SyncAppend) else None
        self._pending: list[LogLine] = []
        self._flusher: asyncio.Task[None] | None = None
        self._later: asyncio.TimerHandle | None = None  # the delayed write of notes

    def line(self, step: str, stream: str, text: str, ts: float | None = None) -> None:
        """Record one line of `step`'s `stream` (never raises for a store failure)."""
        entry = LogLine(
            ts=self._clock() if ts is None else ts,
            stream=stream,
            step=step,
            line=self.redactor.redact(text),
        )
        if self._sync_append is None:
            self._pending.append(entry)
            self._write_pending()
            return
        try:
            stored = self._sync_append(self.job_id, (entry,))
        except OSError:
            logger.exception("cannot store a log line of job %s", self.job_id)
            stored = [entry]
        if self.bus is not None:
            self.bus.publish(self.job_id, stored[0])

    def store_notes(self, entries: Sequence[tuple[str, float]], *,
                    promptly: bool = False) -> list[LogLine] | None:
        """Record server notes `(text, ts)` (step `_server`, stream `stdout`) with one
        store write and return them stored, for the caller to publish in its order;
        None when the store is asynchronous (they are queued, written within
        `NOTES_DELAY` or at once if `promptly`, and published once stored).
        """
        lines = [LogLine(ts=ts, stream=STDOUT, step=SERVER_STEP,
                         line=self.redactor.redact(text)) for text, ts in entries]
        if self._sync_append is None:
            if lines:
                self._pending.extend(lines)
                if promptly:
                    self._write_pending()
                elif self._later is None and (self._flusher is None or self._flusher.done()):
                    self._later = asyncio.get_running_loop().call_later(
                        NOTES_DELAY, self._write_pending)
            return None
        if not lines:
            return []
        try:
            return self._sync_append(self.job_id, lines)
        except OSError:
            logger.exception("cannot store a log line of job %s", self.job_id)
            return lines

    async def batch(
        self, step: str, key: str, offset: int,
        entries: Sequence[tuple[str, str, float | None]],
    ) -> int:
        """Store `(stream, text, ts)` entries `offset`… of the series `key` at most once
        (raises for a store failure: the sender tries again); the series' next index."""
        await self.flush(everything=True)
        lines = [LogLine(ts=self._clock() if ts is None else ts, stream=stream, step=step,
                         line=self.redactor.redact(text)) for stream, text, ts in entries]
        stored, end = await self.store.append_once(self.job_id, key, offset, lines)
        if self.bus is not None:
            for entry in stored:
                self.bus.publish(self.job_id, entry)
        return end

    def note(self, text: str, step: str = SERVER_STEP) -> None:
        """Record a note of the server's own (step `_server`, stream `stdout`)."""
        self.line(step, STDOUT, text)

    def for_step(self, step: str) -> StepLog:
        """A `LogSink` writing lines of `step`."""
        return StepLog(self, step)

    def _write_pending(self) -> None:
        """Have the queued lines written now (by the running flusher, or a new one)."""
        if self._later is not None:
            self._later.cancel()
            self._later = None
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    async def _flush_loop(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                stored = await self.store.append(self.job_id, batch)
            except Exception:
                logger.exception("cannot store %d log lines of job %s", len(batch), self.job_id)
                stored = batch
            if self.bus is not None:
                for entry in stored:
                    self.bus.publish(self.job_id, entry)

    def in_flight(self) -> asyncio.Task[None] | None:
        """The write of the step lines recorded so far while it runs (None when they are
        all stored): what an append that must follow them waits for."""
        flusher = self._flusher
        return flusher if flusher is not None and not flusher.done() else None

    async def flush(self, *, everything: bool = False) -> None:
        """Wait until every line of a step recorded so far is stored and published;
        with `everything`, the server's notes waiting for company too."""
        if everything and self._pending:
            self._write_pending()
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)
