"""`CloudRepository`: the stored objects of the cloud API (`/v1`), for every backend.

Deployments, workflow pins, cloud job records, schedules, credentials, webhook
endpoints, deliveries and the callback outbox are rows of one table (`cloud_objects`,
migration `NNN_cloud.sql`), keyed by `(kind, id)`, owned by a tenant, with an optional
`name` that is unique per `(kind, tenant)` and a JSON `data` object. Ids are UUIDv7, so
ordering by id is ordering by creation time. Every write bumps the row's `version`
(migration `NNN_cloud_versions.sql`); `modify` is a read-change-write that only writes
over the version it read and otherwise reads again and re-applies the change, so two
servers on one database changing the same object never lose one of the changes.
`page(where=...)` filters on top-level JSON fields in the query itself (deliveries by
`job_id` or `webhook_id` use expression indexes). `cloud_repository_for(store)` picks the
backend that shares the event store's database (and its thread or pool).
"""

from __future__ import annotations

import asyncio
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import orjson

from engine.errors import Conflict
from engine.store.base import EventStore, OutboxObject

T = TypeVar("T")

COLUMNS = "kind, id, tenant, name, created_at, updated_at, data"
READ = f"{COLUMNS}, version"
SQLITE_INSERT = f"INSERT INTO cloud_objects ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
SQLITE_UPDATE = ("UPDATE cloud_objects SET name = ?, updated_at = ?, data = ?, "
                 "version = version + 1 WHERE kind = ? AND id = ?")
SQLITE_SWAP = SQLITE_UPDATE + " AND version = ?"
SQLITE_GET = f"SELECT {READ} FROM cloud_objects WHERE kind = ? AND id = ?"
SQLITE_BY_NAME = (f"SELECT {READ} FROM cloud_objects "
                  "WHERE kind = ? AND tenant = ? AND name = ?")
SQLITE_DELETE = "DELETE FROM cloud_objects WHERE kind = ? AND id = ?"
# An append's outbox objects (`Outbox.objects`): one already stored is left alone.
SQLITE_OUTBOX = (f"INSERT INTO cloud_objects ({COLUMNS}) VALUES (?, ?, ?, NULL, ?, ?, ?) "
                 "ON CONFLICT (kind, id) DO NOTHING")

PG_INSERT = f"INSERT INTO cloud_objects ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
PG_UPDATE = ("UPDATE cloud_objects SET name = $1, updated_at = $2, data = $3, "
             "version = version + 1 WHERE kind = $4 AND id = $5")
PG_SWAP = PG_UPDATE + " AND version = $6"
PG_GET = f"SELECT {READ} FROM cloud_objects WHERE kind = $1 AND id = $2"
PG_BY_NAME = (f"SELECT {READ} FROM cloud_objects "
              "WHERE kind = $1 AND tenant = $2 AND name = $3")
PG_DELETE = "DELETE FROM cloud_objects WHERE kind = $1 AND id = $2"
PG_OUTBOX = (f"INSERT INTO cloud_objects ({COLUMNS}) VALUES ($1, $2, $3, NULL, $4, $5, $6) "
             "ON CONFLICT (kind, id) DO NOTHING")

TOP = "\uffff"  # sorts after every id: "id < TOP" is the first page
# The JSON fields `page(where=...)` filters on; each is an expression index of the
# migration `NNN_cloud_versions.sql` (the query's expression must match the index's).
FILTERABLE = ("job_id", "webhook_id")
# How often `modify` re-reads and re-applies a change that lost a race.
ATTEMPTS = 50


def _sqlite_page(tenant: bool, where: tuple[str, ...]) -> str:
    conds = ["kind = ?"] + (["tenant = ?"] if tenant else []) + [
        f"json_extract(data, '$.{f}') = ?" for f in where] + ["id < ?"]
    return (f"SELECT {READ} FROM cloud_objects WHERE {' AND '.join(conds)} "
            "ORDER BY id DESC LIMIT ?")


