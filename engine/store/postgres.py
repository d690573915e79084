"""The PostgreSQL event store on an asyncpg connection pool (DESIGN §5–§6).

The same tables as the SQLite backend (`sql/postgres/NNN_*.sql`, JSONB for payloads),
applied at `open()` in one transaction under an advisory lock, so several servers
starting at once migrate once.

Commit order equals insert order: every append takes the transaction-scoped advisory
lock `APPEND_LOCK` first, then reads the stream version and the highest `global_seq` and
inserts after it. Appends are therefore serialized, `global_seq` is gapless, and a reader
tailing `global_seq > n` can never see a larger seq commit before a smaller one. Each
append also sends `NOTIFY partitur_events, '<last global_seq>'`, delivered on commit;
`listen()` receives them on a dedicated connection.

Round trips of an append: one, a call of the `partitur_append` function (migration 012)
that takes the lock, reads the stream's version, the highest `global_seq` and the
idempotency key (its statements start after the lock, so they see every earlier append)
and, when these allow it, inserts the events and the key, upserts the job and step rows
and sends the NOTIFY, all in the call's own transaction. An append that queues work
(`Outbox.work`) is one call of `partitur_append_batch` (migration 017), which also
queues the rows and NOTIFYs `partitur_work`. An append with outbox objects or slots runs
the call inside BEGIN (with the lock) … COMMIT, one round trip per outbox table in
between. The other appends are group-committed: those of this store that queue up while
one is being written go together in one call of `partitur_append_batch` (their
arguments laid end to end in flat arrays), one statement and one transaction, each with
its own checks and outcome. Released connections go back
to the pool without asyncpg's reset query (`keep_session`).

Errors: driver and socket errors become `engine.errors` — `StoreUnavailable` (retryable)
for a lost or refused connection, `VersionConflict`/`Conflict` for constraint
violations, `ValidationFailed` for a value PostgreSQL cannot store (e.g. a NUL
character in a JSON string). The pool may hold connections that died while idle (a
server restart, terminated backends): when an operation finds its connection lost, the
pool's connections are all expired (replaced on next use) and the operation is tried
once more: a read always; a one-call append too, and when the retry finds the stream
moved on by exactly its events (types, payloads and timestamps), the lost try had
committed them and the append returns those; an append with an outbox only if it broke
before its COMMIT was sent (so it was certainly not written). An append that fails
otherwise raises and was not acknowledged; one whose commit was cut off may or may not be
written, and a later append expecting the same version then meets `VersionConflict`.

Advisory lock keys of Partitur live in this module's `*_LOCK` constants.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any, TypeVar

import asyncpg

from engine.core.events import Event, RecordedEvent, encode, new_recorded_event
from engine.core.projections import JobRow, StepRow, new_job_row, new_step_row
from engine.errors import (
    Conflict,
    PartiturError,
    StoreUnavailable,
    ValidationFailed,
    VersionConflict,
)
from engine.store.base import (
    CHILDREN_SHOWN,
    AppendResult,
    DuplicateKey,
    EventStore,
    JobDetail,
    JobFilter,
    Outbox,
    Projection,
)
from engine.store.cloud import PG_OUTBOX, outbox_params
from engine.store.codec import dumps, loads
from engine.store.migrations import load_migrations, pending
from engine.store.pgnotify import Listener
from engine.store.shards import Shard
from engine.store.slots import pg_apply
from engine.store.work import (
    PG_ENQUEUE_ONE,
    PG_NOTIFY,
    PG_QUEUED,
    WORK_CHANNEL,
    WorkItem,
    pg_item,
    pg_item_params,
)

T = TypeVar("T")

MIGRATE_LOCK = 0x7061_7274_6974_0001
"""Held (transaction-scoped) while migrations run."""
APPEND_LOCK = 0x7061_7274_6974_0002
"""Held (transaction-scoped) by every append: serializes appends in commit order."""

EVENTS_CHANNEL = "partitur_events"
_TERMINAL = ["completed", "failed", "cancelled", "skipped"]

# --- SQL -----------------------------------------------------------------------------

CREATE_MIGRATIONS = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    checksum   TEXT NOT NULL,
    applied_at DOUBLE PRECISION NOT NULL
)"""
LOCK = "SELECT pg_advisory_xact_lock($1)"
SELECT_MIGRATIONS = "SELECT version, checksum FROM schema_migrations"
INSERT_MIGRATION = (
    "INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES ($1, $2, $3, $4)"
)

# BEGIN and the append lock in one round trip (the simple-query protocol runs both).
BEGIN_APPEND = f"BEGIN; SELECT pg_advisory_xact_lock({APPEND_LOCK})"
EVENT_COLUMNS = "global_seq, stream_id, version, type, schema_version, data, ts"
READ_STREAM = (
    "SELECT " + EVENT_COLUMNS + " FROM events "
    "WHERE stream_id = $1 AND version > $2 ORDER BY version"
)
TAIL = (
    "SELECT " + EVENT_COLUMNS + " FROM events "
    "WHERE global_seq > $1 ORDER BY global_seq LIMIT $2"
)
EVENTS_OF_TYPES = (
    "SELECT " + EVENT_COLUMNS + " FROM events "
    "WHERE stream_id = ANY($1::text[]) AND type = ANY($2::text[]) ORDER BY global_seq"
)
# `engine.store.shards.Shard.holds` in SQL, within a window of seqs ($1, $5]: unbounded,
# the planner takes the filter for a rare one and sorts every later event for each page.
TAIL_SHARD = (
    "SELECT " + EVENT_COLUMNS + " FROM events "
    "WHERE global_seq > $1 AND global_seq <= $5 AND ascii(right(stream_id, 1)) % $2 = $3 "
    "ORDER BY global_seq LIMIT $4"
)
ANY_AFTER = "SELECT EXISTS (SELECT 1 FROM events WHERE global_seq > $1)"
LAST_SEQ = "SELECT COALESCE(MAX(global_seq), 0) FROM events"
STREAM_IDS = "SELECT stream_id FROM events WHERE version = 1 ORDER BY global_seq"

