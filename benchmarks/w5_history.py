"""W5: list and detail latency of a warm `partitur serve` holding N finished W3 runs.

The store is filled in steps (1k, then 10k, …) so one store gives the scaling curve.
Runs go in through the HTTP API when the API's measured rate would write them within
`API_BUDGET_S`; otherwise one real run is copied through the store API (`fill.py`) while
the server is stopped. Each size: 3 repetitions of 100 sequential `GET /api/jobs?limit=50`
and of 100 `GET /api/jobs/{id}` (the detail holds the steps: one call), p50/p95 in ms.
After the store is filled by copies, the server's start is timed too (`W5.start@N`, until
`/healthz` answers). Partitur has no client library: raw HTTP only, through the lean
keep-alive client of `rawhttp.py` (since 2026-12-01 18:00; httpx before, whose own
~1–3 ms of CPU a request on these VMs was most of each measured latency).
"""

from __future__ import annotations

import time

from benchmarks import api
from benchmarks.common import Context, Server, db_url, make_workspace, nearest_rank
from benchmarks.fill import copy_runs_url
from benchmarks.rawhttp import Client

API_BUDGET_S = 90.0  # full run: 10k real runs go through the API when it manages ≥ 100/s
REQUESTS = 100


async def run(ctx: Context, sizes: tuple[int, ...] = (1000,)) -> None:
    root = ctx.tmp / "w5"
    ws = make_workspace(root)
    url = db_url(ctx, "w5")
    server = Server(root / "server", url, ws).start()
    try:
        async with api.client(server.url) as http:
            await api.run_many(http, "three", 1)
            probe = 100 if not ctx.quick else 30
            wall, _, statuses = await api.run_many(http, "three", probe, lambda i: {"r": i})
            model = next(iter(statuses))
        rate = probe / wall
        ctx.derived("W5", "W5.fill", "api_runs_per_s", rate, "1/s",
                    how=f"{probe} W3 runs POSTed concurrently to /execute, until all done")
        have = probe + 1
        for n in sizes:
            missing = n - have
            if missing > 0:
                if missing / rate <= (0.0 if ctx.quick else API_BUDGET_S):
                    async with api.client(server.url) as http:
                        while have < n:
                            batch = min(200, n - have)
                            await api.run_many(http, "three", batch, lambda i: {"r": i})
                            have += batch
                    how = "through the HTTP API (real runs)"
                else:
                    server.stop()
                    stats = await copy_runs_url(url, model, missing,
                                                logs_dir=server.root / "logs",
                                                base_dir=server.root)
                    have += missing
                    started = time.perf_counter()
                    server.start(timeout=120)
                    # A start reads what the store holds (recovery, catch-up of the
                    # last day's ended jobs): it must not grow with the history.
                    ctx.derived("W5", f"W5.start@{n}", "serve_ready_s",
                                time.perf_counter() - started, "s",
                                how="partitur serve started on the filled store, until "
                                    "/healthz answers 200 (process start included)")
                    how = (f"copies of one real run through the store API "
                           f"({stats.runs_per_s:,.0f} runs/s); API path measured at "
                           f"{rate:.0f} runs/s would take {missing / rate:.0f}s")
                    ctx.derived("W5", f"W5.fill{n}", "copy_runs_per_s", stats.runs_per_s, "1/s")
            else:
                how = "through the HTTP API (real runs)"
            await _measure(ctx, server, n, model, how)
    finally:
        server.stop()


async def _measure(ctx: Context, server: Server, n: int, model: str, how: str) -> None:
    async with Client(server.url, connections=1, timeout=30.0) as http:
        # Warm: one of each request, not counted.
        (await http.get("/api/jobs", params={"limit": 50})).raise_for_status()
        (await http.get(f"/api/jobs/{model}")).raise_for_status()
        for rep in range(ctx.reps):
            lat = []
            for _ in range(REQUESTS):
                t = time.perf_counter()
                r = await http.get("/api/jobs", params={"limit": 50})
                lat.append((time.perf_counter() - t) * 1000)
                r.raise_for_status()
            body = r.json()
            rows = body["items"] if isinstance(body, dict) else body
            if len(rows) != 50:
                raise RuntimeError(f"W5 list50 returned {len(rows)} rows")
            ctx.rep("W5", f"W5.list50@{n}", "p50_ms", rep, nearest_rank(lat, 50), "ms")
            ctx.rep("W5", f"W5.list50@{n}", "p95_ms", rep, nearest_rank(lat, 95), "ms")
            lat = []
            for _ in range(REQUESTS):
                t = time.perf_counter()
                r = await http.get(f"/api/jobs/{model}")
                lat.append((time.perf_counter() - t) * 1000)
                r.raise_for_status()
            if len(r.json().get("steps", [])) != 3:
                raise RuntimeError("W5 detail does not hold the three steps")
            ctx.rep("W5", f"W5.detail@{n}", "p50_ms", rep, nearest_rank(lat, 50), "ms")
            ctx.rep("W5", f"W5.detail@{n}", "p95_ms", rep, nearest_rank(lat, 95), "ms")
    for fig, target in ((f"W5.list50@{n}", 10.0), (f"W5.detail@{n}", 5.0)):
        ctx.summary("W5", fig, "p50_ms", "ms", runs=n)
        ctx.summary("W5", fig, "p95_ms", "ms", runs=n, target_p95_ms=target, filled=how,
                    client="raw HTTP (benchmarks.rawhttp, keep-alive); no engine client "
                           "library; the detail includes the steps (one call)")
