"""Helpers for the composition tests: workspaces written to a folder, a live runtime."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from engine.runtime import Runtime, RuntimeOptions
from engine.store.base import EventStore


def workspace(root: Path, yaml_text: str, name: str = "ws") -> Path:
    """A workspace folder `root/name` whose `.workflows/main.yaml` is `yaml_text`."""
    folder = root / name
    (folder / ".workflows").mkdir(parents=True, exist_ok=True)
    (folder / ".workflows" / "main.yaml").write_text(textwrap.dedent(yaml_text))
    return folder


@asynccontextmanager
async def runtime(root: Path, ws: Path, *, db_url: str = "memory://",
                  concurrency: int = 4) -> AsyncIterator[Runtime]:
    """An opened runtime serving `ws` under its folder name; closed on exit."""
    rt = Runtime(RuntimeOptions(
        db_url=db_url, logs_dir=root / "logs", artifacts_dir=root / "artifacts",
        workspaces={ws.name: ws}, concurrency=concurrency, base_dir=root,
    ))
    await rt.open()
    try:
        yield rt
    finally:
        await rt.close()


def count_reads(store: EventStore) -> list[str]:
    """The streams `store.read` is asked for from now on (the real read still runs)."""
    asked: list[str] = []
    real = store.read

    async def read(stream_id: str, after_version: int = 0):  # type: ignore[no-untyped-def]
        asked.append(stream_id)
        return await real(stream_id, after_version)

    store.read = read  # type: ignore[method-assign]
    return asked
