"""W6: `partitur rebuild` over a store of N events of finished W3-shaped jobs.

One real W3 run is executed in-process, then copied through the store API until the log
holds N events (`fill.py`). The projections written incrementally (by the appends) are
fingerprinted, `python -m server.cli rebuild --db …` runs as its own process (timed from
outside; its own events/s line is kept too), and the rebuilt projections must give the
same fingerprint. N = 1,000,000 in the full run, 10,000 with --quick. The CPU time of the
rebuild process (user + system) is recorded too: on a loaded machine the wall time
says more about the load than about the rebuild.
"""

from __future__ import annotations

import hashlib
import re
import resource
import subprocess
import time
from typing import Any

from benchmarks.common import PYTHON, ROOT, Context, db_url, make_workspace
from benchmarks.fill import copy_runs_url
from benchmarks.inproc import run_once, runtime

JOBS_SQL = "SELECT * FROM jobs ORDER BY job_id"
STEPS_SQL = "SELECT * FROM steps ORDER BY job_id, step_name"
COUNT_SQL = "SELECT count(*) FROM events"
RATE = re.compile(r"replayed (\d+) events of (\d+) jobs in ([\d.]+)s")


async def fingerprint(url: str, ctx: Context) -> tuple[int, int, str, int]:
    """(job rows, step rows, sha256 of every row in order, events) of the projections."""
    digest = hashlib.sha256()
    if ctx.backend == "sqlite":
        import sqlite3

        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            jobs = conn.execute(JOBS_SQL).fetchall()
            steps = conn.execute(STEPS_SQL).fetchall()
            events = conn.execute(COUNT_SQL).fetchone()[0]
        finally:
            conn.close()
    else:
        import asyncpg

        pg = await asyncpg.connect(url)
        try:
            jobs = [tuple(r) for r in await pg.fetch(JOBS_SQL)]
            steps = [tuple(r) for r in await pg.fetch(STEPS_SQL)]
            events = await pg.fetchval(COUNT_SQL)
        finally:
            await pg.close()
    for row in (*jobs, *steps):
        digest.update(repr(_normal(row)).encode())
    return len(jobs), len(steps), digest.hexdigest(), int(events)


def _normal(row: tuple[Any, ...]) -> tuple[Any, ...]:
    # Floats are compared at microsecond precision: a REAL written twice is identical,
    # but Postgres may hand back Decimal/float types differently between reads.
    return tuple(round(v, 6) if isinstance(v, float) else v for v in row)


async def run(ctx: Context) -> None:
    target = 10_000 if ctx.quick else 1_000_000
    root = ctx.tmp / "w6"
    ws = make_workspace(root)
    url = db_url(ctx, "w6")
    async with runtime(root, url, ws) as rt:
        model = await run_once(rt, "three")
        per_run = len(await rt.store.read(model.job_id))
    copies = max(0, -(-target // per_run) - 1)
    fill = await copy_runs_url(url, model.job_id, copies, logs_dir=None, base_dir=root)
    ctx.derived("W6", "W6.fill", "copy_events_per_s", fill.events_per_s, "1/s",
                runs=copies + 1, events_per_run=per_run)
    before = await fingerprint(url, ctx)
    cmd = [PYTHON, "-m", "server.cli", "rebuild", "--db", url]
    # The fill just wrote the whole file, so the page cache is warm; the full run skips the
    # separate warm-up rebuild to stay near two minutes at 1M events.
    warm = 1 if ctx.quick else 0
    for i in range(warm + ctx.reps):
        start = time.perf_counter()
        used = _children_cpu()
        # Nothing else runs on this loop: the rebuild process is timed from outside.
        proc = subprocess.run(  # noqa: ASYNC221
            cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
        wall = time.perf_counter() - start
        cpu = _children_cpu() - used
        if proc.returncode != 0:
            raise RuntimeError(f"rebuild failed: {proc.stderr[-800:]}")
        after = await fingerprint(url, ctx)
        if after != before:
            raise RuntimeError(f"W6: rebuilt projections differ from the incremental ones: "
                               f"{before[:2]} rows before, {after[:2]} after")
        if i < warm:
            continue  # warm-up (page cache), not counted
        rep = i - warm
        m = RATE.search(proc.stdout)
        events = before[3]
        ctx.rep("W6", "W6.rebuild", "events_per_s", rep, events / wall, "1/s",
                events=events, wall_s=round(wall, 3), cpu_s=round(cpu, 3))
        if cpu > 0:
            ctx.rep("W6", "W6.rebuild", "events_per_cpu_s", rep, events / cpu, "1/s")
        if m:
            ctx.rep("W6", "W6.rebuild", "inner_events_per_s", rep,
                    int(m.group(1)) / float(m.group(3)), "1/s")
    ctx.summary("W6", "W6.rebuild", "events_per_s", "1/s", events=before[3],
                jobs=before[0], steps=before[1], target=50_000,
                check="rebuilt jobs/steps rows equal the incremental ones (sha256 of all rows)",
                timing="whole `python -m server.cli rebuild` process, timed from outside")
    ctx.summary("W6", "W6.rebuild", "inner_events_per_s", "1/s",
                timing="the rate `partitur rebuild` prints (replay + writes, no start-up)")
    ctx.summary("W6", "W6.rebuild", "events_per_cpu_s", "1/s",
                timing="events per second of CPU (user + system) of the rebuild process, "
                       "start-up included")


def _children_cpu() -> float:
    """User + system CPU seconds of the finished child processes (and theirs) so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