FIND_KEY = "SELECT stream_id FROM idempotency_keys WHERE scope = $1 AND key = $2"

JOB_COLUMNS = (
    "job_id, workspace, task_name, revision, status, source_type, source_id, parent_job_id, "
    "input, output, error, created_at, started_at, completed_at, priority, created_by, "
    "retry_of, version"
)
# The rebuild's writes (`write_projections`): many rows in one statement, given as one
# array per column (JSONB ones as JSON text, cast back), so that the job counters'
# statement trigger fires once per batch, not once per row.
UPSERT_JOBS = """
INSERT INTO jobs (job_id, workspace, task_name, revision, status, source_type, source_id,
                  parent_job_id, input, output, error, created_at, started_at, completed_at,
                  priority, created_by, retry_of, version, last_seq)
SELECT job_id, workspace, task_name, revision, status, source_type, source_id,
       parent_job_id, input::jsonb, output::jsonb, error, created_at, started_at,
       completed_at, priority, created_by, retry_of, version, last_seq
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::float8[],
            $13::float8[], $14::float8[], $15::int[], $16::text[], $17::text[], $18::int[],
            $19::bigint[])
    AS r(job_id, workspace, task_name, revision, status, source_type, source_id,
         parent_job_id, input, output, error, created_at, started_at, completed_at,
         priority, created_by, retry_of, version, last_seq)
ON CONFLICT (job_id) DO UPDATE SET
    workspace = excluded.workspace, task_name = excluded.task_name,
    revision = excluded.revision, status = excluded.status,
    source_type = excluded.source_type, source_id = excluded.source_id,
    parent_job_id = excluded.parent_job_id, input = excluded.input,
    output = excluded.output, error = excluded.error, created_at = excluded.created_at,
    started_at = excluded.started_at, completed_at = excluded.completed_at,
    priority = excluded.priority, created_by = excluded.created_by,
    retry_of = excluded.retry_of, version = excluded.version, last_seq = excluded.last_seq
"""
GET_JOB = "SELECT " + JOB_COLUMNS + " FROM jobs WHERE job_id = $1"
# The job list: WHERE is assembled from the fixed clauses below (each gets the number of
# its placeholder), values always bound.
LIST_JOBS = "SELECT " + JOB_COLUMNS + " FROM jobs"
LIST_JOBS_PAGE = " ORDER BY created_at DESC, job_id DESC LIMIT ${} OFFSET ${}"
COUNT_JOBS = "SELECT COUNT(*) FROM jobs"
# The same total from the per-(workspace, task, status, source) counters (migration 011),
# when the filter uses only those dimensions.
SUM_JOB_COUNTS = "SELECT COALESCE(SUM(n), 0)::bigint FROM job_counts"
COUNTED_FILTERS = frozenset({"workspace", "task_name", "source_type"})
JOB_FILTERS = {
    "workspace": "workspace = ${}",
    "task_name": "task_name = ${}",
    "source_type": "source_type = ${}",
    "since": "created_at >= ${}",
    "parent_job_id": "parent_job_id = ${}",
}
STATUS_FILTER = "status = ANY(${}::text[])"
ACTIVE_JOBS = (
    "SELECT job_id FROM jobs WHERE status <> ALL($1::text[]) ORDER BY created_at, job_id"
)

STEP_COLUMNS = (
    "job_id, step_name, position, action_name, action_type, status, attempt, input, output, "
    "error_message, error_kind, exit_code, worker_id, started_at, completed_at, loop_of, "
    "loop_index, skip_reason, message, depends_on, retry_at, child_job_id"
)
UPSERT_STEPS = """
INSERT INTO steps (job_id, step_name, position, action_name, action_type, status, attempt,
                   input, output, error_message, error_kind, exit_code, worker_id,
                   started_at, completed_at, loop_of, loop_index, skip_reason, message,
                   depends_on, retry_at, child_job_id)
SELECT job_id, step_name, position, action_name, action_type, status, attempt,
       input::jsonb, output::jsonb, error_message, error_kind, exit_code, worker_id,
       started_at, completed_at, loop_of, loop_index, skip_reason, message,
       depends_on::jsonb, retry_at, child_job_id
FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::text[], $6::text[],
            $7::int[], $8::text[], $9::text[], $10::text[], $11::text[], $12::int[],
            $13::text[], $14::float8[], $15::float8[], $16::text[], $17::int[], $18::text[],
            $19::text[], $20::text[], $21::float8[], $22::text[])
    AS r(job_id, step_name, position, action_name, action_type, status, attempt,
         input, output, error_message, error_kind, exit_code, worker_id,
         started_at, completed_at, loop_of, loop_index, skip_reason, message,
         depends_on, retry_at, child_job_id)
ON CONFLICT (job_id, step_name) DO UPDATE SET
    position = excluded.position, action_name = excluded.action_name,
    action_type = excluded.action_type, status = excluded.status,
    attempt = excluded.attempt, input = excluded.input, output = excluded.output,
    error_message = excluded.error_message, error_kind = excluded.error_kind,
    exit_code = excluded.exit_code, worker_id = excluded.worker_id,
    started_at = excluded.started_at, completed_at = excluded.completed_at,
    loop_of = excluded.loop_of, loop_index = excluded.loop_index,
    skip_reason = excluded.skip_reason, message = excluded.message,
    depends_on = excluded.depends_on, retry_at = excluded.retry_at,
    child_job_id = excluded.child_job_id
"""
GET_STEPS = (
    "SELECT " + STEP_COLUMNS + " FROM steps WHERE job_id = $1 ORDER BY position, step_name"
)
RESET_PROJECTIONS = "TRUNCATE steps, jobs, job_counts"

