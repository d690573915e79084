"""The live bus: in-process publish/subscribe of a job's log lines and frames (DESIGN §7).

A reader that wants everything (a WebSocket) subscribes first, then reads the backfill
from the log store, then iterates the subscription skipping items it already sent (by
`seq`). `publish` never blocks and never raises: a subscriber that falls `maxsize` items
behind is dropped (`overflowed`, its iterator ends at once) and may reconnect from its
last cursor; the others are unaffected. The bus belongs to one event loop: call it from
that loop's thread.
"""

from __future__ import annotations

import asyncio
from collections import deque
from types import TracebackType


class Subscription:
    """The items published for one job since subscribing; an async iterator."""

    __slots__ = ("_bus", "_closed", "_items", "_maxsize", "_overflowed", "_waiter", "job_id")

    def __init__(self, bus: LiveBus, job_id: str, maxsize: int) -> None:
        self._bus = bus
        self.job_id = job_id
        self._maxsize = maxsize
        self._items: deque[object] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._overflowed = False

    @property
    def closed(self) -> bool:
        """No more items will arrive (what is queued can still be read, unless overflowed)."""
        return self._closed

    @property
    def overflowed(self) -> bool:
        """The subscriber fell too far behind and was dropped; it missed items."""
        return self._overflowed

    def _push(self, item: object) -> None:
        if self._closed:
            return
        if len(self._items) >= self._maxsize:
            self._overflowed = True
            self._items.clear()
            self._end()
            self._bus._remove(self)
            return
        self._items.append(item)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _end(self) -> None:
        self._closed = True
        self._wake()

    def close(self) -> None:
        """Stop receiving; the iterator ends at once."""
        self._items.clear()
        self._end()
        self._bus._remove(self)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> object:
        while not self._items:
            if self._closed:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class LiveBus:
    """Per-job fan-out of items to subscribers."""

    def __init__(self) -> None:
        self._subs: dict[str, set[Subscription]] = {}

    def subscribe(self, job_id: str, *, maxsize: int = 10_000) -> Subscription:
        """Receive every item published for `job_id` from now on."""
        sub = Subscription(self, job_id, maxsize)
        self._subs.setdefault(job_id, set()).add(sub)
        return sub

    def publish(self, job_id: str, item: object) -> None:
        """Hand `item` to every subscriber of `job_id`; never blocks, never raises."""
        subs = self._subs.get(job_id)
        if not subs:
            return
        for sub in tuple(subs):
            sub._push(item)

    def close_job(self, job_id: str) -> None:
        """End every subscription of `job_id` once it has read what was published."""
        for sub in self._subs.pop(job_id, ()):
            sub._end()

    def subscribers(self, job_id: str) -> int:
        """How many subscriptions `job_id` has."""
        return len(self._subs.get(job_id, ()))

    def _remove(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.job_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.job_id]
