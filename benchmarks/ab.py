"""`python -m benchmarks.ab REV [--reps N] [--tasks chain40,foreach200,explicit200,many100]
[--pg URL]`: this tree against git revision REV, run alternately.

On the shared VMs here the speed of the machine moves by 2–3× within minutes, so two
harness runs taken a quarter of an hour apart cannot tell a 10 % change. This runs both
engines at the same time instead: REV is checked out into a temporary worktree, each side
keeps one in-process engine (`benchmarks.inproc`, SQLite, or with `--pg` a fresh PostgreSQL
database each) in a process of its own, and
every repetition measures, back to back, the W0 limit, one run of side A and one of side
B (the order swapped every repetition); `manyN` is W3's shape in-process (N chains of 3
steps submitted at once, limit `W0.many`). Each side runs on the event loop `partitur run`
of its tree uses (`engine.eventloop`; the standard loop before it existed); W0 on the
standard loop. It prints, per task, the median ratio to W0 of
each side and the median of B's time over A's. A tool for comparing two versions of the
engine, not a benchmark figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from benchmarks import w0_raw
from benchmarks.common import ROOT

# What a side runs: its own engine from its own tree, one run per line it reads.
SIDE = r"""
import asyncio, json, os, sys, tempfile
from pathlib import Path
from benchmarks.common import chain_yaml, fan_yaml, foreach_yaml, make_workspace
from benchmarks.inproc import run_once, runtime

def task_yaml(task):
    if task.startswith("many"):
        return chain_yaml(task, 3)
    for prefix, make in (("chain", chain_yaml), ("explicit", fan_yaml), ("foreach", foreach_yaml)):
        if task.startswith(prefix):
            return make(task, int(task[len(prefix):]))
    raise SystemExit(f"unknown task {task!r}")

async def main(tasks):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ws = make_workspace(root, {t: task_yaml(t) for t in tasks})
        url = os.environ.get("AB_DB_URL") or f"sqlite:///{root / 'p.db'}"
        async with runtime(root, url, ws) as rt:
            for t in tasks:
                await run_once(rt, t)  # warm-up
            print("ready", flush=True)
            loop = asyncio.get_running_loop()
            while line := await loop.run_in_executor(None, sys.stdin.readline):
                task = line.strip()
                if task.startswith("many"):  # W3's shape: N chains of 3 at once
                    start = loop.time()
                    done = await asyncio.gather(*(run_once(rt, task)
                                                  for _ in range(int(task[4:]))))
                    status = "completed" if all(t.status == "completed" for t in done) else "failed"
                    print(json.dumps([loop.time() - start, status]), flush=True)
                    continue
                timing = await run_once(rt, task)
                print(json.dumps([timing.wall_s, timing.status]), flush=True)

try:  # the loop `partitur run` of that tree uses
    from engine.eventloop import run as run_loop
except ImportError:
    run_loop = asyncio.run
run_loop(main(sys.argv[1:]))
"""


class Side:
    """One engine in a process of its own, from the tree at `path`."""

    def __init__(self, label: str, path: Path, tasks: list[str], db_url: str = "") -> None:
        self.label = label
        env = {**os.environ, "PYTHONPATH": str(path), "AB_DB_URL": db_url}
        self.proc = subprocess.Popen([sys.executable, "-c", SIDE, *tasks], cwd=path, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self._line() != "ready":
            raise RuntimeError(f"side {label} did not start")

    def _line(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def run(self, task: str) -> float:
        assert self.proc.stdin is not None
        self.proc.stdin.write(task + "\n")
        self.proc.stdin.flush()
        wall, status = json.loads(self._line())
        if status != "completed":
            raise RuntimeError(f"side {self.label}: {task} ended {status}")
        return float(wall)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


@contextlib.contextmanager
def worktree(rev: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="partitur-ab-") as tmp:
        path = Path(tmp) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(path), rev], cwd=ROOT,
                       check=True)
        try:
            yield path
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT,
                           check=False)


@contextlib.contextmanager
def databases(admin_url: str) -> Iterator[tuple[str, str]]:
    """Two fresh PostgreSQL databases (dropped afterwards), or ("", "") for SQLite."""
    if not admin_url:
        yield "", ""
        return
    import asyncpg

    names = [f"partitur_ab_{os.getpid()}_{side}" for side in "ab"]
    base = admin_url.rsplit("/", 1)[0]

    async def each(sql: str) -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            for name in names:
                await conn.execute(sql.format(name=name))
        finally:
            await conn.close()

    asyncio.run(each('CREATE DATABASE "{name}"'))
    try:
        yield f"{base}/{names[0]}", f"{base}/{names[1]}"
    finally:
        asyncio.run(each('DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _limit(task: str) -> float:
    if task.startswith("many"):
        return asyncio.run(w0_raw.many(int(task[4:])))[0]
    if task.startswith("chain"):
        return asyncio.run(w0_raw.chain(int(task[len("chain"):])))
    size = int(task.lstrip("abcdefghijklmnopqrstuvwxyz"))
    return asyncio.run(w0_raw.fan(size, 8))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ab")
    parser.add_argument("rev", help="the git revision to compare this tree against (side B)")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--tasks", default="chain40,foreach200,explicit200")
    parser.add_argument("--pg", default="", help="a PostgreSQL admin URL: each side gets a "
                        "fresh database there instead of a SQLite file")
    args = parser.parse_args(argv)
    tasks = args.tasks.split(",")
    with worktree(args.rev) as other, databases(args.pg) as (url_a, url_b):
        sides = [Side("A (this tree)", ROOT, tasks, url_a),
                 Side(f"B ({args.rev})", other, tasks, url_b)]
        try:
            ratios: dict[tuple[str, int], list[float]] = {}
            b_over_a: dict[str, list[float]] = {}
            for rep in range(args.reps):
                for task in tasks:
                    walls = [0.0, 0.0]
                    for i in (0, 1) if rep % 2 == 0 else (1, 0):
                        limit = _limit(task)
                        walls[i] = sides[i].run(task)
                        ratios.setdefault((task, i), []).append(walls[i] / limit)
                    b_over_a.setdefault(task, []).append(walls[1] / walls[0])
        finally:
            for side in sides:
                side.close()
    for task in tasks:
        a = statistics.median(ratios[(task, 0)])
        b = statistics.median(ratios[(task, 1)])
        print(json.dumps({"task": task, "reps": args.reps, "a_ratio_to_w0": round(a, 3),
                          "b_ratio_to_w0": round(b, 3),
                          "b_over_a": round(statistics.median(b_over_a[task]), 3)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
