"""Deleting expired jobs from the store: one batch of whole jobs per transaction.

A job expires when it is terminal (completed, failed, cancelled, skipped), ended
(`completed_at`) before the cutoff, and none of its child jobs is still active. Deleting
it removes everything the store keeps under its id: its events, `jobs`/`steps` rows,
idempotency keys, work-queue rows, concurrency-slot rows, its stored objects (the cloud
job record, callback markers and deliveries, debug notes, failure email, auto-repair
record), and on PostgreSQL its log tables (`log_lines`, `log_counters`,
`log_positions`). Cron slots (`trigger_slots`) stay:
they record which fire times were claimed, not the job. On PostgreSQL the job holding the
store's latest event is kept until a newer event exists, since the next `global_seq` is
the highest one plus one. `engine.retention` runs the batches and removes the files
(JSONL logs, artifacts).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from typing import Any

from engine.core.state import JOB_TERMINAL
from engine.store.base import EventStore
from engine.store.memory import MemoryStore
from engine.store.sqlite import count_jobs, job_dimensions

TERMINAL = tuple(sorted(str(s) for s in JOB_TERMINAL))
BATCH = 500

_SQLITE_MARKS = ", ".join("?" for _ in TERMINAL)
SQLITE_EXPIRED = (
    "SELECT job_id FROM jobs AS j "
    f"WHERE j.status IN ({_SQLITE_MARKS}) AND j.completed_at IS NOT NULL "
    "AND j.completed_at < ? AND NOT EXISTS (SELECT 1 FROM jobs AS c "
    f"WHERE c.parent_job_id = j.job_id AND c.status NOT IN ({_SQLITE_MARKS})) "
    "ORDER BY j.completed_at, j.job_id LIMIT ?"
)
SQLITE_DELETES = (
    "DELETE FROM events WHERE stream_id = ?",
    "DELETE FROM idempotency_keys WHERE stream_id = ?",
    "DELETE FROM steps WHERE job_id = ?",
    "DELETE FROM work_queue WHERE job_id = ?",
    "DELETE FROM concurrency_slots WHERE job_id = ?",
    "DELETE FROM jobs WHERE job_id = ?",
)
# Stored objects of a job (`cloud_objects`): the records whose id is the job id (the cloud
# job `job`, the callback marker `job_end`, `debug_llm` notes, the `failure_email`, the
# `autorepair` record), and its callback deliveries (`data.job_id`) with their outbox rows.
_JOB_KINDS = "('job', 'job_end', 'debug_llm', 'failure_email', 'autorepair')"
JOB_OBJECT_KINDS = frozenset({"job", "job_end", "debug_llm", "failure_email", "autorepair"})
SQLITE_OBJECT_DELETES = (
    "DELETE FROM cloud_objects WHERE kind = 'outbox' AND id IN (SELECT id FROM cloud_objects "
    "WHERE kind = 'delivery' AND json_extract(data, '$.job_id') IN "
    "(SELECT value FROM json_each(?)))",
    "DELETE FROM cloud_objects WHERE kind = 'delivery' AND json_extract(data, '$.job_id') IN "
    "(SELECT value FROM json_each(?))",
    f"DELETE FROM cloud_objects WHERE kind IN {_JOB_KINDS} AND id IN "
    "(SELECT value FROM json_each(?))",
)

PG_EXPIRED = (
    "SELECT job_id FROM jobs AS j "
    "WHERE j.status = ANY($1::text[]) AND j.completed_at IS NOT NULL "
    "AND j.completed_at < $2 "
    "AND j.job_id <> COALESCE((SELECT stream_id FROM events "
    "ORDER BY global_seq DESC LIMIT 1), '') "
    "AND NOT EXISTS (SELECT 1 FROM jobs AS c "
    "WHERE c.parent_job_id = j.job_id AND c.status <> ALL($1::text[])) "
    "ORDER BY j.completed_at, j.job_id LIMIT $3"
)
PG_DELETES = (
    "DELETE FROM events WHERE stream_id = ANY($1::text[])",
    "DELETE FROM idempotency_keys WHERE stream_id = ANY($1::text[])",
    "DELETE FROM steps WHERE job_id = ANY($1::text[])",
    "DELETE FROM work_queue WHERE job_id = ANY($1::text[])",
    "DELETE FROM concurrency_slots WHERE job_id = ANY($1::text[])",
    "DELETE FROM log_lines WHERE job_id = ANY($1::text[])",
    "DELETE FROM log_counters WHERE job_id = ANY($1::text[])",
    "DELETE FROM log_positions WHERE job_id = ANY($1::text[])",
    "DELETE FROM cloud_objects WHERE kind = 'outbox' AND id IN (SELECT id FROM cloud_objects "
    "WHERE kind = 'delivery' AND (data::jsonb ->> 'job_id') = ANY($1::text[]))",
    "DELETE FROM cloud_objects WHERE kind = 'delivery' "
    "AND (data::jsonb ->> 'job_id') = ANY($1::text[])",
    f"DELETE FROM cloud_objects WHERE kind IN {_JOB_KINDS} AND id = ANY($1::text[])",
    "DELETE FROM jobs WHERE job_id = ANY($1::text[])",
)


async def delete_expired(store: EventStore, cutoff: float, *, batch: int = BATCH) -> list[str]:
    """Delete up to `batch` jobs that ended before `cutoff` (epoch seconds), in one
    transaction; their ids (empty when nothing more has expired)."""
    if isinstance(store, MemoryStore):
        return await _memory(store, cutoff, batch)
    from engine.store.sqlite import SqliteStore

    if isinstance(store, SqliteStore):
        return await _sqlite(store, cutoff, batch)
    from engine.store.postgres import PostgresStore

    if isinstance(store, PostgresStore):
        return await _postgres(store, cutoff, batch)
    raise TypeError(f"retention does not know the store {type(store).__name__}")


async def _memory(store: MemoryStore, cutoff: float, batch: int) -> list[str]:
    store._check()
    async with store._lock:
        jobs = {job_id: row for job_id, (row, _) in store._jobs.items()}
        active_parents = {row.parent_job_id for row in jobs.values()
                          if row.status not in JOB_TERMINAL and row.parent_job_id}
        expired = sorted(
            (row for row in jobs.values()
             if row.status in JOB_TERMINAL and row.completed_at is not None
             and row.completed_at < cutoff and row.job_id not in active_parents),
            key=lambda row: (row.completed_at or 0.0, row.job_id))
        ids = [row.job_id for row in expired[:batch]]
        gone = set(ids)
        if not gone:
            return []
        store._log = [e for e in store._log if e.stream_id not in gone]
        for job_id in ids:
            store._streams.pop(job_id, None)
            store._jobs.pop(job_id, None)
            store._steps.pop(job_id, None)
        store._keys = {k: v for k, v in store._keys.items() if v not in gone}
        store._work = {k: v for k, v in store._work.items() if k[0] not in gone}
        # In place: the memory cloud repositories share this dict.
        for key in [key for key, obj in store.objects.items()
                    if (key[0] in JOB_OBJECT_KINDS and key[1] in gone)
                    or obj.data.get("job_id") in gone]:
            del store.objects[key]
        for holders in store.slots.values():
            for job_id in gone & holders.keys():
                del holders[job_id]
        return ids


async def _sqlite(store: Any, cutoff: float, batch: int) -> list[str]:
    def delete(conn: sqlite3.Connection) -> list[str]:
        ids = [r[0] for r in conn.execute(SQLITE_EXPIRED, (*TERMINAL, cutoff, *TERMINAL, batch))]
        count_jobs(conn, job_dimensions(conn, ids), deleted=True)
        for sql in SQLITE_DELETES:
            conn.executemany(sql, [(job_id,) for job_id in ids])
        if ids:
            for sql in SQLITE_OBJECT_DELETES:
                conn.execute(sql, (json.dumps(ids),))
        return ids

    ids: list[str] = await store._run(store._write, delete)
    return ids


async def _postgres(store: Any, cutoff: float, batch: int) -> list[str]:
    from engine.store.postgres import BEGIN_APPEND

    async def delete(conn: Any) -> list[str]:
        ids = [r[0] for r in await conn.fetch(PG_EXPIRED, list(TERMINAL), cutoff, batch)]
        if ids:
            for sql in PG_DELETES:
                await conn.execute(sql, ids)
        return ids

    # Under the append lock: no append to these jobs, and no new event, meanwhile.
    ids: list[str] = await store._write(delete, what="delete expired jobs", begin=BEGIN_APPEND)
    return ids


async def delete_all_expired(store: EventStore, cutoff: float, *,
                             batch: int = BATCH) -> list[str]:
    """`delete_expired` batch after batch until nothing more has expired."""
    deleted: list[str] = []
    while True:
        ids = await delete_expired(store, cutoff, batch=batch)
        deleted.extend(ids)
        if len(ids) < batch:
            return deleted
        await asyncio.sleep(0)
