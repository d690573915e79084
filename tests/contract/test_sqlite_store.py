"""The store contract against the SQLite backend (a fresh file per test)."""

from __future__ import annotations

from pathlib import Path

from store_contract import DurableStoreContract, EventStoreContract

from engine.store.base import EventStore
from engine.store.sqlite import SqliteStore


class TestSqliteStore(DurableStoreContract, EventStoreContract):
    __test__ = True

    async def create_store(self, tmp_path: Path) -> EventStore:
        return SqliteStore(tmp_path / "partitur.db")