# An append in one call of `partitur_append` (migration 012): the lock, the state read,
# the events, the key, the job and step rows and the NOTIFY. Alone it is one round trip
# and its own transaction; an append with an outbox runs it inside BEGIN … COMMIT.
# The function has `APPEND_LOCK`'s value written in.
CALL_APPEND = (
    "SELECT o_version, o_last, o_owner FROM partitur_append("
    + ", ".join(f"${i}" for i in range(1, 50)) + ")"
)
# A group commit: the appends of a group (with the work-queue rows they queue) as flat
# arrays, one call of `partitur_append_batch` (migration 017), one statement and its own
# transaction. (`partitur_append_many`, the JSON form of migrations 013/014, is unused.)
CALL_APPEND_BATCH = (
    "SELECT o_version, o_last, o_owner FROM partitur_append_batch("
    + ", ".join(f"${i}" for i in range(1, 63)) + ")"
)
_NO_JOB: tuple[None, ...] = (None,) * 18
GROUP_MAX = 64
"""The most appends one group commit takes."""
# The step rows as one array per column; JSONB columns travel as JSON text.
_STEP_NAMES = [c.strip() for c in STEP_COLUMNS.split(",")]
_STEP_JSON = frozenset({"input", "output", "depends_on"})
_STEP_JSON_PARAMS = frozenset(i for i, name in enumerate(_STEP_NAMES) if name in _STEP_JSON)
_JOB_PARAM_NAMES = [*(c.strip() for c in JOB_COLUMNS.split(",")), "last_seq"]
_JOB_JSON_PARAMS = frozenset(i for i, name in enumerate(_JOB_PARAM_NAMES)
                             if name in ("input", "output"))
_NO_STEPS: list[list[Any]] = [[] for _ in _STEP_NAMES]

# The job detail in one statement (one round trip, one snapshot): the job row, then its
# steps, its newest children and its events of the given types as arrays of records. A
# record's JSONB fields come as text: the JSON codec does not apply inside records.
_STEP_RECORD = ", ".join(f"{c}::text" if c in _STEP_JSON else c for c in _STEP_NAMES)
_EVENT_RECORD = EVENT_COLUMNS.replace(" data,", " data::text,")
JOB_DETAIL = (
    "SELECT " + JOB_COLUMNS + ", "
    "ARRAY(SELECT ROW(" + _STEP_RECORD + ") FROM steps s WHERE s.job_id = $1 "
    "ORDER BY s.position, s.step_name), "
    "ARRAY(SELECT c.job_id FROM jobs c WHERE c.parent_job_id = $1 "
    "ORDER BY c.created_at DESC, c.job_id DESC LIMIT $3), "
    "ARRAY(SELECT ROW(" + _EVENT_RECORD + ") FROM events e WHERE e.stream_id = $1 "
    "AND e.type = ANY($2::text[]) ORDER BY e.version) "
    "FROM jobs WHERE job_id = $1"
)

CLAIM_SLOT = """
INSERT INTO trigger_slots (trigger, fire_time, job_id, claimed_at) VALUES ($1, $2, $3, $4)
ON CONFLICT (trigger, fire_time) DO NOTHING
RETURNING 1
"""
LAST_SLOT = "SELECT MAX(fire_time) FROM trigger_slots WHERE trigger = $1"

# --- encoding ------------------------------------------------------------------------


def _job_params(row: JobRow, last_seq: int) -> tuple[Any, ...]:
    return (
        row.job_id, row.workspace, row.task_name, row.revision, row.status, row.source_type,
        row.source_id, row.parent_job_id, row.input, row.output, row.error,
        row.created_at, row.started_at, row.completed_at, row.priority, row.created_by,
        row.retry_of, row.version, last_seq,
    )


def _step_params(row: StepRow) -> tuple[Any, ...]:
    return (
        row.job_id, row.step_name, row.position, row.action_name, row.action_type, row.status,
        row.attempt, row.input, row.output, row.error_message, row.error_kind,
        row.exit_code, row.worker_id, row.started_at, row.completed_at, row.loop_of,
        row.loop_index, row.skip_reason, row.message, list(row.depends_on), row.retry_at,
        row.child_job_id,
    )


def _step_columns(rows: Sequence[StepRow]) -> list[list[Any]]:
    """Step rows of one job as one list per column of `STEP_COLUMNS`, JSONB columns as
    JSON text; a step named twice keeps its last row (one statement cannot upsert a row
    twice)."""
    latest = {row.step_name: row for row in rows}
    return _as_columns([_step_params(row) for row in latest.values()], len(_STEP_NAMES),
                       _STEP_JSON_PARAMS)


def _as_columns(rows: Sequence[tuple[Any, ...]], width: int, json: Collection[int]
                ) -> list[list[Any]]:
    """Rows as one list per column, the values at the `json` positions as JSON text."""
    columns: list[list[Any]] = [[] for _ in range(width)]
    for row in rows:
        for i, value in enumerate(row):
            columns[i].append(dumps(value) if i in json and value is not None else value)
    return columns


