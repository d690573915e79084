"""Event types, the recorded envelope, the type registry and upcasters (DESIGN §4).

Every job is one stream of events. An event class is a frozen dataclass; its class name
is its `type`, and `SCHEMA_VERSION` the version of its payload. `encode` turns an event
into `(type, schema_version, data)` for a store; `decode` turns stored data back into an
event, running upcasters for payloads written with an older schema version. Stored
events are never rewritten.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from engine.core.frozen import fast_new
from engine.errors import PartiturError


class UnknownEvent(PartiturError):
    """An event type or schema version that this version of Partitur cannot read."""

    code = "unknown_event"


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of all events. `ts` is the time of the decision, in epoch seconds."""

    SCHEMA_VERSION: ClassVar[int] = 1
    ts: float

    @property
    def type(self) -> str:
        return type(self).__name__


@dataclass(frozen=True, slots=True, kw_only=True)
class StepEvent(Event):
    """An event about one step (a plain step or a loop instance `name[i]`)."""

    step: str


# --- job lifecycle -------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class JobCreated(Event):
    job_id: str
    workspace: str
    revision: str
    task: str
    input: Mapping[str, Any]
    plan: Mapping[str, Any]
    source_type: str = "api"
    source_id: str | None = None
    parent: str | None = None
    parent_step: str | None = None
    depth: int = 0
    idempotency_key: str | None = None
    timeout: float | None = None
    priority: int = 3
    by: str | None = None
    retry_of: str | None = None
    task_attempt: int = 1
    secret_paths: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class JobStarted(Event):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class JobQueued(Event):
    """The job waits (`pending`) for a slot of its task's concurrency limit."""

    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskStateLoaded(Event):
    """The task state (`state` in templates) this job was created with."""

    state: Any


@dataclass(frozen=True, slots=True, kw_only=True)
class JobCancelRequested(Event):
    by: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class JobPaused(Event):
    """An operator paused the job: no new step starts until `JobResumed`."""

    by: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class JobResumed(Event):
    """An operator resumed a paused job."""

    by: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class JobCompleted(Event):
    output: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class JobFailed(Event):
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class JobCancelled(Event):
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class JobSkipped(Event):
    reason: str


# --- steps ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class StepReady(StepEvent):
    input: Mapping[str, Any]
    attempt: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class StepSkipped(StepEvent):
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StepClaimed(StepEvent):
    attempt: int
    worker_id: str
    lease: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StepStarted(StepEvent):
    attempt: int
    worker_id: str
    pid: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StepOutput(StepEvent):
    output: Any


@dataclass(frozen=True, slots=True, kw_only=True)
class StepCompleted(StepEvent):
    attempt: int = 1
    output: Any = None
    reused_from: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StepFailed(StepEvent):
    attempt: int = 1
    error: str
    exit_code: int | None = None
    kind: str = "error"  # error | timeout | worker_lost | render | rejected


@dataclass(frozen=True, slots=True, kw_only=True)
class StepRetryScheduled(StepEvent):
    attempt: int  # the attempt that will run next
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class StepSuspended(StepEvent):
    message: str | None = None
    timeout_at: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StepApproved(StepEvent):
    by: str | None = None
    input: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class StepRejected(StepEvent):
    by: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LoopExpanded(StepEvent):
    items: tuple[Any, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class StepCancelled(StepEvent):
    reason: str | None = None


# --- side effects --------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class HookFired(Event):
    hook: str
    job_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CallbackQueued(Event):
    url: str
    event: str
    delivery_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskStateSaved(StepEvent):
    """A step set the task's state (its last `STATE:` line)."""

    state: Any


@dataclass(frozen=True, slots=True, kw_only=True)
class ChildJobStarted(StepEvent):
    """A `task` step started its child job."""

    child_job_id: str


# --- operations (stream `ops/<workspace>`, not a job) ---------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ScopePaused(Event):
    """An operator paused a whole workspace (`task` None) or one task of it: no new job
    of it starts until `ScopeResumed`. Recorded in the workspace's `ops/` stream."""

    workspace: str
    task: str | None = None
    by: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ScopeResumed(Event):
    """An operator resumed a paused workspace or task; its queued jobs may start."""

    workspace: str
    task: str | None = None
    by: str | None = None


# --- registry, encoding, upcasting ---------------------------------------------------

EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (
        JobCreated, JobStarted, JobCancelRequested, JobCompleted, JobFailed, JobCancelled,
        JobSkipped, StepReady, StepSkipped, StepClaimed, StepStarted, StepOutput,
        StepCompleted, StepFailed, StepRetryScheduled, StepSuspended, StepApproved,
        StepRejected, LoopExpanded, StepCancelled, HookFired, CallbackQueued,
        ChildJobStarted, JobQueued, TaskStateLoaded, TaskStateSaved, JobPaused, JobResumed,
        ScopePaused, ScopeResumed,
    )
}

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
# (type, from_version) → function turning a payload of from_version into from_version + 1.
UPCASTERS: dict[tuple[str, int], Upcaster] = {}

