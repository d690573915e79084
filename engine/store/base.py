"""The `EventStore` interface every backend implements (DESIGN §5).

A store keeps the append-only event log (one stream per job), the `jobs`/`steps`
projections written in the same transaction as the events, idempotency keys, and the
outbox: outgoing work an append creates (ready steps for remote workers, callbacks of
ending jobs), written in the append's transaction so it exists exactly when the events do
(DESIGN §4).
Backends wrap their driver errors into `engine.errors` (`VersionConflict`,
`StoreUnavailable`); the contract suite in `tests/contract/` holds every backend to the
same behaviour.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.core.events import Event, RecordedEvent
from engine.core.projections import JobRow, StepRow
from engine.errors import Conflict

if TYPE_CHECKING:
    from engine.store.shards import Shard
    from engine.store.slots import SlotClaim
    from engine.store.work import WorkItem


class DuplicateKey(Conflict):
    """This idempotency key was already used."""

    code = "duplicate_key"

    def __init__(self, scope: str, key: str, job_id: str) -> None:
        self.scope, self.key, self.job_id = scope, key, job_id
        super().__init__(f"idempotency key {key!r} already used by job {job_id}")


@dataclass(frozen=True, slots=True)
class Projection:
    """Projection rows to write with an append: the job row and the changed step rows.

    An append stamps the job row with its own last `global_seq`. `write_projections`
    stamps it with `last_seq` when given (a rebuild passes the seq of the stream's last
    event), else with the seq the call names.
    """

    job: JobRow
    steps: Sequence[StepRow] = ()
    last_seq: int | None = None


@dataclass(frozen=True, slots=True)
class OutboxObject:
    """A stored object (table `cloud_objects`, `engine.store.cloud`) an append creates."""

    kind: str
    id: str
    tenant: str
    created_at: float
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Outbox:
    """Outgoing work to write in the same transaction as an append (DESIGN §4).

    `work`: ready step attempts for the remote-worker queue (`engine.store.work`); an
    attempt already queued is left alone. On PostgreSQL, queuing a row also sends
    `NOTIFY partitur_work`, delivered on commit.
    `objects`: stored objects to insert (the callbacks due for an ending cloud job,
    `engine.callbacks`); an object whose `(kind, id)` exists is left alone.
    `take_slots` / `free_slots`: concurrency slots a starting job takes and the jobs whose
    slots an ending job frees (`engine.store.slots`); a claim over its limit raises
    `SlotTaken` and the append writes nothing.
    """

    work: Sequence[WorkItem] = ()
    objects: Sequence[OutboxObject] = ()
    take_slots: Sequence[SlotClaim] = ()
    free_slots: Sequence[str] = ()

    def __add__(self, other: Outbox) -> Outbox:
        return Outbox(work=[*self.work, *other.work], objects=[*self.objects, *other.objects],
                      take_slots=[*self.take_slots, *other.take_slots],
                      free_slots=[*self.free_slots, *other.free_slots])

    @property
    def empty(self) -> bool:
        return not (self.work or self.objects or self.take_slots or self.free_slots)


@dataclass(frozen=True, slots=True)
class JobFilter:
    """Filters of the job list (newest first by `created_at`)."""

    workspace: str | None = None
    task_name: str | None = None
    status: tuple[str, ...] = ()
    source_type: str | None = None
    since: float | None = None
    parent_job_id: str | None = None
    limit: int = 50
    offset: int = 0


@dataclass(frozen=True, slots=True)
class JobDetail:
    """What the job detail shows, read at once: the job's row, its step rows in plan
    order, the ids of its child jobs (oldest first; the newest `CHILDREN_SHOWN`), and its
    events of the asked types, in order."""

    job: JobRow
    steps: list[StepRow]
    children: list[str]
    events: list[RecordedEvent]


CHILDREN_SHOWN = 1000


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What an append wrote: the recorded events (with their `global_seq`)."""

    events: list[RecordedEvent] = field(default_factory=list)

    @property
    def last_seq(self) -> int:
        return self.events[-1].global_seq if self.events else 0


