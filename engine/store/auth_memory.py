"""The in-memory `AuthRepository` (tests, `memory://` stores)."""

from __future__ import annotations

import dataclasses

from engine.auth.model import ApiKey, RefreshToken, User
from engine.auth.repo import AuthRepository
from engine.errors import Conflict


class MemoryAuthRepository(AuthRepository):
    """Dicts in one process; every method completes without awaiting, so it is atomic."""

    def __init__(self) -> None:
        self._users: dict[str, User] = {}
        self._keys: dict[str, ApiKey] = {}
        self._refresh: dict[str, RefreshToken] = {}
        self._tickets: dict[str, tuple[str, float]] = {}
        self._secrets: dict[str, bytes] = {}

    async def create_user(self, user: User) -> None:
        email = user.email.lower()
        if user.user_id in self._users or any(
                u.email.lower() == email for u in self._users.values()):
            raise Conflict(f"a user with id {user.user_id!r} or email {user.email!r} exists")
        self._users[user.user_id] = user

    async def get_user(self, user_id: str) -> User | None:
        return self._users.get(user_id)

    async def get_user_by_email(self, email: str) -> User | None:
        email = email.lower()
        return next((u for u in self._users.values() if u.email.lower() == email), None)

    async def list_users(self, limit: int, offset: int) -> tuple[list[User], int]:
        users = sorted(self._users.values(), key=lambda u: (u.created_at, u.user_id))
        return users[offset:offset + limit], len(users)

    async def update_user(self, user: User) -> bool:
        old = self._users.get(user.user_id)
        if old is None:
            return False
        self._users[user.user_id] = dataclasses.replace(user, email=old.email)
        return True

    async def create_api_key(self, key: ApiKey) -> None:
        if key.prefix in self._keys:
            raise Conflict(f"an API key with prefix {key.prefix!r} exists")
        self._keys[key.prefix] = key

    async def get_api_key(self, prefix: str) -> ApiKey | None:
        return self._keys.get(prefix)

    async def list_api_keys(self, user_id: str | None) -> list[ApiKey]:
        keys = [k for k in self._keys.values() if user_id is None or k.user_id == user_id]
        return sorted(keys, key=lambda k: (k.created_at, k.prefix), reverse=True)

    async def revoke_api_key(self, prefix: str, now: float) -> bool:
        key = self._keys.get(prefix)
        if key is None or key.revoked_at is not None:
            return False
        self._keys[prefix] = dataclasses.replace(key, revoked_at=now)
        return True

    async def create_refresh(self, token: RefreshToken) -> None:
        if token.token_hash in self._refresh:
            raise Conflict("refresh token exists")
        self._refresh[token.token_hash] = token

    async def use_refresh(self, token_hash: str, now: float) -> tuple[RefreshToken, bool] | None:
        token = self._refresh.get(token_hash)
        if token is None:
            return None
        if token.used_at is None:
            self._refresh[token_hash] = dataclasses.replace(token, used_at=now)
        return token, token.used_at is None

    async def revoke_family(self, family: str, now: float) -> int:
        return self._revoke(lambda t: t.family == family, now)

    async def revoke_user_tokens(self, user_id: str, now: float) -> int:
        return self._revoke(lambda t: t.user_id == user_id, now)

    def _revoke(self, match: object, now: float) -> int:
        assert callable(match)
        count = 0
        for token_hash, token in list(self._refresh.items()):
            if match(token) and token.revoked_at is None:
                self._refresh[token_hash] = dataclasses.replace(token, revoked_at=now)
                count += 1
        return count

    async def create_ticket(self, ticket_hash: str, user_id: str, expires_at: float) -> None:
        self._tickets[ticket_hash] = (user_id, expires_at)

    async def take_ticket(self, ticket_hash: str, now: float) -> str | None:
        entry = self._tickets.pop(ticket_hash, None)
        if entry is None or now >= entry[1]:
            return None
        return entry[0]

    async def ensure_secret(self, name: str, value: bytes) -> bytes:
        return self._secrets.setdefault(name, value)
