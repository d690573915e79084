"""The auth repository contract against the SQLite backend (a fresh file per test)."""

from __future__ import annotations

from pathlib import Path

from auth_store_contract import AuthRepositoryContract

from engine.store.base import EventStore
from engine.store.sqlite import SqliteStore


class TestSqliteAuthRepository(AuthRepositoryContract):
    __test__ = True

    async def create_store(self, tmp_path: Path) -> EventStore:
        return SqliteStore(tmp_path / "auth.db")
