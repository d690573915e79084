"""JSON for stored payloads and projection columns, shared by the store backends.

orjson, with any `Mapping` written as an object and sets as sorted arrays, so an event
payload holding a read-only mapping stores the same in every backend.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

loads = orjson.loads


def _default(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(value: Any) -> str:
    """JSON text of `value` (mappings of any kind become objects, tuples arrays)."""
    return orjson.dumps(value, default=_default).decode()


def through_json(value: Any) -> Any:
    """`value` as it reads back after being stored as JSON."""
    return orjson.loads(orjson.dumps(value, default=_default))
