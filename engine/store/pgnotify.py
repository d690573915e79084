"""PostgreSQL LISTEN on a dedicated connection that comes back after the server does.

`Listener` keeps one connection LISTENing on a channel and hands every payload to a
callback. When the connection is lost (server restart, terminated backend, network) it
reconnects with backoff and then calls `on_reconnect`: notifications sent while it was
away are gone, so a consumer must catch up from its own cursor there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from engine.errors import StoreUnavailable

log = logging.getLogger(__name__)

Connect = Callable[[], Awaitable[Any]]
"""Opens the dedicated connection (an `asyncpg.Connection`)."""

_DRIVER_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)  # OSError: timeouts


class Listener:
    """One channel LISTENed on one connection; `close()` stops it."""

    def __init__(
        self,
        connect: Connect,
        channel: str,
        on_payload: Callable[[str], None],
        *,
        on_reconnect: Callable[[], Awaitable[None]] | None = None,
        retry_delay: float = 0.2,
        max_retry_delay: float = 5.0,
    ) -> None:
        self._connect = connect
        self.channel = channel
        self._on_payload = on_payload
        self._on_reconnect = on_reconnect
        self._retry_delay = retry_delay
        self._max_retry_delay = max_retry_delay
        self._conn: Any = None
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.reconnects = 0

    async def start(self) -> Listener:
        """Connect and LISTEN; raises `StoreUnavailable` when the server is unreachable."""
        try:
            await self._attach()
        except _DRIVER_ERRORS as exc:
            raise StoreUnavailable(f"cannot LISTEN on {self.channel}: {exc}") from exc
        self._task = asyncio.create_task(self._supervise(), name=f"listen-{self.channel}")
        return self

    @property
    def connected(self) -> bool:
        """Whether the LISTEN connection is up right now."""
        return self._conn is not None and not self._conn.is_closed()

    async def _attach(self) -> None:
        conn = await self._connect()
        try:
            await conn.add_listener(self.channel, self._deliver)
        except BaseException:
            conn.terminate()
            raise
        conn.add_termination_listener(self._terminated)
        self._conn = conn
        self._lost.clear()
        if conn.is_closed():  # lost before the termination listener was in place
            self._lost.set()

    def _deliver(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            self._on_payload(payload)
        except Exception:  # a consumer's bug must not stop the others' notifications
            log.exception("LISTEN %s: callback failed on %r", self.channel, payload)

    def _terminated(self, _conn: Any) -> None:
        self._lost.set()

    async def _supervise(self) -> None:
        while not self._closed:
            await self._lost.wait()
            if self._closed:
                return
            self._conn = None
            delay = self._retry_delay
            while not self._closed:
                try:
                    await self._attach()
                    break
                except _DRIVER_ERRORS as exc:
                    log.debug("LISTEN %s: reconnect failed: %s", self.channel, exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self._max_retry_delay)
            if self._closed:
                return
            self.reconnects += 1
            if self._on_reconnect is not None:
                try:
                    await self._on_reconnect()
                except Exception:
                    log.exception("LISTEN %s: reconnect callback failed", self.channel)

    async def close(self) -> None:
        """Stop listening and close the connection."""
        self._closed = True
        self._lost.set()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), 2.0)
            except _DRIVER_ERRORS:
                conn.terminate()
