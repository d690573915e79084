"""The store contract against the PostgreSQL backend (a fresh database per test)."""

from __future__ import annotations

from pathlib import Path

import pytest
from store_contract import DurableStoreContract, EventStoreContract

from engine.store.base import EventStore
from engine.store.postgres import PostgresStore


class TestPostgresStore(DurableStoreContract, EventStoreContract):
    __test__ = True

    @pytest.fixture(autouse=True)
    def _database(self, pg_url: str) -> None:
        self.url = pg_url

    async def create_store(self, tmp_path: Path) -> EventStore:
        return PostgresStore(self.url, max_size=12)