class EventStore(ABC):
    """An append-only event log with projections, behind one async interface."""

    @abstractmethod
    async def open(self) -> None:
        """Connect and apply pending migrations."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections; pending writes are either committed or never acknowledged."""

    @abstractmethod
    async def append(
        self,
        stream_id: str,
        expected_version: int,
        events: Sequence[Event],
        *,
        projection: Projection | None = None,
        idempotency: tuple[str, str] | None = None,
        outbox: Outbox | None = None,
    ) -> AppendResult:
        """Append `events` atomically after version `expected_version` of the stream.

        Versions of the new events are `expected_version + 1 …`. Raises `VersionConflict`
        when the stream is not at `expected_version` and nothing is written. With
        `projection`, the rows are upserted in the same transaction, stamped with the
        last `global_seq`. With `idempotency=(scope, key)` the key is recorded for this
        stream in the same transaction; if it exists, `DuplicateKey` (naming the first
        stream) is raised and nothing is written. With `outbox`, its work-queue rows are
        and objects are written in the same transaction: a refused append queues nothing.
        """

    @abstractmethod
    async def read(self, stream_id: str, after_version: int = 0) -> list[RecordedEvent]:
        """The events of one stream after `after_version`, in version order."""

    async def first_event_values(self, stream_ids: Sequence[str],
                                 paths: Sequence[Sequence[str]]) -> dict[str, list[Any]]:
        """For each of `stream_ids` that has events: the values at `paths` (each a list
        of keys) in the data of its first event, as stored (not upcast), None where a
        path leads nowhere.

        This default reads each stream whole; the SQL stores extract the values where
        they are stored, in one query, so a large payload (a job's plan) is neither sent
        nor decoded."""
        found: dict[str, list[Any]] = {}
        for stream_id in dict.fromkeys(stream_ids):
            events = await self.read(stream_id)
            if events:
                found[stream_id] = [value_at(events[0].data, path) for path in paths]
        return found

    async def events_of_types(self, stream_ids: Sequence[str], types: Collection[str]
                              ) -> list[RecordedEvent]:
        """The events of `stream_ids` whose type is one of `types`, in global order.

        This default reads each stream whole; the SQL stores send only those events, in
        one query."""
        wanted = set(types)
        found = [event for stream_id in dict.fromkeys(stream_ids)
                 for event in await self.read(stream_id) if event.type in wanted]
        found.sort(key=lambda event: event.global_seq)
        return found

    @abstractmethod
    async def tail(self, after_seq: int, limit: int = 1000) -> list[RecordedEvent]:
        """Events of all streams with `global_seq > after_seq`, in global order.

        No event is ever skipped: a reader that tails from the last seq it saw sees every
        committed event exactly once.
        """

    async def tail_shard(self, after_seq: int, limit: int, shard: Shard
                         ) -> list[RecordedEvent]:
        """`tail` of the streams of one shard (`engine.store.shards`): up to `limit` of
        their events with `global_seq > after_seq`, in global order.

        This default reads whole pages and keeps the shard's events; the SQL stores
        filter where they read.
        """
        found: list[RecordedEvent] = []
        while len(found) < limit:
            page = await self.tail(after_seq, max(limit, 1000))
            if not page:
                break
            for event in page:
                if shard.holds(event.stream_id):
                    found.append(event)
                    if len(found) == limit:
                        break
            after_seq = page[-1].global_seq
        return found

    @abstractmethod
    async def last_seq(self) -> int:
        """The highest committed `global_seq` (0 when empty)."""

    @abstractmethod
    async def find_key(self, scope: str, key: str) -> str | None:
        """The stream that used idempotency key `(scope, key)`, if any."""

    @abstractmethod
    async def queued_work(self, job_id: str) -> list[WorkItem]:
        """The work-queue rows of a job, open or not, ordered by step and attempt."""

    @abstractmethod
    async def list_jobs(self, where: JobFilter) -> tuple[list[JobRow], int]:
        """A page of the `jobs` projection, newest first, and the total matching count."""

    @abstractmethod
    async def get_job(self, job_id: str) -> JobRow | None:
        """One job row, or None."""

    @abstractmethod
    async def get_steps(self, job_id: str) -> list[StepRow]:
        """The step rows of a job, in plan order."""

    async def job_detail(self, job_id: str, event_types: Collection[str]) -> JobDetail | None:
        """The job's detail (None for an unknown job). Backends that can read it in one
        statement do; this default issues the four reads together."""
        row, steps, (children, _), records = await asyncio.gather(
            self.get_job(job_id), self.get_steps(job_id),
            self.list_jobs(JobFilter(parent_job_id=job_id, limit=CHILDREN_SHOWN)),
            self.read(job_id))
        if row is None:
            return None
        return JobDetail(row, steps, [c.job_id for c in reversed(children)],
                         [r for r in records if r.type in event_types])

    @abstractmethod
    async def active_job_ids(self) -> list[str]:
        """Ids of jobs that are not terminal (what a starting orchestrator must load)."""

    @abstractmethod
    async def reset_projections(self) -> None:
        """Empty the `jobs` and `steps` projections (the first half of a rebuild)."""

    @abstractmethod
    async def write_projections(self, rows: Sequence[Projection], last_seq: int) -> None:
        """Write many projection rows at once (the second half of a rebuild)."""

    @abstractmethod
    async def stream_ids(self) -> list[str]:
        """Every stream id, in order of first event."""

    # --- trigger slots ----------------------------------------------------------------

    @abstractmethod
    async def claim_slot(self, trigger: str, fire_time: float, job_id: str,
                         claimed_at: float) -> bool:
        """Claim the cron slot `(trigger, fire_time)` for `job_id`.

        True for the one caller that claimed it first (across processes sharing the
        database); False, writing nothing, for every later caller.
        """

    @abstractmethod
    async def last_slot(self, trigger: str) -> float | None:
        """The latest claimed fire time of `trigger`, or None when it never fired."""


def value_at(data: Any, path: Sequence[str]) -> Any:
    """The value at `path` (keys) in nested mappings, or None."""
    for key in path:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data
