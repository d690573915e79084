"""W4: time from a step printing a line to an API observer holding it (WebSocket).

Each repetition POSTs the `mark` task with a fresh token; the observer opens
`WS /api/jobs/{id}/logs/stream?format=events` right after the POST answers and reads
frames until the line `mark <token> <epoch>` arrives. `emit_to_visible_s` =
observer's `time.time()` − the epoch printed by the step itself; `step_start_to_visible_s`
uses the step's `running` frame timestamp (the engine's in-process step start).
Lines that arrived in the backfill (the observer connected after the line was stored)
are counted and reported.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import orjson
import websockets

from benchmarks import api
from benchmarks.common import Context, Server, db_url, make_workspace, nearest_rank
from engine.logs.model import parse_ts

REPS = 5


async def observe(server: Server, http: Any, sleep: float) -> tuple[float, float | None, bool]:
    token = uuid.uuid4().hex
    job = await api.submit(http, "mark", {"token": token, "sleep": sleep})
    url = f"{server.ws_url}/api/jobs/{job}/logs/stream?format=events"
    started: float | None = None
    connected_at = 0.0
    async with websockets.connect(url) as ws:
        connected_at = time.time()
        async for raw in ws:
            now = time.time()
            frame = orjson.loads(raw)
            if frame.get("type") == "step" and frame.get("status") == "running":
                started = parse_ts(frame["ts"])
            if frame.get("type") == "log" and token in frame.get("line", ""):
                epoch = float(frame["line"].split()[-1])
                line_ts = parse_ts(frame["ts"])
                backfill = line_ts < connected_at
                return now - epoch, (now - started) if started else None, backfill
    raise RuntimeError(f"W4: the stream of job {job} closed without the mark line")


async def run(ctx: Context) -> None:
    root = ctx.tmp / "w4"
    ws = make_workspace(root)
    sleep = 2.0  # the observer returns at the mark line: the sleeps overlap, cost nothing
    with Server(root / "server", db_url(ctx, "w4"), ws) as server:
        async with api.client(server.url) as http:
            await observe(server, http, sleep)  # warm-up, not counted
            emit: list[float] = []
            start: list[float] = []
            backfilled = 0
            for rep in range(REPS):
                e, s, backfill = await observe(server, http, sleep)
                backfilled += backfill
                emit.append(e)
                ctx.rep("W4", "W4.log", "emit_to_visible_s", rep, e, "s", backfill=backfill)
                if s is not None:
                    start.append(s)
                    ctx.rep("W4", "W4.log", "step_start_to_visible_s", rep, s, "s")
                await asyncio.sleep(0)
    writes = ("lines written and published inline (no batching interval)"
              if ctx.backend == "sqlite" else
              "a line is published once its insert commits; lines that queue meanwhile share "
              "the next insert (no batching interval)")
    how = ("streamed: WS /api/jobs/{id}/logs/stream?format=events, opened right after the "
           f"POST; {writes}; step sleep {sleep}s; {backfilled}/{REPS} lines came in the "
           "backfill")
    ctx.summary("W4", "W4.log", "emit_to_visible_s", "s", limit="W0.log",
                p50=nearest_rank(emit, 50), p95=nearest_rank(emit, 95), target_p95=0.025,
                ratio_p95=nearest_rank(emit, 95) / ctx.limits.get("W0.log", float("nan")),
                observer=how)
    if start:
        ctx.summary("W4", "W4.log", "step_start_to_visible_s", "s",
                    p50=nearest_rank(start, 50), p95=nearest_rank(start, 95))
