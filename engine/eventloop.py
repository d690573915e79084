"""Which asyncio event loop the long-running commands run on.

`partitur serve`, `partitur run`, `partitur rebuild` and `partitur worker` run on uvloop
(libuv) where it is installed, the standard asyncio loop otherwise; `PARTITUR_LOOP=asyncio`
asks for the standard loop. uvloop is a drop-in implementation of the same loop API:
nothing in the engine depends on which one runs it; a step's spawn, output and exit are
handled the same way on both (`engine.runners.process`). It makes every store round
trip, socket read and callback cheaper, which is most of what a step costs the engine.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_name() -> str:
    """`uvloop` or `asyncio`: the loop `run` uses (uvicorn's `loop` setting too)."""
    if os.environ.get("PARTITUR_LOOP", "").strip().lower() == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on the loop `loop_name()` names."""
    if loop_name() == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)
