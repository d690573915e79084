"""The contract every `AuthRepository` backend must keep (docs/auth.md).

`AuthRepositoryContract` is abstract; a backend's test module subclasses it, sets
`__test__ = True` and implements `create_store(tmp_path)` (an unopened event store whose
database the repository shares).
"""

from __future__ import annotations

import asyncio
import dataclasses
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engine.auth.model import ApiKey, RefreshToken, User
from engine.auth.repo import AuthRepository, auth_repository_for
from engine.errors import Conflict
from engine.store.base import EventStore


def user(n: int, **changes: object) -> User:
    base = User(user_id=f"u{n}", email=f"User{n}@Example.com", name=f"user {n}",
                password_hash="$argon2id$x", groups=("dev", "ops"), created_at=100.0 + n)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def token(n: int, family: str = "f1", user_id: str = "u1") -> RefreshToken:
    return RefreshToken(token_hash=f"h{n}", user_id=user_id, family=family,
                        created_at=10.0, expires_at=1000.0)


class AuthRepositoryContract(ABC):
    __test__ = False

    @abstractmethod
    async def create_store(self, tmp_path: Path) -> EventStore:
        """A fresh, unopened event store for one test."""

    @pytest.fixture
    async def repo(self, tmp_path: Path) -> AsyncIterator[AuthRepository]:
        store = await self.create_store(tmp_path)
        await store.open()
        try:
            yield auth_repository_for(store)
        finally:
            await store.close()

    async def test_users_round_trip_and_list(self, repo: AuthRepository) -> None:
        for n in (2, 1, 3):
            await repo.create_user(user(n))
        assert await repo.get_user("u1") == user(1)
        assert await repo.get_user_by_email("user1@EXAMPLE.com") == user(1)
        assert await repo.get_user("nope") is None
        page, total = await repo.list_users(limit=2, offset=1)
        assert total == 3 and [u.user_id for u in page] == ["u2", "u3"]

    async def test_duplicate_email_any_case_is_a_conflict(self, repo: AuthRepository) -> None:
        await repo.create_user(user(1))
        with pytest.raises(Conflict):
            await repo.create_user(user(9, email="USER1@example.com"))
        with pytest.raises(Conflict):
            await repo.create_user(user(1, email="other@example.com"))

    async def test_update_user_keeps_the_email(self, repo: AuthRepository) -> None:
        await repo.create_user(user(1))
        changed = user(1, email="x@y.z", is_admin=True, groups=(), last_login_at=5.0)
        assert await repo.update_user(changed)
        got = await repo.get_user("u1")
        assert got == dataclasses.replace(changed, email=user(1).email)
        assert not await repo.update_user(user(7))

    async def test_api_keys_list_and_revoke(self, repo: AuthRepository) -> None:
        await repo.create_user(user(1))
        await repo.create_user(user(2))
        for n, owner in ((1, "u1"), (2, "u1"), (3, "u2")):
            await repo.create_api_key(ApiKey(prefix=f"p{n}", user_id=owner, name=f"k{n}",
                                             key_hash=f"kh{n}", created_at=float(n),
                                             expires_at=50.0 if n == 2 else None))
        with pytest.raises(Conflict):
            await repo.create_api_key(ApiKey(prefix="p1", user_id="u1", name="dup",
                                             key_hash="x", created_at=9.0))
        assert [k.prefix for k in await repo.list_api_keys("u1")] == ["p2", "p1"]
        assert [k.prefix for k in await repo.list_api_keys(None)] == ["p3", "p2", "p1"]
        assert await repo.revoke_api_key("p1", 7.0)
        assert not await repo.revoke_api_key("p1", 8.0)
        assert not await repo.revoke_api_key("nope", 8.0)
        key = await repo.get_api_key("p1")
        assert key is not None and key.revoked_at == 7.0 and not key.usable(8.0)
        key2 = await repo.get_api_key("p2")
        assert key2 is not None and key2.usable(49.0) and not key2.usable(50.0)

    async def test_refresh_token_used_once(self, repo: AuthRepository) -> None:
        await repo.create_user(user(1))
        await repo.create_refresh(token(1))
        first = await repo.use_refresh("h1", 20.0)
        assert first == (token(1), True)
        second = await repo.use_refresh("h1", 21.0)
        assert second is not None and second[1] is False and second[0].used_at == 20.0
        assert await repo.use_refresh("unknown", 22.0) is None

    async def test_concurrent_uses_have_one_winner(self, repo: AuthRepository) -> None:
        await repo.create_user(user(1))
        await repo.create_refresh(token(1))
        results = await asyncio.gather(*(repo.use_refresh("h1", 20.0) for _ in range(8)))
        assert sum(1 for r in results if r is not None and r[1]) == 1

    async def test_revoke_family_and_user(self, repo: AuthRepository) -> None:
        await repo.create_user(user(1))
        await repo.create_user(user(2))
        for n, family, owner in ((1, "f1", "u1"), (2, "f1", "u1"), (3, "f2", "u1"),
                                 (4, "f3", "u2")):
            await repo.create_refresh(token(n, family, owner))
        assert await repo.revoke_family("f1", 30.0) == 2
        assert await repo.revoke_family("f1", 31.0) == 0
        used = await repo.use_refresh("h2", 32.0)
        assert used is not None and used[0].revoked_at == 30.0
        assert await repo.revoke_user_tokens("u1", 33.0) == 1
        other = await repo.use_refresh("h4", 34.0)
        assert other is not None and other[0].revoked_at is None

    async def test_tickets_are_single_use_and_expire(self, repo: AuthRepository) -> None:
        await repo.create_ticket("t1", "u1", expires_at=100.0)
        await repo.create_ticket("t2", "u1", expires_at=100.0)
        assert await repo.take_ticket("t1", 50.0) == "u1"
        assert await repo.take_ticket("t1", 50.0) is None
        assert await repo.take_ticket("t2", 100.0) is None
        assert await repo.take_ticket("t2", 50.0) is None

    async def test_secret_is_kept_once(self, repo: AuthRepository) -> None:
        assert await repo.ensure_secret("s", b"first") == b"first"
        assert await repo.ensure_secret("s", b"second") == b"first"
