"""The auth repository contract against the in-memory backend."""

from __future__ import annotations

from pathlib import Path

from auth_store_contract import AuthRepositoryContract

from engine.store.base import EventStore
from engine.store.memory import MemoryStore


class TestMemoryAuthRepository(AuthRepositoryContract):
    __test__ = True

    async def create_store(self, tmp_path: Path) -> EventStore:
        return MemoryStore()
