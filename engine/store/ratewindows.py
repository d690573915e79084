"""Rate-limit windows kept in the store: the recent admissions per rate-limit key.

`RateWindows.reserve(key, per, limit, now)` is a sliding window: it counts an admission
at `now` and returns None when fewer than `limit` were admitted under `key` in the last
`per` seconds, or returns when the next one will be allowed (and counts nothing).

On SQLite and PostgreSQL the windows are rows of table `rate_admissions` in the event
store's own database, so every replica on one database shares them and a restart keeps
them. A reservation is one transaction: on PostgreSQL under an advisory lock on the key
(`pg_advisory_xact_lock`), so two replicas never both take the last admission; SQLite
has a single writer. The memory store keeps them in this process (`MemoryRateWindows`).
"""

from __future__ import annotations

import sqlite3
from abc import ABC, abstractmethod
from collections import deque
from typing import Any

from engine.store.base import EventStore


class RateWindows(ABC):
    """Sliding windows of recent admissions, per key."""

    @abstractmethod
    async def reserve(self, key: str, per: float, limit: int, now: float) -> float | None:
        """Count an admission now and return None, or return when one is allowed."""


def _verdict(recent: list[float], per: float, limit: int) -> float | None:
    """None when `recent` (the admissions within the window, newest first) has room,
    else when the oldest of the last `limit` leaves the window."""
    if len(recent) < limit:
        return None
    return recent[limit - 1] + per


class MemoryRateWindows(RateWindows):
    """The windows in this process's memory (the memory store; tests)."""

    def __init__(self) -> None:
        self._starts: dict[str, deque[float]] = {}

    async def reserve(self, key: str, per: float, limit: int, now: float) -> float | None:
        window = self._starts.setdefault(key, deque())
        while window and window[0] <= now - per:
            window.popleft()
        until = _verdict(list(reversed(window)), per, limit)
        if until is None:
            window.append(now)
        return until


SQ_PRUNE = "DELETE FROM rate_admissions WHERE key = ? AND at <= ?"
SQ_RECENT = "SELECT at FROM rate_admissions WHERE key = ? ORDER BY at DESC LIMIT ?"
SQ_ADMIT = "INSERT INTO rate_admissions (key, at) VALUES (?, ?)"


class SqliteRateWindows(RateWindows):
    """The windows in the SQLite file, on the event store's connection and thread."""

    def __init__(self, store: Any) -> None:
        self.store = store  # a SqliteStore (not imported: it would be a cycle)

    async def reserve(self, key: str, per: float, limit: int, now: float) -> float | None:
        def write(conn: sqlite3.Connection) -> float | None:
            conn.execute(SQ_PRUNE, (key, now - per))
            recent = [float(r[0]) for r in conn.execute(SQ_RECENT, (key, limit))]
            until = _verdict(recent, per, limit)
            if until is None:
                conn.execute(SQ_ADMIT, (key, now))
            return until

        result: float | None = await self.store._run(lambda: self.store._write(write))
        return result


PG_LOCK = "SELECT pg_advisory_xact_lock(hashtext('partitur.rate:' || $1))"
PG_PRUNE = SQ_PRUNE.replace("?", "$1", 1).replace("?", "$2", 1)
PG_RECENT = SQ_RECENT.replace("?", "$1", 1).replace("?", "$2", 1)
PG_ADMIT = SQ_ADMIT.replace("?", "$1", 1).replace("?", "$2", 1)


class PostgresRateWindows(RateWindows):
    """The windows in PostgreSQL, shared by every replica on the database."""

    def __init__(self, store: Any) -> None:
        self.store = store  # a PostgresStore

    async def reserve(self, key: str, per: float, limit: int, now: float) -> float | None:
        async def write(conn: Any) -> float | None:
            await conn.execute(PG_LOCK, key)
            await conn.execute(PG_PRUNE, key, now - per)
            recent = [float(r[0]) for r in await conn.fetch(PG_RECENT, key, limit)]
            until = _verdict(recent, per, limit)
            if until is None:
                await conn.execute(PG_ADMIT, key, now)
            return until

        result: float | None = await self.store._write(write, what="rate limit")
        return result


def rate_windows(store: EventStore | None) -> RateWindows:
    """The windows sharing `store`'s database; in memory for the memory store (or none)."""
    from engine.store.postgres import PostgresStore
    from engine.store.sqlite import SqliteStore

    if isinstance(store, PostgresStore):
        return PostgresRateWindows(store)
    if isinstance(store, SqliteStore):
        return SqliteRateWindows(store)
    return MemoryRateWindows()
