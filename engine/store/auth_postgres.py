"""The PostgreSQL `AuthRepository`: the auth tables (migration 005) through the event
store's connection pool, with its error wrapping and reconnects."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from engine.auth.model import ApiKey, RefreshToken, User
from engine.auth.repo import AuthRepository, groups_of, groups_text
from engine.errors import Conflict
from engine.store.postgres import PostgresStore

T = TypeVar("T")

USER_COLUMNS = ("user_id, email, name, password_hash, is_admin, groups_text, created_at, "
                "last_login_at")
INSERT_USER = ("INSERT INTO users (user_id, email, email_lower, name, password_hash, is_admin, "
               "groups_text, created_at, last_login_at) "
               "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
GET_USER = "SELECT " + USER_COLUMNS + " FROM users WHERE user_id = $1"
GET_USER_BY_EMAIL = "SELECT " + USER_COLUMNS + " FROM users WHERE email_lower = $1"
LIST_USERS = ("SELECT " + USER_COLUMNS + " FROM users ORDER BY created_at, user_id "
              "LIMIT $1 OFFSET $2")
COUNT_USERS = "SELECT COUNT(*) FROM users"
UPDATE_USER = ("UPDATE users SET name = $1, password_hash = $2, is_admin = $3, "
               "groups_text = $4, last_login_at = $5 WHERE user_id = $6")

KEY_COLUMNS = "prefix, user_id, name, key_hash, created_at, expires_at, revoked_at, last_used_at"
INSERT_KEY = ("INSERT INTO api_keys (" + KEY_COLUMNS + ") "
              "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
GET_KEY = "SELECT " + KEY_COLUMNS + " FROM api_keys WHERE prefix = $1"
LIST_KEYS = "SELECT " + KEY_COLUMNS + " FROM api_keys ORDER BY created_at DESC, prefix DESC"
LIST_USER_KEYS = ("SELECT " + KEY_COLUMNS + " FROM api_keys WHERE user_id = $1 "
                  "ORDER BY created_at DESC, prefix DESC")
REVOKE_KEY = "UPDATE api_keys SET revoked_at = $1 WHERE prefix = $2 AND revoked_at IS NULL"

TOKEN_COLUMNS = "token_hash, user_id, family, created_at, expires_at, used_at, revoked_at"
INSERT_TOKEN = ("INSERT INTO refresh_tokens (" + TOKEN_COLUMNS + ") "
                "VALUES ($1, $2, $3, $4, $5, $6, $7)")
# Row lock first, so of two concurrent uses exactly one sees used_at IS NULL.
LOCK_TOKEN = "SELECT " + TOKEN_COLUMNS + " FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE"
USE_TOKEN = "UPDATE refresh_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL"
REVOKE_FAMILY = ("UPDATE refresh_tokens SET revoked_at = $1 WHERE family = $2 "
                 "AND revoked_at IS NULL")
REVOKE_USER_TOKENS = ("UPDATE refresh_tokens SET revoked_at = $1 WHERE user_id = $2 "
                      "AND revoked_at IS NULL")

INSERT_TICKET = "INSERT INTO ws_tickets (ticket_hash, user_id, expires_at) VALUES ($1, $2, $3)"
TAKE_TICKET = "DELETE FROM ws_tickets WHERE ticket_hash = $1 RETURNING user_id, expires_at"
PURGE_TICKETS = "DELETE FROM ws_tickets WHERE expires_at <= $1"

INSERT_SECRET = "INSERT INTO auth_secrets (name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING"
GET_SECRET = "SELECT value FROM auth_secrets WHERE name = $1"


def _count(status: str) -> int:
    """The row count of an asyncpg command status (`UPDATE 3` → 3)."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def user_of(r: Any) -> User:
    return User(user_id=r[0], email=r[1], name=r[2], password_hash=r[3], is_admin=bool(r[4]),
                groups=groups_of(r[5]), created_at=r[6], last_login_at=r[7])


def key_of(r: Any) -> ApiKey:
    return ApiKey(prefix=r[0], user_id=r[1], name=r[2], key_hash=r[3], created_at=r[4],
                  expires_at=r[5], revoked_at=r[6], last_used_at=r[7])


def token_of(r: Any) -> RefreshToken:
    return RefreshToken(token_hash=r[0], user_id=r[1], family=r[2], created_at=r[3],
                        expires_at=r[4], used_at=r[5], revoked_at=r[6])


