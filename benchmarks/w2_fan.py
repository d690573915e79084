"""W2: fan-out / fan-in, in-process (Runtime + orchestrator, 8 executor slots).

`first` → N steps `sh -c true` → `join`, written twice: a `for_each` over N items
(`W2.foreach<N>`) and N explicit steps (`W2.explicit<N>`). wall_s and persisted_s, ratio
to `W0.fan@8` (N = 200) or `W0.fan@8x<N>`; peak RSS of the engine (this process and its
children).

`paired_ratio`: the same fan-out of plain subprocesses (`w0_raw.fan`) is run right
before each repetition, in a fresh Python process of its own (in this process, beside
the engine's idle runtime, it ran up to 50 % slower, which flattered the ratio), and the
figure is the median of the per-repetition ratios. The VMs here change speed by ±20 %
within minutes, so a limit taken a minute earlier (W0 at the start of the run) moves the
ratio by as much as the engine does; a limit taken seconds earlier moves it much less.
"""

from __future__ import annotations

import os
import statistics

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
from benchmarks.w0_raw import fan_elsewhere


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
                ratios: list[float] = []
                with RssSampler([os.getpid()]) as rss:
                    for rep in range(ctx.reps):
                        paired = await fan_elsewhere(n, 8)
                        t = await run_once(rt, task, n + 2)
                        ratios.append(t.wall_s / paired)
                        assert t.status == "completed", t
                        ctx.rep("W2", f"W2.{task}", "wall_s", rep, t.wall_s, "s", branches=n)
                        ctx.rep("W2", f"W2.{task}", "persisted_s", rep, t.persisted_s, "s",
                                branches=n)
                ctx.summary("W2", f"W2.{task}", "wall_s", "s", limit=limit, target_ratio=1.5,
                            peak_rss_mib=round(rss.peak_total / MiB, 1),
                            path="in-process Runtime + orchestrator, concurrency 8")
                ctx.summary("W2", f"W2.{task}", "persisted_s", "s", limit=limit)
                ctx.derived("W2", f"W2.{task}", "paired_ratio", statistics.median(ratios), "×",
                            target_ratio=1.5, ratios=[round(r, 3) for r in ratios],
                            how="W0.fan@8 (same N) run in a fresh process right before "
                                "each repetition; the median of wall / that limit")
