"""Leader election: the scheduler and the lease sweeper run on one server (DESIGN §6).

On PostgreSQL the leader is the server holding the session-level advisory lock
`LEADER_LOCK` on a dedicated connection. The others try to take it every
`retry_interval` seconds; when the leader dies its connection closes, PostgreSQL drops
the lock, and a follower takes over within about one interval. The leader pings its
connection as often; when the ping fails it stops its duties at once (a partitioned
leader may overlap a new one for at most that long: the duties tolerate it — cron slots
are claimed in the store, a lease is closed once). With SQLite (one process) the single
process leads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("partitur.leader")

LEADER_LOCK = 0x7061_7274_6974_0003
"""The session-level advisory lock held by the leader."""

Duty = Callable[[], Awaitable[None]]


class Leader:
    """Holds leadership while it can; runs `on_gain` when it gets it, `on_lose` after."""

    def __init__(self, url: str | None, on_gain: Duty, on_lose: Duty, *,
                 retry_interval: float = 1.0, connect_timeout: float = 3.0) -> None:
        self.url = url
        self.on_gain = on_gain
        self.on_lose = on_lose
        self.retry_interval = retry_interval
        self.connect_timeout = connect_timeout
        self.is_leader = False
        self.terms = 0
        self._task: asyncio.Task[None] | None = None
        self._conn: Any = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._step_down()

    async def _run(self) -> None:
        if self.url is None:
            await self._gain()
            return
        while True:
            try:
                await self._contend()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the connection is gone: whoever holds it, it is not us
                log.warning("leader election: %s", exc)
            await self._step_down()
            await asyncio.sleep(self.retry_interval)

    async def _contend(self) -> None:
        import asyncpg  # only a Postgres deployment elects a leader this way

        self._conn = await asyncpg.connect(self.url, timeout=self.connect_timeout)
        while True:
            if await self._conn.fetchval("SELECT pg_try_advisory_lock($1)", LEADER_LOCK):
                break
            await asyncio.sleep(self.retry_interval)
        await self._gain()
        while True:
            await asyncio.sleep(self.retry_interval)
            await asyncio.wait_for(self._conn.fetchval("SELECT 1"), self.retry_interval * 2)

    async def _gain(self) -> None:
        self.is_leader = True
        self.terms += 1
        log.info("this server leads (term %d)", self.terms)
        await self.on_gain()

    async def _step_down(self) -> None:
        if self.is_leader:
            self.is_leader = False
            log.info("this server no longer leads")
            try:
                await self.on_lose()
            except Exception:
                log.exception("stopping the leader's duties failed")
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()  # closing the session releases the lock
