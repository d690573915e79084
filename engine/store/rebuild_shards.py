"""`partitur rebuild` on several cores: the log replayed by one process per shard.

A rebuild is CPU-bound Python (decoding events, folding them, encoding rows), so one
process uses one core however many the machine has. Here the projections are emptied
once, then each of N worker processes opens the same store, replays the streams of its
shard (`engine.store.shards`) with `engine.store.rebuild.rebuild` and writes their rows.
The shards hold disjoint sets of jobs, so the rows written are the ones a single replay
writes; only their order of writing differs.

A worker process costs its start-up (~0.3 s of imports), so small logs, and the
in-memory store, which another process cannot open, are replayed in this process.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from engine.errors import PartiturError
from engine.store.base import EventStore
from engine.store.factory import open_store
from engine.store.memory import MemoryStore
from engine.store.rebuild import RebuildStats, rebuild
from engine.store.shards import Shard
from engine.store.sqlite import SqliteStore

# Below this many events a single process is done before a worker has started.
MIN_EVENTS_PER_WORKER = 50_000
MAX_AUTO_WORKERS = 4
SHARD_BUSY_TIMEOUT = 120.0  # seconds a shard's SQLite write may wait for the lock


class RebuildFailed(PartiturError):
    """A rebuild worker failed."""

    code = "rebuild_failed"


def usable_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def auto_workers(events: int, cores: int) -> int:
    """How many processes to replay `events` events with: one per core (at most
    `MAX_AUTO_WORKERS`), fewer when there are too few events to keep them busy."""
    return max(1, min(cores, MAX_AUTO_WORKERS, events // MIN_EVENTS_PER_WORKER))


async def rebuild_store(url: str, *, base_dir: Path | None = None,
                        workers: int | None = None) -> RebuildStats:
    """Rebuild the projections of the store at `url` with `workers` processes (None:
    `auto_workers`); one worker replays in this process."""
    started = time.perf_counter()
    store = open_store(url, base_dir=base_dir)
    await store.open()
    try:
        if workers is None:
            workers = auto_workers(await store.last_seq(), usable_cores())
        if workers <= 1 or isinstance(store, MemoryStore):
            return await rebuild(store)
        await store.reset_projections()
    finally:
        await store.close()
    return await _in_processes(url, base_dir, workers, started)


async def _in_processes(url: str, base_dir: Path | None, workers: int, started: float
                        ) -> RebuildStats:
    import multiprocessing  # only here: a one-process rebuild does not pay for these
    from concurrent.futures import ProcessPoolExecutor

    loop = asyncio.get_running_loop()
    # `spawn`: a forked child would inherit this process's event loop and store threads.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        done = await asyncio.gather(*(
            loop.run_in_executor(pool, _replay_shard, url, base_dir, Shard(i, workers))
            for i in range(workers)
        ))
    failures = [f"shard {i}/{workers}: {error}"
                for i, (_, _, error) in enumerate(done) if error is not None]
    if failures:
        raise RebuildFailed("; ".join(failures))
    return RebuildStats(sum(d[0] for d in done), sum(d[1] for d in done),
                        time.perf_counter() - started, workers)


def _replay_shard(url: str, base_dir: Path | None, shard: Shard
                  ) -> tuple[int, int, str | None]:
    """A worker process: (events replayed, jobs written, error or None). An error comes
    back as text: the engine's exceptions do not all survive pickling."""
    from engine import eventloop

    async def go() -> tuple[int, int, str | None]:
        store: EventStore = open_store(url, base_dir=base_dir)
        if isinstance(store, SqliteStore):
            # The shards' writes take SQLite's one write lock in turn: a process may wait
            # for the others' batches, longer than an append ever waits.
            store.busy_timeout = SHARD_BUSY_TIMEOUT
        await store.open()
        try:
            stats = await rebuild(store, shard=shard)
        finally:
            await store.close()
        return stats.events, stats.jobs, None

    try:
        return eventloop.run(go())
    except Exception as exc:
        return 0, 0, f"{type(exc).__name__}: {exc}"
