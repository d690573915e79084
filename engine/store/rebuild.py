"""Rebuild the `jobs`/`steps` projections from the event log (`partitur rebuild`).

The projections are emptied, then every event is read in global order in large pages,
folded into its job's state with `engine.core.state.evolve`, and the rows of changed
jobs are written in large batches. The states of all streams stay in memory while the
log streams past; decoding uses the plain dataclass events, no validation layer, and
each distinct plan is decoded once. Secret-marked job inputs are masked in the rows, as in
the incremental projections.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from engine.core.events import RecordedEvent, decode
from engine.core.projections import job_row, step_rows
from engine.core.state import JobState, StreamCorrupt, evolve
from engine.errors import PartiturError
from engine.logs.redact import Redactor
from engine.masking import JobMasker, secret_input_values
from engine.store.base import EventStore, Projection
from engine.store.shards import Shard

OPS_PREFIX = "ops/"
MAX_PLANS = 4096
FOLD_SLICE = 1_000


@dataclass(frozen=True, slots=True)
class RebuildStats:
    """What a rebuild did: events replayed, jobs written, and how long it took."""

    events: int
    jobs: int
    seconds: float
    processes: int = 1

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float(self.events)


async def rebuild(
    store: EventStore, *, page_size: int = 20_000, flush_jobs: int = 5_000,
    shard: Shard | None = None,
) -> RebuildStats:
    """Empty the projections and write them again from the whole log.

    Rows of jobs touched since the last flush are written whenever `flush_jobs` of them
    are pending, and once more at the end; each job row is stamped with the `global_seq`
    of its stream's last event, as an incremental append would have stamped it.

    With `shard`, only that shard's streams are replayed and written, and the
    projections are not emptied first: `engine.store.rebuild_shards` empties them once,
    then runs a process per shard.
    """
    started = time.perf_counter()
    # The states of every job stay alive until the end and hold no reference cycles: the
    # cyclic collector would only scan them again and again (a third of the time).
    collecting = gc.isenabled()
    gc.disable()
    try:
        if shard is None:
            await store.reset_projections()
        events, jobs = await _replay(store, page_size, flush_jobs, shard)
    finally:
        if collecting:
            gc.enable()
    return RebuildStats(events, jobs, time.perf_counter() - started)


async def _replay(store: EventStore, page_size: int, flush_jobs: int, shard: Shard | None
                  ) -> tuple[int, int]:
    """Fold the whole log (or a shard of it) and write the rows: (events read, jobs
    written)."""
    fold = _Fold()
    states, last_seqs, dirty = fold.states, fold.last_seqs, fold.dirty
    count = 0

    def read(after: int) -> asyncio.Future[list[RecordedEvent]]:
        if shard is None:
            return asyncio.ensure_future(store.tail(after, page_size))
        return asyncio.ensure_future(store.tail_shard(after, page_size, shard))

    # The next page is read, and the last batch written, while this page is folded: the
    # store works on its own thread (or server) while the fold keeps this one busy.
    reading = read(0)
    writing: asyncio.Future[None] | None = None
    try:
        while page := await reading:
            after = page[-1].global_seq
            reading = read(after)
            # Folded in slices with the loop let run in between, so that a store served on
            # the loop (PostgreSQL) sends its next query and takes in the rows, and the
            # server works on it while this folds.
            for start in range(0, len(page), FOLD_SLICE):
                fold.page(page[start:start + FOLD_SLICE])
                await asyncio.sleep(0)
            count += len(page)
            if len(dirty) >= flush_jobs:
                if writing is not None:
                    await writing
                writing = asyncio.ensure_future(
                    store.write_projections(_rows(states, last_seqs, dirty), after)
                )
        if writing is not None:
            await writing
        if dirty:
            await store.write_projections(_rows(states, last_seqs, dirty), max(last_seqs.values()))
    finally:
        for future in (reading, writing):
            if future is not None and not future.done():
                future.cancel()
                with contextlib.suppress(asyncio.CancelledError, PartiturError):
                    await future
    return count, len(states)


class _Fold:
    """The states of the streams, and the streams changed since the last write."""

    def __init__(self) -> None:
        self.states: dict[str, JobState] = {}
        self.last_seqs: dict[str, int] = {}
        self.dirty: dict[str, None] = {}  # insertion-ordered set of streams to write
        self.plans: dict[bytes, Mapping[str, Any]] = {}  # plan JSON → first data holding it

    def page(self, page: list[RecordedEvent]) -> None:
        states, last_seqs, dirty, plans = self.states, self.last_seqs, self.dirty, self.plans
        for recorded in page:
            stream = recorded.stream_id
            if stream.startswith(OPS_PREFIX):
                continue  # an operations stream (engine.opspause), not a job
            try:
                if recorded.type == "JobCreated":
                    event = decode("JobCreated", recorded.schema_version,
                                   _shared_plan(recorded.data, plans), recorded.ts)
                else:
                    event = recorded.event()
                states[stream] = evolve(states.get(stream), event)
            except PartiturError as exc:
                raise StreamCorrupt(
                    f"stream {stream}", "replay", recorded.type,
                    f"cannot replay event {recorded.global_seq} ({recorded.type}, version "
                    f"{recorded.version}) of stream {stream}: {exc}",
                ) from exc
            last_seqs[stream] = recorded.global_seq
            dirty[stream] = None


def _shared_plan(
    data: Mapping[str, Any], plans: dict[bytes, Mapping[str, Any]]
) -> Mapping[str, Any]:
    """`JobCreated` data whose plan is the first one seen with the same JSON text, so that
    `evolve` decodes each distinct plan once (`engine.core.plan.plan_from_data`)."""
    plan = data.get("plan")
    if plan is None:
        return data
    try:
        key = orjson.dumps(plan)
    except TypeError:
        return data
    shared = plans.get(key)
    if shared is None:
        if len(plans) >= MAX_PLANS:
            plans.clear()
        plans[key] = plan
        return data
    return data if shared is plan else {**data, "plan": shared}


def _rows(
    states: dict[str, JobState], last_seqs: dict[str, int], dirty: dict[str, None]
) -> list[Projection]:
    """The rows of the dirty jobs (and the dirty set emptied)."""
    rows = [_projection(states[s], last_seqs[s]) for s in dirty]
    dirty.clear()
    return rows


def _projection(state: JobState, last_seq: int) -> Projection:
    """A job's rows, masked as the orchestrator masks them. The events already hold the
    workspace's secrets masked; the values of input fields marked `secret` are kept as
    given, so those are masked here."""
    if not state.secret_paths:
        return Projection(job_row(state), step_rows(state), last_seq=last_seq)
    masker = JobMasker(Redactor(secret_input_values(state.input, state.secret_paths)),
                       state.secret_paths)
    return Projection(masker.job_row(job_row(state)),
                      [masker.step_row(r) for r in step_rows(state)], last_seq=last_seq)
