"""`claim_slot` / `last_slot` on every store backend: one claim per (trigger, fire time)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from engine.store.base import EventStore
from engine.store.memory import MemoryStore
from engine.store.sqlite import SqliteStore


async def _check(store: EventStore, other: EventStore | None = None) -> None:
    other = other or store
    assert await store.last_slot("ws/t") is None
    results = await asyncio.gather(*(
        (store if i % 2 else other).claim_slot("ws/t", 60.0, f"job-{i}", 1.0) for i in range(8)
    ))
    assert sorted(results) == [False] * 7 + [True]
    assert await store.claim_slot("ws/t", 120.0, "job-x", 2.0)
    assert await store.claim_slot("ws/other", 60.0, "job-y", 2.0)
    assert await other.last_slot("ws/t") == 120.0


async def test_memory_store_claims_a_slot_once() -> None:
    store = MemoryStore()
    await store.open()
    await _check(store)


async def test_two_sqlite_stores_on_one_file_claim_a_slot_once(tmp_path: Path) -> None:
    first, second = SqliteStore(tmp_path / "s.db"), SqliteStore(tmp_path / "s.db")
    await first.open()
    await second.open()
    try:
        await _check(first, second)
    finally:
        await first.close()
        await second.close()


async def test_postgres_store_claims_a_slot_once(pg_url: str) -> None:
    from engine.store.postgres import PostgresStore

    first, second = PostgresStore(pg_url), PostgresStore(pg_url)
    await first.open()
    await second.open()
    try:
        await _check(first, second)
    finally:
        await first.close()
        await second.close()