def _job(r: Sequence[Any]) -> JobRow:
    return new_job_row(
        job_id=r[0], workspace=r[1], task_name=r[2], revision=r[3], status=r[4],
        source_type=r[5], source_id=r[6], parent_job_id=r[7], input=r[8], output=r[9],
        error=r[10], created_at=r[11], started_at=r[12], completed_at=r[13], priority=r[14],
        created_by=r[15], retry_of=r[16], version=r[17],
    )


def _step(r: Sequence[Any]) -> StepRow:
    return new_step_row(
        job_id=r[0], step_name=r[1], position=r[2], action_name=r[3], action_type=r[4],
        status=r[5], attempt=r[6], input=r[7], output=r[8], error_message=r[9],
        error_kind=r[10], exit_code=r[11], worker_id=r[12], started_at=r[13],
        completed_at=r[14], loop_of=r[15], loop_index=r[16], skip_reason=r[17],
        message=r[18], depends_on=tuple(r[19]), retry_at=r[20], child_job_id=r[21],
    )


def _json(text: str | None) -> Any:
    return None if text is None else loads(text)


def _recorded(r: Sequence[Any]) -> RecordedEvent:
    return new_recorded_event(r[0], r[1], r[2], r[3], r[4], r[5], r[6])


async def init_connection(conn: Any) -> None:
    """Per-connection setup: JSON and JSONB columns read and write Python values."""
    for name in ("json", "jsonb"):
        await conn.set_type_codec(name, encoder=dumps, decoder=loads, schema="pg_catalog")


async def keep_session(conn: Any) -> None:
    """The pool's reset of a released connection, beyond the ROLLBACK asyncpg always does
    when a transaction is left open: nothing.

    asyncpg's default sends `pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`,
    a round trip per release. Pooled connections never hold what that undoes: Partitur
    takes only transaction-scoped advisory locks on them, opens no cursors outside a
    transaction and sets no session settings; LISTEN and the leader's session lock use
    connections of their own.
    """


# --- errors --------------------------------------------------------------------------

_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,  # class 08, including "connection does not exist"
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.CannotConnectNowError,  # 57P03: starting up or shutting down
    asyncpg.AdminShutdownError,  # 57P01: terminated by the administrator or a restart
    asyncpg.CrashShutdownError,
    asyncpg.InterfaceError,  # the client side of a closed connection or pool
    # The protocol saw something unexpected, e.g. a FATAL message that arrived while the
    # connection sat idle in the pool: the connection is unusable.
    asyncpg.InternalClientError,
)


def connection_lost(exc: BaseException) -> bool:
    """Whether `exc` means the connection (not the statement) failed.

    A timeout is not: the server may still be working on the statement.
    """
    return isinstance(exc, _CONNECTION_ERRORS) and not isinstance(exc, TimeoutError)


def wrap_error(exc: BaseException, what: str) -> PartiturError:
    """The `engine.errors` form of a driver or socket error raised while doing `what`."""
    if isinstance(exc, PartiturError):
        return exc
    if isinstance(exc, asyncpg.UniqueViolationError):
        if exc.constraint_name in ("events_stream_version", "events_pkey"):
            return VersionConflict(f"{what}: the stream moved on ({exc})")
        return Conflict(f"{what}: {exc}")
    if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
        return Conflict(f"{what}: {exc}")
    if isinstance(exc, asyncpg.DataError):
        return ValidationFailed(f"{what}: PostgreSQL cannot store this value: {exc}")
    if isinstance(exc, TimeoutError):
        return StoreUnavailable(f"{what}: PostgreSQL did not answer in time")
    return StoreUnavailable(f"{what}: {type(exc).__name__}: {exc}")


# --- the store -----------------------------------------------------------------------


OWN_RANGES_KEPT = 10_000  # appends remembered for `own_appends_cover`


