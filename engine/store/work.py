"""The remote-worker tables: registered workers and the ready-step queue with leases.

`WorkStore` is one async interface over the event store's own database (SQLite or
PostgreSQL; `work_store(store)` picks the backend). A queue row is one attempt of one
ready step; claiming it stamps the worker, a fresh lease token and `renewed_at`; a
heartbeat renews it; `finish` closes it. Closed rows stay as the worker's history.

Claims are FIFO by ready time within priority (lower priority numbers first), ties by
job id and step, and take only rows whose tags are a subset of the worker's. With
`aging` (seconds, `scheduling.aging`) the order is by *effective* priority instead: a
row gains one level per `aging` seconds since it became ready, never better than 1
(`engine.priority.effective`, computed in SQL), so a flood of high-priority rows cannot
starve older low-priority ones. On
PostgreSQL the claim is one `UPDATE … WHERE … = (SELECT … FOR UPDATE SKIP LOCKED)`, so
concurrent claimers never wait for each other nor take the same row; an enqueue sends
`NOTIFY partitur_work` in its transaction so idle claimers on every replica wake.

The normal way rows get here is the event store's outbox: `EventStore.append(…,
outbox=Outbox(work=…))` inserts them with `SQ_ENQUEUE`/`PG_ENQUEUE_ONE` in the same
transaction as the `StepReady` events. `enqueue` is the fallback (the lease sweeper's
re-queue, steps handed out again after a load or a resume).
"""

from __future__ import annotations

import json
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.store.base import EventStore

WORK_CHANNEL = "partitur_work"


@dataclass(frozen=True, slots=True)
class WorkItem:
    """A ready step attempt waiting for a remote worker."""

    job_id: str
    step: str
    attempt: int
    priority: int
    ready_at: float
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Held:
    """A queue row that a worker claimed (open while `finished_at` is None)."""

    job_id: str
    step: str
    attempt: int
    worker_id: str
    lease: str
    claimed_at: float
    renewed_at: float
    finished_at: float | None = None
    outcome: str | None = None


@dataclass(frozen=True, slots=True)
class WorkerRow:
    """A registered remote worker."""

    worker_id: str
    name: str
    tags: tuple[str, ...]
    concurrency: int
    registered_at: float
    last_heartbeat: float


class WorkStore(ABC):
    """Workers, the ready-step queue and leases."""

    @abstractmethod
    async def enqueue(self, items: Sequence[WorkItem]) -> int:
        """Queue step attempts; how many were new. An attempt already queued is left
        alone, unless its claim was dropped (`finish(…, "dropped", …)`, e.g. its job was
        paused): that row is opened again."""

    @abstractmethod
    async def claim(self, worker_id: str, tags: Sequence[str], lease: str,
                    now: float, aging: float | None = None) -> Held | None:
        """Take the first open row whose tags ⊆ `tags`, under `lease`; None if none fits.

        With `aging`, rows are ordered by effective priority at `now` (see above)."""

    async def claim_many(self, worker_id: str, tags: Sequence[str], leases: Sequence[str],
                         now: float, aging: float | None = None) -> list[Held]:
        """Take up to `len(leases)` rows as `claim` would, one lease token each, in
        claim order; fewer (or none) when fewer fit."""
        taken: list[Held] = []
        for lease in leases:
            held = await self.claim(worker_id, tags, lease, now, aging)
            if held is None:
                break
            taken.append(held)
        return taken

    @abstractmethod
    async def release(self, lease: str) -> None:
        """Put a claimed row back in the queue (its claim was never recorded)."""

    @abstractmethod
    async def held(self, lease: str) -> Held | None:
        """The row claimed under `lease` (open or finished), or None."""

    @abstractmethod
    async def fence(self, lease: str) -> tuple[Held, int | None] | None:
        """The row claimed under `lease` and the version its job's projection row shows
        (None without that row), read together: a caller holding the job's state at that
        version knows it is current without reading the stream."""

    @abstractmethod
    async def renew(self, lease: str, now: float) -> bool:
        """Renew an open lease; False when it is unknown or finished."""

    @abstractmethod
    async def finish(self, lease: str, outcome: str, now: float) -> bool:
        """Close an open lease with `outcome`; False when it was not open."""

    @abstractmethod
    async def finish_attempt(self, job_id: str, step: str, attempt: int, outcome: str,
                             now: float) -> None:
        """Close a row by its key, claimed or not (its step ended some other way)."""

    @abstractmethod
    async def expired(self, before: float) -> list[Held]:
        """Open leases last renewed before `before`."""

    @abstractmethod
    async def open_rows(self) -> list[WorkItem]:
        """Unclaimed open rows, in claim order."""

    @abstractmethod
    async def unqueued_ready(self) -> list[tuple[str, str, int]]:
        """(job, step, attempt) of steps the projection shows ready with no queue row."""

    @abstractmethod
    async def register(self, worker: WorkerRow) -> None:
        """Insert or replace a worker."""

    @abstractmethod
    async def touch(self, worker_id: str, now: float) -> bool:
        """Record a heartbeat of the worker; False when it is not registered."""

    @abstractmethod
    async def workers(self, limit: int, offset: int) -> tuple[list[WorkerRow], int]:
        """A page of workers (newest registration first) and the total."""

    @abstractmethod
    async def worker(self, worker_id: str) -> WorkerRow | None:
        """One worker, or None."""

    @abstractmethod
    async def recent(self, worker_id: str, limit: int = 50) -> list[Held]:
        """The worker's latest claims, newest first."""


