"""Time and identity sources for the impure shell of the engine.

The pure core takes `now` and ids as parameters; this module is where they come from.
`SystemClock` reads the wall clock, `new_job_id()` draws a UUIDv7 (time-ordered, so job
ids sort by creation time), and `engine.testing.FakeClock` replaces the clock in tests.
"""

from __future__ import annotations

import os
import secrets
import time
import uuid
from typing import Protocol


class Clock(Protocol):
    """Something that tells the time in epoch seconds."""

    def now(self) -> float: ...


class SystemClock:
    """The wall clock."""

    def now(self) -> float:
        return time.time()


_last_ms = 0
_counter = 0


def uuid7(ms: int | None = None) -> uuid.UUID:
    """A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, a 12-bit counter, random bits.

    Ids drawn in one process are strictly increasing, even within one millisecond.
    """
    global _last_ms, _counter
    if ms is None:
        ms = time.time_ns() // 1_000_000
    if ms <= _last_ms:
        ms = _last_ms
        _counter += 1
        if _counter > 0xFFF:
            ms += 1
            _counter = 0
    else:
        _counter = int.from_bytes(os.urandom(1), "big")
    _last_ms = ms
    rand = int.from_bytes(os.urandom(8), "big")
    value = (ms & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76
    value |= (_counter & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & 0x3FFF_FFFF_FFFF_FFFF
    return uuid.UUID(int=value)


def new_job_id() -> str:
    """A fresh job id (UUIDv7 string)."""
    return str(uuid7())


def new_token(nbytes: int = 16) -> str:
    """A random URL-safe token (leases, worker ids)."""
    return secrets.token_urlsafe(nbytes)
