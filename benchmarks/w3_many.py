"""W3: 100 runs of a 3-step chain, all POSTed at t0 to a real `partitur serve` (8 slots).

Figures: `W3.many` runs_per_s (ratio: W0.many rate / ours), latency p50/p95 (t0 → the
poller no longer sees the run active), peak RSS of the server process tree. Then `W2.http`: the
W2 `for_each` fan through the same server, for the server's RSS under W2.
"""

from __future__ import annotations

import asyncio
import time

from benchmarks import api
from benchmarks.common import (
    Context,
    MiB,
    RssSampler,
    Server,
    db_url,
    foreach_yaml,
    make_workspace,
    nearest_rank,
)
from benchmarks.rawhttp import Client

RUNS = 100


async def run(ctx: Context) -> None:
    root = ctx.tmp / "w3"
    ws = make_workspace(root, {"foreach200": foreach_yaml("foreach200", 200)})
    with Server(root / "server", db_url(ctx, "w3"), ws) as server:
        async with api.client(server.url) as http:
            # Warm-up: one run of the shape (not counted), then the measured batches.
            await api.run_many(http, "three", 1)
            with RssSampler([server.pid]) as rss:
                for rep in range(ctx.reps):
                    wall, lat, statuses = await api.run_many(http, "three", RUNS,
                                                             lambda i: {"r": i})
                    bad = [s for s in statuses.values() if s != "completed"]
                    if bad:
                        raise RuntimeError(f"W3: {len(bad)} runs ended {bad[0]}")
                    ctx.rep("W3", "W3.many", "runs_per_s", rep, RUNS / wall, "1/s")
                    ctx.rep("W3", "W3.many", "latency_p50_s", rep, nearest_rank(lat, 50), "s")
                    ctx.rep("W3", "W3.many", "latency_p95_s", rep, nearest_rank(lat, 95), "s")
            path = "HTTP POST /api/workspaces/bench/tasks/three/execute ×100 (concurrent), " \
                   "done = first GET /api/jobs?status=pending,running poll (10 ms) without it; " \
                   "embedded local workers, concurrency 8"
            ctx.summary("W3", "W3.many", "runs_per_s", "1/s", limit="W0.many.runs_per_s",
                        higher_is_better=True, path=path,
                        target=100 if ctx.backend == "sqlite" else 60)
            ctx.summary("W3", "W3.many", "latency_p50_s", "s", limit="W0.many.latency_p50_s")
            ctx.summary("W3", "W3.many", "latency_p95_s", "s", limit="W0.many.latency_p95_s",
                        target=2.0)
            ctx.derived("W3", "W3.many", "server_peak_rss_mib",
                        rss.peak_of[server.pid] / MiB, "MiB", target=150,
                        scope="server process tree (incl. step subprocesses)")

            if ctx.quick:
                return
            # W2 through the server, for the server's RSS under W2.
            await _fan(http, "foreach200")
            with RssSampler([server.pid]) as rss2:
                for rep in range(ctx.reps):
                    ctx.rep("W2", "W2.http.foreach200", "wall_s", rep,
                            await _fan(http, "foreach200"), "s")
            ctx.summary("W2", "W2.http.foreach200", "wall_s", "s", limit="W0.fan@8",
                        path="HTTP POST, done = GET /api/jobs/{id} poll (10 ms)",
                        server_peak_rss_mib=round(rss2.peak_of[server.pid] / MiB, 1))


async def _fan(http: Client, task: str) -> float:
    start = time.perf_counter()
    job = await api.submit(http, task)
    while True:
        r = await http.get(f"/api/jobs/{job}")
        status = r.json()["status"]
        if status in api.TERMINAL:
            if status != "completed":
                raise RuntimeError(f"W2.http {task} ended {status}")
            return time.perf_counter() - start
        await asyncio.sleep(api.POLL)
