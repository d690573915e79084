"""W7: distributed (PostgreSQL, one `partitur serve` with no embedded workers, remote
`partitur worker` processes with 4 slots each).

Phase 1, one worker (4 slots): W2 (`for_each` over 200, through HTTP) and W3 (100 × the
3-step chain POSTed at t0). Phase 2, a second worker joins (8 slots in all): the same
figures and the ratio to one worker. Phase 3, two workers: 100 W3 runs are POSTed, and
when 50 have completed one worker is killed with SIGKILL; every run must still complete
(`retry: {on_lost: true}` on the steps, `recovery.heartbeat_timeout: 2s`), and each run's
log must hold each of its three lines exactly once per completed attempt. Figures: lost
runs (not completed), duplicated steps (a step completed twice, or a line logged twice
for one attempt), steps re-run after the kill.

On the SQLite backend W7 prints that it needs PostgreSQL (BENCHMARKS.md: W7 is defined on
the PostgreSQL store).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks import api
from benchmarks.common import (
    PYTHON,
    ROOT,
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
from benchmarks.w0_raw import fan, many, standard
from benchmarks.w3_many import _fan

RUNS = 100
SLOTS = 4
# The latency-bound fan-out: each step sleeps, so its limit halves with twice the slots
# (the `sh -c true` limit hardly moves from 4 to 8 slots on a 2-core machine).
SLEEP_ITEMS, SLEEP_S = 100, 0.05
SLEEP_TASK = f"sleep{SLEEP_ITEMS}"
TOKEN = "bench-worker-token-0123456789"

# The W3 shape again, with re-run on a lost worker (the kill phase needs it).
THREE_LOST = """tasks:
  three_lost:
    input:
      r: { type: integer, default: 0 }
    flow:
""" + "".join(
    f"""      k{k}:
        type: shell
        interpreter: sh
        retry: {{ max_attempts: 3, on_lost: true }}
        input: {{ r: "<< input.r >>" }}
        script: echo run $PARTITUR_INPUT_R step {k}
