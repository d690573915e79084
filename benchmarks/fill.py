"""Fill a store with copies of one real finished run, through the store API (W5, W6).

The events of the model run are read back, the job id is replaced and every timestamp
shifted into the past (copy i starts `spacing` seconds before copy i−1), the state is
folded to get the projection rows, and each copy is appended as one stream with its
projection, exactly as the orchestrator appends. The model run's JSONL log file is hard-linked
under the new id, so every copy has the same three stored log lines.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import os
import shutil
import time
from pathlib import Path

from engine.clock import new_job_id
from engine.core import events as ev
from engine.core.projections import job_row, step_rows
from engine.core.state import fold
from engine.store.base import EventStore, Projection
from engine.store.factory import open_store

IN_FLIGHT = 8  # appends kept in flight while filling


@dataclasses.dataclass(frozen=True)
class FillStats:
    runs: int
    events: int
    seconds: float

    @property
    def runs_per_s(self) -> float:
        return self.runs / self.seconds if self.seconds else 0.0

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def _copy(events: list[ev.Event], job_id: str, shift: float) -> list[ev.Event]:
    out: list[ev.Event] = []
    for event in events:
        changes: dict[str, object] = {"ts": event.ts - shift}
        if isinstance(event, ev.JobCreated):
            changes["job_id"] = job_id
        out.append(dataclasses.replace(event, **changes))  # type: ignore[arg-type]
    return out


async def copy_runs(store: EventStore, model_job: str, count: int, *,
                    logs_dir: Path | None = None, spacing: float = 0.01,
                    in_flight: int = IN_FLIGHT) -> FillStats:
    """Append `count` copies of `model_job` (already in `store`), `in_flight` at a time.

    Each copy is its own stream and its own append, as a real run's would be; keeping
    several appends in flight lets a Postgres pool use its connections (and lets SQLite's
    store thread write one copy while the next is folded).
    """
    records = await store.read(model_job)
    model = [r.event() for r in records]
    log_file = logs_dir / f"{model_job}.jsonl" if logs_dir is not None else None
    if log_file is not None and not log_file.exists():
        log_file = None

    source = log_file

    def link(job_id: str) -> None:
        # A hard link: the copies' logs are never appended to (the runs are finished).
        # A file takes ~65,000 links (ext4): then a real copy becomes the next source.
        nonlocal source
        assert source is not None
        target = source.with_name(f"{job_id}.jsonl")
        try:
            os.link(source, target)
        except OSError as exc:
            if exc.errno != errno.EMLINK:
                raise
            shutil.copyfile(source, target)
            source = target

    async def one(i: int) -> None:
        job_id = new_job_id()
        events = _copy(model, job_id, (i + 1) * spacing)
        state = fold(events)
        await store.append(job_id, 0, events,
                           projection=Projection(job_row(state), step_rows(state)))
        if source is not None:
            link(job_id)

    start = time.perf_counter()
    for first in range(0, count, in_flight):
        await asyncio.gather(*(one(i) for i in range(first, min(first + in_flight, count))))
    return FillStats(count, count * len(model), time.perf_counter() - start)


async def copy_runs_url(url: str, model_job: str, count: int, *, logs_dir: Path | None,
                        base_dir: Path) -> FillStats:
    store = open_store(url, base_dir=base_dir)
    await store.open()
    try:
        return await copy_runs(store, model_job, count, logs_dir=logs_dir)
    finally:
        await store.close()


async def events_per_run(url: str, model_job: str, base_dir: Path) -> int:
    store = open_store(url, base_dir=base_dir)
    await store.open()
    try:
        return len(await store.read(model_job))
    finally:
        await store.close()