class PostgresStore(EventStore):
    """An `EventStore` in PostgreSQL, through a pool of `min_size`…`max_size` connections."""

    def __init__(
        self,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout: float = 5.0,
        command_timeout: float = 30.0,
    ) -> None:
        self.url = url
        self.min_size = min_size
        self.max_size = max_size
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self._pool: Any = None
        self._listeners: list[Listener] = []
        self._queued: list[_Queued] = []
        self._committer: asyncio.Task[None] | None = None
        self._own: dict[int, int] = {}  # first → last global seq of this process's appends
        # One future per append in flight, resolved once its range is in `_own`.
        self._in_flight: set[asyncio.Future[None]] = set()

    # --- lifecycle -------------------------------------------------------------------

    @property
    def pool(self) -> Any:
        """The open `asyncpg.Pool` (to share with `PostgresLogStore`)."""
        if self._pool is None:
            raise StoreUnavailable("the PostgreSQL store is not open")
        return self._pool

    async def open(self) -> None:
        """Create the pool and apply pending migrations."""
        if self._pool is not None:
            return
        try:
            self._pool = await asyncpg.create_pool(
                self.url, min_size=self.min_size, max_size=self.max_size,
                timeout=self.connect_timeout, command_timeout=self.command_timeout,
                init=init_connection, reset=keep_session,
            )
        except Exception as exc:
            raise wrap_error(exc, "cannot open the PostgreSQL store") from exc
        try:
            await self._run(migrate, retry=True, what="migrate")
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Stop the listeners and close the pool (waiting briefly for busy connections)."""
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            await listener.close()
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), 5.0)
        except Exception:  # a timeout or a broken connection: drop what is left
            pool.terminate()

    # --- plumbing --------------------------------------------------------------------

    async def _run(
        self, fn: Callable[[Any], Awaitable[T]], *, retry: bool | Callable[[], bool],
        what: str,
    ) -> T:
        """`fn(connection)` with a pooled connection, driver errors wrapped.

        With `retry` (or when `retry()` says so, asked after the failure), a lost
        connection is replaced and `fn` run once more.
        """
        for attempt in (1, 2):
            pool = self._pool
            if pool is None:
                raise StoreUnavailable(f"{what}: the PostgreSQL store is not open")
            try:
                async with acquire(pool, self.connect_timeout) as conn:
                    return await guarded(fn, conn)
            except PartiturError:
                raise
            except Exception as exc:
                again = (
                    attempt == 1 and connection_lost(exc) and self._pool is pool
                    and (retry() if callable(retry) else retry)
                )
                if not again:
                    raise wrap_error(exc, what) from exc
                # One dead connection means the others from before are likely dead too
                # (a restart, a failover): have the pool replace them all.
                await pool.expire_connections()
        raise AssertionError("unreachable")

    async def _write(
        self, fn: Callable[[Any], Awaitable[T]], *, what: str, begin: str | None = None,
    ) -> T:
        """`fn(connection)` in one transaction; retried on a lost connection only if the
        loss came before COMMIT was sent (so the first try certainly wrote nothing).

        `begin` replaces the plain BEGIN: statements without parameters that open the
        transaction and run first, in the same round trip.
        """
        committing = False

        async def transaction(conn: Any) -> T:
            nonlocal committing
            if begin is None:
                async with conn.transaction():
                    result = await fn(conn)
                    committing = True
                return result
            await conn.execute(begin)
            try:
                result = await fn(conn)
            except BaseException:
                await rollback(conn)
                raise
            committing = True
            await conn.execute("COMMIT")
            return result

        return await self._run(transaction, retry=lambda: not committing, what=what)

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        async def fetch(conn: Any) -> list[Any]:
            rows: list[Any] = await conn.fetch(sql, *args)
            return rows

        return await self._run(fetch, retry=True, what="read")

    async def _scalar(self, sql: str, *args: Any) -> Any:
        async def scalar(conn: Any) -> Any:
            return await conn.fetchval(sql, *args)

        return await self._run(scalar, retry=True, what="read")

    # --- events ----------------------------------------------------------------------

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
        if not events:
            raise ValueError("append needs at least one event")
        work = [pg_item_params(i) for i in outbox.work] if outbox is not None else []
        objects = [outbox_params(o) for o in outbox.objects] if outbox is not None else []
        encoded = [(encode(e), e.ts) for e in events]
        types = [t for (t, _, _), _ in encoded]
        schema_versions = [sv for (_, sv, _), _ in encoded]
        payloads = [dumps(d) for (_, _, d), _ in encoded]
        stamps = [ts for _, ts in encoded]
        versions = list(range(expected_version + 1, expected_version + 1 + len(events)))
        scope, key = idempotency if idempotency is not None else (None, None)

        n = len(events)
        call = [
            stream_id, expected_version, scope, key, types, schema_versions, payloads, stamps,
            EVENTS_CHANNEL,
            *(_job_params(projection.job, 0)[:-1] if projection is not None else _NO_JOB),
            *(_step_columns(projection.steps) if projection is not None else _NO_STEPS),
        ]

        def refuse(version: int, owner: str | None) -> None:
            if owner is not None and idempotency is not None:
                raise DuplicateKey(idempotency[0], idempotency[1], owner)
            if version != expected_version:
                raise VersionConflict(
                    f"stream {stream_id} is at version {version}, not {expected_version}"
                )

        async def mine(conn: Any, version: int, owner: str | None) -> int | None:
            """The first seq of these very events when an earlier try wrote them."""
            if version != expected_version + n or owner not in (None, stream_id):
                return None
            rows = await conn.fetch(READ_STREAM, stream_id, expected_version)
            stored = [(r[3], r[4], r[5], r[6]) for r in rows]
            ours = [(t, sv, loads(text), ts)
                    for ((t, sv, _), ts), text in zip(encoded, payloads, strict=True)]
            return int(rows[0][0]) if stored == ours else None

        def settle(version: int, last: int, owner: str | None) -> int:
            refuse(version, owner)
            return int(last) + 1

        async def alone(conn: Any, again: bool) -> int:
            if work:
                rows = await conn.fetch(CALL_APPEND_BATCH, *_batch_params([(call, work)]))
                version, last, owner = rows[0]
            else:
                version, last, owner = await conn.fetchrow(CALL_APPEND, *call)
            if again and (version != expected_version or owner is not None):
                # An earlier try, whose outcome was lost with its connection, may have
                # committed these events.
                found = await mine(conn, version, owner)
                if found is not None:
                    return found
            return settle(version, last, owner)

        async def with_outbox(conn: Any) -> int:
            version, last, owner = await conn.fetchrow(CALL_APPEND, *call)
            first = settle(version, last, owner)
            if work:
                await conn.executemany(PG_ENQUEUE_ONE, work)
                await conn.execute(PG_NOTIFY)
            if objects:
                await conn.executemany(PG_OUTBOX, objects)
            if outbox is not None and (outbox.take_slots or outbox.free_slots):
                await pg_apply(conn, outbox.take_slots, outbox.free_slots)
            return first

        what = f"append to stream {stream_id}"
        answered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._in_flight.add(answered)
        try:
            if objects or (outbox is not None and (outbox.take_slots or outbox.free_slots)):
                first = await self._write(with_outbox, what=what, begin=BEGIN_APPEND)
            else:
                first = await self._group_commit(_Queued(call, work, settle, alone, what))
            if len(self._own) >= OWN_RANGES_KEPT:
                self._own.clear()  # nobody follows them: `own_appends_cover` just says no
            self._own[first] = first + n - 1
        finally:
            self._in_flight.discard(answered)
            answered.set_result(None)
        return AppendResult([
            RecordedEvent(first + i, stream_id, versions[i], types[i], schema_versions[i],
                          loads(payloads[i]), stamps[i])
            for i in range(n)
        ])

    async def _group_commit(self, item: _Queued) -> int:
        """Queue a one-call append; the committer task writes the queue in order.

        Appends that arrive while a commit is in flight share the next transaction (group
        commit): one COMMIT, one wait for the WAL to reach the disk, one hold of the append
        lock for all of them. A lone append is one call in its own transaction.
        """
        item.future = asyncio.get_running_loop().create_future()
        self._queued.append(item)
        loop = asyncio.get_running_loop()
        if self._committer is None or self._committer.done() or (
            self._committer.get_loop() is not loop
        ):
            self._committer = loop.create_task(self._commit_queued())
        return await item.future

    async def _commit_queued(self) -> None:
        batch: list[_Queued] = []
        try:
            while self._queued:
                batch, self._queued = self._queued[:GROUP_MAX], self._queued[GROUP_MAX:]
                if len(batch) == 1:
                    await self._commit_alone(batch[0], again=False)
                    continue
                try:
                    rows = await self._run(
                        functools.partial(commit_group, batch=batch), retry=False,
                        what=f"append {len(batch)} event batches",
                    )
                except Exception:
                    # Nothing of it is acknowledged: each append on its own then,
                    # recognising its events should the COMMIT have gone through.
                    for item in batch:
                        await self._commit_alone(item, again=True)
                    continue
                for item, (version, last, owner) in zip(batch, rows, strict=True):
                    try:
                        result = item.settle(version, last, owner)
                    except Exception as exc:
                        item.fail(exc)
                    else:
                        item.succeed(result)
        finally:
            # Cancelled (the loop is closing): whatever was not answered is not acknowledged.
            for item in [*batch, *self._queued]:
                item.fail(StoreUnavailable(f"{item.what}: the store was stopped"))
            self._queued = []

    async def _commit_alone(self, item: _Queued, *, again: bool) -> None:
        tries = 0

        async def once(conn: Any) -> int:
            nonlocal tries
            tries += 1
            return await item.alone(conn, again or tries > 1)

        try:
            result = await self._run(once, retry=True, what=item.what)
        except Exception as exc:
            item.fail(exc)
        else:
            item.succeed(result)

    async def read(self, stream_id: str, after_version: int = 0) -> list[RecordedEvent]:
        return [_recorded(r) for r in await self._fetch(READ_STREAM, stream_id, after_version)]

    async def tail(self, after_seq: int, limit: int = 1000) -> list[RecordedEvent]:
        return [_recorded(r) for r in await self._fetch(TAIL, after_seq, limit)]

    async def first_event_values(self, stream_ids: Sequence[str],
                                 paths: Sequence[Sequence[str]]) -> dict[str, list[Any]]:
        if not stream_ids or not paths:
            return {}
        values = ", ".join(f"data #> ${i}::text[]" for i in range(2, len(paths) + 2))
        sql = (f"SELECT stream_id, jsonb_build_array({values}) FROM events "
               "WHERE stream_id = ANY($1::text[]) AND version = 1")
        rows = await self._fetch(sql, list(stream_ids), *(list(path) for path in paths))
        return {r[0]: r[1] for r in rows}

    async def events_of_types(self, stream_ids: Sequence[str], types: Collection[str]
                              ) -> list[RecordedEvent]:
        if not stream_ids or not types:
            return []
        rows = await self._fetch(EVENTS_OF_TYPES, list(stream_ids), list(types))
        return [_recorded(r) for r in rows]

    async def tail_shard(self, after_seq: int, limit: int, shard: Shard
                         ) -> list[RecordedEvent]:
        window = max(limit, 1) * shard.count  # holds about `limit` of the shard's events
        while True:
            rows = await self._fetch(TAIL_SHARD, after_seq, shard.count, shard.index, limit,
                                     after_seq + window)
            if rows or not await self._scalar(ANY_AFTER, after_seq + window):
                return [_recorded(r) for r in rows]
            after_seq += window

    async def last_seq(self) -> int:
        seq: int = await self._scalar(LAST_SEQ)
        return seq

    async def stream_ids(self) -> list[str]:
        return [r[0] for r in await self._fetch(STREAM_IDS)]

    async def find_key(self, scope: str, key: str) -> str | None:
        found: str | None = await self._scalar(FIND_KEY, scope, key)
        return found

    async def queued_work(self, job_id: str) -> list[WorkItem]:
        return [pg_item(r) for r in await self._fetch(PG_QUEUED, job_id)]

    async def own_appends_answered(self) -> None:
        """Wait until the appends of this store in flight now have been answered.

        A notification of an append can arrive before the append's own answer: once
        this returns, `own_appends_cover` knows every append of this process that
        committed before the call."""
        if self._in_flight:
            await asyncio.wait(list(self._in_flight))

    def own_appends_cover(self, after: int, upto: int) -> bool:
        """Whether every event with `after < global_seq <= upto` was appended by this
        store object (so this process has already seen them). The seqs are gapless; a
        seq not known here answers False. Forgets the ranges up to `upto` either way:
        the caller's cursor moves past them."""
        seq = after + 1
        while seq <= upto:
            last = self._own.get(seq)
            if last is None:
                break
            seq = last + 1
        covered = seq > upto
        for first in [f for f in self._own if f <= upto]:
            del self._own[first]
        return covered

    async def listen(self, callback: Callable[[int], None]) -> Listener:
        """Call `callback(global_seq)` for every append committed by any process.

        The seq is the last one of the append. After the LISTEN connection was lost and
        re-established, `callback` gets the current `last_seq()`, so a consumer that
        tails from its cursor on every call misses nothing. `close()` the listener (or
        the store) to stop.
        """
        pool = self.pool  # raises when not open

        async def connect() -> Any:
            return await asyncpg.connect(self.url, timeout=self.connect_timeout)

        async def caught_up() -> None:
            if self._pool is pool:
                callback(await self.last_seq())

        listener = Listener(
            connect, EVENTS_CHANNEL, lambda payload: callback(int(payload)),
            on_reconnect=caught_up,
        )
        await listener.start()
        self._listeners.append(listener)
        return listener

    # --- projections -----------------------------------------------------------------

    async def list_jobs(self, where: JobFilter) -> tuple[list[JobRow], int]:
        clauses: list[str] = []
        params: list[Any] = []
        counted = True  # the filter uses only the dimensions of `job_counts`
        for name, clause in JOB_FILTERS.items():
            value = getattr(where, name)
            if value is not None:
                params.append(value)
                clauses.append(clause.format(len(params)))
                counted = counted and name in COUNTED_FILTERS
        if where.status:
            params.append(list(where.status))
            clauses.append(STATUS_FILTER.format(len(params)))
        condition = " WHERE " + " AND ".join(clauses) if clauses else ""
        page = LIST_JOBS_PAGE.format(len(params) + 1, len(params) + 2)
        count = (SUM_JOB_COUNTS if counted else COUNT_JOBS) + condition

        # The total and the page in one statement (one round trip, one snapshot); a page
        # past the end is one row holding the total and NULLs.
        sql = (
            f"SELECT t.total, p.* FROM ({count}) AS t(total) "
            f"LEFT JOIN LATERAL ({LIST_JOBS}{condition}{page}) AS p ON true "
            "ORDER BY p.created_at DESC, p.job_id DESC"
        )

        async def fetch(conn: Any) -> tuple[list[JobRow], int]:
            rows = await conn.fetch(sql, *params, where.limit, where.offset)
            total = int(rows[0][0])
            return [_job(tuple(r)[1:]) for r in rows if r[1] is not None], total

        return await self._run(fetch, retry=True, what="list jobs")

    async def get_job(self, job_id: str) -> JobRow | None:
        rows = await self._fetch(GET_JOB, job_id)
        return _job(rows[0]) if rows else None

    async def get_steps(self, job_id: str) -> list[StepRow]:
        return [_step(r) for r in await self._fetch(GET_STEPS, job_id)]

    async def job_detail(self, job_id: str, event_types: Collection[str]) -> JobDetail | None:
        rows = await self._fetch(JOB_DETAIL, job_id, list(event_types), CHILDREN_SHOWN)
        if not rows:
            return None
        r = rows[0]
        n = len(r) - 3
        steps = [_step([_json(v) if name in _STEP_JSON else v
                        for name, v in zip(_STEP_NAMES, s, strict=True)]) for s in r[n]]
        events = [_recorded((*e[:5], loads(e[5]), e[6])) for e in r[n + 2]]
        return JobDetail(_job(r), steps, list(reversed(r[n + 1])), events)

    async def active_job_ids(self) -> list[str]:
        return [r[0] for r in await self._fetch(ACTIVE_JOBS, _TERMINAL)]

    async def reset_projections(self) -> None:
        async def reset(conn: Any) -> None:
            await conn.execute(RESET_PROJECTIONS)

        await self._run(reset, retry=True, what="reset projections")

    async def write_projections(self, rows: Sequence[Projection], last_seq: int) -> None:
        jobs = _as_columns([_job_params(p.job, p.last_seq or last_seq) for p in rows],
                           len(_JOB_PARAM_NAMES), _JOB_JSON_PARAMS)
        steps = _as_columns([_step_params(s) for p in rows for s in p.steps],
                            len(_STEP_NAMES), _STEP_JSON_PARAMS)

        async def write(conn: Any) -> None:
            if rows:
                await conn.execute(UPSERT_JOBS, *jobs)
            if steps[0]:
                await conn.execute(UPSERT_STEPS, *steps)

        # Upserts: writing them twice is harmless, so any lost connection may retry.
        await self._run(write_all(write), retry=True, what="write projections")

    # --- trigger slots ---------------------------------------------------------------

    async def claim_slot(self, trigger: str, fire_time: float, job_id: str,
                         claimed_at: float) -> bool:
        async def claim(conn: Any) -> bool:
            claimed = await conn.fetchval(CLAIM_SLOT, trigger, fire_time, job_id, claimed_at)
            return claimed is not None

        return await self._write(claim, what=f"claim slot {fire_time} of {trigger}")

    async def last_slot(self, trigger: str) -> float | None:
        found: float | None = await self._scalar(LAST_SLOT, trigger)
        return found


