"""The SQLite `AuthRepository`: the auth tables (migration 004) through the event store's
own connection and thread, so every statement is serialized with the events'."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from engine.auth.model import ApiKey, RefreshToken, User
from engine.auth.repo import AuthRepository, groups_of, groups_text
from engine.errors import Conflict
from engine.store.sqlite import SqliteStore

USER_COLUMNS = ("user_id, email, name, password_hash, is_admin, groups_text, created_at, "
                "last_login_at")
INSERT_USER = ("INSERT INTO users (user_id, email, email_lower, name, password_hash, is_admin, "
               "groups_text, created_at, last_login_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
GET_USER = "SELECT " + USER_COLUMNS + " FROM users WHERE user_id = ?"
GET_USER_BY_EMAIL = "SELECT " + USER_COLUMNS + " FROM users WHERE email_lower = ?"
LIST_USERS = ("SELECT " + USER_COLUMNS + " FROM users ORDER BY created_at, user_id "
              "LIMIT ? OFFSET ?")
COUNT_USERS = "SELECT COUNT(*) FROM users"
UPDATE_USER = ("UPDATE users SET name = ?, password_hash = ?, is_admin = ?, groups_text = ?, "
               "last_login_at = ? WHERE user_id = ?")

KEY_COLUMNS = "prefix, user_id, name, key_hash, created_at, expires_at, revoked_at, last_used_at"
INSERT_KEY = ("INSERT INTO api_keys (" + KEY_COLUMNS + ") VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
GET_KEY = "SELECT " + KEY_COLUMNS + " FROM api_keys WHERE prefix = ?"
LIST_KEYS = "SELECT " + KEY_COLUMNS + " FROM api_keys ORDER BY created_at DESC, prefix DESC"
LIST_USER_KEYS = ("SELECT " + KEY_COLUMNS + " FROM api_keys WHERE user_id = ? "
                  "ORDER BY created_at DESC, prefix DESC")
REVOKE_KEY = "UPDATE api_keys SET revoked_at = ? WHERE prefix = ? AND revoked_at IS NULL"

TOKEN_COLUMNS = "token_hash, user_id, family, created_at, expires_at, used_at, revoked_at"
INSERT_TOKEN = "INSERT INTO refresh_tokens (" + TOKEN_COLUMNS + ") VALUES (?, ?, ?, ?, ?, ?, ?)"
GET_TOKEN = "SELECT " + TOKEN_COLUMNS + " FROM refresh_tokens WHERE token_hash = ?"
USE_TOKEN = "UPDATE refresh_tokens SET used_at = ? WHERE token_hash = ? AND used_at IS NULL"
REVOKE_FAMILY = ("UPDATE refresh_tokens SET revoked_at = ? WHERE family = ? "
                 "AND revoked_at IS NULL")
REVOKE_USER_TOKENS = ("UPDATE refresh_tokens SET revoked_at = ? WHERE user_id = ? "
                      "AND revoked_at IS NULL")

INSERT_TICKET = "INSERT INTO ws_tickets (ticket_hash, user_id, expires_at) VALUES (?, ?, ?)"
TAKE_TICKET = "DELETE FROM ws_tickets WHERE ticket_hash = ? RETURNING user_id, expires_at"
PURGE_TICKETS = "DELETE FROM ws_tickets WHERE expires_at <= ?"

INSERT_SECRET = "INSERT INTO auth_secrets (name, value) VALUES (?, ?) ON CONFLICT DO NOTHING"
GET_SECRET = "SELECT value FROM auth_secrets WHERE name = ?"


def user_of(r: Sequence[Any]) -> User:
    return User(user_id=r[0], email=r[1], name=r[2], password_hash=r[3], is_admin=bool(r[4]),
                groups=groups_of(r[5]), created_at=r[6], last_login_at=r[7])


def key_of(r: Sequence[Any]) -> ApiKey:
    return ApiKey(prefix=r[0], user_id=r[1], name=r[2], key_hash=r[3], created_at=r[4],
                  expires_at=r[5], revoked_at=r[6], last_used_at=r[7])


def token_of(r: Sequence[Any]) -> RefreshToken:
    return RefreshToken(token_hash=r[0], user_id=r[1], family=r[2], created_at=r[3],
                        expires_at=r[4], used_at=r[5], revoked_at=r[6])


class SqliteAuthRepository(AuthRepository):
    """The auth tables of a (opened) `SqliteStore`'s database."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store

    async def _one(self, sql: str, params: tuple[Any, ...]) -> Any:
        return await self.store._run(lambda: self.store.conn.execute(sql, params).fetchone())

    async def _all(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        return await self.store._run(lambda: self.store.conn.execute(sql, params).fetchall())

    async def _change(self, sql: str, params: tuple[Any, ...]) -> int:
        def write(conn: sqlite3.Connection) -> int:
            return conn.execute(sql, params).rowcount

        return await self.store._run(self.store._write, write)

    async def create_user(self, user: User) -> None:
        try:
            await self._change(INSERT_USER, (
                user.user_id, user.email, user.email.lower(), user.name, user.password_hash,
                int(user.is_admin), groups_text(user.groups), user.created_at,
                user.last_login_at))
        except Conflict:
            raise Conflict(
                f"a user with id {user.user_id!r} or email {user.email!r} exists") from None

    async def get_user(self, user_id: str) -> User | None:
        row = await self._one(GET_USER, (user_id,))
        return None if row is None else user_of(row)

    async def get_user_by_email(self, email: str) -> User | None:
        row = await self._one(GET_USER_BY_EMAIL, (email.lower(),))
        return None if row is None else user_of(row)

    async def list_users(self, limit: int, offset: int) -> tuple[list[User], int]:
        rows = await self._all(LIST_USERS, (limit, offset))
        total = (await self._one(COUNT_USERS, ()))[0]
        return [user_of(r) for r in rows], int(total)

    async def update_user(self, user: User) -> bool:
        changed = await self._change(UPDATE_USER, (
            user.name, user.password_hash, int(user.is_admin), groups_text(user.groups),
            user.last_login_at, user.user_id))
        return changed > 0

    async def create_api_key(self, key: ApiKey) -> None:
        await self._change(INSERT_KEY, (key.prefix, key.user_id, key.name, key.key_hash,
                                        key.created_at, key.expires_at, key.revoked_at,
                                        key.last_used_at))

    async def get_api_key(self, prefix: str) -> ApiKey | None:
        row = await self._one(GET_KEY, (prefix,))
        return None if row is None else key_of(row)

    async def list_api_keys(self, user_id: str | None) -> list[ApiKey]:
        if user_id is None:
            return [key_of(r) for r in await self._all(LIST_KEYS, ())]
        return [key_of(r) for r in await self._all(LIST_USER_KEYS, (user_id,))]

    async def revoke_api_key(self, prefix: str, now: float) -> bool:
        return await self._change(REVOKE_KEY, (now, prefix)) > 0

    async def create_refresh(self, token: RefreshToken) -> None:
        await self._change(INSERT_TOKEN, (token.token_hash, token.user_id, token.family,
                                          token.created_at, token.expires_at, token.used_at,
                                          token.revoked_at))

    async def use_refresh(self, token_hash: str, now: float) -> tuple[RefreshToken, bool] | None:
        def use(conn: sqlite3.Connection) -> tuple[RefreshToken, bool] | None:
            row = conn.execute(GET_TOKEN, (token_hash,)).fetchone()
            if row is None:
                return None
            first = conn.execute(USE_TOKEN, (now, token_hash)).rowcount > 0
            return token_of(row), first

        return await self.store._run(self.store._write, use)

    async def revoke_family(self, family: str, now: float) -> int:
        return await self._change(REVOKE_FAMILY, (now, family))

    async def revoke_user_tokens(self, user_id: str, now: float) -> int:
        return await self._change(REVOKE_USER_TOKENS, (now, user_id))

    async def create_ticket(self, ticket_hash: str, user_id: str, expires_at: float) -> None:
        await self._change(INSERT_TICKET, (ticket_hash, user_id, expires_at))

    async def take_ticket(self, ticket_hash: str, now: float) -> str | None:
        def take(conn: sqlite3.Connection) -> Any:
            row = conn.execute(TAKE_TICKET, (ticket_hash,)).fetchone()
            conn.execute(PURGE_TICKETS, (now,))
            return row

        row = await self.store._run(self.store._write, take)
        if row is None or now >= row[1]:
            return None
        return str(row[0])

    async def ensure_secret(self, name: str, value: bytes) -> bytes:
        def ensure(conn: sqlite3.Connection) -> bytes:
            conn.execute(INSERT_SECRET, (name, value))
            return bytes(conn.execute(GET_SECRET, (name,)).fetchone()[0])

        return await self.store._run(self.store._write, ensure)
