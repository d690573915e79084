"""Rebuild the `jobs`/`steps` projections from the event log (`partitur rebuild`).

The projections are emptied, then every event is read in global order in large pages,
folded into its job's state with `engine.core.state.evolve`, and the rows of changed
jobs are written in large batches. The states of all streams stay in memory while the
log streams past; decoding uses the plain dataclass events, no validation layer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from engine.core.projections import job_row, step_rows
from engine.core.state import JobState, StreamCorrupt, evolve
from engine.errors import PartiturError
from engine.store.base import EventStore, Projection


@dataclass(frozen=True, slots=True)
class RebuildStats:
    """What a rebuild did: events replayed, jobs written, and how long it took."""

    events: int
    jobs: int
    seconds: float

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float(self.events)


async def rebuild(
    store: EventStore, *, page_size: int = 20_000, flush_jobs: int = 5_000
) -> RebuildStats:
    """Empty the projections and write them again from the whole log.

    Rows of jobs touched since the last flush are written whenever `flush_jobs` of them
    are pending, and once more at the end; each job row is stamped with the `global_seq`
    of its stream's last event, as an incremental append would have stamped it.
    """
    started = time.perf_counter()
    await store.reset_projections()
    states: dict[str, JobState] = {}
    last_seqs: dict[str, int] = {}
    dirty: dict[str, None] = {}  # insertion-ordered set of streams to write
    after = 0
    count = 0
    while page := await store.tail(after, page_size):
        for recorded in page:
            stream = recorded.stream_id
            try:
                states[stream] = evolve(states.get(stream), recorded.event())
            except PartiturError as exc:
                raise StreamCorrupt(
                    f"stream {stream}", "replay", recorded.type,
                    f"cannot replay event {recorded.global_seq} ({recorded.type}, version "
                    f"{recorded.version}) of stream {stream}: {exc}",
                ) from exc
            last_seqs[stream] = recorded.global_seq
            dirty[stream] = None
        count += len(page)
        after = page[-1].global_seq
        if len(dirty) >= flush_jobs:
            await _flush(store, states, last_seqs, dirty, after)
    await _flush(store, states, last_seqs, dirty, after)
    return RebuildStats(count, len(states), time.perf_counter() - started)


async def _flush(
    store: EventStore,
    states: dict[str, JobState],
    last_seqs: dict[str, int],
    dirty: dict[str, None],
    after: int,
) -> None:
    if not dirty:
        return
    rows = [
        Projection(job_row(states[s]), step_rows(states[s]), last_seq=last_seqs[s])
        for s in dirty
    ]
    await store.write_projections(rows, after)
    dirty.clear()
