"""`python -m benchmarks.profile_engine chain40|explicit200|foreach200 [--reps N] [--html F]
[--pg ADMIN_URL]`.

Profiles one in-process workload (the W1/W2 path of `benchmarks.inproc`) with
pyinstrument after a warm-up run, and prints the wall time of each repetition and the
profile. A tool for finding where engine time goes, not a benchmark figure. It also
prints the CPU time of the event loop's thread and of the whole process per repetition
(the children excluded): on a loaded machine these move much less than the wall time.
With `--pg`, the store is a fresh PostgreSQL database made through that admin URL (and
dropped afterwards) instead of an SQLite file.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from benchmarks.ab import databases
from benchmarks.common import make_workspace, sized_task_yaml
from benchmarks.inproc import run_once, runtime


async def main(task: str, reps: int, html: str, profile: bool, pg: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ws = make_workspace(root, {task: sized_task_yaml(task)})
        async with runtime(root, pg or f"sqlite:///{root / 'p.db'}", ws) as rt:
            await run_once(rt, task)  # warm-up
            profiler = None
            if profile:
                from pyinstrument import Profiler

                profiler = Profiler(async_mode="disabled", interval=0.0005)
                profiler.start()
            walls: list[float] = []
            loop_cpu: list[float] = []
            proc_cpu: list[float] = []
            for _ in range(reps):
                start = time.perf_counter()
                start_loop, start_proc = time.thread_time(), time.process_time()
                t = await run_once(rt, task)
                walls.append(time.perf_counter() - start)
                loop_cpu.append(time.thread_time() - start_loop)
                proc_cpu.append(time.process_time() - start_proc)
                assert t.status == "completed", t
            if profiler is not None:
                profiler.stop()
            for name, values in (("wall", walls), ("loop CPU", loop_cpu),
                                 ("process CPU", proc_cpu)):
                values.sort()
                print(f"{task}: {name} s per rep (sorted) {[round(v, 4) for v in values]}, "
                      f"median {values[len(values) // 2]:.4f}")
            if profiler is not None:
                if html:
                    with open(html, "w") as out:  # noqa: ASYNC230 - a tool, after the runs
                        out.write(profiler.output_html())
                print(profiler.output_text(unicode=False, color=False, show_all=False))


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile_engine")
    p.add_argument("task")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--html", default="")
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--pg", default="", help="a PostgreSQL admin URL (default: SQLite)")
    a = p.parse_args()
    with databases(a.pg) as (pg_url, _):
        asyncio.run(main(a.task, a.reps, a.html, not a.no_profile, pg_url))
