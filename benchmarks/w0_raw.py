"""W0: the physical limit — plain asyncio subprocesses, no engine, no store, no logs.

Figures: `W0.chain40`, `W0.true40`, `W0.fan@C` (C = 1, 2, 4, 8), `W0.many`, `W0.log`. Each is
measured 5 times after one warm-up; their medians are the limits later workloads are
compared with (`ctx.limits`). The scaling sizes of W1/W2 get their own W0 figures
(`W0.chain<N>`, `W0.fan@8x<N>`) in the full run.

W0 is plain Python asyncio (BENCHMARKS.md): each measurement runs on a fresh standard
asyncio loop in a thread of its own (`standard`), whatever loop the harness itself runs
on (the engine's, uvloop, for the in-process workloads).
"""

from __future__ import annotations

import asyncio
import time
from asyncio.subprocess import DEVNULL, PIPE
from collections.abc import Coroutine
from typing import Any, TypeVar

from benchmarks.common import PYTHON, ROOT, Context, nearest_rank

REPS = 5
T = TypeVar("T")


async def standard(work: Coroutine[Any, Any, T]) -> T:
    """`work` run to its end on a new standard asyncio loop in another thread."""
    return await asyncio.to_thread(asyncio.run, work)


async def sh(script: str) -> bytes:
    """One step: `sh -c script`, stdin closed, stdout/stderr read to EOF."""
    proc = await asyncio.create_subprocess_exec("sh", "-c", script, stdin=DEVNULL,
                                                stdout=PIPE, stderr=PIPE)
    out, _ = await proc.communicate()
    return out


async def chain(n: int, echo: bool = True) -> float:
    start = time.perf_counter()
    for i in range(n):
        await sh(f"echo step {i}" if echo else "true")
    return time.perf_counter() - start


async def fan(n: int, limit: int, script: str = "true") -> float:
    """`sh -c true`, then `n` × `sh -c script` with at most `limit` alive, then `true`."""
    start = time.perf_counter()
    await sh("true")
    sem = asyncio.Semaphore(limit)

    async def one() -> None:
        async with sem:
            await sh(script)

    await asyncio.gather(*(one() for _ in range(n)))
    await sh("true")
    return time.perf_counter() - start


async def many(runs: int = 100, steps: int = 3, limit: int = 8) -> tuple[float, list[float]]:
    """`runs` chains of `steps`, all started at t0, ≤ `limit` alive; (wall, latencies)."""
    sem = asyncio.Semaphore(limit)
    start = time.perf_counter()

    async def run(r: int) -> float:
        for k in range(steps):
            async with sem:
                await sh(f"echo run {r} step {k}")
        return time.perf_counter() - start

    latencies = await asyncio.gather(*(run(r) for r in range(runs)))
    return time.perf_counter() - start, list(latencies)


async def log_line(sleep: float = 2.0) -> float:
    """Time from the epoch printed by the step to the reader holding the line."""
    proc = await asyncio.create_subprocess_exec(
        "sh", "-c", f'echo "mark $(date +%s.%N)"; sleep {sleep}',
        stdin=DEVNULL, stdout=PIPE, stderr=PIPE)
    assert proc.stdout is not None
    line = await proc.stdout.readline()
    seen = time.time()
    await proc.communicate()
    return seen - float(line.split()[1])


async def run(ctx: Context, chain_sizes: tuple[int, ...] = (), fan_sizes: tuple[int, ...] = ()
              ) -> None:
    async def measure(figure: str, fn: object, reps: int = REPS) -> None:
        await standard(fn())  # type: ignore[operator]  # warm-up, not counted
        for rep in range(reps):
            ctx.rep("W0", figure, "wall_s", rep, await standard(fn()),  # type: ignore[operator]
                    "s")
        s = ctx.summary("W0", figure, "wall_s", "s")
        ctx.limits[figure] = s["median"]

    await measure("W0.chain40", lambda: chain(40))
    await measure("W0.true40", lambda: chain(40, echo=False))
    # 4: the slots of one W7 worker (its limit for the two-workers-vs-one ratio).
    for c in ((8,) if ctx.quick else (1, 2, 4, 8)):
        await measure(f"W0.fan@{c}", lambda c=c: fan(200, c))
    for n in chain_sizes:
        if n != 40:
            await measure(f"W0.chain{n}", lambda n=n: chain(n), reps=3)
    for n in fan_sizes:
        if n != 200:
            await measure(f"W0.fan@8x{n}", lambda n=n: fan(n, 8), reps=3)

    await standard(many())
    for rep in range(REPS):
        wall, lat = await standard(many())
        ctx.rep("W0", "W0.many", "runs_per_s", rep, 100 / wall, "1/s")
        ctx.rep("W0", "W0.many", "latency_p50_s", rep, nearest_rank(lat, 50), "s")
        ctx.rep("W0", "W0.many", "latency_p95_s", rep, nearest_rank(lat, 95), "s")
    s = ctx.summary("W0", "W0.many", "runs_per_s", "1/s")
    ctx.limits["W0.many.runs_per_s"] = s["median"]
    for metric in ("latency_p50_s", "latency_p95_s"):
        s = ctx.summary("W0", "W0.many", metric, "s")
        ctx.limits[f"W0.many.{metric}"] = s["median"]

    sleep = 0.2 if ctx.quick else 2.0
    values = [await standard(log_line(sleep)) for _ in range(REPS)]
    for rep, v in enumerate(values):
        ctx.rep("W0", "W0.log", "emit_to_visible_s", rep, v, "s")
    s = ctx.summary("W0", "W0.log", "emit_to_visible_s", "s",
                    p50=nearest_rank(values, 50), p95=nearest_rank(values, 95))
    ctx.limits["W0.log"] = nearest_rank(values, 95)


async def fan_elsewhere(n: int, limit: int) -> float:
    """`fan(n, limit)` timed in a fresh Python process of its own (its start-up not
    counted): the limit without this process's event loop, heap and threads."""
    proc = await asyncio.create_subprocess_exec(
        PYTHON, "-m", "benchmarks.w0_raw", "fan", str(n), str(limit), cwd=ROOT,
        stdin=DEVNULL, stdout=PIPE)
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"W0 fan in a subprocess exited {proc.returncode}")
    return float(out)


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["fan"]:
        asyncio.run(fan(int(sys.argv[2]), int(sys.argv[3])))  # warm-up
        print(asyncio.run(fan(int(sys.argv[2]), int(sys.argv[3]))))
