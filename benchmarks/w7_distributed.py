"""W7: distributed (PostgreSQL, one `partitur serve`, two `partitur worker`s).

Not measurable yet: remote workers (`partitur worker`) do not exist. The workload prints
one clear line saying so (and records it), so `make bench` stays complete.
"""

from __future__ import annotations

from benchmarks.common import Context

MESSAGE = ("W7 not available yet: `partitur worker` (remote workers) is not implemented; "
           "the distributed W2/W3 and the SIGKILL-a-worker check will run once it is")


async def run(ctx: Context) -> None:
    ctx.emit({"workload": "W7", "figure": "W7", "peer": "partitur", "backend": ctx.backend,
              "stat": "unavailable", "text": MESSAGE})