class _Queued:
    """A one-call append waiting for the committer: its call's arguments, how to read the
    call's result (`settle`), how to run it on its own (`alone`), and its caller's future."""

    __slots__ = ("alone", "call", "future", "settle", "what", "work")

    def __init__(
        self, call: list[Any], work: list[tuple[Any, ...]],
        settle: Callable[[int, int, str | None], int],
        alone: Callable[[Any, bool], Awaitable[int]], what: str,
    ) -> None:
        self.call = call
        self.work = work
        self.settle = settle
        self.alone = alone
        self.what = what
        self.future: asyncio.Future[int] | None = None

    def _waiting(self) -> bool:
        future = self.future
        return future is not None and not future.done() and not future.get_loop().is_closed()

    def succeed(self, first: int) -> None:
        if self._waiting() and self.future is not None:
            self.future.set_result(first)

    def fail(self, exc: BaseException) -> None:
        if self._waiting() and self.future is not None:
            self.future.set_exception(exc)




def _batch_params(items: Sequence[tuple[Sequence[Any], Sequence[tuple[Any, ...]]]]
                  ) -> list[Any]:
    """The arguments of one `partitur_append_batch` call for appends given as the
    arguments of their `partitur_append` call and the work-queue rows (parameters of
    `PG_ENQUEUE_ONE`) they queue: each argument of the calls laid end to end in one
    array, with the first and last position of each append's part (1-based)."""
    streams: list[Any] = []
    expected: list[Any] = []
    scopes: list[Any] = []
    keys: list[Any] = []
    events: list[list[Any]] = [[], [], [], []]
    jobs: list[list[Any]] = [[] for _ in range(18)]
    steps: list[list[Any]] = [[] for _ in _STEP_NAMES]
    work_rows: list[list[Any]] = [[] for _ in range(6)]
    e_lo: list[int] = []
    e_hi: list[int] = []
    s_lo: list[int] = []
    s_hi: list[int] = []
    w_lo: list[int] = []
    w_hi: list[int] = []
    for call, work in items:
        streams.append(call[0])
        expected.append(call[1])
        scopes.append(call[2])
        keys.append(call[3])
        e_lo.append(len(events[0]) + 1)
        for column, values in zip(events, call[4:8], strict=True):
            column.extend(values)
        e_hi.append(len(events[0]))
        for k, (column, value) in enumerate(zip(jobs, call[9:27], strict=True)):
            column.append(dumps(value) if k in _JOB_JSON_PARAMS and value is not None else value)
        s_lo.append(len(steps[0]) + 1)
        for column, values in zip(steps, call[27:49], strict=True):
            column.extend(values)
        s_hi.append(len(steps[0]))
        w_lo.append(len(work_rows[0]) + 1)
        for row in work:
            for column, value in zip(work_rows, row, strict=True):
                column.append(value)
        w_hi.append(len(work_rows[0]))
    work_rows[5] = [dumps(list(tags)) for tags in work_rows[5]]
    return [streams, expected, scopes, keys, EVENTS_CHANNEL, e_lo, e_hi, *events, *jobs,
            s_lo, s_hi, *steps, w_lo, w_hi, *work_rows, WORK_CHANNEL]


