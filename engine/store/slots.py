"""Concurrency slots kept in the store: which jobs hold a slot of which group.

A job of a task with a `concurrency` limit holds one slot of its group (workspace, task,
rendered key: `engine.concurrency`) from the append that records `JobStarted` to the one
that records its end. Both are part of those appends (`Outbox.take_slots` /
`Outbox.free_slots`), in the same transaction as the events, so the table never
disagrees with the log and every replica on one database counts the same slots:

- taking a slot counts the group's holders (other than the job) first; at `limit` the
  append raises `SlotTaken` and writes nothing (PostgreSQL appends run under one
  advisory lock, SQLite has a single writer, the memory store one lock, so two appends
  never both take the last slot);
- freeing deletes the job's rows.

`restore` re-derives the table from the job projection after a start: rows of jobs that
are no longer running go, and running jobs of limited tasks get their row back (a
database that predates the table, or a rebuild).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from engine.errors import Conflict


@dataclass(frozen=True, slots=True)
class SlotClaim:
    """Job `job_id` takes a slot of `group`, of which there are `limit`."""

    group: str
    job_id: str
    limit: int


class SlotTaken(Conflict):
    """Every slot of the group is held (possibly by a job of another replica)."""

    code = "concurrency_slot_taken"

    def __init__(self, group: str, holders: Sequence[str]) -> None:
        super().__init__(f"every concurrency slot of {group} is held "
                         f"(by job {', '.join(holders)})")
        self.group = group
        self.holders = tuple(holders)


def group_key(workspace: str, task: str, key: str) -> str:
    """How a group is named in the table (unambiguous whatever the key contains)."""
    return json.dumps([workspace, task, key], separators=(",", ":"))


_HOLDING = ("running", "paused")  # job statuses (projection) that hold a slot

# --- SQL (both backends; `?` becomes `$n` on PostgreSQL) -------------------------------

HOLDERS = "SELECT job_id FROM concurrency_slots WHERE grp = ? AND job_id <> ? ORDER BY job_id"
TAKE = "INSERT INTO concurrency_slots (grp, job_id) VALUES (?, ?) ON CONFLICT DO NOTHING"
FREE = "DELETE FROM concurrency_slots WHERE job_id = ?"
HELD_BY = "SELECT job_id FROM concurrency_slots WHERE grp = ? ORDER BY job_id"
PRUNE = ("DELETE FROM concurrency_slots WHERE NOT EXISTS (SELECT 1 FROM jobs j "
         "WHERE j.job_id = concurrency_slots.job_id AND j.status IN ('running', 'paused'))")
RESTORE = ("INSERT INTO concurrency_slots (grp, job_id) SELECT ?, job_id FROM jobs "
           "WHERE job_id = ? AND status IN ('running', 'paused') ON CONFLICT DO NOTHING")


def _pg(sql: str) -> str:
    n = 0
    out = []
    for ch in sql:
        if ch == "?":
            n += 1
            out.append(f"${n}")
        else:
            out.append(ch)
    return "".join(out)


def sqlite_apply(conn: sqlite3.Connection, take: Iterable[SlotClaim],
                 free: Iterable[str]) -> None:
    """Take and free slots inside an append's transaction (SQLite)."""
    for claim in take:
        holders = [r[0] for r in conn.execute(HOLDERS, (claim.group, claim.job_id))]
        if len(holders) >= claim.limit:
            raise SlotTaken(claim.group, holders)
        conn.execute(TAKE, (claim.group, claim.job_id))
    for job_id in free:
        conn.execute(FREE, (job_id,))


async def pg_apply(conn: Any, take: Iterable[SlotClaim], free: Iterable[str]) -> None:
    """Take and free slots inside an append's transaction (PostgreSQL, under the
    append lock)."""
    for claim in take:
        holders = [r[0] for r in await conn.fetch(_pg(HOLDERS), claim.group, claim.job_id)]
        if len(holders) >= claim.limit:
            raise SlotTaken(claim.group, holders)
        await conn.execute(_pg(TAKE), claim.group, claim.job_id)
    for job_id in free:
        await conn.execute(_pg(FREE), job_id)


def memory_check(slots: dict[str, dict[str, None]], take: Iterable[SlotClaim]) -> None:
    """Raise `SlotTaken` before the memory store writes anything."""
    for claim in take:
        holders = [j for j in slots.get(claim.group, {}) if j != claim.job_id]
        if len(holders) >= claim.limit:
            raise SlotTaken(claim.group, sorted(holders))


def memory_apply(slots: dict[str, dict[str, None]], take: Iterable[SlotClaim],
                 free: Iterable[str]) -> None:
    for claim in take:
        slots.setdefault(claim.group, {})[claim.job_id] = None
    for job_id in free:
        for holders in slots.values():
            holders.pop(job_id, None)


# --- reads and the restore, per backend ------------------------------------------------


async def held_by(store: Any, group: str) -> list[str]:
    """The jobs holding a slot of `group`, on whichever replica they run."""
    from engine.store.postgres import PostgresStore
    from engine.store.sqlite import SqliteStore

    if isinstance(store, PostgresStore):
        return [r[0] for r in await store._fetch(_pg(HELD_BY), group)]
    if isinstance(store, SqliteStore):
        rows = await store._run(lambda: store.conn.execute(HELD_BY, (group,)).fetchall())
        return [r[0] for r in rows]
    return sorted(getattr(store, "slots", {}).get(group, {}))


async def restore(store: Any, running: Sequence[tuple[str, str]]) -> None:
    """Drop the rows of jobs that do not run any more and give `running` ((group, job)
    of the running jobs of limited tasks) their rows, from the job projection."""
    from engine.store.postgres import PostgresStore
    from engine.store.sqlite import SqliteStore

    if isinstance(store, PostgresStore):
        async def pg_write(conn: Any) -> None:
            await conn.execute(PRUNE)
            for group, job_id in running:
                await conn.execute(_pg(RESTORE), group, job_id)

        await store._write(pg_write, what="restore concurrency slots")
    elif isinstance(store, SqliteStore):
        def sq_write(conn: sqlite3.Connection) -> None:
            conn.execute(PRUNE)
            for group, job_id in running:
                conn.execute(RESTORE, (group, job_id))

        await store._run(lambda: store._write(sq_write))
    else:  # the memory store: its job rows are `_jobs[job_id] = (JobRow, seq)`
        slots: dict[str, dict[str, None]] = getattr(store, "slots", {})
        jobs: dict[str, Any] = getattr(store, "_jobs", {})

        def runs(job_id: str) -> bool:
            row = jobs.get(job_id)
            return row is not None and row[0].status in _HOLDING

        for holders in slots.values():
            for job in [j for j in holders if not runs(j)]:
                del holders[job]
        for group, job_id in running:
            if runs(job_id):
                slots.setdefault(group, {})[job_id] = None
