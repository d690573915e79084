"""The store contract against the in-memory backend."""

from __future__ import annotations

from pathlib import Path

from store_contract import EventStoreContract

from engine.store.base import EventStore
from engine.store.memory import MemoryStore


class TestMemoryStore(EventStoreContract):
    __test__ = True

    async def create_store(self, tmp_path: Path) -> EventStore:
        return MemoryStore()