""" + (f"        depends_on: [k{k - 1}]\n" if k else "") for k in range(3))


class Worker:
    """`python -m server.cli worker` against the benchmark server."""

    def __init__(self, root: Path, server_url: str, name: str) -> None:
        self.name = name
        self.cache = root / f"worker-{name}"
        self.cache.mkdir(parents=True, exist_ok=True)
        self.log = (root / f"worker-{name}.log").open("ab")
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "server.cli", "worker", "--server", server_url, "--token", TOKEN,
             "--concurrency", str(SLOTS), "--name", name, "--cache-dir", str(self.cache)],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(15)
        self.log.close()


async def _wait_workers(http: Client, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = await http.get("/api/workers", params={"limit": 50})
        if r.status_code == 200:
            body = r.json()
            rows = body["items"] if isinstance(body, dict) else body
            online = [w for w in rows if w.get("kind", "remote") != "embedded"
                      and w.get("status") in ("online", "idle", "busy", "active")]
            if len(online) >= count:
                return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"W7: {count} worker(s) not registered after {timeout}s")


async def _phase(ctx: Context, http: Client, label: str
                 ) -> tuple[float, float, float]:
    """W2, the sleeping fan-out and W3 with the workers connected now; (W2 median wall,
    W3 median runs/s, sleeping fan-out median wall)."""
    await _fan(http, "foreach200")  # warm-up: revision fetched, caches filled
    await api.run_many(http, "three", 4)
    for rep in range(ctx.reps):
        ctx.rep("W7", f"W7.{label}.W2.foreach200", "wall_s", rep,
                await _fan(http, "foreach200"), "s")
    w2 = ctx.summary("W7", f"W7.{label}.W2.foreach200", "wall_s", "s", limit="W0.fan@8",
                     path=f"HTTP POST, remote workers ({label}), done = GET /api/jobs/{{id}} "
                          "poll (10 ms)")
    for rep in range(ctx.reps):
        ctx.rep("W7", f"W7.{label}.{SLEEP_TASK}", "wall_s", rep,
                await _fan(http, SLEEP_TASK), "s")
    slots = SLOTS * (1 if label == "one" else 2)
    sleeps = ctx.summary("W7", f"W7.{label}.{SLEEP_TASK}", "wall_s", "s",
                         limit=f"W0.{SLEEP_TASK}@{slots}",
                         path=f"as W2, {SLEEP_ITEMS} items of `sleep {SLEEP_S}`")
    for rep in range(ctx.reps):
        wall, lat, statuses = await api.run_many(http, "three", RUNS, lambda i: {"r": i})
        bad = [s for s in statuses.values() if s != "completed"]
        if bad:
            raise RuntimeError(f"W7 {label}: {len(bad)} runs ended {bad[0]}")
        ctx.rep("W7", f"W7.{label}.W3.many", "runs_per_s", rep, RUNS / wall, "1/s")
        ctx.rep("W7", f"W7.{label}.W3.many", "latency_p95_s", rep, nearest_rank(lat, 95), "s")
    w3 = ctx.summary("W7", f"W7.{label}.W3.many", "runs_per_s", "1/s",
                     limit="W0.many.runs_per_s", higher_is_better=True,
                     path=f"HTTP POST ×100 at t0, remote workers ({label})")
    ctx.summary("W7", f"W7.{label}.W3.many", "latency_p95_s", "s",
                limit="W0.many.latency_p95_s")
    return float(w2["median"]), float(w3["median"]), float(sleeps["median"])


async def _limits(ctx: Context) -> None:
    """The W0 limits of one worker's 4 slots and two workers' 8 that W0 does not measure:
    W3's (`W0.many@4`) and the sleeping fan-out's, at 4 and at 8."""
    await standard(many(limit=SLOTS))  # warm-up
    for rep in range(ctx.reps):
        wall, _ = await standard(many(limit=SLOTS))
        ctx.rep("W0", f"W0.many@{SLOTS}", "runs_per_s", rep, RUNS / wall, "1/s")
    s = ctx.summary("W0", f"W0.many@{SLOTS}", "runs_per_s", "1/s")
    ctx.limits[f"W0.many@{SLOTS}.runs_per_s"] = s["median"]
    for slots in (SLOTS, 2 * SLOTS):
        figure = f"W0.{SLEEP_TASK}@{slots}"
        for rep in range(ctx.reps):
            ctx.rep("W0", figure, "wall_s", rep,
                    await standard(fan(SLEEP_ITEMS, slots, f"sleep {SLEEP_S}")), "s")
        ctx.limits[figure] = ctx.summary("W0", figure, "wall_s", "s")["median"]


def _speedups(ctx: Context, ours: tuple[float, float, float]) -> None:
    """Two workers vs one, each beside the same ratio of the W0 limits (4 slots vs 8):
    what the machine itself gains from the second worker's slots."""
    limits = ctx.limits
    raw = (limits.get(f"W0.fan@{SLOTS}", 0.0) / limits.get(f"W0.fan@{2 * SLOTS}", 1.0),
           limits.get("W0.many.runs_per_s", 0.0)
           / limits.get(f"W0.many@{SLOTS}.runs_per_s", 1.0),
           limits.get(f"W0.{SLEEP_TASK}@{SLOTS}", 0.0)
           / limits.get(f"W0.{SLEEP_TASK}@{2 * SLOTS}", 1.0))
    for figure, value, limit in zip(("W7.W2", "W7.W3", f"W7.{SLEEP_TASK}"), ours, raw,
                                    strict=True):
        extra: dict[str, Any] = {"limit": limit, "limit_figure": f"W0, {SLOTS} slots vs "
                                 f"{2 * SLOTS}"} if limit else {}
        ctx.derived("W7", figure, "speedup_two_vs_one", value, "×", target=1.6, **extra)


