"""PostgreSQL store specifics beyond the contract: migrations, payloads, NOTIFY, the lock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from engine.core import events as ev
from engine.errors import StoreUnavailable, ValidationFailed
from engine.store.factory import open_store
from engine.store.migrations import load_migrations
from engine.store.postgres import APPEND_LOCK, PostgresStore


def output(n: int, value: object = None) -> ev.StepOutput:
    return ev.StepOutput(ts=1_700_000_000.0 + n, step="a", output={"n": n, "v": value})


@pytest.fixture
async def store(pg_url: str) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(pg_url)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def test_migrations_run_once_when_servers_start_together(pg_url: str) -> None:
    stores = [PostgresStore(pg_url) for _ in range(5)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        conn = await asyncpg.connect(pg_url)
        try:
            rows = await conn.fetch("SELECT version, name FROM schema_migrations ORDER BY 1")
            tables = {r[0] for r in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        finally:
            await conn.close()
        expected = load_migrations("postgres")
        assert [(r[0], r[1]) for r in rows] == [(m.version, m.name) for m in expected]
        assert {"events", "jobs", "steps", "idempotency_keys", "log_lines",
                "log_counters"} <= tables
        # Every store works on the one schema.
        for i, s in enumerate(stores):
            await s.append(f"s{i}", 0, [output(i)])
        assert await stores[0].last_seq() == 5
    finally:
        for s in stores:
            await s.close()


async def test_reopen_keeps_data_and_a_changed_migration_is_refused(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    await store.open()
    await store.append("s", 0, [output(1)])
    await store.close()
    await store.open()
    assert [e.version for e in await store.read("s")] == [1]
    await store.close()
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute("UPDATE schema_migrations SET checksum = 'x' WHERE version = 1")
    finally:
        await conn.close()
    with pytest.raises(StoreUnavailable, match="changed after it was applied"):
        await PostgresStore(pg_url).open()


async def test_factory_builds_postgres_stores(pg_url: str) -> None:
    for url in (pg_url, pg_url.replace("postgresql://", "postgres://", 1)):
        store = open_store(url)
        assert isinstance(store, PostgresStore)
        await store.open()
        try:
            assert await store.last_seq() == 0
        finally:
            await store.close()


async def test_payloads_round_trip_through_jsonb(store: PostgresStore) -> None:
    value = {"unicode": "grüße ✓ 𝄞", "nested": [1, 2.5, None, True, {"k": "v"}],
             "big": 2**53 + 1, "float": 0.1, "whole": 3.0, "empty": {}}
    result = await store.append("s", 0, [output(1, value)])
    [recorded] = await store.read("s")
    assert recorded == result.events[0]
    assert recorded.data["output"]["v"] == value
    assert isinstance(recorded.data["output"]["v"]["whole"], float)
    assert recorded.ts == 1_700_000_001.0


async def test_a_value_postgres_cannot_store_writes_nothing(store: PostgresStore) -> None:
    with pytest.raises(ValidationFailed, match="cannot store"):
        await store.append("s", 0, [output(1, "nul \x00 byte")])
    assert await store.read("s") == []
    # No gap either: the next event still gets seq 1.
    result = await store.append("s", 0, [output(2)])
    assert result.last_seq == 1


async def test_unreachable_server_is_store_unavailable() -> None:
    store = PostgresStore("postgresql://postgres@127.0.0.1:1/none", connect_timeout=2.0)
    with pytest.raises(StoreUnavailable) as caught:
        await store.open()
    assert caught.value.retryable
    with pytest.raises(StoreUnavailable, match="not open"):
        await store.read("s")


async def test_another_replica_hears_each_append_on_commit(
    store: PostgresStore, pg_url: str
) -> None:
    replica = PostgresStore(pg_url)
    await replica.open()
    heard: asyncio.Queue[int] = asyncio.Queue()
    try:
        await replica.listen(heard.put_nowait)
        await store.append("s", 0, [output(1), output(2)])
        await store.append("t", 0, [output(3)])
        assert await asyncio.wait_for(heard.get(), 5) == 2
        assert await asyncio.wait_for(heard.get(), 5) == 3
        # A refused append notifies nobody.
        with pytest.raises(Exception, match="version"):
            await store.append("s", 0, [output(4)])
        await store.append("s", 2, [output(5)])
        assert await asyncio.wait_for(heard.get(), 5) == 4
    finally:
        await replica.close()


async def test_appends_wait_for_the_append_lock(store: PostgresStore, pg_url: str) -> None:
    """An append cannot take a seq while another append's transaction is open."""
    conn = await asyncpg.connect(pg_url)
    try:
        await store.append("s", 0, [output(1)])
        # Hold the append lock in an open transaction, as an appender would.
        tx = conn.transaction()
        await tx.start()
        await conn.execute("SELECT pg_advisory_xact_lock($1)", APPEND_LOCK)
        pending = asyncio.create_task(store.append("s", 1, [output(2)]))
        await asyncio.sleep(0.3)
        assert not pending.done()
        assert await store.last_seq() == 1
        await tx.commit()
        result = await asyncio.wait_for(pending, 5)
        assert result.last_seq == 2
    finally:
        await conn.close()


async def test_a_cron_slot_is_claimed_once_across_replicas(pg_url: str) -> None:
    replicas = [PostgresStore(pg_url) for _ in range(4)]
    for replica in replicas:
        await replica.open()
    try:
        claims = await asyncio.gather(*(
            r.claim_slot("default/nightly", 1_700_000_000.0, f"job-{i}", 1.0)
            for i, r in enumerate(replicas)
        ))
        assert sorted(claims) == [False, False, False, True]
        assert await replicas[0].claim_slot("default/nightly", 1_700_000_060.0, "j", 2.0)
        assert await replicas[1].last_slot("default/nightly") == 1_700_000_060.0
        assert await replicas[1].last_slot("default/other") is None
    finally:
        for replica in replicas:
            await replica.close()
