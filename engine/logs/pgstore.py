"""Job logs in PostgreSQL: the `log_lines` table, with NOTIFY for live tails (DESIGN §7).

`PostgresLogStore` implements `LogStore` on the tables of migration
`engine/store/sql/postgres/002_log_lines.sql` (the event store's series). Appends are
group-committed: the appends (of any jobs) that queue up while one group is being written
form the next group, written in one transaction: bump each job's row in `log_counters`
(in job order; the row lock orders the job's appenders, so each job's `seq`s are
contiguous and commit in order), insert the lines, and `NOTIFY partitur_logs,
'<job_id>:<last seq>'` per job, delivered on commit. The writes are one statement in its
own (implicit) transaction, so a group costs one round trip. A group that PostgreSQL
refuses wrote nothing and is tried append by append, so lines that cannot be stored fail
alone. A group whose connection is lost under it may or may not be written: it is tried
once more on a new connection, which first looks for the group's token in the jobs' rows
of `log_counters` (each group leaves its token and the count it reached there, migration
015) and, when it is there, answers with the seqs the lost try took instead of writing
the lines twice. `listen()` gets the notifications on a dedicated connection, so a
WebSocket on any replica can stream lines produced by any other.

The commit of a group does not wait for PostgreSQL to flush the WAL to disk
(`synchronous_commit` off for that transaction): an appended line is in the database,
and survives a crash or `kill -9` of the Partitur process like a line written to a JSONL
file does; a crash of PostgreSQL or of the machine can lose the lines of its last fraction
of a second (at most three times `wal_writer_delay`, 200 ms by default), as an
operating-system crash can lose the unsynced end of a JSONL file. Any later synchronous
commit (every event append) flushes them with it. Waiting for the disk on every group
cost a WAL flush per step's lines, on the same WAL as the event appends.

`append_once` (a remote worker's numbered batches) is one call of
`partitur_log_append_once` (migration 018): it takes and locks the series' row in
`log_positions` (migration 009), skips the lines it already holds, stores the others
with their NOTIFY and advances the row, all in one statement and transaction, committed
like an event append (waiting for the WAL flush).

PostgreSQL text cannot hold NUL characters; a NUL in a line is stored as U+FFFD.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncpg

from engine.errors import PartiturError, StoreUnavailable
from engine.logs.model import LogLine
from engine.logs.store import LogStore, check_job_id
from engine.store.pgnotify import Listener
from engine.store.postgres import (
    acquire,
    connection_lost,
    guarded,
    init_connection,
    keep_session,
    migrate,
    wrap_error,
)

T = TypeVar("T")
logger = logging.getLogger(__name__)

LOGS_CHANNEL = "partitur_logs"

# The writes of a group of appends (one or several jobs) as one statement: the counter
# bumps, in job order so that concurrent groups lock the rows in the same order (each row
# lock held to COMMIT: a job's seqs commit in order); the lines, numbered after the
# job's old count in the order given; a NOTIFY per job; and the transaction's commit made
# not to wait for the WAL to reach the disk (see the module's docstring). Returns each
# job's new count.
APPEND_LINES = """
WITH l AS (
    SELECT * FROM unnest($1::text[], $2::float8[], $3::text[], $4::text[], $5::text[])
        WITH ORDINALITY AS l(job_id, ts, stream, step, line, ord)
), n AS (
    SELECT job_id, COUNT(*) AS n FROM l GROUP BY job_id
), c AS (
    INSERT INTO log_counters AS c (job_id, count, last_group, last_group_count)
    SELECT job_id, n, $7, n FROM n ORDER BY job_id
    ON CONFLICT (job_id) DO UPDATE SET count = c.count + excluded.count,
        last_group = excluded.last_group, last_group_count = c.count + excluded.count
    RETURNING c.job_id, c.count
), i AS (
    INSERT INTO log_lines (job_id, seq, ts, stream, step, line)
    SELECT l.job_id, c.count - n.n + ROW_NUMBER() OVER (PARTITION BY l.job_id ORDER BY l.ord),
           l.ts, l.stream, l.step, l.line
    FROM l JOIN n ON n.job_id = l.job_id JOIN c ON c.job_id = l.job_id
)
SELECT c.job_id, c.count, pg_notify($6, c.job_id || ':' || c.count::text)
FROM c, (SELECT set_config('synchronous_commit', 'off', true)) AS s
"""
# The counts a group (by its token) left, where no later group bumped them since: did
# a group whose connection was lost commit?
GROUP_COUNTS = """
SELECT job_id, last_group_count FROM log_counters
WHERE job_id = ANY($1::text[]) AND last_group = $2
"""
READ_LINES = """
SELECT seq, ts, stream, step, line FROM log_lines
WHERE job_id = $1 AND seq > $2 AND ($3::text IS NULL OR step = $3)
ORDER BY seq LIMIT $4
"""
COUNT = "SELECT count FROM log_counters WHERE job_id = $1"
# A batch of a numbered series in one call (migration 018): the position taken and
# locked, the lines not stored yet inserted with a NOTIFY, the position advanced.
APPEND_ONCE = (
    "SELECT o_first, o_count, o_end FROM partitur_log_append_once("
    "$1, $2, $3, $4, $5, $6, $7, $8)"
)
FORGET_POSITION = "DELETE FROM log_positions WHERE key = $1"
FORGET_JOB_POSITIONS = "DELETE FROM log_positions WHERE job_id = $1"


def _clean(text: str) -> str:
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def parse_payload(payload: str) -> tuple[str, int]:
    """`'<job_id>:<seq>'` → `(job_id, seq)`."""
    job_id, _, seq = payload.rpartition(":")
    return job_id, int(seq)


class PostgresLogStore(LogStore):
    """Log lines in PostgreSQL, on a shared `asyncpg.Pool` or a pool of its own.

    Given a URL, the store opens its own pool on first use (or `open()`), migrating the
    database like the event store does, and closes it in `close()`. Given a pool (e.g.
    `PostgresStore.pool`), it borrows it and `close()` leaves it open; `listen()` then
    needs `url` for its dedicated connection.
    """

    def __init__(
        self,
        source: str | Any,
        *,
        url: str | None = None,
        min_size: int = 1,
        max_size: int = 5,
        connect_timeout: float = 5.0,
    ) -> None:
        if isinstance(source, str):
            self.url: str | None = source
            self._pool: Any = None
            self._owns_pool = True
        else:
            self.url = url
            self._pool = source
            self._owns_pool = False
        self.min_size = min_size
        self.max_size = max_size
        self.connect_timeout = connect_timeout
        self._opening = asyncio.Lock()
        self._closed = False
        self._listeners: list[Listener] = []
        self._queued: list[_Queued] = []
        self._committer: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Create the own pool and migrate (a no-op with a borrowed pool or when open)."""
        async with self._opening:
            if self._closed:
                raise StoreUnavailable("the PostgreSQL log store is closed")
            if self._pool is not None:
                return
            try:
                pool = await asyncpg.create_pool(
                    self.url, min_size=self.min_size, max_size=self.max_size,
                    timeout=self.connect_timeout, init=init_connection, reset=keep_session,
                )
            except Exception as exc:
                raise wrap_error(exc, "cannot open the PostgreSQL log store") from exc
            try:
                async with pool.acquire() as conn:
                    await migrate(conn)
            except BaseException as exc:
                pool.terminate()
                if isinstance(exc, Exception):
                    raise wrap_error(exc, "migrate the PostgreSQL log store") from exc
                raise
            self._pool = pool

    async def _run(self, fn: Callable[[Any], Awaitable[T]], *, what: str) -> T:
        """`fn(connection)`; a lost connection is replaced and `fn` tried once more (an
        `fn` that writes must then find out whether its first try did)."""
        for attempt in (1, 2):
            if self._closed:
                raise StoreUnavailable(f"{what}: the PostgreSQL log store is closed")
            if self._pool is None:
                await self.open()
            pool = self._pool
            try:
                async with acquire(pool, self.connect_timeout) as conn:
                    return await guarded(fn, conn)
            except PartiturError:
                raise
            except Exception as exc:
                if not (attempt == 1 and connection_lost(exc)):
                    raise wrap_error(exc, what) from exc
                await pool.expire_connections()  # the others are likely dead too
        raise AssertionError("unreachable")

    async def append(self, job_id: str, lines: Sequence[LogLine]) -> list[LogLine]:
        check_job_id(job_id)
        if not lines:
            return []
        item = _Queued(job_id, lines, asyncio.get_running_loop().create_future())
        self._queued.append(item)
        loop = asyncio.get_running_loop()
        if self._committer is None or self._committer.done() or (
            self._committer.get_loop() is not loop
        ):
            self._committer = loop.create_task(self._commit_queued())
        first = await item.future
        return [line.with_seq(first + i) for i, line in enumerate(lines)]

    async def _commit_queued(self) -> None:
        """Write the queued appends, all that queued up while the last group was being
        written in one transaction (group commit), until none is left."""
        group: list[_Queued] = []
        try:
            while self._queued:
                group, self._queued = self._queued, []
                await self._commit_group(group)
        finally:
            # Cancelled (the loop is closing): whatever was not answered is not stored.
            for item in [*group, *self._queued]:
                item.fail(StoreUnavailable("the PostgreSQL log store was stopped"))
            self._queued = []

    async def _commit_group(self, group: Sequence[_Queued]) -> None:
        doubt = [False]  # whether a failure may have left the lines written
        try:
            firsts = await self._write_group(group, doubt)
        except Exception as exc:
            if len(group) == 1 or doubt[0]:
                for item in group:
                    item.fail(exc)
                return
            # Nothing was written; one append's lines may be what failed: each on its own.
            for item in group:
                await self._commit_group([item])
            return
        for item, first in zip(group, firsts, strict=True):
            item.succeed(first)

    async def _write_group(self, group: Sequence[_Queued], doubt: list[bool]) -> list[int]:
        """Append the lines of `group` in one transaction; the first seq of each.

        `doubt[0]` tells, after a failure, whether the connection was lost with the
        statement sent (the lines may then be stored).
        """
        lines = [(item.job_id, line) for item in group for line in item.lines]
        added = Counter(job for job, _ in lines)
        jobs = sorted(added)
        token = uuid.uuid4().hex
        tries = 0

        async def write(conn: Any) -> dict[str, int]:
            nonlocal tries
            tries += 1
            if tries > 1:  # the lost try may have committed
                counts = dict(await conn.fetch(GROUP_COUNTS, jobs, token))
                if counts and len(counts) < len(jobs):
                    raise StoreUnavailable(
                        "log lines were stored by an append whose answer was lost, and a "
                        "later append of another process hides which seqs they took")
            else:
                counts = {}
            if not counts:
                doubt[0] = False
                try:
                    rows = await conn.fetch(
                        APPEND_LINES, [job for job, _ in lines], [line.ts for _, line in lines],
                        [line.stream for _, line in lines],
                        [_clean(line.step) for _, line in lines],
                        [_clean(line.line) for _, line in lines], LOGS_CHANNEL, token,
                    )
                except Exception as exc:
                    doubt[0] = connection_lost(exc)
                    raise
                counts = {r[0]: r[1] for r in rows}
            # Each job's lines were numbered in the order given, after its old count.
            return {job: counts[job] + 1 - added[job] for job in jobs}

        firsts_of_jobs = await self._run(write, what=f"append log lines of job {', '.join(jobs)}")
        firsts = []
        for item in group:
            firsts.append(firsts_of_jobs[item.job_id])
            firsts_of_jobs[item.job_id] += len(item.lines)
        return firsts

    async def append_once(
        self, job_id: str, key: str, offset: int, lines: Sequence[LogLine]
    ) -> tuple[list[LogLine], int]:
        check_job_id(job_id)

        async def write(conn: Any) -> tuple[list[LogLine], int]:
            first, count, end = await conn.fetchrow(
                APPEND_ONCE, key, job_id, offset, [line.ts for line in lines],
                [line.stream for line in lines], [_clean(line.step) for line in lines],
                [_clean(line.line) for line in lines], LOGS_CHANNEL)
            fresh = lines[len(lines) - count:] if count else []
            return [line.with_seq(first + i) for i, line in enumerate(fresh)], int(end)

        # Idempotent: a retry after a lost COMMIT finds the position it advanced.
        return await self._run(write, what=f"append a log batch of job {job_id}")

    async def forget(self, job_id: str, key: str) -> None:
        async def delete(conn: Any) -> None:
            await conn.execute(FORGET_POSITION, key)

        await self._run(delete, what=f"forget a log position of job {job_id}")

    async def finish(self, job_id: str) -> None:
        """The job is over: its series' positions (those of lost leases too) go."""
        async def delete(conn: Any) -> None:
            await conn.execute(FORGET_JOB_POSITIONS, job_id)

        try:
            await self._run(delete, what=f"forget the log positions of job {job_id}")
        except PartiturError:
            logger.warning("cannot drop the log positions of job %s", job_id)

    async def read(
        self, job_id: str, *, step: str | None = None, after: int = 0, limit: int | None = None
    ) -> list[LogLine]:
        async def fetch(conn: Any) -> list[Any]:
            rows: list[Any] = await conn.fetch(READ_LINES, job_id, max(after, 0), step, limit)
            return rows

        rows = await self._run(fetch, what=f"read the log of job {job_id}")
        return [LogLine(ts=r[1], stream=r[2], step=r[3], line=r[4], seq=r[0]) for r in rows]

    async def count(self, job_id: str) -> int:
        async def fetch(conn: Any) -> int:
            found: int | None = await conn.fetchval(COUNT, job_id)
            return found or 0

        return await self._run(fetch, what=f"count the log of job {job_id}")

    async def listen(
        self,
        callback: Callable[[str, int], None],
        *,
        on_reconnect: Callable[[], Awaitable[None]] | None = None,
    ) -> Listener:
        """Call `callback(job_id, last_seq)` for every append committed by any process.

        Notifications sent while the LISTEN connection was down are lost; `on_reconnect`
        runs after it is back, for consumers to re-read from their cursors.
        """
        if self.url is None:
            raise StoreUnavailable("listen() on a borrowed pool needs the database url")
        url = self.url

        async def connect() -> Any:
            return await asyncpg.connect(url, timeout=self.connect_timeout)

        def deliver(payload: str) -> None:
            callback(*parse_payload(payload))

        listener = Listener(connect, LOGS_CHANNEL, deliver, on_reconnect=on_reconnect)
        await listener.start()
        self._listeners.append(listener)
        return listener

    async def close(self) -> None:
        self._closed = True
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            await listener.close()
        pool, self._pool = self._pool, None
        if pool is not None and self._owns_pool:
            try:
                await asyncio.wait_for(pool.close(), 5.0)
            except Exception:
                pool.terminate()


class _Queued:
    """An `append` waiting for the committer, with its caller's future."""

    __slots__ = ("future", "job_id", "lines")

    def __init__(
        self, job_id: str, lines: Sequence[LogLine], future: asyncio.Future[int]
    ) -> None:
        self.job_id = job_id
        self.lines = lines
        self.future = future

    def _waiting(self) -> bool:
        return not self.future.done() and not self.future.get_loop().is_closed()

    def succeed(self, first: int) -> None:
        if self._waiting():
            self.future.set_result(first)

    def fail(self, exc: BaseException) -> None:
        if self._waiting():
            self.future.set_exception(exc)
