"""A tailer never skips an event while many connections append (DESIGN §4: commit order).

Appenders run on three store instances (three pools, as three server replicas would), a
tailer on a fourth polls `tail(last_seq)` without pause. Every event must reach it exactly
once, in `global_seq` order, each writer's events in the order they were written.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

from engine.core import events as ev
from engine.core.events import RecordedEvent
from engine.store.postgres import PostgresStore

WRITERS = 9
APPENDS = 40


def output(writer: int, n: int, part: int) -> ev.StepOutput:
    return ev.StepOutput(ts=1_700_000_000.0 + n, step=f"w{writer}",
                         output={"writer": writer, "n": n, "part": part})


async def test_tailer_sees_every_event_once_in_order_under_concurrent_appends(
    pg_url: str,
) -> None:
    replicas = [PostgresStore(pg_url, max_size=4) for _ in range(3)]
    reader = PostgresStore(pg_url, max_size=1)
    for store in (*replicas, reader):
        await store.open()
    done = asyncio.Event()
    seen: list[RecordedEvent] = []
    acknowledged: list[int] = []

    async def writer(w: int) -> None:
        store = replicas[w % len(replicas)]
        version = 0
        for n in range(APPENDS):
            size = 1 + (w + n) % 3
            result = await store.append(
                f"stream-{w}", version, [output(w, n, p) for p in range(size)]
            )
            version += size
            acknowledged.extend(e.global_seq for e in result.events)

    async def tailer() -> None:
        after = 0
        while True:
            finished = done.is_set()
            page = await reader.tail(after, limit=25)
            seen.extend(page)
            if page:
                after = page[-1].global_seq
            elif finished:
                return

    try:
        tail_task = asyncio.create_task(tailer())
        await asyncio.gather(*(writer(w) for w in range(WRITERS)))
        done.set()
        await asyncio.wait_for(tail_task, 30)
    finally:
        for store in (*replicas, reader):
            await store.close()

    total = sum(1 + (w + n) % 3 for w in range(WRITERS) for n in range(APPENDS))
    assert sorted(acknowledged) == list(range(1, total + 1))
    # Exactly once, in order, no gap: the tailer saw 1…total.
    assert [e.global_seq for e in seen] == list(range(1, total + 1))
    by_writer: defaultdict[int, list[tuple[int, int]]] = defaultdict(list)
    for e in seen:
        out = e.data["output"]
        by_writer[out["writer"]].append((out["n"], out["part"]))
        assert e.stream_id == f"stream-{out['writer']}"
    for w in range(WRITERS):
        assert by_writer[w] == [
            (n, p) for n in range(APPENDS) for p in range(1 + (w + n) % 3)
        ]
