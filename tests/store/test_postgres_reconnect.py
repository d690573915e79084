"""The Postgres stores survive lost connections and a server restart (DESIGN §5, issue 7).

The store's backends are terminated from another connection (`pg_terminate_backend`),
which breaks its pooled and LISTEN connections the way a restart does. The full restart
stops and starts a PostgreSQL server of the test's own (initdb into a temporary folder,
on a free port), so it disturbs no other test using the shared server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator

import asyncpg
import pytest
from private_pg import PrivatePostgres, private_postgres

from engine.core import events as ev
from engine.errors import StoreUnavailable
from engine.logs.model import LogLine
from engine.logs.pgstore import PostgresLogStore
from engine.store.postgres import APPEND_LOCK, PostgresStore

TERMINATE_OTHERS = """
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
"""
TERMINATE_LOCK_WAITERS = """
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'
"""


def output(n: int) -> ev.StepOutput:
    return ev.StepOutput(ts=1_700_000_000.0 + n, step="a", output={"n": n})


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def test_store_recovers_after_its_connections_are_terminated(pg_url: str) -> None:
    store = PostgresStore(pg_url, max_size=4)
    replica = PostgresStore(pg_url, max_size=2)
    admin = await asyncpg.connect(pg_url)
    heard: list[int] = []
    try:
        await store.open()
        await replica.open()
        listener = await replica.listen(heard.append)
        # Several pooled connections in use, then all of them cut at once.
        await asyncio.gather(*(store.append(f"s{i}", 0, [output(i)]) for i in range(4)))
        assert await admin.fetchval(TERMINATE_OTHERS) >= 3

        # The very next calls work: dead connections are replaced.
        assert await store.last_seq() == 4
        result = await store.append("s0", 1, [output(5)])
        assert result.last_seq == 5
        assert [e.version for e in await store.read("s0")] == [1, 2]
        assert [e.global_seq for e in await replica.tail(0)] == [1, 2, 3, 4, 5]

        # The LISTEN connection came back by itself and caught its consumer up.
        async def reconnected() -> bool:
            return listener.reconnects >= 1 and listener.connected

        await eventually(reconnected)
        await store.append("s1", 1, [output(6)])

        async def heard_six() -> bool:
            return 6 in heard

        await eventually(heard_six)
        assert heard[-1] == 6
    finally:
        await admin.close()
        await replica.close()
        await store.close()


async def test_append_cut_off_before_commit_is_refused_and_not_written(pg_url: str) -> None:
    store = PostgresStore(pg_url, max_size=2)
    admin = await asyncpg.connect(pg_url)
    try:
        await store.open()
        await store.append("s", 0, [output(1)])
        # Hold the append lock so the next append waits inside its transaction...
        await admin.execute("SELECT pg_advisory_lock($1)", APPEND_LOCK)
        pending = asyncio.create_task(store.append("s", 1, [output(2)]))
        # ...and cut its connection there (again after its one retry on a new one).
        deadline = time.monotonic() + 10
        while not pending.done():
            assert time.monotonic() < deadline, "the append never failed"
            await admin.fetchval(TERMINATE_LOCK_WAITERS)
            await asyncio.sleep(0.05)
        with pytest.raises(StoreUnavailable) as caught:
            await pending
        assert caught.value.retryable
        await admin.execute("SELECT pg_advisory_unlock($1)", APPEND_LOCK)

        # Not acknowledged and not written; the same append then goes through.
        assert [e.version for e in await store.read("s")] == [1]
        assert await store.last_seq() == 1
        result = await store.append("s", 1, [output(2)])
        assert [(e.global_seq, e.version) for e in result.events] == [(2, 2)]
    finally:
        await admin.close()
        await store.close()


async def test_log_store_recovers_after_its_connections_are_terminated(pg_url: str) -> None:
    logs = PostgresLogStore(pg_url)
    replica = PostgresLogStore(pg_url)
    admin = await asyncpg.connect(pg_url)
    heard: list[tuple[str, int]] = []
    reconnected = asyncio.Event()

    async def on_reconnect() -> None:
        reconnected.set()

    try:
        await replica.listen(lambda job, seq: heard.append((job, seq)),
                             on_reconnect=on_reconnect)
        line = LogLine(ts=1.0, stream="stdout", step="s", line="x")
        await logs.append("job", [line])
        await admin.fetchval(TERMINATE_OTHERS)
        placed = await logs.append("job", [line, line])
        assert [p.seq for p in placed] == [2, 3]
        await asyncio.wait_for(reconnected.wait(), 10)
        await logs.append("job", [line])

        async def heard_four() -> bool:
            return ("job", 4) in heard

        await eventually(heard_four)
        assert [p.seq for p in await replica.read("job")] == [1, 2, 3, 4]
    finally:
        await admin.close()
        await replica.close()
        await logs.close()


# --- the real restart, on a private server ------------------------------------------


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    with private_postgres() as server:
        yield server


@pytest.mark.postgres
async def test_stores_survive_a_postgres_restart(private_pg: PrivatePostgres) -> None:
    store = PostgresStore(private_pg.url, max_size=3, connect_timeout=2.0)
    logs = PostgresLogStore(private_pg.url, connect_timeout=2.0)
    heard: list[int] = []
    await store.open()
    try:
        listener = await store.listen(heard.append)
        acknowledged = [await store.append(f"s{i}", 0, [output(i)]) for i in range(3)]
        await logs.append("job", [LogLine(ts=1.0, stream="stdout", step="s", line="before")])
        try:
            # Stop the server: appends fail and are not acknowledged.
            await asyncio.to_thread(private_pg.stop)
            with pytest.raises(StoreUnavailable):
                await store.append("s0", 1, [output(10)])
            with pytest.raises(StoreUnavailable):
                await store.read("s0")
            with pytest.raises(StoreUnavailable):
                await logs.append("job", [LogLine(ts=2.0, stream="stdout", step="s",
                                                  line="lost")])
        finally:
            # Whatever happened, bring the server back.
            await asyncio.to_thread(private_pg.start)

        # Once it is back, the next calls work and nothing acknowledged is lost.
        async def available() -> bool:
            try:
                await store.last_seq()
            except StoreUnavailable:
                return False
            return True

        await eventually(available, timeout=30)
        assert [e.global_seq for e in await store.tail(0)] == [
            r.last_seq for r in acknowledged
        ]
        result = await store.append("s0", 1, [output(11)])
        assert result.last_seq == 4
        placed = await logs.append("job", [LogLine(ts=3.0, stream="stdout", step="s",
                                                   line="after")])
        assert [p.seq for p in placed] == [2]
        assert [line.line for line in await logs.read("job")] == ["before", "after"]

        async def listening_again() -> bool:
            return listener.reconnects >= 1 and 4 in heard

        await eventually(listening_again, timeout=30)
    finally:
        await logs.close()
        await store.close()
