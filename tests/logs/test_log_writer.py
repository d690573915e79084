from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from engine.logs.bus import LiveBus
from engine.logs.model import LogLine
from engine.logs.redact import MASK, Redactor
from engine.logs.store import JsonlLogStore, LogStore
from engine.logs.writer import JobLogWriter


async def test_line_is_redacted_stored_and_published_in_order(tmp_path: Path) -> None:
    store = JsonlLogStore(tmp_path)
    bus = LiveBus()
    sub = bus.subscribe("job")
    writer = JobLogWriter("job", store, bus, Redactor(["s3cret"]), clock=lambda: 42.0)
    step = writer.for_step("build")
    step.line("stdout", "password is s3cret")
    step.line("stderr", "warning")
    writer.note("step build started")
    bus.close_job("job")

    published = [item async for item in sub]
    stored = await store.read("job")
    assert published == stored
    assert [(line.seq, line.step, line.stream, line.line) for line in stored] == [
        (1, "build", "stdout", f"password is {MASK}"),
        (2, "build", "stderr", "warning"),
        (3, "_server", "stdout", "step build started"),
    ]
    assert all(line.ts == 42.0 for line in stored)
    assert b"s3cret" not in (tmp_path / "job.jsonl").read_bytes()
    await store.close()


async def test_many_lines_are_stored_and_published_in_order(tmp_path: Path) -> None:
    store = JsonlLogStore(tmp_path)
    bus = LiveBus()
    sub = bus.subscribe("job", maxsize=100_000)
    writer = JobLogWriter("job", store, bus, Redactor(["a-secret", "another-one"]))
    n = 2000
    for i in range(n):
        writer.line("s", "stdout", f"line {i} with some ordinary text in it")
    assert await store.count("job") == n
    bus.close_job("job")
    published = [item async for item in sub]
    assert [line.seq for line in published] == list(range(1, n + 1))
    assert [(line.seq, line.line) for line in published] == [
        (line.seq, line.line) for line in await store.read("job")]
    await store.close()


class _AsyncOnlyStore(LogStore):
    """A store without a synchronous append (like a database table)."""

    def __init__(self) -> None:
        self.lines: list[LogLine] = []
        self.batches = 0

    async def append(self, job_id: str, lines: Sequence[LogLine]) -> list[LogLine]:
        self.batches += 1
        placed = [line.with_seq(len(self.lines) + i) for i, line in enumerate(lines, 1)]
        self.lines.extend(placed)
        return placed

    async def read(
        self, job_id: str, *, step: str | None = None, after: int = 0, limit: int | None = None
    ) -> list[LogLine]:
        return self.lines[after:]

    async def count(self, job_id: str) -> int:
        return len(self.lines)

    async def close(self) -> None:
        pass


async def test_async_store_gets_batches_in_order() -> None:
    store = _AsyncOnlyStore()
    bus = LiveBus()
    sub = bus.subscribe("job")
    writer = JobLogWriter("job", store, bus)
    for i in range(100):
        writer.line("s", "stdout", str(i))
    await writer.flush()
    bus.close_job("job")
    assert [line.line for line in store.lines] == [str(i) for i in range(100)]
    assert store.batches < 100
    published = [item async for item in sub]
    assert published == store.lines


async def test_batch_is_redacted_and_a_resent_one_is_neither_stored_nor_published_twice(
        tmp_path: Path) -> None:
    store = JsonlLogStore(tmp_path)
    bus = LiveBus()
    sub = bus.subscribe("job")
    writer = JobLogWriter("job", store, bus, Redactor(["s3cret"]), clock=lambda: 7.0)
    entries = [("stdout", "token s3cret", 1.0), ("stderr", "oops", None)]
    assert await writer.batch("build", "lease-1", 0, entries) == 2
    assert await writer.batch("build", "lease-1", 0, entries) == 2
    assert await writer.batch("build", "lease-1", 1, [*entries[1:], ("stdout", "x", 2.0)]) == 3
    bus.close_job("job")

    published = [item async for item in sub]
    stored = await store.read("job")
    assert published == stored
    assert [(line.step, line.stream, line.line, line.ts) for line in stored] == [
        ("build", "stdout", f"token {MASK}", 1.0), ("build", "stderr", "oops", 7.0),
        ("build", "stdout", "x", 2.0)]
    await store.close()
