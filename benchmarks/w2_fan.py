"""W2: fan-out / fan-in, in-process (Runtime + orchestrator, 8 executor slots).

`first` → N steps `sh -c true` → `join`, written twice: a `for_each` over N items
(`W2.foreach<N>`) and N explicit steps (`W2.explicit<N>`). wall_s and persisted_s, ratio
to `W0.fan@8` (N = 200) or `W0.fan@8x<N>`; peak RSS of the engine (this process and its
children).
"""

from __future__ import annotations

import os

from benchmarks.common import (
    Context,
    MiB,
    RssSampler,
    db_url,
    fan_yaml,
    foreach_yaml,
    make_workspace,
)
from benchmarks.inproc import run_once, runtime


async def run(ctx: Context, sizes: tuple[int, ...] = (200,)) -> None:
    root = ctx.tmp / "w2"
    files: dict[str, str] = {}
    for n in sizes:
        files[f"foreach{n}"] = foreach_yaml(f"foreach{n}", n)
        files[f"explicit{n}"] = fan_yaml(f"explicit{n}", n)
    ws = make_workspace(root, files)
    async with runtime(root, db_url(ctx, "w2"), ws) as rt:
        for n in sizes:
            limit = "W0.fan@8" if n == 200 else f"W0.fan@8x{n}"
            for shape in ("foreach", "explicit"):
                task = f"{shape}{n}"
                warm = await run_once(rt, task)
                if warm.status != "completed":
                    raise RuntimeError(f"W2 {task} warm-up ended {warm.status}")
                with RssSampler([os.getpid()]) as rss:
                    for rep in range(ctx.reps):
                        t = await run_once(rt, task, n + 2)
                        assert t.status == "completed", t
                        ctx.rep("W2", f"W2.{task}", "wall_s", rep, t.wall_s, "s", branches=n)
                        ctx.rep("W2", f"W2.{task}", "persisted_s", rep, t.persisted_s, "s",
                                branches=n)
                ctx.summary("W2", f"W2.{task}", "wall_s", "s", limit=limit, target_ratio=1.5,
                            peak_rss_mib=round(rss.peak_total / MiB, 1),
                            path="in-process Runtime + orchestrator, concurrency 8")
                ctx.summary("W2", f"W2.{task}", "persisted_s", "s", limit=limit)