_TUPLE_FIELDS: dict[type[Event], tuple[str, ...]] = {}


def _tuple_fields(cls: type[Event]) -> tuple[str, ...]:
    cached = _TUPLE_FIELDS.get(cls)
    if cached is None:
        cached = tuple(f.name for f in fields(cls) if str(f.type).startswith("tuple"))
        _TUPLE_FIELDS[cls] = cached
    return cached


# event class → (type name, schema version, field names but `ts`, tuple field names):
# `dataclasses.fields` builds a new tuple on every call, and every appended event is
# encoded.
_ENCODING: dict[type[Event], tuple[str, int, tuple[str, ...], tuple[str, ...]]] = {}


def _encoding(cls: type[Event]) -> tuple[str, int, tuple[str, ...], tuple[str, ...]]:
    found = _ENCODING.get(cls)
    if found is None:
        names = tuple(f.name for f in fields(cls) if f.name != "ts")
        found = _ENCODING[cls] = (cls.__name__, cls.SCHEMA_VERSION, names, _tuple_fields(cls))
    return found


def encode(event: Event) -> tuple[str, int, dict[str, Any]]:
    """`(type, schema_version, data)`; `data` holds every field but `ts` (the envelope's)."""
    type_, version, names, tuples = _encoding(type(event))
    data = {name: getattr(event, name) for name in names}
    for name in tuples:
        data[name] = list(data[name])
    return type_, version, data


_Maker = Callable[[float, Mapping[str, Any]], "Event | None"]
_MAKERS: dict[type[Event], _Maker] = {}


def _maker(cls: type[Event]) -> _Maker:
    """A constructor of `cls` from stored data that holds exactly every field but `ts`
    (what `encode` writes); it returns None for any other data, which `decode` then reads
    the general way. It sets the slots directly: the frozen `__init__` is several times
    slower, and replay decodes every event of the log."""
    names = [f.name for f in fields(cls) if f.name != "ts"]
    tuples = set(_tuple_fields(cls))
    body = [
        "def make(ts, d):",
        f"    if len(d) != {len(names)}:",
        "        return None",
        "    try:",
        *(f"        v{i} = d[{n!r}]" for i, n in enumerate(names)),
        "        pass",
        "    except KeyError:",
        "        return None",
        *(f"    if v{i} is not None:\n        v{i} = tuple(v{i})"
          for i, n in enumerate(names) if n in tuples),
        "    new = _new(_cls)",
        "    _set_ts(new, ts)",
        *(f"    _set{i}(new, v{i})" for i in range(len(names))),
        "    return new",
    ]
    setters = {n: getattr(cls, n).__set__ for n in ("ts", *names)}
    scope: dict[str, Any] = {"_new": object.__new__, "_cls": cls, "_set_ts": setters["ts"]}
    scope.update({f"_set{i}": setters[n] for i, n in enumerate(names)})
    exec("\n".join(body), scope)  # built from the class's own field names only
    make: _Maker = scope["make"]
    _MAKERS[cls] = make
    return make


def decode(type_: str, schema_version: int, data: Mapping[str, Any], ts: float) -> Event:
    """Rebuild an event from stored data, upcasting older payloads first."""
    cls = EVENT_TYPES.get(type_)
    if cls is None:
        raise UnknownEvent(f"unknown event type {type_!r}")
    if schema_version == cls.SCHEMA_VERSION:
        event = (_MAKERS.get(cls) or _maker(cls))(ts, data)
        if event is not None:
            return event
    if schema_version > cls.SCHEMA_VERSION:
        raise UnknownEvent(
            f"{type_} has schema version {schema_version}; this version reads up to "
            f"{cls.SCHEMA_VERSION}"
        )
    payload = dict(data)
    version = schema_version
    while version < cls.SCHEMA_VERSION:
        upcast = UPCASTERS.get((type_, version))
        if upcast is None:
            raise UnknownEvent(f"no upcaster for {type_} v{version}")
        payload = upcast(payload)
        version += 1
    for name in _tuple_fields(cls):
        if name in payload and payload[name] is not None:
            payload[name] = tuple(payload[name])
    try:
        return cls(ts=ts, **payload)
    except TypeError as exc:
        raise UnknownEvent(f"{type_} payload does not match its schema: {exc}") from exc


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """An event as a store holds it: the envelope of DESIGN §4."""

    global_seq: int
    stream_id: str
    version: int
    type: str
    schema_version: int
    data: Mapping[str, Any]
    ts: float

    def event(self) -> Event:
        """The typed event (upcast if needed)."""
        return decode(self.type, self.schema_version, self.data, self.ts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "global_seq": self.global_seq,
            "stream_id": self.stream_id,
            "version": self.version,
            "type": self.type,
            "schema_version": self.schema_version,
            "data": dict(self.data),
            "ts": self.ts,
        }


# `RecordedEvent(...)` without the frozen `__init__`: stores build one per row they read.
new_recorded_event = fast_new(RecordedEvent)
