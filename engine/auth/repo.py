"""`AuthRepository`: the one interface to stored users, API keys, tokens and tickets.

Backends: `engine.store.auth_memory`, `auth_sqlite` and `auth_postgres`, all held to
tests/contract/auth_store_contract.py. `auth_repository_for(store)` picks the backend
that shares the event store's database (and connection pool or thread).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from engine.auth.model import ApiKey, RefreshToken, User
from engine.store.base import EventStore


class AuthRepository(ABC):
    """Users, API keys, refresh tokens, WebSocket tickets and the signing secret."""

    @abstractmethod
    async def create_user(self, user: User) -> None:
        """Store a new user; `Conflict` when the id or the email (any case) exists."""

    @abstractmethod
    async def get_user(self, user_id: str) -> User | None:
        """The user with `user_id`."""

    @abstractmethod
    async def get_user_by_email(self, email: str) -> User | None:
        """The user with `email` (compared case-insensitively)."""

    @abstractmethod
    async def list_users(self, limit: int, offset: int) -> tuple[list[User], int]:
        """A page of users, oldest first, and the total number of users."""

    @abstractmethod
    async def update_user(self, user: User) -> bool:
        """Replace the stored user with the same id (not its email); False if unknown."""

    @abstractmethod
    async def create_api_key(self, key: ApiKey) -> None:
        """Store a new key; `Conflict` when the prefix exists."""

    @abstractmethod
    async def get_api_key(self, prefix: str) -> ApiKey | None:
        """The key with `prefix` (revoked and expired ones too)."""

    @abstractmethod
    async def list_api_keys(self, user_id: str | None) -> list[ApiKey]:
        """The keys of `user_id` (every key when None), newest first."""

    @abstractmethod
    async def revoke_api_key(self, prefix: str, now: float) -> bool:
        """Mark the key revoked at `now`; False when unknown or already revoked."""

    @abstractmethod
    async def create_refresh(self, token: RefreshToken) -> None:
        """Store a new refresh token."""

    @abstractmethod
    async def use_refresh(self, token_hash: str, now: float) -> tuple[RefreshToken, bool] | None:
        """Mark the token used at `now`, atomically.

        Returns the token as it was before this call and whether this call was the
        first use (exactly one of several concurrent callers gets True); None if unknown.
        """

    @abstractmethod
    async def revoke_family(self, family: str, now: float) -> int:
        """Revoke every token of a login family; how many were still unrevoked."""

    @abstractmethod
    async def revoke_user_tokens(self, user_id: str, now: float) -> int:
        """Revoke every refresh token of a user; how many were still unrevoked."""

    @abstractmethod
    async def create_ticket(self, ticket_hash: str, user_id: str, expires_at: float) -> None:
        """Store a single-use WebSocket ticket."""

    @abstractmethod
    async def take_ticket(self, ticket_hash: str, now: float) -> str | None:
        """Delete the ticket and return its user id if it existed and had not expired."""

    @abstractmethod
    async def ensure_secret(self, name: str, value: bytes) -> bytes:
        """Store `value` under `name` unless one is stored; return the stored one."""


def auth_repository_for(store: EventStore) -> AuthRepository:
    """The repository backend that lives in the same database as `store`."""
    from engine.store.memory import MemoryStore
    from engine.store.sqlite import SqliteStore

    if isinstance(store, SqliteStore):
        from engine.store.auth_sqlite import SqliteAuthRepository

        return SqliteAuthRepository(store)
    if isinstance(store, MemoryStore):
        from engine.store.auth_memory import MemoryAuthRepository

        return MemoryAuthRepository()
    from engine.store.postgres import PostgresStore

    if isinstance(store, PostgresStore):
        from engine.store.auth_postgres import PostgresAuthRepository

        return PostgresAuthRepository(store)
    raise TypeError(f"no auth repository for {type(store).__name__}")


def groups_text(groups: Sequence[str]) -> str:
    """Groups as stored in one text column (newline-separated)."""
    return "\n".join(groups)


def groups_of(text: str | None) -> tuple[str, ...]:
    """The inverse of `groups_text`."""
    return tuple(g for g in (text or "").split("\n") if g)
