"""The embedded SQLite event store: one file, WAL, one writer thread (DESIGN §5).

One `sqlite3` connection is used from one dedicated thread for reads and for every
write but event appends, so the event loop never waits on a query.

Appends: with `synchronous=NORMAL` (the default) an append is written on the event
loop's own thread, through a second connection, when SQLite's write lock is free at
once. Such a commit only copies WAL frames into the page cache (no fsync), which costs
less than handing the work to the store thread and waking the loop again (two thread
switches, a millisecond or more on a loaded machine, paid three times per step). When
another connection holds the write lock the append goes through the store thread,
which waits for it (`busy_timeout`). That connection never checkpoints by itself: the
store thread runs a passive checkpoint after every `CHECKPOINT_EVERY` appends, so no
fsync happens on the loop. With `synchronous=FULL`/`EXTRA` (an fsync per commit) every
append goes through the store thread. SQLite's write lock serializes both
connections: appends commit in the order they insert, and a reader tailing
`global_seq > n` never skips an event.

Durability: the database runs in WAL mode with `synchronous=NORMAL` by default. A
committed append survives the process dying at any point (kill -9, a crash): the WAL
frames are written before `COMMIT` returns. Only an OS crash or power loss can lose the
last transactions before a checkpoint. `synchronous="FULL"` also fsyncs the WAL on
every commit, for machines where power loss matters more than speed.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import orjson

from engine.core.events import Event, RecordedEvent, encode, new_recorded_event
from engine.core.projections import JobRow, StepRow, new_job_row, new_step_row
from engine.errors import ConfigInvalid, Conflict, PartiturError, StoreUnavailable, VersionConflict
from engine.store.base import (
    AppendResult,
    DuplicateKey,
    EventStore,
    JobFilter,
    Outbox,
    Projection,
)
from engine.store.cloud import SQLITE_OUTBOX, outbox_params
from engine.store.codec import dumps
from engine.store.migrations import Migration, load_migrations, pending
from engine.store.shards import Shard
from engine.store.slots import sqlite_apply
from engine.store.work import SQ_ENQUEUE, SQ_QUEUED, WorkItem, sq_item, sq_item_params

T = TypeVar("T")

log = logging.getLogger("partitur.store.sqlite")

# Appends written on the loop's connection between two passive checkpoints.
CHECKPOINT_EVERY = 100
CHECKPOINT = "PRAGMA wal_checkpoint(PASSIVE)"

_SYNCHRONOUS = {
    "NORMAL": "PRAGMA synchronous = NORMAL",
    "FULL": "PRAGMA synchronous = FULL",
    "EXTRA": "PRAGMA synchronous = EXTRA",
}
_TERMINAL = ("completed", "failed", "cancelled", "skipped")

# --- SQL -----------------------------------------------------------------------------

CREATE_MIGRATIONS = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    checksum   TEXT NOT NULL,
    applied_at REAL NOT NULL
)"""
SELECT_MIGRATIONS = "SELECT version, checksum FROM schema_migrations"
INSERT_MIGRATION = (
    "INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (?, ?, ?, ?)"
)

