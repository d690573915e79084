"""Shards of the event log by stream: how a replay is split between processes.

A stream belongs to shard `ord(last character of its id) % count`, so every event of a
stream is in the same shard and each shard keeps the log's global order. Job ids end in
a random hex digit (UUIDv7), which spreads jobs evenly over up to 16 shards. The stores
compute the same rule in SQL (`unicode()` in SQLite, `ascii()` in PostgreSQL, both the
code point of a character), so a shard is filtered where the events are read.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard `index` of `count` (0 ≤ index < count)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index} of {self.count} does not exist")

    def holds(self, stream_id: str) -> bool:
        """Whether the stream's events are in this shard."""
        return (ord(stream_id[-1]) if stream_id else 0) % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"
