"""`run_process` starts programs off the event loop: many at once, cancelled mid-start."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import psutil  # type: ignore[import-untyped]

from engine.runners.process import run_process


class Lines:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def line(self, stream: str, text: str) -> None:
        self.lines.append((stream, text))


async def test_many_concurrent_processes_keep_their_own_output_and_exit_codes(
    tmp_path: Path,
) -> None:
    async def one(i: int) -> tuple[int | None, list[tuple[str, str]], int | None]:
        sink = Lines()
        pids: list[int | None] = []
        result = await run_process(
            ["sh", "-c", f"echo out {i}; echo err {i} >&2; exit {i % 4}"],
            cwd=tmp_path, env=dict(os.environ), log=sink, on_start=pids.append)
        return result.returncode, sink.lines, pids[0]

    results = await asyncio.gather(*(one(i) for i in range(40)))
    for i, (code, lines, pid) in enumerate(results):
        assert code == i % 4
        assert sorted(lines) == [("stderr", f"err {i}"), ("stdout", f"out {i}")]
        assert pid is not None
    # Every child was reaped: none is left as a zombie of this process.
    ours = {pid for _, _, pid in results}
    assert [c.pid for c in psutil.Process().children() if c.pid in ours] == []


async def test_stdin_bytes_reach_the_program(tmp_path: Path) -> None:
    sink = Lines()
    result = await run_process(["sh", "-c", "cat; echo done"], cwd=tmp_path,
                               env=dict(os.environ), log=sink, on_start=lambda _: None,
                               stdin=b"a\nb\n")
    assert result.returncode == 0
    assert [t for _, t in sink.lines] == ["a", "b", "done"]


async def test_cancelled_while_starting_leaves_no_process(tmp_path: Path) -> None:
    marker = f"spawn-cancel-{os.getpid()}"
    for _ in range(5):
        task = asyncio.ensure_future(run_process(
            ["sh", "-c", f"exec sleep 30 # {marker}"], cwd=tmp_path, env=dict(os.environ),
            log=Lines(), on_start=lambda _: None))
        await asyncio.sleep(0)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
    await asyncio.sleep(0.3)
    alive = [p for p in psutil.process_iter(["cmdline", "status"])
             if marker in " ".join(p.info["cmdline"] or [])
             and p.info["status"] != psutil.STATUS_ZOMBIE]
    assert alive == []