class PostgresAuthRepository(AuthRepository):
    """The auth tables of an (opened) `PostgresStore`'s database."""

    def __init__(self, store: PostgresStore) -> None:
        self.store = store

    async def _read(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        return await self.store._run(fn, retry=True, what="auth read")

    async def _tx(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        return await self.store._write(fn, what="auth write")

    async def _one(self, sql: str, *args: Any) -> Any:
        async def fetch(conn: Any) -> Any:
            return await conn.fetchrow(sql, *args)

        return await self._read(fetch)

    async def _change(self, sql: str, *args: Any) -> int:
        async def execute(conn: Any) -> int:
            return _count(await conn.execute(sql, *args))

        return await self._tx(execute)

    async def create_user(self, user: User) -> None:
        try:
            await self._change(INSERT_USER, user.user_id, user.email, user.email.lower(),
                               user.name, user.password_hash, user.is_admin,
                               groups_text(user.groups), user.created_at, user.last_login_at)
        except Conflict:
            raise Conflict(
                f"a user with id {user.user_id!r} or email {user.email!r} exists") from None

    async def get_user(self, user_id: str) -> User | None:
        row = await self._one(GET_USER, user_id)
        return None if row is None else user_of(row)

    async def get_user_by_email(self, email: str) -> User | None:
        row = await self._one(GET_USER_BY_EMAIL, email.lower())
        return None if row is None else user_of(row)

    async def list_users(self, limit: int, offset: int) -> tuple[list[User], int]:
        async def fetch(conn: Any) -> tuple[list[User], int]:
            rows = await conn.fetch(LIST_USERS, limit, offset)
            total = await conn.fetchval(COUNT_USERS)
            return [user_of(r) for r in rows], int(total)

        return await self._read(fetch)

    async def update_user(self, user: User) -> bool:
        return await self._change(UPDATE_USER, user.name, user.password_hash, user.is_admin,
                                  groups_text(user.groups), user.last_login_at,
                                  user.user_id) > 0

    async def create_api_key(self, key: ApiKey) -> None:
        await self._change(INSERT_KEY, key.prefix, key.user_id, key.name, key.key_hash,
                           key.created_at, key.expires_at, key.revoked_at, key.last_used_at)

    async def get_api_key(self, prefix: str) -> ApiKey | None:
        row = await self._one(GET_KEY, prefix)
        return None if row is None else key_of(row)

    async def list_api_keys(self, user_id: str | None) -> list[ApiKey]:
        async def fetch(conn: Any) -> list[ApiKey]:
            rows = (await conn.fetch(LIST_KEYS) if user_id is None
                    else await conn.fetch(LIST_USER_KEYS, user_id))
            return [key_of(r) for r in rows]

        return await self._read(fetch)

    async def revoke_api_key(self, prefix: str, now: float) -> bool:
        return await self._change(REVOKE_KEY, now, prefix) > 0

    async def create_refresh(self, token: RefreshToken) -> None:
        await self._change(INSERT_TOKEN, token.token_hash, token.user_id, token.family,
                           token.created_at, token.expires_at, token.used_at, token.revoked_at)

    async def use_refresh(self, token_hash: str, now: float) -> tuple[RefreshToken, bool] | None:
        async def use(conn: Any) -> tuple[RefreshToken, bool] | None:
            row = await conn.fetchrow(LOCK_TOKEN, token_hash)
            if row is None:
                return None
            first = _count(await conn.execute(USE_TOKEN, now, token_hash)) > 0
            return token_of(row), first

        return await self._tx(use)

    async def revoke_family(self, family: str, now: float) -> int:
        return await self._change(REVOKE_FAMILY, now, family)

    async def revoke_user_tokens(self, user_id: str, now: float) -> int:
        return await self._change(REVOKE_USER_TOKENS, now, user_id)

    async def create_ticket(self, ticket_hash: str, user_id: str, expires_at: float) -> None:
        await self._change(INSERT_TICKET, ticket_hash, user_id, expires_at)

    async def take_ticket(self, ticket_hash: str, now: float) -> str | None:
        async def take(conn: Any) -> Any:
            row = await conn.fetchrow(TAKE_TICKET, ticket_hash)
            await conn.execute(PURGE_TICKETS, now)
            return row

        row = await self._tx(take)
        if row is None or now >= row[1]:
            return None
        return str(row[0])

    async def ensure_secret(self, name: str, value: bytes) -> bytes:
        async def ensure(conn: Any) -> bytes:
            await conn.execute(INSERT_SECRET, name, value)
            return bytes(await conn.fetchval(GET_SECRET, name))

        return await self._tx(ensure)