# --- SQL shared by both backends (positional parameters differ) ------------------------

_HELD_COLUMNS = ("job_id, step, attempt, worker_id, lease, claimed_at, renewed_at, "
                 "finished_at, outcome")


def _held(r: Sequence[Any]) -> Held:
    return Held(r[0], r[1], int(r[2]), r[3], r[4], float(r[5]), float(r[6]),
                None if r[7] is None else float(r[7]), r[8])


# --- SQLite -------------------------------------------------------------------------

# A row whose claim was dropped (its job was paused then) is opened again when the step
# is handed out again; any other existing row of the attempt is left alone.
_REOPEN_DROPPED = (
    " ON CONFLICT (job_id, step, attempt) DO UPDATE SET worker_id = NULL, lease = NULL, "
    "claimed_at = NULL, renewed_at = NULL, finished_at = NULL, outcome = NULL "
    "WHERE work_queue.outcome = 'dropped'"
)
SQ_ENQUEUE = (
    "INSERT INTO work_queue (job_id, step, attempt, priority, ready_at, tags) "
    "VALUES (?, ?, ?, ?, ?, ?)" + _REOPEN_DROPPED
)
SQ_CANDIDATES = (
    "SELECT job_id, step, attempt, tags FROM work_queue "
    "WHERE lease IS NULL AND finished_at IS NULL ORDER BY priority, ready_at, job_id, step"
)
# Effective priority with aging (parameters: now, aging): one level per `aging` seconds
# waited, never better than 1. CAST truncates, which is floor for the non-negative wait.
SQ_CANDIDATES_AGED = (
    "SELECT job_id, step, attempt, tags FROM work_queue "
    "WHERE lease IS NULL AND finished_at IS NULL ORDER BY "
    "MAX(1, priority - CAST(MAX(0.0, ? - ready_at) / ? AS INTEGER)), ready_at, job_id, step"
)
SQ_TAKE = (
    "UPDATE work_queue SET worker_id = ?, lease = ?, claimed_at = ?, renewed_at = ? "
    "WHERE job_id = ? AND step = ? AND attempt = ? AND lease IS NULL"
)
SQ_RELEASE = (
    "UPDATE work_queue SET worker_id = NULL, lease = NULL, claimed_at = NULL, "
    "renewed_at = NULL WHERE lease = ? AND finished_at IS NULL"
)
SQ_HELD = f"SELECT {_HELD_COLUMNS} FROM work_queue WHERE lease = ?"
# The lease's row and its job's version in one read (`WorkStore.fence`).
SQ_FENCE = (
    "SELECT q.job_id, q.step, q.attempt, q.worker_id, q.lease, q.claimed_at, q.renewed_at, "
    "q.finished_at, q.outcome, j.version FROM work_queue q "
    "LEFT JOIN jobs j ON j.job_id = q.job_id WHERE q.lease = ?"
)
SQ_RENEW = "UPDATE work_queue SET renewed_at = ? WHERE lease = ? AND finished_at IS NULL"
SQ_FINISH = ("UPDATE work_queue SET finished_at = ?, outcome = ? "
             "WHERE lease = ? AND finished_at IS NULL")