async def _kill_one(ctx: Context, http: Client, victim: Worker) -> None:
    """100 runs at t0; SIGKILL `victim` once 50 have completed; count lost/duplicated."""
    t0 = time.perf_counter()
    ids = await asyncio.gather(*(api.submit(http, "three_lost", {"r": i})
                                 for i in range(RUNS)))
    killed_at: float | None = None
    done: dict[str, str] = {}
    deadline = time.monotonic() + 180
    while len(done) < RUNS and time.monotonic() < deadline:
        r = await http.get("/api/jobs", params={"limit": RUNS + 50})
        body = r.json()
        for row in body["items"] if isinstance(body, dict) else body:
            if row["job_id"] in ids and row["status"] in api.TERMINAL:
                done[row["job_id"]] = row["status"]
        if killed_at is None and sum(s == "completed" for s in done.values()) >= 50:
            victim.kill(signal.SIGKILL)
            killed_at = time.perf_counter() - t0
        await asyncio.sleep(api.POLL)
    wall = time.perf_counter() - t0
    lost = RUNS - sum(s == "completed" for s in done.values())
    duplicated = rerun = 0
    for job_id in ids:
        dup, again = await _duplicates(http, job_id)
        duplicated += dup
        rerun += again
    common: dict[str, Any] = {"killed_after_s": None if killed_at is None
                              else round(killed_at, 3), "wall_s": round(wall, 3)}
    ctx.derived("W7", "W7.kill.W3", "lost_runs", float(lost), "runs", target=0, **common)
    ctx.derived("W7", "W7.kill.W3", "duplicated_steps", float(duplicated), "steps", target=0)
    ctx.derived("W7", "W7.kill.W3", "rerun_steps", float(rerun), "steps",
                how="one of two workers SIGKILLed after 50 of 100 runs completed; steps "
                    "retry on_lost, recovery.heartbeat_timeout 2s")


async def _duplicates(http: Client, job_id: str) -> tuple[int, int]:
    """(duplicated steps, re-run attempts) of one job, from its events and its log.

    A step is duplicated when it completed more than once, or when its line was logged
    more often than it was started (each attempt prints it once). Re-runs are starts
    beyond the first (an attempt lost with the killed worker and run again).
    """
    r = await http.get(f"/api/jobs/{job_id}/events")
    r.raise_for_status()
    started: Counter[str] = Counter()
    completed: Counter[str] = Counter()
    for event in r.json():
        step = event["data"].get("step")
        if event["type"] == "StepStarted":
            started[step] += 1
        elif event["type"] == "StepCompleted":
            completed[step] += 1
    r = await http.get(f"/api/jobs/{job_id}/logs")
    r.raise_for_status()
    printed: Counter[str] = Counter()
    for raw in r.json()["logs"].splitlines():
        entry = json.loads(raw)
        if str(entry.get("line", "")).startswith("run "):
            printed[entry["step"]] += 1
    steps = set(started) | set(completed) | set(printed)
    duplicated = sum(1 for s in steps
                     if completed[s] > 1 or printed[s] > max(started[s], 1))
    rerun = sum(max(0, n - 1) for n in started.values())
    return duplicated, rerun


async def run(ctx: Context) -> None:
    if ctx.backend != "postgres":
        ctx.emit({"workload": "W7", "figure": "W7", "peer": "partitur",
                  "backend": ctx.backend, "stat": "unavailable",
                  "text": "W7 is defined on the PostgreSQL store: see the postgres results "
                          "(`python -m benchmarks.run --backend postgres --only W7`)"})
        return
    await _limits(ctx)
    root = ctx.tmp / "w7"
    ws = make_workspace(root, {"foreach200": foreach_yaml("foreach200", 200),
                               SLEEP_TASK: foreach_yaml(SLEEP_TASK, SLEEP_ITEMS,
                                                        f"sleep {SLEEP_S}"),
                               "three_lost": THREE_LOST})
    server = Server(root / "server", db_url(ctx, "w7"), ws, concurrency=0,
                    workers_extra=f"  token: {TOKEN}\n  mode: remote\n",
                    extra_config="recovery:\n  heartbeat_timeout: 2s\n")
    workers: list[Worker] = []
    with server, RssSampler([server.pid]) as rss:
        server_pid = server.pid
        try:
            async with api.client(server.url) as http:
                workers.append(Worker(root, server.url, "w1"))
                await _wait_workers(http, 1)
                one_w2, one_w3, one_sleep = await _phase(ctx, http, "one")
                workers.append(Worker(root, server.url, "w2"))
                await _wait_workers(http, 2)
                two_w2, two_w3, two_sleep = await _phase(ctx, http, "two")
                _speedups(ctx, (one_w2 / two_w2, two_w3 / one_w3, one_sleep / two_sleep))
                await _kill_one(ctx, http, workers[0])
        finally:
            for worker in workers:
                worker.kill(signal.SIGTERM)
    ctx.derived("W7", "W7", "server_peak_rss_mib", rss.peak_of[server_pid] / MiB, "MiB",
                scope="server process tree (no steps run in it)")
