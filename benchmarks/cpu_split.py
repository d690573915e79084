"""`python -m benchmarks.cpu_split chain40|explicit200|foreach200 [--reps N]
[--pg ADMIN_URL]`.

Where a run's CPU goes on these 2-core VMs: for one in-process workload (the W1/W2 path
of `benchmarks.inproc`), the wall time per run next to the CPU time per run of the
engine's process, of the step processes it started (reaped children) and of PostgreSQL's
processes (every `postgres` process on the machine, from `/proc`: run it on a quiet
database server). When the three add up to nearly twice the wall time, the run is bound
by the two cores, not by waits, and only less CPU makes it faster. A tool for finding
where time goes, not a benchmark figure.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

from benchmarks.ab import databases
from benchmarks.common import make_workspace, sized_task_yaml
from benchmarks.inproc import run_once, runtime
from engine import eventloop


def postgres_cpu_s() -> float:
    """User + system CPU seconds of every running `postgres` process."""
    ticks = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as stat:
                text = stat.read()
        except OSError:
            continue  # ended meanwhile
        name, _, rest = text.partition(") ")
        if not name.endswith("(postgres"):
            continue
        fields = rest.split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def measure(task: str, reps: int, url: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ws = make_workspace(root, {task: sized_task_yaml(task)})
        async with runtime(root, url or f"sqlite:///{root / 'p.db'}", ws) as rt:
            await run_once(rt, task)  # warm-up
            wall, engine = time.perf_counter(), time.process_time()
            children, postgres = children_cpu_s(), postgres_cpu_s()
            for _ in range(reps):
                timing = await run_once(rt, task)
                assert timing.status == "completed", timing
            return {
                "wall_ms": (time.perf_counter() - wall) * 1000 / reps,
                "engine_cpu_ms": (time.process_time() - engine) * 1000 / reps,
                "children_cpu_ms": (children_cpu_s() - children) * 1000 / reps,
                "postgres_cpu_ms": (postgres_cpu_s() - postgres) * 1000 / reps if url else 0.0,
            }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cpu_split")
    parser.add_argument("task", help="chainN, explicitN or foreachN")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--pg", default="", help="PostgreSQL admin URL (default: SQLite)")
    args = parser.parse_args()
    with databases(args.pg) as (url, _):
        split = eventloop.run(measure(args.task, args.reps, url))
    busy = sum(v for k, v in split.items() if k != "wall_ms")
    print(f"{args.task} ({'postgres' if args.pg else 'sqlite'}), per run: "
          + ", ".join(f"{k} {v:.0f}" for k, v in split.items())
          + f"; CPU / wall {busy / split['wall_ms']:.2f} (2 cores: at most 2)")


if __name__ == "__main__":
    main()