SQ_FINISH_ATTEMPT = (
    "UPDATE work_queue SET finished_at = ?, outcome = ? "
    "WHERE job_id = ? AND step = ? AND attempt = ? AND finished_at IS NULL"
)
SQ_EXPIRED = (f"SELECT {_HELD_COLUMNS} FROM work_queue "
              "WHERE lease IS NOT NULL AND finished_at IS NULL AND renewed_at < ? "
              "ORDER BY renewed_at")
SQ_OPEN = (
    "SELECT job_id, step, attempt, priority, ready_at, tags FROM work_queue "
    "WHERE lease IS NULL AND finished_at IS NULL ORDER BY priority, ready_at, job_id, step"
)
SQ_QUEUED = (
    "SELECT job_id, step, attempt, priority, ready_at, tags FROM work_queue "
    "WHERE job_id = ? ORDER BY step, attempt"
)
UNQUEUED_READY = (
    "SELECT s.job_id, s.step_name, s.attempt FROM steps s WHERE s.status = 'ready' "
    "AND NOT EXISTS (SELECT 1 FROM work_queue q WHERE q.job_id = s.job_id "
    "AND q.step = s.step_name AND q.attempt = s.attempt)"
)
SQ_REGISTER = (
    "INSERT INTO workers (worker_id, name, tags, concurrency, registered_at, last_heartbeat) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (worker_id) DO UPDATE SET name = excluded.name, "
    "tags = excluded.tags, concurrency = excluded.concurrency, "
    "last_heartbeat = excluded.last_heartbeat"
)
SQ_TOUCH = "UPDATE workers SET last_heartbeat = ? WHERE worker_id = ?"
_WORKER_COLUMNS = "worker_id, name, tags, concurrency, registered_at, last_heartbeat"
SQ_WORKERS = (f"SELECT {_WORKER_COLUMNS} FROM workers "
              "ORDER BY registered_at DESC, worker_id LIMIT ? OFFSET ?")
COUNT_WORKERS = "SELECT COUNT(*) FROM workers"
SQ_WORKER = f"SELECT {_WORKER_COLUMNS} FROM workers WHERE worker_id = ?"
SQ_RECENT = (f"SELECT {_HELD_COLUMNS} FROM work_queue WHERE worker_id = ? "
             "ORDER BY claimed_at DESC, lease LIMIT ?")


def _fenced(rows: Sequence[Sequence[Any]]) -> tuple[Held, int | None] | None:
    if not rows:
        return None
    r = rows[0]
    return _held(r), None if r[9] is None else int(r[9])


def sq_item(r: Sequence[Any]) -> WorkItem:
    """A queue row read from SQLite (tags stored as JSON text)."""
    return WorkItem(r[0], r[1], int(r[2]), int(r[3]), float(r[4]), tuple(json.loads(r[5])))


def sq_item_params(i: WorkItem) -> tuple[Any, ...]:
    """The parameters of `SQ_ENQUEUE` for one item."""
    return (i.job_id, i.step, i.attempt, i.priority, i.ready_at, json.dumps(list(i.tags)))


def pg_item(r: Sequence[Any]) -> WorkItem:
    """A queue row read from PostgreSQL."""
    return WorkItem(r[0], r[1], int(r[2]), int(r[3]), float(r[4]), tuple(r[5]))


def pg_item_params(i: WorkItem) -> tuple[Any, ...]:
    """The parameters of `PG_ENQUEUE_ONE` for one item."""
    return (i.job_id, i.step, i.attempt, i.priority, i.ready_at, list(i.tags))


def _sq_worker(r: Sequence[Any]) -> WorkerRow:
    return WorkerRow(r[0], r[1], tuple(json.loads(r[2])), int(r[3]), float(r[4]), float(r[5]))