def _pg_page(tenant: bool, where: tuple[str, ...]) -> str:
    conds = ["kind = $1"] + (["tenant = $2"] if tenant else [])
    conds += [f"(data::jsonb ->> '{f}') = ${len(conds) + 1 + i}" for i, f in enumerate(where)]
    n = len(conds)
    return (f"SELECT {READ} FROM cloud_objects WHERE {' AND '.join(conds)} "
            f"AND id < ${n + 1} ORDER BY id DESC LIMIT ${n + 2}")


def _jobs_page(placeholder: Callable[[int], str], statuses: int) -> str:
    """Cloud job records of a tenant whose engine job (`jobs` row) has one of the
    statuses: parameters tenant, the statuses, the cursor, the limit."""
    cols = ", ".join(f"o.{c.strip()}" for c in READ.split(","))
    among = ", ".join(placeholder(2 + i) for i in range(statuses))
    return (f"SELECT {cols} FROM cloud_objects o JOIN jobs j ON j.job_id = o.id "
            f"WHERE o.kind = 'job' AND o.tenant = {placeholder(1)} AND j.status IN ({among}) "
            f"AND o.id < {placeholder(statuses + 2)} ORDER BY o.id DESC "
            f"LIMIT {placeholder(statuses + 3)}")


def _where(where: Mapping[str, str] | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    fields = tuple(sorted(where or {}))
    for f in fields:
        if f not in FILTERABLE:
            raise ValueError(f"cannot filter cloud objects on {f!r}")
    return fields, tuple(str((where or {})[f]) for f in fields)


@dataclass(frozen=True, slots=True)
class CloudObject:
    """One stored object of the cloud API."""

    kind: str
    id: str
    tenant: str
    created_at: float
    updated_at: float
    data: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
    version: int = 0  # bumped by every write; `modify` writes only over the one it read

    def changed(self, now: float, **data: Any) -> CloudObject:
        """A copy with `data` merged in and `updated_at` set to `now`."""
        return replace(self, updated_at=now, data={**self.data, **data})


def _row(r: Any) -> CloudObject:
    return CloudObject(kind=r[0], id=r[1], tenant=r[2], name=r[3], created_at=r[4],
                       updated_at=r[5], data=orjson.loads(r[6]), version=r[7])


def _params(o: CloudObject) -> tuple[Any, ...]:
    return (o.kind, o.id, o.tenant, o.name, o.created_at, o.updated_at,
            orjson.dumps(o.data).decode())


def outbox_params(o: OutboxObject) -> tuple[Any, ...]:
    """The parameters of `SQLITE_OUTBOX`/`PG_OUTBOX` for one outbox object."""
    return (o.kind, o.id, o.tenant, o.created_at, o.created_at,
            orjson.dumps(dict(o.data)).decode())


def from_outbox(o: OutboxObject) -> CloudObject:
    return CloudObject(o.kind, o.id, o.tenant, o.created_at, o.created_at, dict(o.data))


class CloudRepository(ABC):
    """Stored cloud objects: insert, update, get, find by name, page, delete."""

    @abstractmethod
    async def insert(self, obj: CloudObject) -> None:
        """Store a new object; `Conflict` when its id, or its name in its tenant, exists."""

    @abstractmethod
    async def update(self, obj: CloudObject) -> bool:
        """Replace name, `updated_at` and data of the stored object; False when unknown.

        `Conflict` when the new name is taken in the tenant.
        """

    @abstractmethod
    async def swap(self, obj: CloudObject) -> bool:
        """`update`, but only when the stored object still has `obj.version`: False when
        it changed since (or is gone)."""

    async def modify(self, kind: str, obj_id: str,
                     change: Callable[[CloudObject], CloudObject | None]
                     ) -> CloudObject | None:
        """Read the object, apply `change` and write the result over the version read;
        when another writer (here or on another server) got there first, read again and
        re-apply. `change` returning None writes nothing. The written object, the
        unchanged one, or None when there is no such object. `change` may raise (the
        error is passed on, nothing is written) and must not have side effects, as it may
        run more than once.
        """
        for _ in range(ATTEMPTS):
            current = await self.get(kind, obj_id)
            if current is None:
                return None
            new = change(current)
            if new is None:
                return current
            if await self.swap(replace(new, version=current.version)):
                return replace(new, version=current.version + 1)
            await asyncio.sleep(0)
        raise Conflict(f"{kind} {obj_id!r} kept changing; try again")

    async def merge(self, obj: CloudObject, now: float, **fields: Any) -> CloudObject:
        """Set `fields` of `obj`'s data (and `updated_at`) over the stored object's
        current data, leaving the other fields as another writer may have left them; the
        written object (`obj` with the fields when it is no longer stored)."""
        done = await self.modify(obj.kind, obj.id, lambda o: o.changed(now, **fields))
        return done if done is not None else obj.changed(now, **fields)

    @abstractmethod
    async def get(self, kind: str, obj_id: str) -> CloudObject | None:
        """The object `(kind, obj_id)`, or None."""

    @abstractmethod
    async def by_name(self, kind: str, tenant: str, name: str) -> CloudObject | None:
        """The object of `kind` named `name` in `tenant`, or None."""

    @abstractmethod
    async def page(self, kind: str, tenant: str | None, *, before: str | None = None,
                   limit: int = 100, where: Mapping[str, str] | None = None
                   ) -> list[CloudObject]:
        """Objects of `kind` (of one tenant, or all when None), newest first, with an id
        below `before`, at most `limit`; with `where`, only those whose JSON fields (of
        `FILTERABLE`) have those values."""

    @abstractmethod
    async def jobs_page(self, tenant: str, statuses: Collection[str], *,
                        before: str | None = None, limit: int = 100) -> list[CloudObject]:
        """`page("job", tenant, ...)` of the cloud jobs whose engine job (the store's
        `jobs` row) has one of `statuses`, found by a query on both tables."""

    @abstractmethod
    async def delete(self, kind: str, obj_id: str) -> bool:
        """Remove the object; False when it was not there."""

    async def all(self, kind: str, tenant: str | None, *, cap: int = 100_000
                  ) -> list[CloudObject]:
        """Every object of `kind` (newest first), up to `cap`."""
        out: list[CloudObject] = []
        before: str | None = None
        while len(out) < cap:
            chunk = await self.page(kind, tenant, before=before, limit=min(1000, cap - len(out)))
            out.extend(chunk)
            if len(chunk) < 1000:
                break
            before = chunk[-1].id
        return out


class MemoryCloudRepository(CloudRepository):
    """Cloud objects in a dict (tests, `partitur run`).

    `outbox` is the memory store's dict of the objects its appends wrote
    (`MemoryStore.objects`); they are taken over before every operation.
    """

    def __init__(self, outbox: dict[tuple[str, str], OutboxObject] | None = None,
                 job_status: Callable[[str], str | None] | None = None) -> None:
        self._rows_: dict[tuple[str, str], CloudObject] = {}
        self._job_status = job_status or (lambda job_id: None)
        self._outbox = outbox if outbox is not None else {}
        self._lock = asyncio.Lock()

    @property
    def _rows(self) -> dict[tuple[str, str], CloudObject]:
        while self._outbox:
            key, obj = self._outbox.popitem()
            self._rows_.setdefault(key, from_outbox(obj))
        return self._rows_

    def _name_taken(self, obj: CloudObject) -> bool:
        return obj.name is not None and any(
            o.kind == obj.kind and o.tenant == obj.tenant and o.name == obj.name
            and o.id != obj.id for o in self._rows.values())

    async def insert(self, obj: CloudObject) -> None:
        async with self._lock:
            if (obj.kind, obj.id) in self._rows or self._name_taken(obj):
                raise Conflict(f"{obj.kind} {obj.name or obj.id!r} exists")
            self._rows[(obj.kind, obj.id)] = replace(obj, version=0)

    async def update(self, obj: CloudObject) -> bool:
        return await self._write(obj, None)

    async def swap(self, obj: CloudObject) -> bool:
        return await self._write(obj, obj.version)

    async def _write(self, obj: CloudObject, version: int | None) -> bool:
        async with self._lock:
            old = self._rows.get((obj.kind, obj.id))
            if old is None or (version is not None and old.version != version):
                return False
            if self._name_taken(obj):
                raise Conflict(f"{obj.kind} {obj.name!r} exists")
            self._rows[(obj.kind, obj.id)] = replace(
                old, name=obj.name, updated_at=obj.updated_at, data=obj.data,
                version=old.version + 1)
            return True

    async def get(self, kind: str, obj_id: str) -> CloudObject | None:
        return self._rows.get((kind, obj_id))

    async def by_name(self, kind: str, tenant: str, name: str) -> CloudObject | None:
        for o in self._rows.values():
            if o.kind == kind and o.tenant == tenant and o.name == name:
                return o
        return None

    async def page(self, kind: str, tenant: str | None, *, before: str | None = None,
                   limit: int = 100, where: Mapping[str, str] | None = None
                   ) -> list[CloudObject]:
        top = before or TOP
        fields, values = _where(where)
        found = [o for o in self._rows.values() if o.kind == kind and o.id < top
                 and (tenant is None or o.tenant == tenant)
                 and all(str(o.data.get(f)) == v and o.data.get(f) is not None
                         for f, v in zip(fields, values, strict=True))]
        return sorted(found, key=lambda o: o.id, reverse=True)[:limit]

    async def jobs_page(self, tenant: str, statuses: Collection[str], *,
                        before: str | None = None, limit: int = 100) -> list[CloudObject]:
        top = before or TOP
        found = [o for o in self._rows.values() if o.kind == "job" and o.tenant == tenant
                 and o.id < top and self._job_status(o.id) in statuses]
        return sorted(found, key=lambda o: o.id, reverse=True)[:limit]

    async def delete(self, kind: str, obj_id: str) -> bool:
        async with self._lock:
            return self._rows.pop((kind, obj_id), None) is not None


class SqliteCloudRepository(CloudRepository):
    """Cloud objects in the SQLite store's file, on the store's own thread."""

    def __init__(self, store: Any) -> None:
        self.store = store

    async def _change(self, sql: str, params: tuple[Any, ...]) -> int:
        def write(conn: sqlite3.Connection) -> int:
            return conn.execute(sql, params).rowcount

        count: int = await self.store._run(self.store._write, write)
        return count

    async def _all(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        rows: list[Any] = await self.store._run(
            lambda: self.store.conn.execute(sql, params).fetchall())
        return rows

    async def insert(self, obj: CloudObject) -> None:
        try:
            await self._change(SQLITE_INSERT, _params(obj))
        except Conflict:
            raise Conflict(f"{obj.kind} {obj.name or obj.id!r} exists") from None

    async def update(self, obj: CloudObject) -> bool:
        return await self._update(SQLITE_UPDATE, obj, ())

    async def swap(self, obj: CloudObject) -> bool:
        return await self._update(SQLITE_SWAP, obj, (obj.version,))

    async def _update(self, sql: str, obj: CloudObject, extra: tuple[Any, ...]) -> bool:
        try:
            return await self._change(sql, (
                obj.name, obj.updated_at, orjson.dumps(obj.data).decode(), obj.kind,
                obj.id, *extra)) > 0
        except Conflict:
            raise Conflict(f"{obj.kind} {obj.name!r} exists") from None

    async def get(self, kind: str, obj_id: str) -> CloudObject | None:
        rows = await self._all(SQLITE_GET, (kind, obj_id))
        return _row(rows[0]) if rows else None

    async def by_name(self, kind: str, tenant: str, name: str) -> CloudObject | None:
        rows = await self._all(SQLITE_BY_NAME, (kind, tenant, name))
        return _row(rows[0]) if rows else None

    async def page(self, kind: str, tenant: str | None, *, before: str | None = None,
                   limit: int = 100, where: Mapping[str, str] | None = None
                   ) -> list[CloudObject]:
        fields, values = _where(where)
        head = (kind,) if tenant is None else (kind, tenant)
        rows = await self._all(_sqlite_page(tenant is not None, fields),
                               (*head, *values, before or TOP, limit))
        return [_row(r) for r in rows]

    async def jobs_page(self, tenant: str, statuses: Collection[str], *,
                        before: str | None = None, limit: int = 100) -> list[CloudObject]:
        among = list(statuses)
        rows = await self._all(_jobs_page(lambda n: "?", len(among)),
                               (tenant, *among, before or TOP, limit))
        return [_row(r) for r in rows]

    async def delete(self, kind: str, obj_id: str) -> bool:
        return await self._change(SQLITE_DELETE, (kind, obj_id)) > 0


class PostgresCloudRepository(CloudRepository):
    """Cloud objects in the PostgreSQL store's database, through its pool."""

    def __init__(self, store: Any) -> None:
        self.store = store

    async def _read(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        result: T = await self.store._run(fn, retry=True, what="cloud read")
        return result

    async def _change(self, sql: str, *args: Any) -> int:
        async def execute(conn: Any) -> int:
            status: str = await conn.execute(sql, *args)
            tail = status.rsplit(" ", 1)[-1]
            return int(tail) if tail.isdigit() else 0

        count: int = await self.store._write(execute, what="cloud write")
        return count

    async def _rows(self, sql: str, *args: Any) -> list[Any]:
        async def fetch(conn: Any) -> list[Any]:
            rows: list[Any] = await conn.fetch(sql, *args)
            return rows

        return await self._read(fetch)

    async def insert(self, obj: CloudObject) -> None:
        try:
            await self._change(PG_INSERT, *_params(obj))
        except Conflict:
            raise Conflict(f"{obj.kind} {obj.name or obj.id!r} exists") from None

    async def update(self, obj: CloudObject) -> bool:
        return await self._update(PG_UPDATE, obj)

    async def swap(self, obj: CloudObject) -> bool:
        return await self._update(PG_SWAP, obj, obj.version)

    async def _update(self, sql: str, obj: CloudObject, *extra: Any) -> bool:
        try:
            return await self._change(sql, obj.name, obj.updated_at,
                                      orjson.dumps(obj.data).decode(), obj.kind, obj.id,
                                      *extra) > 0
        except Conflict:
            raise Conflict(f"{obj.kind} {obj.name!r} exists") from None

    async def get(self, kind: str, obj_id: str) -> CloudObject | None:
        rows = await self._rows(PG_GET, kind, obj_id)
        return _row(rows[0]) if rows else None

    async def by_name(self, kind: str, tenant: str, name: str) -> CloudObject | None:
        rows = await self._rows(PG_BY_NAME, kind, tenant, name)
        return _row(rows[0]) if rows else None

    async def page(self, kind: str, tenant: str | None, *, before: str | None = None,
                   limit: int = 100, where: Mapping[str, str] | None = None
                   ) -> list[CloudObject]:
        fields, values = _where(where)
        head = (kind,) if tenant is None else (kind, tenant)
        rows = await self._rows(_pg_page(tenant is not None, fields),
                                *head, *values, before or TOP, limit)
        return [_row(r) for r in rows]

    async def jobs_page(self, tenant: str, statuses: Collection[str], *,
                        before: str | None = None, limit: int = 100) -> list[CloudObject]:
        among = list(statuses)
        rows = await self._rows(_jobs_page(lambda n: f"${n}", len(among)),
                                tenant, *among, before or TOP, limit)
        return [_row(r) for r in rows]

    async def delete(self, kind: str, obj_id: str) -> bool:
        return await self._change(PG_DELETE, kind, obj_id) > 0


def cloud_repository_for(store: EventStore) -> CloudRepository:
    """The repository backend that lives in the same database as `store`."""
    from engine.store.memory import MemoryStore
    from engine.store.postgres import PostgresStore
    from engine.store.sqlite import SqliteStore

    if isinstance(store, SqliteStore):
        return SqliteCloudRepository(store)
    if isinstance(store, PostgresStore):
        return PostgresCloudRepository(store)
    if isinstance(store, MemoryStore):
        memory = store

        def job_status(job_id: str) -> str | None:
            found = memory._jobs.get(job_id)
            return None if found is None else str(found[0].status)

        return MemoryCloudRepository(store.objects, job_status)
    raise TypeError(f"no cloud repository for {type(store).__name__}")