async def commit_group(conn: Any, batch: Sequence[_Queued]) -> list[Any]:
    """The calls of `batch` in one statement and transaction, in order; a row for each."""
    rows: list[Any] = await conn.fetch(
        CALL_APPEND_BATCH, *_batch_params([(item.call, item.work) for item in batch])
    )
    return rows


def write_all(fn: Callable[[Any], Awaitable[T]]) -> Callable[[Any], Awaitable[T]]:
    """`fn` run in a transaction of its own."""

    async def transaction(conn: Any) -> T:
        async with conn.transaction():
            return await fn(conn)

    return transaction


def acquire(pool: Any, timeout: float) -> Any:
    """`pool.acquire(timeout=…)`, without the timeout when a connected idle connection is
    there to take (no wait can happen): a timeout wraps the acquire and the release in
    tasks of their own, a cost on every statement."""
    return pool.acquire(timeout=None if pool.get_idle_size() else timeout)


async def rollback(conn: Any) -> None:
    """Roll back the transaction open on `conn`, if the connection still can.

    When it cannot (lost, or busy with a cancelled statement), the pool's reset on
    release rolls back or drops the connection.
    """
    if conn.is_closed():
        return
    try:
        await conn.execute("ROLLBACK")
    except Exception:
        pass


async def guarded(fn: Callable[[Any], Awaitable[T]], conn: Any) -> T:
    """`fn(conn)`, making sure a connection that broke under it goes back to the pool dead.

    The pool then opens a new one instead of handing the broken one out again.
    """
    try:
        return await fn(conn)
    except Exception as exc:
        if connection_lost(exc):
            conn.terminate()
        raise


async def migrate(conn: Any) -> list[int]:
    """Apply pending migrations in one transaction under `MIGRATE_LOCK`; their numbers.

    Concurrent callers queue on the lock; the later ones find nothing left to do.
    """
    migrations = load_migrations("postgres")
    applied_now: list[int] = []
    async with conn.transaction():
        await conn.execute(LOCK, MIGRATE_LOCK)
        await conn.execute(CREATE_MIGRATIONS)
        applied = {r[0]: r[1] for r in await conn.fetch(SELECT_MIGRATIONS)}
        for migration in pending(migrations, applied):
            await conn.execute(migration.sql)
            await conn.execute(
                INSERT_MIGRATION, migration.version, migration.name, migration.checksum,
                time.time(),
            )
            applied_now.append(migration.version)
    return applied_now
