"""Fixtures of the log store tests: a PostgreSQL log store on the run's throw-away database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from engine.logs.pgstore import PostgresLogStore


@pytest.fixture
async def logs(pg_url: str) -> AsyncIterator[PostgresLogStore]:
    store = PostgresLogStore(pg_url)
    try:
        yield store
    finally:
        await store.close()
