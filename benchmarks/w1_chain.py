"""W1: a sequential chain of 40 steps, in-process (Runtime + orchestrator, as `partitur
run` does), and `W1.cold`: a whole `python -m server.cli run` process timed from outside.

Figures: `W1.chain<N>` wall_s / persisted_s (ratio to `W0.chain<N>`), the overhead per
step `(W1 − W0.chain40) / 40`, `W1.cold` wall_s and the peak RSS of its largest process.
Each step's `step N` line is checked in the job's stored log.
"""

from __future__ import annotations

import subprocess
import time

from benchmarks.common import (
    PYTHON,
    ROOT,
    Context,
    MiB,
    RssSampler,
    chain_yaml,
    db_url,
    make_workspace,
)
from benchmarks.inproc import run_once, runtime


async def run(ctx: Context, sizes: tuple[int, ...] = (40,)) -> None:
    root = ctx.tmp / "w1"
    ws = make_workspace(root, {f"chain{n}": chain_yaml(f"chain{n}", n) for n in sizes})
    with RssSampler([_self_pid()]) as rss:
        async with runtime(root, db_url(ctx, "w1"), ws) as rt:
            for n in sizes:
                task = f"chain{n}"
                warm = await run_once(rt, task, n)  # warm-up, not counted
                if warm.status != "completed":
                    raise RuntimeError(f"W1 {task} warm-up ended {warm.status}")
                lines = await rt.logs.read(warm.job_id)
                got = [line.line for line in lines if line.step != "_server"]
                if got != [f"step {i}" for i in range(n)]:
                    raise RuntimeError(f"W1 {task}: step logs not stored as expected: {got[:3]}")
                for rep in range(ctx.reps):
                    t = await run_once(rt, task, n)
                    assert t.status == "completed", t
                    ctx.rep("W1", f"W1.{task}", "wall_s", rep, t.wall_s, "s", steps=n)
                    ctx.rep("W1", f"W1.{task}", "persisted_s", rep, t.persisted_s, "s", steps=n)
                s = ctx.summary("W1", f"W1.{task}", "wall_s", "s", limit=f"W0.chain{n}",
                                path="in-process Runtime + orchestrator")
                ctx.summary("W1", f"W1.{task}", "persisted_s", "s", limit=f"W0.chain{n}")
                w0 = ctx.limits.get(f"W0.chain{n}")
                if w0 is not None:
                    ctx.derived("W1", f"W1.{task}", "overhead_per_step_ms",
                                (s["median"] - w0) / n * 1000, "ms", limit=w0 / n * 1000,
                                limit_figure=f"W0.chain{n} / {n}",
                                target_ms=2.0 if ctx.backend == "sqlite" else 4.0)
    ctx.emit({"workload": "W1", "figure": "W1", "metric": "peak_rss_mib", "stat": "summary",
              "backend": ctx.backend, "peer": "partitur", "unit": "MiB",
              "median": round(rss.peak_total / MiB, 1), "scope": "harness process"})
    cold(ctx, ws)


def _self_pid() -> int:
    import os

    return os.getpid()


def cold(ctx: Context, ws: object) -> None:
    """`W1.cold`: process start + import + store + one W1 run + exit, timed from outside.

    The engine's modules are compiled to bytecode first, as an installed package's are
    (pip compiles them on install): the checkout is an editable install, and where
    `PYTHONDONTWRITEBYTECODE` is set (as on these VMs) every start would otherwise
    compile them again (~0.25 s here)."""
    compileall = [PYTHON, "-m", "compileall", "-q", "engine", "server"]
    subprocess.run(compileall, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    cmd = [PYTHON, "-m", "server.cli", "run", "chain40", "--workspace", str(ws), "--quiet",
           "--concurrency", "8"]
    if ctx.backend == "postgres":
        cmd += ["--db", db_url(ctx, "w1cold")]
    peaks = []
    for rep in range(ctx.reps + 1):
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        with RssSampler([proc.pid]) as rss:
            _, err = proc.communicate(timeout=120)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"W1.cold: exit {proc.returncode}: {err.decode()[-500:]}")
        if rep == 0:
            continue  # warm-up (page cache), not counted
        peaks.append(rss.peak_largest / MiB)
        ctx.rep("W1", "W1.cold", "wall_s", rep - 1, wall, "s")
        ctx.rep("W1", "W1.cold", "peak_rss_mib", rep - 1, rss.peak_largest / MiB, "MiB")
    ctx.summary("W1", "W1.cold", "wall_s", "s", limit="W0.chain40", target_s=1.0,
                command="python -m server.cli run chain40 --quiet --concurrency 8",
                bytecode="engine and server compiled first (python -m compileall)")
    ctx.summary("W1", "W1.cold", "peak_rss_mib", "MiB", scope="largest process")