class SqliteWorkStore(WorkStore):
    """The work tables in the SQLite file, on the event store's connection and thread."""

    def __init__(self, store: Any) -> None:
        self.store = store  # a SqliteStore (not imported: it would be a cycle)

    async def _write(self, fn: Any, *args: Any) -> Any:
        return await self.store._run(lambda: self.store._write(lambda c: fn(c, *args)))

    async def _read(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        def run() -> list[Any]:
            return list(self.store.conn.execute(sql, params).fetchall())

        result: list[Any] = await self.store._run(run)
        return result

    async def enqueue(self, items: Sequence[WorkItem]) -> int:
        def write(conn: sqlite3.Connection) -> int:
            added = 0
            for i in items:
                added += conn.execute(SQ_ENQUEUE, sq_item_params(i)).rowcount
            return added

        return int(await self._write(write))

    async def claim(self, worker_id: str, tags: Sequence[str], lease: str,
                    now: float, aging: float | None = None) -> Held | None:
        have = set(tags)
        sql, params = ((SQ_CANDIDATES_AGED, (now, aging)) if aging and aging > 0
                       else (SQ_CANDIDATES, ()))

        def write(conn: sqlite3.Connection) -> Held | None:
            for job_id, step, attempt, row_tags in conn.execute(sql, params):
                if set(json.loads(row_tags)) <= have:
                    conn.execute(SQ_TAKE, (worker_id, lease, now, now, job_id, step, attempt))
                    return Held(job_id, step, int(attempt), worker_id, lease, now, now)
            return None

        found: Held | None = await self._write(write)
        return found

    async def release(self, lease: str) -> None:
        await self._write(lambda c: c.execute(SQ_RELEASE, (lease,)))

    async def held(self, lease: str) -> Held | None:
        rows = await self._read(SQ_HELD, (lease,))
        return _held(rows[0]) if rows else None

    async def fence(self, lease: str) -> tuple[Held, int | None] | None:
        return _fenced(await self._read(SQ_FENCE, (lease,)))

    async def renew(self, lease: str, now: float) -> bool:
        return bool(await self._write(lambda c: c.execute(SQ_RENEW, (now, lease)).rowcount))

    async def finish(self, lease: str, outcome: str, now: float) -> bool:
        return bool(await self._write(
            lambda c: c.execute(SQ_FINISH, (now, outcome, lease)).rowcount))

    async def finish_attempt(self, job_id: str, step: str, attempt: int, outcome: str,
                             now: float) -> None:
        await self._write(lambda c: c.execute(SQ_FINISH_ATTEMPT,
                                              (now, outcome, job_id, step, attempt)))

    async def expired(self, before: float) -> list[Held]:
        return [_held(r) for r in await self._read(SQ_EXPIRED, (before,))]

    async def open_rows(self) -> list[WorkItem]:
        return [sq_item(r) for r in await self._read(SQ_OPEN, ())]

    async def unqueued_ready(self) -> list[tuple[str, str, int]]:
        return [(r[0], r[1], int(r[2])) for r in await self._read(UNQUEUED_READY, ())]

    async def register(self, worker: WorkerRow) -> None:
        w = worker
        await self._write(lambda c: c.execute(SQ_REGISTER, (
            w.worker_id, w.name, json.dumps(list(w.tags)), w.concurrency, w.registered_at,
            w.last_heartbeat)))

    async def touch(self, worker_id: str, now: float) -> bool:
        return bool(await self._write(lambda c: c.execute(SQ_TOUCH, (now, worker_id)).rowcount))

    async def workers(self, limit: int, offset: int) -> tuple[list[WorkerRow], int]:
        rows = await self._read(SQ_WORKERS, (limit, offset))
        total = await self._read(COUNT_WORKERS, ())
        return [_sq_worker(r) for r in rows], int(total[0][0])

    async def worker(self, worker_id: str) -> WorkerRow | None:
        rows = await self._read(SQ_WORKER, (worker_id,))
        return _sq_worker(rows[0]) if rows else None

    async def recent(self, worker_id: str, limit: int = 50) -> list[Held]:
        return [_held(r) for r in await self._read(SQ_RECENT, (worker_id, limit))]


# --- PostgreSQL ---------------------------------------------------------------------

PG_ENQUEUE_ONE = (
    "INSERT INTO work_queue (job_id, step, attempt, priority, ready_at, tags) "
    "VALUES ($1, $2, $3, $4, $5, $6::text[])" + _REOPEN_DROPPED
)
PG_NOTIFY = f"SELECT pg_notify('{WORK_CHANNEL}', '')"
PG_QUEUED = SQ_QUEUED.replace("?", "$1")
PG_CLAIM = f"""
UPDATE work_queue SET worker_id = $1, lease = $2, claimed_at = $3, renewed_at = $3
WHERE (job_id, step, attempt) = (
    SELECT job_id, step, attempt FROM work_queue
    WHERE lease IS NULL AND finished_at IS NULL AND tags <@ $4::text[]
    ORDER BY priority, ready_at, job_id, step
    LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING {_HELD_COLUMNS}"""
# The same with aging ($5: seconds per level): ordered by effective priority at $3.
PG_CLAIM_AGED = PG_CLAIM.replace(
    "ORDER BY priority,",
    "ORDER BY GREATEST(1, priority - floor(GREATEST(0, $3 - ready_at) / $5::float8)),")
PG_RELEASE = SQ_RELEASE.replace("?", "$1")
PG_HELD = SQ_HELD.replace("?", "$1")
PG_FENCE = SQ_FENCE.replace("?", "$1")
# Up to N rows at once ($5): the rows picked in claim order, paired with the lease
# tokens ($2) by position.
PG_CLAIM_MANY = f"""
WITH picked AS (
    SELECT job_id, step, attempt, row_number() OVER () AS n FROM (
        SELECT job_id, step, attempt FROM work_queue
        WHERE lease IS NULL AND finished_at IS NULL AND tags <@ $4::text[]
        ORDER BY priority, ready_at, job_id, step
        LIMIT $5 FOR UPDATE SKIP LOCKED) AS candidates),
tokens AS (SELECT token, n FROM unnest($2::text[]) WITH ORDINALITY AS t(token, n))
UPDATE work_queue q SET worker_id = $1, lease = tokens.token, claimed_at = $3,
    renewed_at = $3
FROM picked JOIN tokens USING (n)
WHERE (q.job_id, q.step, q.attempt) = (picked.job_id, picked.step, picked.attempt)
RETURNING {", ".join("q." + c for c in _HELD_COLUMNS.split(", "))}, picked.n"""
PG_CLAIM_MANY_AGED = PG_CLAIM_MANY.replace(
    "ORDER BY priority,",
    "ORDER BY GREATEST(1, priority - floor(GREATEST(0, $3 - ready_at) / $6::float8)),")
PG_RENEW = "UPDATE work_queue SET renewed_at = $1 WHERE lease = $2 AND finished_at IS NULL"
PG_FINISH = ("UPDATE work_queue SET finished_at = $1, outcome = $2 "
             "WHERE lease = $3 AND finished_at IS NULL")
PG_FINISH_ATTEMPT = (
    "UPDATE work_queue SET finished_at = $1, outcome = $2 "
    "WHERE job_id = $3 AND step = $4 AND attempt = $5 AND finished_at IS NULL"
)
PG_EXPIRED = SQ_EXPIRED.replace("?", "$1")
PG_REGISTER = (
    "INSERT INTO workers (worker_id, name, tags, concurrency, registered_at, last_heartbeat) "
    "VALUES ($1, $2, $3::text[], $4, $5, $6) ON CONFLICT (worker_id) DO UPDATE SET "
    "name = excluded.name, tags = excluded.tags, concurrency = excluded.concurrency, "
    "last_heartbeat = excluded.last_heartbeat"
)
PG_TOUCH = "UPDATE workers SET last_heartbeat = $1 WHERE worker_id = $2"
PG_WORKERS = (f"SELECT {_WORKER_COLUMNS} FROM workers "
              "ORDER BY registered_at DESC, worker_id LIMIT $1 OFFSET $2")
PG_WORKER = f"SELECT {_WORKER_COLUMNS} FROM workers WHERE worker_id = $1"
PG_RECENT = (f"SELECT {_HELD_COLUMNS} FROM work_queue WHERE worker_id = $1 "
             "ORDER BY claimed_at DESC, lease LIMIT $2")


def _pg_worker(r: Sequence[Any]) -> WorkerRow:
    return WorkerRow(r[0], r[1], tuple(r[2]), int(r[3]), float(r[4]), float(r[5]))


def _count(status: str) -> int:
    """Rows affected, from an asyncpg status string such as `UPDATE 1`."""
    try:
        return int(status.rsplit(" ", 1)[-1])
    except (ValueError, IndexError):
        return 0


class PostgresWorkStore(WorkStore):
    """The work tables in PostgreSQL, on the event store's pool."""

    def __init__(self, store: Any) -> None:
        self.store = store  # a PostgresStore

    async def _exec(self, sql: str, *args: Any, retry: bool = True) -> int:
        """One statement on its own (autocommit: one round trip, no BEGIN/COMMIT).
        `retry`: run it again on a lost connection (for statements that may run twice)."""
        async def run(conn: Any) -> int:
            return _count(await conn.execute(sql, *args))

        result: int = await self.store._run(run, retry=retry, what="work queue")
        return result

    async def enqueue(self, items: Sequence[WorkItem]) -> int:
        async def write(conn: Any) -> int:
            added = 0
            for i in items:
                added += _count(await conn.execute(PG_ENQUEUE_ONE, *pg_item_params(i)))
            if added:
                await conn.execute(PG_NOTIFY)
            return added

        result: int = await self.store._write(write, what="enqueue")
        return result

    async def claim(self, worker_id: str, tags: Sequence[str], lease: str,
                    now: float, aging: float | None = None) -> Held | None:
        aged = (aging,) if aging and aging > 0 else ()
        sql = PG_CLAIM_AGED if aged else PG_CLAIM

        async def write(conn: Any) -> Held | None:
            row = await conn.fetchrow(sql, worker_id, lease, now, list(tags), *aged)
            return None if row is None else _held(row)

        result: Held | None = await self.store._run(write, retry=False, what="claim")
        return result

    async def claim_many(self, worker_id: str, tags: Sequence[str], leases: Sequence[str],
                         now: float, aging: float | None = None) -> list[Held]:
        if len(leases) <= 1:
            one = await self.claim(worker_id, tags, leases[0], now, aging) if leases else None
            return [] if one is None else [one]
        aged = (aging,) if aging and aging > 0 else ()
        sql = PG_CLAIM_MANY_AGED if aged else PG_CLAIM_MANY

        async def write(conn: Any) -> list[Any]:
            rows: list[Any] = await conn.fetch(sql, worker_id, list(leases), now, list(tags),
                                               len(leases), *aged)
            return rows

        rows = await self.store._run(write, retry=False, what="claim")
        return [_held(r) for r in sorted(rows, key=lambda r: int(r[9]))]

    async def release(self, lease: str) -> None:
        async def write(conn: Any) -> None:
            if _count(await conn.execute(PG_RELEASE, lease)):
                await conn.execute(PG_NOTIFY)

        await self.store._write(write, what="release")

    async def held(self, lease: str) -> Held | None:
        rows = await self.store._fetch(PG_HELD, lease)
        return _held(rows[0]) if rows else None

    async def fence(self, lease: str) -> tuple[Held, int | None] | None:
        return _fenced(await self.store._fetch(PG_FENCE, lease))

    async def renew(self, lease: str, now: float) -> bool:
        return bool(await self._exec(PG_RENEW, now, lease))

    async def finish(self, lease: str, outcome: str, now: float) -> bool:
        return bool(await self._exec(PG_FINISH, now, outcome, lease))

    async def finish_attempt(self, job_id: str, step: str, attempt: int, outcome: str,
                             now: float) -> None:
        await self._exec(PG_FINISH_ATTEMPT, now, outcome, job_id, step, attempt)

    async def expired(self, before: float) -> list[Held]:
        return [_held(r) for r in await self.store._fetch(PG_EXPIRED, before)]

    async def open_rows(self) -> list[WorkItem]:
        return [pg_item(r) for r in await self.store._fetch(SQ_OPEN)]

    async def unqueued_ready(self) -> list[tuple[str, str, int]]:
        return [(r[0], r[1], int(r[2])) for r in await self.store._fetch(UNQUEUED_READY)]

    async def register(self, worker: WorkerRow) -> None:
        w = worker
        await self._exec(PG_REGISTER, w.worker_id, w.name, list(w.tags), w.concurrency,
                         w.registered_at, w.last_heartbeat)

    async def touch(self, worker_id: str, now: float) -> bool:
        return bool(await self._exec(PG_TOUCH, now, worker_id))

    async def workers(self, limit: int, offset: int) -> tuple[list[WorkerRow], int]:
        rows = await self.store._fetch(PG_WORKERS, limit, offset)
        total = await self.store._scalar(COUNT_WORKERS)
        return [_pg_worker(r) for r in rows], int(total)

    async def worker(self, worker_id: str) -> WorkerRow | None:
        rows = await self.store._fetch(PG_WORKER, worker_id)
        return _pg_worker(rows[0]) if rows else None

    async def recent(self, worker_id: str, limit: int = 50) -> list[Held]:
        return [_held(r) for r in await self.store._fetch(PG_RECENT, worker_id, limit)]


def work_store(store: EventStore) -> WorkStore | None:
    """The work store sharing `store`'s database; None for the memory store."""
    from engine.store.postgres import PostgresStore
    from engine.store.sqlite import SqliteStore

    if isinstance(store, PostgresStore):
        return PostgresWorkStore(store)
    if isinstance(store, SqliteStore):
        return SqliteWorkStore(store)
    return None
