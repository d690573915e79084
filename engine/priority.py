"""Priority-ordered slots with aging: who of the waiting steps runs next (DESIGN §6).

The embedded executor runs at most `limit` steps at a time. When a slot frees, the
waiter with the best *effective* priority gets it: priority 1 is the highest, 5 the
lowest, and waiters of one priority are served first come, first served. With `aging`
(seconds, `scheduling.aging` in the server config) a waiter gains one level for every
`aging` seconds it has waited, so a flood of high-priority work cannot starve
low-priority work forever: after `(p - 1) * aging` seconds a priority-`p` waiter
competes as a priority-1 one, and being older it goes first.

A slot is handed straight to the chosen waiter, never left free for a newcomer to take,
so the order is the one the rule above gives. Picking costs O(levels): waiters of one
level are a FIFO, and the head of each FIFO is its best (oldest) waiter.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

HIGHEST = 1
LOWEST = 5
DEFAULT_PRIORITY = 3


def clamp(priority: int | None) -> int:
    """A priority within 1–5 (None: the default, 3)."""
    if priority is None:
        return DEFAULT_PRIORITY
    return max(HIGHEST, min(LOWEST, int(priority)))


def effective(priority: int, waited: float, aging: float | None) -> float:
    """The priority a waiter competes with after waiting `waited` seconds."""
    if not aging or aging <= 0:
        return float(priority)
    return max(float(HIGHEST), priority - waited // aging)


@dataclass(eq=False)
class _Waiter:
    priority: int
    since: float
    seq: int
    holder: str
    future: asyncio.Future[None] = field(repr=False)
    tag: object = None  # what the waiter is (the executor: job, step, attempt)


class PrioritySlots:
    """At most `limit` holders at a time; waiters served by priority (with aging)."""

    def __init__(self, limit: int, *, aging: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = max(1, limit)
        self.aging = aging if aging and aging > 0 else None
        self._clock = clock
        self._held: dict[int, str] = {}  # ticket → holder (a job id)
        self._queues: dict[int, deque[_Waiter]] = {p: deque() for p in range(HIGHEST, LOWEST + 1)}
        self._seq = itertools.count()

    # --- what explain and metrics read -----------------------------------------------

    @property
    def in_use(self) -> int:
        return len(self._held)

    @property
    def waiting(self) -> int:
        return sum(1 for q in self._queues.values() for w in q if not w.future.done())

    def holders(self) -> list[str]:
        """The holders of the slots now (in the order they got them)."""
        return list(self._held.values())

    # --- acquire / release -----------------------------------------------------------

    async def acquire(self, priority: int | None, holder: str, tag: object = None) -> int:
        """Wait for a slot; returns the ticket to pass to `release`."""
        prio = clamp(priority)
        if len(self._held) < self.limit and not self.waiting:
            return self._take(holder)
        loop = asyncio.get_running_loop()
        waiter = _Waiter(prio, self._clock(), next(self._seq), holder, loop.create_future(),
                         tag)
        self._queues[prio].append(waiter)
        try:
            await waiter.future
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled():
                # The slot was handed over just as the waiter was cancelled: pass it on.
                ticket = self._ticket_of(waiter)
                if ticket is not None:
                    self.release(ticket)
            raise
        ticket = self._ticket_of(waiter)
        assert ticket is not None
        return ticket

    def release(self, ticket: int) -> None:
        """Give a slot back; the best waiter (if any) gets it at once."""
        if self._held.pop(ticket, None) is None:
            return
        while len(self._held) < self.limit:
            waiter = self._pick()
            if waiter is None:
                return
            self._held[waiter.seq] = waiter.holder
            waiter.future.set_result(None)

    def holds(self, ticket: int) -> bool:
        """Whether `ticket` still holds its slot (not released nor handed over)."""
        return ticket in self._held

    def next_waiter(self) -> _Waiter | None:
        """The waiter `release` would serve now (left waiting)."""
        return self._pick(take=False)

    def hand_over(self, ticket: int, waiter: _Waiter) -> bool:
        """Give the slot of `ticket` straight to `waiter`, the one `next_waiter` named
        (False, and nothing changes, if the ticket is not held or the waiter is gone)."""
        queue = self._queues[waiter.priority]
        if ticket not in self._held or waiter.future.done() or waiter not in queue:
            return False
        del self._held[ticket]
        queue.remove(waiter)
        self._held[waiter.seq] = waiter.holder
        waiter.future.set_result(None)
        return True

    def _take(self, holder: str) -> int:
        ticket = next(self._seq)
        self._held[ticket] = holder
        return ticket

    def _ticket_of(self, waiter: _Waiter) -> int | None:
        # A waiter's ticket is its sequence number (drawn from the same counter).
        return waiter.seq if waiter.seq in self._held else None

    def _pick(self, take: bool = True) -> _Waiter | None:
        """The waiter to serve next: best effective priority, then longest waiting."""
        now = self._clock()
        best: _Waiter | None = None
        best_key: tuple[float, float, int] | None = None
        for queue in self._queues.values():
            while queue and queue[0].future.done():
                queue.popleft()  # cancelled while waiting
            if not queue:
                continue
            head = queue[0]
            key = (effective(head.priority, now - head.since, self.aging), head.since, head.seq)
            if best_key is None or key < best_key:
                best, best_key = head, key
        if best is not None and take:
            self._queues[best.priority].popleft()
        return best

