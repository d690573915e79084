"""`python -m benchmarks.profile_w7 [--workers 1] [--reps 2] [--out FILE]`.

Profiles the W7 path: a real `partitur serve` on a fresh PostgreSQL database, with no
embedded workers and the worker API open, started under pyinstrument (as
`benchmarks.profile_server` does for W3), and `--workers` real `partitur worker`
processes with 4 slots each. After a warm-up it runs `--reps` times W2 (`foreach200`)
and W3 (100 × `three` POSTed at t0), prints the timings and the CPU time the server
and the worker processes spent per step (less noisy than wall time on a shared
machine), stops the server with SIGTERM
and writes the server's main-thread profile to `--out`. A tool for finding where the
server's time per remote step goes, not a benchmark figure (the profiler slows the
server down).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import psutil  # type: ignore[import-untyped]

from benchmarks import api
from benchmarks.common import PG_DEFAULT, PG_ENV, Server, foreach_yaml, make_workspace
from benchmarks.w3_many import _fan
from benchmarks.w7_distributed import TOKEN, Worker, _wait_workers


def _cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        total += times.user + times.system
    return total


async def drive(server: Server, workers: list[int], reps: int) -> None:
    """Runs W2 then W3 `reps` times; prints wall time and the CPU seconds the server
    and the worker processes (without their steps' processes) spent per step."""
    async with api.client(server.url) as http:
        await _wait_workers(http, len(workers))
        await _fan(http, "foreach200")
        await api.run_many(http, "three", 4)
        for rep in range(reps):
            cpu = _cpu([server.pid]), _cpu(workers)
            w2 = await _fan(http, "foreach200")
            after = _cpu([server.pid]), _cpu(workers)
            wall, _, statuses = await api.run_many(http, "three", 100, lambda i: {"r": i})
            end = _cpu([server.pid]), _cpu(workers)
            bad = [s for s in statuses.values() if s != "completed"]
            print(f"rep {rep}: W2 foreach200 {w2:.2f}s, server CPU/step "
                  f"{(after[0] - cpu[0]) / 202 * 1000:.2f} ms, workers CPU/step "
                  f"{(after[1] - cpu[1]) / 202 * 1000:.2f} ms; W3 {100 / wall:.1f} runs/s, "
                  f"server CPU/step {(end[0] - after[0]) / 300 * 1000:.2f} ms, workers "
                  f"CPU/step {(end[1] - after[1]) / 300 * 1000:.2f} ms"
                  f"{f', {len(bad)} not completed' if bad else ''}", flush=True)
        metrics = (await http.get("/metrics")).text
        calls = [row for row in metrics.splitlines()
                 if row.startswith("partitur_http_requests_total{") and "/worker/" in row]
        print("worker API calls in all:", *calls, sep="\n  ")


async def _database(admin: str, name: str, create: bool) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin)
    try:
        if create:
            await conn.execute(f'CREATE DATABASE "{name}"')
        else:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_w7")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--out", default="w7-server-profile.txt")
    parser.add_argument("--no-profile", action="store_true",
                        help="only the timings and CPU per step, no profiler")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.unlink(missing_ok=True)
    admin = os.environ.get(PG_ENV) or PG_DEFAULT
    dbname = f"profile_w7_{os.getpid()}"
    asyncio.run(_database(admin, dbname, True))
    try:
        with tempfile.TemporaryDirectory(prefix="partitur-profile-w7-") as tmp:
            root = Path(tmp)
            ws = make_workspace(root, {"foreach200": foreach_yaml("foreach200", 200)})
            server = Server(root / "server", f"{admin.rsplit('/', 1)[0]}/{dbname}", ws,
                            concurrency=0,
                            workers_extra=f"  token: {TOKEN}\n  mode: remote\n",
                            extra_config="recovery:\n  heartbeat_timeout: 2s\n",
                            python_args=[] if args.no_profile else [
                                "-m", "benchmarks.profile_server", "--profiled-serve",
                                str(out)])
            server.start(timeout=60)
            procs = [Worker(root, server.url, f"w{i + 1}") for i in range(args.workers)]
            try:
                asyncio.run(drive(server, [p.proc.pid for p in procs], args.reps))
            finally:
                for proc in procs:
                    proc.kill()
                server.stop()
            if args.no_profile:
                return 0
            deadline = time.monotonic() + 30
            while not out.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
    finally:
        asyncio.run(_database(admin, dbname, False))
    print(f"server profile: {out}" if out.exists() else "no profile written")
    return 0 if out.exists() else 1


if __name__ == "__main__":
    raise SystemExit(main())
