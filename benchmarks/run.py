"""`python -m benchmarks.run --backend sqlite|postgres [--quick] [--only W1,W2]`.

Runs W0 (always: every figure is compared with the limit measured in the same run) and
the chosen workloads, prints JSON lines, and writes
`benchmarks/results/<date>-<backend>[-quick].json` and the Markdown table `.md`.
`--quick` is the ~30 s regression subset (no scaling curves, smaller W5/W6 stores).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import (
    w0_raw,
    w1_chain,
    w2_fan,
    w3_many,
    w4_log,
    w5_history,
    w6_replay,
    w7_distributed,
)
from benchmarks.common import Context, cpu_gauge_ms, drop_databases, machine_info
from engine import eventloop

RESULTS = Path(__file__).resolve().parent / "results"
ALL = ("W1", "W2", "W3", "W4", "W5", "W6", "W7")
FULL_W1 = (10, 40, 160)
FULL_W2 = (50, 200, 1000)
FULL_W5 = (1000, 10_000, 100_000)


async def main(ctx: Context, only: tuple[str, ...], w5_sizes: tuple[int, ...]) -> None:
    w1_sizes = (40,) if ctx.quick else FULL_W1
    w2_sizes = (200,) if ctx.quick else FULL_W2
    await w0_raw.run(ctx, chain_sizes=w1_sizes, fan_sizes=w2_sizes)
    steps = {
        "W1": lambda: w1_chain.run(ctx, w1_sizes),
        "W2": lambda: w2_fan.run(ctx, w2_sizes),
        "W3": lambda: w3_many.run(ctx),
        "W4": lambda: w4_log.run(ctx),
        "W5": lambda: w5_history.run(ctx, w5_sizes),
        "W6": lambda: w6_replay.run(ctx),
        "W7": lambda: w7_distributed.run(ctx),
    }
    for name in only:
        start = time.perf_counter()
        await steps[name]()
        ctx.emit({"workload": name, "stat": "duration", "backend": ctx.backend,
                  "seconds": round(time.perf_counter() - start, 2)})


def markdown(ctx: Context, machine: dict[str, Any], seconds: float) -> str:
    out = [f"# Partitur benchmarks — {ctx.backend}{' (quick)' if ctx.quick else ''}", "",
           f"- date: {machine['date']}, commit {machine['commit']}",
           f"- machine: {machine['cores']} cores, {machine['memory_mib']} MiB, {machine['cpu']}",
           f"- OS: {machine['os']}; Python {machine['python']}",
           "- packages: " + ", ".join(f"{k} {v}" for k, v in machine["packages"].items()),
           "- settings: concurrency 8 (Runtime / workers.local.concurrency), SQLite "
           "synchronous NORMAL (default), interpreter: sh on every step; engine and "
           f"in-process workloads on the {machine.get('event_loop', 'asyncio')} event loop, "
           "W0 on a standard asyncio loop",
           "- repetitions: W0 5, others 3, after one warm-up run (not counted); "
           "values are the median (min–max) of the repetitions",
           f"- harness wall time: {seconds:.1f} s; load average (1/5/15 min) at start "
           f"{machine.get('loadavg_at_start')}, at end {[round(x, 2) for x in os.getloadavg()]}"
           " — other engineers' test suites share this 2-core VM",
           f"- CPU gauge (`common.cpu_gauge_ms`: a fixed Python loop, lower is faster) at "
           f"start {machine.get('cpu_gauge_ms_at_start')} ms, at end {cpu_gauge_ms()} ms", "",
           "| figure | metric | median | min – max | W0 limit | ratio | target |",
           "|---|---|---|---|---|---|---|"]
    for r in ctx.records:
        if r.get("stat") != "summary":
            continue
        span = f"{_fmt(r['min'])} – {_fmt(r['max'])}" if "min" in r else ""
        limit = f"{_fmt(r['limit'])} ({r.get('limit_figure', '')})" if "limit" in r else ""
        target = next((f"{_fmt(v)}" for k, v in r.items() if k.startswith("target")), "")
        ratio = r.get("ratio")
        out.append(f"| {r['figure']} | {r['metric']} | {_fmt(r['median'])} {r['unit']} | "
                   f"{span} | {limit} | {'' if ratio is None else f'{ratio:.2f}×'} | "
                   f"{target} |")
    notes = [r for r in ctx.records if r.get("stat") == "summary" and
             any(k in r for k in ("path", "observer", "filled", "check", "command", "how"))]
    if notes:
        out += ["", "## How each figure was taken", ""]
        seen: set[tuple[str, str]] = set()
        for r in notes:
            for key in ("path", "observer", "filled", "check", "command", "how", "timing"):
                if key in r and (r["figure"], key) not in seen:
                    seen.add((r["figure"], key))
                    out.append(f"- {r['figure']} ({key}): {r[key]}")
    missing = [r for r in ctx.records if r.get("stat") == "unavailable"]
    for r in missing:
        out += ["", f"- {r['figure']}: {r['text']}"]
    return "\n".join(out) + "\n"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def results_stem(ctx: Context, only: tuple[str, ...], tag: str) -> str:
    """The results file name: date, tag, backend, quick, workloads; never an existing one."""
    day = dt.date.today().isoformat()
    stem = f"{day}{'-' + tag if tag else ''}-{ctx.backend}{'-quick' if ctx.quick else ''}"
    if only != ALL:  # a partial run does not overwrite the day's full results
        stem += "-" + "-".join(only)
    if (RESULTS / f"{stem}.json").exists():  # an earlier run of the day keeps its file
        stem += "-" + dt.datetime.now().strftime("%H%M")
    return stem


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run")
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--quick", action="store_true", help="the ~30 s subset")
    parser.add_argument("--only", default=",".join(ALL), help="e.g. W1,W2 (W0 always runs)")
    parser.add_argument("--w5-no-100k", action="store_true",
                        help="stop W5 at 10,000 runs (the 100,000 fill takes minutes)")
    parser.add_argument("--pg", default="", help="Postgres admin URL (default: "
                        "$PARTITUR_BENCH_PG or postgresql://postgres@127.0.0.1:5432/postgres)")
    parser.add_argument("--no-write", action="store_true", help="do not write results files")
    parser.add_argument("--tag", default="", help="added to the results file name, "
                        "e.g. --tag evening → 2026-12-01-evening-sqlite.json")
    args = parser.parse_args(argv)
    only = tuple(w.strip().upper() for w in args.only.split(",") if w.strip())
    unknown = [w for w in only if w not in ALL and w != "W0"]
    if unknown:
        parser.error(f"unknown workload(s): {', '.join(unknown)}")
    only = tuple(w for w in ALL if w in only)
    w5_sizes: tuple[int, ...] = (1000,) if args.quick else FULL_W5
    if args.w5_no_100k:
        w5_sizes = tuple(n for n in w5_sizes if n < 100_000)
    ctx = Context(args.backend, args.quick, db_admin_url=args.pg)
    machine = machine_info()
    ctx.emit({"machine": machine, "backend": ctx.backend, "quick": ctx.quick})
    start = time.perf_counter()
    failed = True
    try:
        eventloop.run(main(ctx, only, w5_sizes))  # the loop `partitur run` uses
        failed = False
    finally:
        if failed:  # keep the server logs of a failed run
            print(f"benchmark failed: stores and server logs kept in {ctx.tmp}",
                  file=sys.stderr)
        else:
            shutil.rmtree(ctx.tmp, ignore_errors=True)
        if ctx.backend == "postgres":
            drop_databases(ctx)
    seconds = time.perf_counter() - start
    ctx.emit({"stat": "total", "backend": ctx.backend, "seconds": round(seconds, 1)})
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        stem = results_stem(ctx, only, args.tag)
        (RESULTS / f"{stem}.json").write_text(json.dumps(
            {"machine": machine, "backend": ctx.backend, "quick": ctx.quick,
             "only": list(only), "seconds": round(seconds, 1), "records": ctx.records},
            indent=1) + "\n")
        (RESULTS / f"{stem}.md").write_text(markdown(ctx, machine, seconds))
        print(f"wrote {RESULTS / stem}.json and .md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
