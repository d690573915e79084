"""`open_store` picks the backend a database URL names."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.core import events as ev
from engine.errors import ConfigInvalid
from engine.store.factory import open_store
from engine.store.memory import MemoryStore
from engine.store.sqlite import SqliteStore


def test_memory_url() -> None:
    assert isinstance(open_store("memory://"), MemoryStore)


async def test_relative_sqlite_url_is_under_base_dir_and_creates_folders(
    tmp_path: Path,
) -> None:
    store = open_store("sqlite:///.partitur/nested/p.db", base_dir=tmp_path)
    assert isinstance(store, SqliteStore)
    assert store.path == tmp_path / ".partitur" / "nested" / "p.db"
    assert store.synchronous == "NORMAL"
    await store.open()
    try:
        await store.append("s", 0, [ev.JobStarted(ts=1.0)])
    finally:
        await store.close()
    assert store.path.is_file()


def test_absolute_sqlite_url_and_synchronous_option(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/abs.db?synchronous=FULL", base_dir=Path("/else"))
    assert isinstance(store, SqliteStore)
    assert store.path == tmp_path / "abs.db"
    assert store.synchronous == "FULL"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u:hunter2@localhost:5432/db", "unknown scheme"),
        ("mysql://localhost/db", "unknown scheme"),
        ("sqlite://host/p.db", "sqlite:///"),
        ("sqlite:///", "names no database file"),
        ("sqlite:///p.db?journal=off", "unknown option"),
        ("sqlite:///p.db?synchronous=never", "synchronous"),
    ],
)
def test_bad_urls_are_config_errors(url: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigInvalid, match=message) as caught:
        open_store(url, base_dir=tmp_path)
    assert "hunter2" not in str(caught.value)
