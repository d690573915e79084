"""The in-memory event store, for tests and `partitur run` without a database.

It keeps the same contract as the durable backends (the suite in `tests/contract/` runs
against it): appends are serialized by an `asyncio.Lock`, checked against the expected
version, and written together with their projection rows, idempotency key and outbox rows
or not at all. Event payloads go through JSON on the way in, so what a test reads back is
what a real store would give it.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Sequence

from engine.core.events import Event, RecordedEvent, encode
from engine.core.projections import JobRow, StepRow
from engine.errors import StoreUnavailable, VersionConflict
from engine.store.base import (
    AppendResult,
    DuplicateKey,
    EventStore,
    JobFilter,
    Outbox,
    OutboxObject,
    Projection,
)
from engine.store.codec import through_json
from engine.store.slots import memory_apply, memory_check
from engine.store.work import WorkItem

_TERMINAL = frozenset({"completed", "failed", "cancelled", "skipped"})


class MemoryStore(EventStore):
    """An `EventStore` held in dicts; gone when the process ends."""

    def __init__(self) -> None:
        self._open = False
        self._lock = asyncio.Lock()
        self._log: list[RecordedEvent] = []  # in global_seq order (retention leaves gaps)
        self._seq = 0  # the highest global_seq ever given
        self._streams: dict[str, list[RecordedEvent]] = {}
        self._keys: dict[tuple[str, str], str] = {}
        self._jobs: dict[str, tuple[JobRow, int]] = {}  # job row and its last_seq
        self._steps: dict[str, dict[str, StepRow]] = {}
        self._slots: dict[tuple[str, float], str] = {}
        self._work: dict[tuple[str, str, int], WorkItem] = {}
        # Outbox objects not yet taken over by the memory cloud repository.
        self.objects: dict[tuple[str, str], OutboxObject] = {}
        self.slots: dict[str, dict[str, None]] = {}  # concurrency group → holding jobs

    def _check(self) -> None:
        if not self._open:
            raise StoreUnavailable("the memory store is not open")

    async def open(self) -> None:
        self._open = True

    async def close(self) -> None:
        self._open = False

    async def append(
        self,
        stream_id: str,
        expected_version: int,
        events: Sequence[Event],
        *,
        projection: Projection | None = None,
        idempotency: tuple[str, str] | None = None,
        outbox: Outbox | None = None,
    ) -> AppendResult:
        if not events:
            raise ValueError("append needs at least one event")
        self._check()
        # Encode before taking the lock: a payload that cannot be stored writes nothing.
        encoded = [(encode(e), e.ts) for e in events]
        payloads = [(t, sv, through_json(d), ts) for (t, sv, d), ts in encoded]
        async with self._lock:
            self._check()
            if idempotency is not None and idempotency in self._keys:
                raise DuplicateKey(idempotency[0], idempotency[1], self._keys[idempotency])
            stream = self._streams.get(stream_id, [])
            if len(stream) != expected_version:
                raise VersionConflict(
                    f"stream {stream_id} is at version {len(stream)}, not {expected_version}"
                )
            if outbox is not None:
                memory_check(self.slots, outbox.take_slots)
            first = self._seq + 1
            recorded = [
                RecordedEvent(first + i, stream_id, expected_version + i + 1, t, sv, d, ts)
                for i, (t, sv, d, ts) in enumerate(payloads)
            ]
            self._log.extend(recorded)
            self._seq = recorded[-1].global_seq
            self._streams.setdefault(stream_id, []).extend(recorded)
            if projection is not None:
                self._write(projection, recorded[-1].global_seq)
            if idempotency is not None:
                self._keys[idempotency] = stream_id
            for item in outbox.work if outbox is not None else ():
                self._work.setdefault((item.job_id, item.step, item.attempt), item)
            for obj in outbox.objects if outbox is not None else ():
                self.objects.setdefault((obj.kind, obj.id), obj)
            if outbox is not None:
                memory_apply(self.slots, outbox.take_slots, outbox.free_slots)
            return AppendResult(recorded)

    def _write(self, projection: Projection, last_seq: int) -> None:
        job = projection.job
        self._jobs[job.job_id] = (job, last_seq)
        steps = self._steps.setdefault(job.job_id, {})
        for step in projection.steps:
            steps[step.step_name] = step

    async def read(self, stream_id: str, after_version: int = 0) -> list[RecordedEvent]:
        self._check()
        return list(self._streams.get(stream_id, [])[after_version:])

    async def tail(self, after_seq: int, limit: int = 1000) -> list[RecordedEvent]:
        self._check()
        start = bisect.bisect_right(self._log, after_seq, key=lambda e: e.global_seq)
        return self._log[start : start + limit]

    async def last_seq(self) -> int:
        self._check()
        return self._seq

    async def find_key(self, scope: str, key: str) -> str | None:
        self._check()
        return self._keys.get((scope, key))

    async def queued_work(self, job_id: str) -> list[WorkItem]:
        self._check()
        return [item for key, item in sorted(self._work.items()) if key[0] == job_id]

    async def list_jobs(self, where: JobFilter) -> tuple[list[JobRow], int]:
        self._check()
        rows = [
            job for job, _ in self._jobs.values()
            if (where.workspace is None or job.workspace == where.workspace)
            and (where.task_name is None or job.task_name == where.task_name)
            and (not where.status or job.status in where.status)
            and (where.source_type is None or job.source_type == where.source_type)
            and (where.since is None or job.created_at >= where.since)
            and (where.parent_job_id is None or job.parent_job_id == where.parent_job_id)
        ]
        rows.sort(key=lambda job: (job.created_at, job.job_id), reverse=True)
        return rows[where.offset : where.offset + where.limit], len(rows)

    async def get_job(self, job_id: str) -> JobRow | None:
        self._check()
        found = self._jobs.get(job_id)
        return None if found is None else found[0]

    async def get_steps(self, job_id: str) -> list[StepRow]:
        self._check()
        steps = self._steps.get(job_id, {}).values()
        return sorted(steps, key=lambda s: (s.position, s.step_name))

    async def active_job_ids(self) -> list[str]:
        self._check()
        active = [job for job, _ in self._jobs.values() if job.status not in _TERMINAL]
        active.sort(key=lambda job: (job.created_at, job.job_id))
        return [job.job_id for job in active]

    async def reset_projections(self) -> None:
        self._check()
        async with self._lock:
            self._jobs.clear()
            self._steps.clear()

    async def write_projections(self, rows: Sequence[Projection], last_seq: int) -> None:
        self._check()
        async with self._lock:
            for projection in rows:
                self._write(projection, projection.last_seq or last_seq)

    async def stream_ids(self) -> list[str]:
        self._check()
        return list(self._streams)

    async def claim_slot(self, trigger: str, fire_time: float, job_id: str,
                         claimed_at: float) -> bool:
        self._check()
        async with self._lock:
            if (trigger, fire_time) in self._slots:
                return False
            self._slots[(trigger, fire_time)] = job_id
            return True

    async def last_slot(self, trigger: str) -> float | None:
        self._check()
        times = [t for (name, t) in self._slots if name == trigger]
        return max(times) if times else None