STREAM_VERSION = "SELECT COALESCE(MAX(version), 0) FROM events WHERE stream_id = ?"
INSERT_EVENT = (
    "INSERT INTO events (stream_id, version, type, schema_version, data, ts) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
LAST_ROWID = "SELECT last_insert_rowid()"
READ_STREAM = (
    "SELECT global_seq, stream_id, version, type, schema_version, data, ts FROM events "
    "WHERE stream_id = ? AND version > ? ORDER BY version"
)
TAIL = (
    "SELECT global_seq, stream_id, version, type, schema_version, data, ts FROM events "
    "WHERE global_seq > ? ORDER BY global_seq LIMIT ?"
)
EVENTS_OF_TYPES = (
    "SELECT global_seq, stream_id, version, type, schema_version, data, ts FROM events "
    "WHERE stream_id IN (SELECT value FROM json_each(?)) "
    "AND type IN (SELECT value FROM json_each(?)) ORDER BY global_seq"
)
# `engine.store.shards.Shard.holds` in SQL.
TAIL_SHARD = (
    "SELECT global_seq, stream_id, version, type, schema_version, data, ts FROM events "
    "WHERE global_seq > ? AND COALESCE(unicode(substr(stream_id, -1)), 0) % ? = ? "
    "ORDER BY global_seq LIMIT ?"
)
LAST_SEQ = "SELECT COALESCE(MAX(global_seq), 0) FROM events"
STREAM_IDS = "SELECT stream_id FROM events WHERE version = 1 ORDER BY global_seq"

FIND_KEY = "SELECT stream_id FROM idempotency_keys WHERE scope = ? AND key = ?"
INSERT_KEY = "INSERT INTO idempotency_keys (scope, key, stream_id) VALUES (?, ?, ?)"

JOB_COLUMNS = (
    "job_id, workspace, task_name, revision, status, source_type, source_id, parent_job_id, "
    "input, output, error, created_at, started_at, completed_at, priority, created_by, "
    "retry_of, version"
)
UPSERT_JOB = """
INSERT INTO jobs (job_id, workspace, task_name, revision, status, source_type, source_id,
                  parent_job_id, input, output, error, created_at, started_at, completed_at,
                  priority, created_by, retry_of, version, last_seq)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
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
# An append rewrites only what events can change: a job's identity, input and creation
# are fixed by `JobCreated`, and leaving them out of the SET spares the five indexes on
# them (SQLite rewrites an index entry whenever the SET names one of its columns).
APPEND_JOB = """
INSERT INTO jobs (job_id, workspace, task_name, revision, status, source_type, source_id,
                  parent_job_id, input, output, error, created_at, started_at, completed_at,
                  priority, created_by, retry_of, version, last_seq)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (job_id) DO UPDATE SET
    status = excluded.status, output = excluded.output, error = excluded.error,
    started_at = excluded.started_at, completed_at = excluded.completed_at,
    priority = excluded.priority, version = excluded.version, last_seq = excluded.last_seq
"""
# Most appends leave a job's status as it was: this update then spares the status
# index too (no row updated: the job is new or its status changed, APPEND_JOB follows).
UPDATE_JOB_SAME_STATUS = (
    "UPDATE jobs SET output = ?, error = ?, started_at = ?, completed_at = ?, priority = ?, "
    "version = ?, last_seq = ? WHERE job_id = ? AND status = ?"
)
GET_JOB = "SELECT " + JOB_COLUMNS + " FROM jobs WHERE job_id = ?"
# The job list: WHERE is assembled from the fixed clauses below, values always bound.
LIST_JOBS = "SELECT " + JOB_COLUMNS + " FROM jobs"
LIST_JOBS_PAGE = " ORDER BY created_at DESC, job_id DESC LIMIT ? OFFSET ?"
COUNT_JOBS = "SELECT COUNT(*) FROM jobs"
# The same total from the per-(workspace, task, status, source) counters (migration 009),
# when the filter uses only those dimensions. The writers of `jobs` keep them
# (`count_jobs`).
SUM_JOB_COUNTS = "SELECT COALESCE(SUM(n), 0) FROM job_counts"
COUNTED_FILTERS = frozenset({"workspace", "task_name", "source_type"})
ADD_JOB_COUNT = (
    "INSERT INTO job_counts (workspace, task_name, status, source_type, n) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (workspace, task_name, status, source_type) "
    "DO UPDATE SET n = n + excluded.n"
)
JOB_DIMENSIONS = (
    "SELECT job_id, workspace, task_name, status, source_type FROM jobs "
    "WHERE job_id IN (SELECT value FROM json_each(?))"
)
JOB_FILTERS = {
    "workspace": "workspace = ?",
    "task_name": "task_name = ?",
    "source_type": "source_type = ?",
    "since": "created_at >= ?",
    "parent_job_id": "parent_job_id = ?",
}
ACTIVE_JOBS = (
    "SELECT job_id FROM jobs WHERE status NOT IN (?, ?, ?, ?) ORDER BY created_at, job_id"
)

STEP_COLUMNS = (
    "job_id, step_name, position, action_name, action_type, status, attempt, input, output, "
    "error_message, error_kind, exit_code, worker_id, started_at, completed_at, loop_of, "
    "loop_index, skip_reason, message, depends_on, retry_at, child_job_id"
)
UPSERT_STEP = """
INSERT INTO steps (job_id, step_name, position, action_name, action_type, status, attempt,
                   input, output, error_message, error_kind, exit_code, worker_id,
                   started_at, completed_at, loop_of, loop_index, skip_reason, message,
                   depends_on, retry_at, child_job_id)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
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
GET_STEPS = "SELECT " + STEP_COLUMNS + " FROM steps WHERE job_id = ? ORDER BY position, step_name"
RESET_JOBS = "DELETE FROM jobs"
RESET_JOB_COUNTS = "DELETE FROM job_counts"

CLAIM_SLOT = (
    "INSERT INTO trigger_slots (trigger, fire_time, job_id, claimed_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (trigger, fire_time) DO NOTHING"
)
LAST_SLOT = "SELECT MAX(fire_time) FROM trigger_slots WHERE trigger = ?"
RESET_STEPS = "DELETE FROM steps"

# --- encoding ------------------------------------------------------------------------


def _job_params(row: JobRow, last_seq: int) -> tuple[Any, ...]:
    return (
        row.job_id, row.workspace, row.task_name, row.revision, row.status, row.source_type,
        row.source_id, row.parent_job_id, dumps(row.input), dumps(row.output), row.error,
        row.created_at, row.started_at, row.completed_at, row.priority, row.created_by,
        row.retry_of, row.version, last_seq,
    )


def _step_params(row: StepRow) -> tuple[Any, ...]:
    return (
        row.job_id, row.step_name, row.position, row.action_name, row.action_type, row.status,
        row.attempt, dumps(row.input), dumps(row.output), row.error_message, row.error_kind,
        row.exit_code, row.worker_id, row.started_at, row.completed_at, row.loop_of,
        row.loop_index, row.skip_reason, row.message, dumps(row.depends_on), row.retry_at,
        row.child_job_id,
    )


Dimensions = tuple[str, str, str, str]  # workspace, task, status, source type


def job_dimensions(conn: sqlite3.Connection, job_ids: Sequence[str]
                   ) -> dict[str, Dimensions]:
    """The counted columns of those of `job_ids` that have a row, before a write."""
    if not job_ids:
        return {}
    return {r[0]: (r[1], r[2], r[3], r[4])
            for r in conn.execute(JOB_DIMENSIONS, (orjson.dumps(job_ids).decode(),))}


def count_jobs(conn: sqlite3.Connection, before: Mapping[str, Dimensions],
               written: Sequence[JobRow] = (), *, deleted: bool = False) -> None:
    """Move the job counters after `written` rows replaced `before` (a job id missing
    from `before` was inserted), or after the rows of `before` were deleted. The
    identity of a job (workspace, task, source) never changes once written: only the
    status moves it, and a row written twice in one call counts once."""
    delta: dict[Dimensions, int] = {}
    if deleted:
        for dims in before.values():
            delta[dims] = delta.get(dims, 0) - 1
    else:
        now: dict[str, Dimensions] = {}
        for job in written:
            old = before.get(job.job_id)
            now[job.job_id] = ((old[0], old[1], job.status, old[3]) if old is not None
                               else (job.workspace, job.task_name, job.status,
                                     job.source_type))
        for job_id, dims in now.items():
            old = before.get(job_id)
            if old == dims:
                continue
            if old is not None:
                delta[old] = delta.get(old, 0) - 1
            delta[dims] = delta.get(dims, 0) + 1
    changes = [(*dims, n) for dims, n in sorted(delta.items()) if n]
    if changes:
        conn.executemany(ADD_JOB_COUNT, changes)


def _job(r: Sequence[Any]) -> JobRow:
    return new_job_row(
        job_id=r[0], workspace=r[1], task_name=r[2], revision=r[3], status=r[4],
        source_type=r[5], source_id=r[6], parent_job_id=r[7], input=orjson.loads(r[8]),
        output=orjson.loads(r[9]), error=r[10], created_at=r[11], started_at=r[12],
        completed_at=r[13], priority=r[14], created_by=r[15], retry_of=r[16], version=r[17],
    )


def _step(r: Sequence[Any]) -> StepRow:
    return new_step_row(
        job_id=r[0], step_name=r[1], position=r[2], action_name=r[3], action_type=r[4],
        status=r[5], attempt=r[6], input=orjson.loads(r[7]), output=orjson.loads(r[8]),
        error_message=r[9], error_kind=r[10], exit_code=r[11], worker_id=r[12],
        started_at=r[13], completed_at=r[14], loop_of=r[15], loop_index=r[16],
        skip_reason=r[17], message=r[18], depends_on=tuple(orjson.loads(r[19])),
        retry_at=r[20], child_job_id=r[21],
    )


def _recorded(r: Sequence[Any]) -> RecordedEvent:
    return new_recorded_event(r[0], r[1], r[2], r[3], r[4], orjson.loads(r[5]), r[6])


def json_path(keys: Sequence[str]) -> str:
    """`["plan", "hooks"]` → `$."plan"."hooks"` (SQLite's JSON path)."""
    if any('"' in key for key in keys):
        raise ValueError(f"a JSON path key cannot hold a double quote: {keys!r}")
    return "$" + "".join(f'."{key}"' for key in keys)


def split_statements(script: str) -> list[str]:
    """Split a SQL script into complete statements (triggers' inner `;` included)."""
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    if buffer.strip() and not all(
        part.strip().startswith("--") or not part.strip() for part in buffer.splitlines()
    ):
        raise ConfigInvalid(f"incomplete SQL statement at the end of a migration: {buffer!r}")
    return statements


# --- the store -----------------------------------------------------------------------


class _Busy(Exception):
    """The loop's connection found the write lock taken (nothing was written)."""


_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


class SqliteStore(EventStore):
    """An `EventStore` in one SQLite file (WAL), driven from one dedicated thread."""

    def __init__(self, path: Path, *, synchronous: str = "NORMAL", busy_timeout: float = 5.0):
        mode = synchronous.upper()
        if mode not in _SYNCHRONOUS:
            raise ConfigInvalid(
                f"sqlite synchronous must be one of {', '.join(_SYNCHRONOUS)}, not {synchronous!r}"
            )
        self.path = Path(path)
        self.synchronous = mode
        self.busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        # The connection appends use on the event loop's thread (None: always the thread).
        self._inline: sqlite3.Connection | None = None
        self._since_checkpoint = 0
        self._checkpointing = False

    # --- plumbing --------------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        executor = self._executor
        if executor is None or self._conn is None:
            raise StoreUnavailable(f"the SQLite store {self.path} is not open")
        try:
            future = asyncio.get_running_loop().run_in_executor(executor, fn, *args)
        except RuntimeError as exc:  # close() shut the executor down meanwhile
            raise StoreUnavailable(f"the SQLite store {self.path} is closed") from exc
        try:
            return await future
        except PartiturError:
            raise
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"SQLite constraint failed: {exc}") from exc
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite store {self.path}: {exc}") from exc

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreUnavailable(f"the SQLite store {self.path} is not open")
        return self._conn

    def _write(self, fn: Callable[[sqlite3.Connection], T],
               inline: sqlite3.Connection | None = None) -> T:
        """Run `fn` in one write transaction: on the store's thread, or with `inline`
        (the loop's connection), which raises `_Busy` instead of waiting for the lock."""
        conn = self.conn if inline is None else inline
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if inline is not None and exc.sqlite_errorcode in _BUSY_CODES:
                raise _Busy from exc
            raise
        try:
            result = fn(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result

    # --- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        """Open the file (creating it), switch to WAL and apply pending migrations."""
        if self._executor is not None:
            return
        migrations = load_migrations("sqlite")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="partitur-sqlite")
        loop = asyncio.get_running_loop()
        try:
            self._conn = await loop.run_in_executor(self._executor, self._connect)
            await self._run(self._migrate, migrations)
            if self.synchronous == "NORMAL" and str(self.path) != ":memory:":
                self._inline = self._connect_inline()
        except BaseException as exc:
            await self.close()
            if isinstance(exc, sqlite3.Error):
                raise StoreUnavailable(f"cannot open SQLite store {self.path}: {exc}") from exc
            raise

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, timeout=self.busy_timeout, cached_statements=256
        )
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(_SYNCHRONOUS[self.synchronous])
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def _connect_inline(self) -> sqlite3.Connection:
        """The loop's append connection: never waits for the lock, never checkpoints."""
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=0, cached_statements=64)
        conn.execute(_SYNCHRONOUS[self.synchronous])
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        return conn

    def _migrate(self, migrations: list[Migration]) -> None:
        conn = self.conn
        conn.execute(CREATE_MIGRATIONS)

        def apply(conn: sqlite3.Connection) -> None:
            applied = dict(conn.execute(SELECT_MIGRATIONS).fetchall())
            for migration in pending(migrations, applied):
                for statement in split_statements(migration.sql):
                    conn.execute(statement)
                conn.execute(
                    INSERT_MIGRATION,
                    (migration.version, migration.name, migration.checksum, time.time()),
                )

        self._write(apply)

    async def close(self) -> None:
        """Finish queued work, close the connection and stop the thread."""
        executor, conn = self._executor, self._conn
        if executor is None:
            return
        inline, self._inline = self._inline, None
        if inline is not None:
            inline.close()
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(executor, conn.close)
        self._conn = None
        self._executor = None
        executor.shutdown(wait=False)

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
        inline = self._inline
        if inline is not None and self._executor is not None:
            try:
                result = self._append(stream_id, expected_version, events, projection,
                                      idempotency, outbox, inline)
            except _Busy:
                pass  # another connection writes: wait for the lock on the store thread
            except PartiturError:
                raise
            except sqlite3.IntegrityError as exc:
                raise Conflict(f"SQLite constraint failed: {exc}") from exc
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"SQLite store {self.path}: {exc}") from exc
            else:
                self._after_inline_commit()
                return result
        return await self._run(
            self._append, stream_id, expected_version, events, projection, idempotency, outbox
        )

    def _after_inline_commit(self) -> None:
        """Every `CHECKPOINT_EVERY` appends, a passive checkpoint on the store thread."""
        self._since_checkpoint += 1
        if self._since_checkpoint < CHECKPOINT_EVERY or self._checkpointing:
            return
        executor = self._executor
        if executor is None:
            return
        self._since_checkpoint = 0
        self._checkpointing = True
        try:
            future = asyncio.get_running_loop().run_in_executor(executor, self._checkpoint)
        except RuntimeError:  # closing
            self._checkpointing = False
            return
        future.add_done_callback(self._checkpoint_done)

    def _checkpoint(self) -> None:
        self.conn.execute(CHECKPOINT).fetchall()

    def _checkpoint_done(self, future: asyncio.Future[None]) -> None:
        self._checkpointing = False
        if not future.cancelled() and future.exception() is not None:
            log.warning("WAL checkpoint of %s failed: %s", self.path, future.exception())

    def _append(
        self,
        stream_id: str,
        expected_version: int,
        events: Sequence[Event],
        projection: Projection | None,
        idempotency: tuple[str, str] | None,
        outbox: Outbox | None = None,
        inline: sqlite3.Connection | None = None,
    ) -> AppendResult:
        """Write one append; with `inline` (the loop's connection), raise `_Busy` at once
        when another connection holds the write lock, having written nothing."""
        rows: list[tuple[str, int, str, int, dict[str, Any], float]] = []
        for offset, event in enumerate(events, start=1):
            type_, schema_version, data = encode(event)
            rows.append((stream_id, expected_version + offset, type_, schema_version, data,
                         event.ts))
        params = [(s, v, t, sv, dumps(d), ts) for s, v, t, sv, d, ts in rows]
        work = [sq_item_params(i) for i in outbox.work] if outbox is not None else []
        objects = [outbox_params(o) for o in outbox.objects] if outbox is not None else []

        def write(conn: sqlite3.Connection) -> int:
            if idempotency is not None:
                found = conn.execute(FIND_KEY, idempotency).fetchone()
                if found is not None:
                    raise DuplicateKey(idempotency[0], idempotency[1], found[0])
            current = conn.execute(STREAM_VERSION, (stream_id,)).fetchone()[0]
            if current != expected_version:
                raise VersionConflict(
                    f"stream {stream_id} is at version {current}, not {expected_version}"
                )
            last: int | None
            if len(params) == 1:  # most appends: the cursor knows the row id
                last = conn.execute(INSERT_EVENT, params[0]).lastrowid
            else:
                conn.executemany(INSERT_EVENT, params)
                last = None
            if last is None:
                last = conn.execute(LAST_ROWID).fetchone()[0]
            if projection is not None:
                job = projection.job
                same = conn.execute(UPDATE_JOB_SAME_STATUS, (
                    dumps(job.output), job.error, job.started_at, job.completed_at,
                    job.priority, job.version, last, job.job_id, job.status))
                if same.rowcount != 1:  # a new job, or its status changed
                    before = job_dimensions(conn, [job.job_id])
                    conn.execute(APPEND_JOB, _job_params(job, last))
                    count_jobs(conn, before, [job])
                if projection.steps:
                    conn.executemany(UPSERT_STEP, [_step_params(s) for s in projection.steps])
            if idempotency is not None:
                conn.execute(INSERT_KEY, (*idempotency, stream_id))
            if work:
                conn.executemany(SQ_ENQUEUE, work)
            if objects:
                conn.executemany(SQLITE_OUTBOX, objects)
            if outbox is not None and (outbox.take_slots or outbox.free_slots):
                sqlite_apply(conn, outbox.take_slots, outbox.free_slots)
            return last

        try:
            last = self._write(write, inline)
        except sqlite3.IntegrityError as exc:
            if "events" in str(exc):
                raise VersionConflict(f"stream {stream_id} moved past {expected_version}") from exc
            raise
        first = last - len(rows) + 1
        return AppendResult([
            RecordedEvent(first + i, s, v, t, sv, d, ts)
            for i, (s, v, t, sv, d, ts) in enumerate(rows)
        ])

    async def read(self, stream_id: str, after_version: int = 0) -> list[RecordedEvent]:
        return await self._run(self._select, READ_STREAM, (stream_id, after_version))

    async def tail(self, after_seq: int, limit: int = 1000) -> list[RecordedEvent]:
        return await self._run(self._select, TAIL, (after_seq, limit))

    async def first_event_values(self, stream_ids: Sequence[str],
                                 paths: Sequence[Sequence[str]]) -> dict[str, list[Any]]:
        if not stream_ids or not paths:
            return {}
        json_paths = [json_path(path) for path in paths]
        marks = ", ".join("?" for _ in paths)
        # Several paths give one JSON array (the document parsed once); one, the value.
        values = f"json_extract(data, {marks})" if len(paths) > 1 else (
            "json_array(json_extract(data, ?))")
        sql = (f"SELECT stream_id, {values} FROM events WHERE version = 1 "
               "AND stream_id IN (SELECT value FROM json_each(?))")
        params = (*json_paths, orjson.dumps(list(stream_ids)).decode())

        def select() -> dict[str, list[Any]]:
            return {r[0]: orjson.loads(r[1]) for r in self.conn.execute(sql, params)}

        return await self._run(select)

    async def events_of_types(self, stream_ids: Sequence[str], types: Collection[str]
                              ) -> list[RecordedEvent]:
        if not stream_ids or not types:
            return []
        params = (orjson.dumps(list(stream_ids)).decode(), orjson.dumps(list(types)).decode())
        return await self._run(self._select, EVENTS_OF_TYPES, params)

    async def tail_shard(self, after_seq: int, limit: int, shard: Shard
                         ) -> list[RecordedEvent]:
        return await self._run(self._select, TAIL_SHARD,
                               (after_seq, shard.count, shard.index, limit))

    def _select(self, sql: str, params: tuple[Any, ...]) -> list[RecordedEvent]:
        return [_recorded(r) for r in self.conn.execute(sql, params).fetchall()]

    async def last_seq(self) -> int:
        return await self._run(self._scalar, LAST_SEQ, ())

    def _scalar(self, sql: str, params: tuple[Any, ...]) -> Any:
        row = self.conn.execute(sql, params).fetchone()
        return None if row is None else row[0]

    async def stream_ids(self) -> list[str]:
        return await self._run(self._column, STREAM_IDS, ())

    def _column(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        return [r[0] for r in self.conn.execute(sql, params).fetchall()]

    async def find_key(self, scope: str, key: str) -> str | None:
        found: str | None = await self._run(self._scalar, FIND_KEY, (scope, key))
        return found

    async def queued_work(self, job_id: str) -> list[WorkItem]:
        def select() -> list[WorkItem]:
            return [sq_item(r) for r in self.conn.execute(SQ_QUEUED, (job_id,)).fetchall()]

        return await self._run(select)

    # --- projections -----------------------------------------------------------------

    async def list_jobs(self, where: JobFilter) -> tuple[list[JobRow], int]:
        return await self._run(self._list_jobs, where)

    def _list_jobs(self, where: JobFilter) -> tuple[list[JobRow], int]:
        clauses: list[str] = []
        params: list[Any] = []
        counted = True  # the filter uses only the dimensions of `job_counts`
        for name, clause in JOB_FILTERS.items():
            value = getattr(where, name)
            if value is not None:
                clauses.append(clause)
                params.append(value)
                counted = counted and name in COUNTED_FILTERS
        if where.status:
            clauses.append("status IN (" + ", ".join("?" * len(where.status)) + ")")
            params.extend(where.status)
        condition = " WHERE " + " AND ".join(clauses) if clauses else ""
        conn = self.conn
        count = SUM_JOB_COUNTS if counted else COUNT_JOBS
        total: int = conn.execute(count + condition, params).fetchone()[0]
        rows = conn.execute(
            LIST_JOBS + condition + LIST_JOBS_PAGE,
            (*params, where.limit, where.offset),
        ).fetchall()
        return [_job(r) for r in rows], total

    async def get_job(self, job_id: str) -> JobRow | None:
        return await self._run(self._get_job, job_id)

    def _get_job(self, job_id: str) -> JobRow | None:
        row = self.conn.execute(GET_JOB, (job_id,)).fetchone()
        return None if row is None else _job(row)

    async def get_steps(self, job_id: str) -> list[StepRow]:
        return await self._run(self._get_steps, job_id)

    def _get_steps(self, job_id: str) -> list[StepRow]:
        return [_step(r) for r in self.conn.execute(GET_STEPS, (job_id,)).fetchall()]

    async def active_job_ids(self) -> list[str]:
        return await self._run(self._column, ACTIVE_JOBS, _TERMINAL)

    async def reset_projections(self) -> None:
        def reset(conn: sqlite3.Connection) -> None:
            conn.execute(RESET_STEPS)
            conn.execute(RESET_JOBS)
            conn.execute(RESET_JOB_COUNTS)

        await self._run(self._write, reset)

    async def write_projections(self, rows: Sequence[Projection], last_seq: int) -> None:
        def write(conn: sqlite3.Connection) -> None:
            before = job_dimensions(conn, [p.job.job_id for p in rows])
            conn.executemany(
                UPSERT_JOB, [_job_params(p.job, p.last_seq or last_seq) for p in rows]
            )
            count_jobs(conn, before, [p.job for p in rows])
            conn.executemany(UPSERT_STEP, [_step_params(s) for p in rows for s in p.steps])

        await self._run(self._write, write)

    # --- trigger slots ---------------------------------------------------------------

    async def claim_slot(self, trigger: str, fire_time: float, job_id: str,
                         claimed_at: float) -> bool:
        def claim(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(CLAIM_SLOT, (trigger, fire_time, job_id, claimed_at))
            return cursor.rowcount == 1

        return await self._run(self._write, claim)

    async def last_slot(self, trigger: str) -> float | None:
        found: float | None = await self._run(self._scalar, LAST_SLOT, (trigger,))
        return found
